"""Active-learning adapters for Keras models: the Keras counterpart of :mod:`course_utils.active_torch`.

Embeddings come from a functional sub-model ending at the last Dense layer's input. MC samples call
the model with ``training=True`` while batch-norm runs in inference mode and random augmentation
layers are switched off, so only Dropout stays stochastic.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .strategies import head_gradient_embedding
from ..data.pipelines import require_finite
from ..metrics import probabilities
from ..models.keras_models import activation_name, walk_layers
from ..runtime import CourseError, import_keras

__all__ = ["keras_outputs", "keras_probs", "keras_mc_samples", "keras_embeddings", "keras_gradient_embeddings"]


def _keras_last_dense(model):
    keras = import_keras()
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise CourseError(f"Keras model {model.name!r} has no Dense layer at its top level: the adapters read "
                          "the penultimate features at the input of the last Dense layer.")
    return dense[-1]


def _keras_x(x):
    x = np.asarray(x)
    return require_finite(x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32),
                          "the pool's model outputs")


def _keras_probs_from_output(y: np.ndarray, final_activation: str | None) -> np.ndarray:
    """Probabilities from the model's output: already probabilities after a sigmoid/softmax, else logits."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if final_activation == "sigmoid" and y.shape[1] == 1:
        return np.concatenate([1 - y, y], axis=1)
    if final_activation == "softmax" and y.shape[1] > 1:
        return y
    return probabilities(y)


def keras_outputs(model, x, *, needs: Iterable[str] = ("probs", "embeddings"), mc_passes: int = 10,
                  batch_size: int = 256, seed: int | None = 0) -> dict[str, np.ndarray]:
    """The Keras counterpart of :func:`torch_outputs`.

    Embeddings come from a functional sub-model ending at the last Dense layer's input. MC samples
    call the model with ``training=True`` while every BatchNormalization layer is temporarily
    ``trainable=False`` (Keras then runs it in inference mode and leaves its moving statistics alone)
    and random augmentation layers are forced to inference; only Dropout-type layers stay stochastic.
    """
    keras = import_keras()
    needs = set(needs)
    head = _keras_last_dense(model)
    act = activation_name(head)
    xs = _keras_x(x)
    out: dict[str, np.ndarray] = {}
    if needs & {"probs", "embeddings", "grad_embeddings"}:
        sub = keras.Model(model.inputs, [head.input, model.outputs[0]])
        h, y = sub.predict(xs, batch_size=batch_size, verbose=0)
        p = _keras_probs_from_output(y, act)
        out["probs"], out["embeddings"] = p, np.asarray(h).reshape(len(h), -1)
        if "grad_embeddings" in needs:
            out["grad_embeddings"] = head_gradient_embedding(p, out["embeddings"], head.units)
    if "mc_samples" in needs:
        layers = walk_layers(model)
        if not any(isinstance(layer, (keras.layers.Dropout, keras.layers.SpatialDropout2D)) for layer in layers):
            raise CourseError(f"Keras model {model.name!r} has no Dropout layer, so MC-dropout samples would all be "
                              "identical. Add keras.layers.Dropout before the classifier.")
        bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
        augment = [layer for layer in layers if type(layer).__name__.startswith("Random")]
        flags = [(layer, layer.trainable) for layer in bns]
        originals = [(layer, layer.call) for layer in augment]
        if seed is not None:
            keras.utils.set_random_seed(seed)
        try:
            for layer in bns:
                layer.trainable = False           # BN in inference mode even under training=True
            for layer, call in originals:
                layer.call = (lambda c: lambda inputs, training=None, **kw: c(inputs, training=False, **kw))(call)
            samples = []
            for _ in range(mc_passes):
                ys = [np.asarray(model(xs[s:s + batch_size], training=True)) for s in range(0, len(xs), batch_size)]
                samples.append(_keras_probs_from_output(np.concatenate(ys), act))
        finally:
            for layer, flag in flags:
                layer.trainable = flag
            for layer, _call in originals:
                del layer.call
        out["mc_samples"] = np.stack(samples)
    return {k: v for k, v in out.items() if k in needs}


def keras_probs(model, x, **kw) -> np.ndarray:
    """Class probabilities ``[N, C]`` from a Keras classifier (inference mode)."""
    return keras_outputs(model, x, needs=("probs",), **kw)["probs"]


def keras_mc_samples(model, x, mc_passes: int = 10, **kw) -> np.ndarray:
    """``[T, N, C]`` MC-dropout probabilities; batch-norm stays in inference mode."""
    return keras_outputs(model, x, needs=("mc_samples",), mc_passes=mc_passes, **kw)["mc_samples"]


def keras_embeddings(model, x, **kw) -> np.ndarray:
    """Penultimate features: the input of the last Dense layer (functional sub-model)."""
    return keras_outputs(model, x, needs=("embeddings",), **kw)["embeddings"]


def keras_gradient_embeddings(model, x, **kw) -> np.ndarray:
    """BADGE embeddings ``[N, C * D]``, C from the last Dense layer's units (2 for one sigmoid unit)."""
    return keras_outputs(model, x, needs=("grad_embeddings",), **kw)["grad_embeddings"]
