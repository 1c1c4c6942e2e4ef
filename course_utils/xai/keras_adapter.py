"""Keras side of :mod:`course_utils.xai`: a *functional view* of the model for Grad-CAM, and gradients.

Keras Grad-CAM recipes usually write ``keras.Model(model.inputs, [layer.output, model.output])``; that
fails on a ``Sequential`` model that was never called on a symbolic input, and it cannot reach a layer
inside a nested backbone (``x = base(x)``). Here a ``Sequential`` model is re-traced layer by layer on a
fresh ``keras.Input`` (same layer objects, so same weights); a functional model gets the usual two-output
view; a nested backbone is entered (outer graph up to it, its own view, outer graph after it). A final
softmax/sigmoid is peeled off so the score is a logit.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..data.pipelines import require_finite
from ..models.keras_models import activation_name, walk_layers
from ..runtime import CourseError, import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow, through the safe import)

_CONV = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
_SQUASH = {"softmax", "sigmoid"}


def _contains(model, layer) -> bool:
    return any(l is layer for l in walk_layers(model))


def _node(model, layer):
    """The node where ``layer`` is called inside ``model``'s graph (a shared layer has one per model)."""
    keys = getattr(model, "_nodes", None)            # keras.src.ops.function: keys "<id(layer)>_ib-<index>"
    nodes = [n for i, n in enumerate(layer._inbound_nodes) if keys is None or f"{id(layer)}_ib-{i}" in keys]
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        raise CourseError(f"layer {layer.name!r} is called {len(nodes)} times (or on several inputs) in "
                          f"{model.name!r}; pass layer= a layer that is used once")
    return nodes[0]


def _output(model, layer):
    """``layer``'s output tensor in ``model``'s graph (a nested model's ``.output`` is its *own* output)."""
    return _node(model, layer).output_tensors[0] if isinstance(layer, keras.Model) else layer.output


class KerasAdapter:
    """What the XAI methods need from a Keras image classifier (``N x H x W x C`` input)."""

    channel_axis = 3

    def __init__(self, model, preprocess: Callable | None = None, batch_size: int = 32, *, fresh=None):
        if not isinstance(model, keras.Model):
            raise CourseError(f"expected a Keras Model, got {type(model).__name__}")
        self.model = model
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.fresh = fresh                 # a freshly initialised twin: reset_layers copies its weights
        self._k: int | None = None
        self._views: dict[int, Any] = {}   # target layer id -> image -> [its output, logits input]
        self._logit_view = None            # image -> logits input, built on first use
        try:
            shape = model.input_shape
        except (AttributeError, ValueError) as exc:
            raise CourseError("the Keras model is not built yet: give it a keras.Input(shape=...) "
                              "or call it once on a batch") from exc
        if isinstance(shape, list):
            raise CourseError("the XAI tools take models with a single image input")
        self.input_shape = tuple(shape)
        last = model.layers[-1]
        # Peel a final softmax / sigmoid off: the score must be a logit, not a saturated probability.
        if isinstance(last, keras.layers.Activation) and activation_name(last) in _SQUASH \
                or isinstance(last, keras.layers.Softmax):
            self._to_logits = lambda pre: pre
            self._split = True
        elif isinstance(last, keras.layers.Dense) and activation_name(last) in _SQUASH:
            def dense_logits(pre):                               # the Dense layer without its activation
                pre = tf.cast(pre, last.kernel.dtype)            # mixed precision: float16 features, float32 head
                return tf.matmul(pre, last.kernel) + (last.bias if last.use_bias else 0.0)
            self._to_logits = dense_logits
            self._split = True
        else:
            self._to_logits = lambda out: out
            self._split = False

    # ---------------------------------------------------------------- layers
    def conv_layer_names(self) -> list[str]:
        return [l.name for l in walk_layers(self.model) if isinstance(l, _CONV)]

    @staticmethod
    def _find(model, name: str):
        for l in walk_layers(model):
            if l.name == name:
                return l
        return None

    def _layer(self, layer):
        if isinstance(layer, keras.layers.Layer):
            return layer
        convs = self.conv_layer_names()
        if layer is None:
            if not convs:
                raise CourseError(f"model {self.model.name!r} has no convolution layer, so Grad-CAM has no "
                                  "feature maps to weight. Use saliency, integrated_gradients or occlusion "
                                  "instead, or pass layer= the name of a layer with N x H x W x C output.")
            return self._find(self.model, convs[-1])
        found = self._find(self.model, layer)
        if found is None:
            shown = ", ".join(convs) if convs else "(none: the model has no convolution layer)"
            raise CourseError(f"model {self.model.name!r} has no layer named {layer!r}. "
                              f"Its convolution layers are: {shown}")
        return found

    def param_layer_names(self) -> list[str]:
        return [l.name for l in walk_layers(self.model) if l.weights and not isinstance(l, keras.Model)]

    # ---------------------------------------------------------------- the functional view
    def _tensors(self, model, x, target, split: bool):
        """Run the (symbolic) tensor ``x`` through ``model``; return (target layer's output or None,
        the model's output or, with ``split``, the input of its last layer)."""
        last = (lambda m: m.layers[-1].input) if split else (lambda m: m.output)
        if isinstance(model, keras.Sequential):                  # re-trace layer by layer: same layers, new graph
            captured, pre = None, x
            for layer in model.layers:
                pre = x
                if isinstance(layer, keras.Model) and target is not None and _contains(layer, target):
                    captured, x = self._tensors(layer, x, target, False)
                else:
                    x = layer(x)
                    if layer is target:
                        captured = x
            return captured, (pre if split else x)
        if target is None or not _contains(model, target):
            return None, keras.Model(model.inputs, last(model))(x)
        if any(l is target for l in model.layers):               # the usual two-output view
            return tuple(keras.Model(model.inputs, [_output(model, target), last(model)])(x))
        # the target sits in a nested model B: outer graph up to B, B's own view, outer graph after B
        sub = next(l for l in model.layers if isinstance(l, keras.Model) and _contains(l, target))
        node = _node(model, sub)
        b_in, b_out = node.input_tensors[0], node.output_tensors[0]
        if not any(b_in is t for t in model.inputs):
            x = keras.Model(model.inputs, b_in)(x)
        captured, y = self._tensors(sub, x, target, False)
        end = last(model)
        return captured, (y if end is b_out else keras.Model(b_out, end)(y))

    def _view(self, target):
        """A keras.Model: image -> [target layer's output, logits input] (built once per target layer)."""
        key = id(target)
        if key not in self._views:
            inp = keras.Input(shape=self.input_shape[1:])
            cap, out = self._tensors(self.model, inp, target, self._split)
            if cap is None:
                raise CourseError(f"layer {target.name!r} is not reached when the model runs")
            self._views[key] = keras.Model(inp, [cap, out])
        return self._views[key]

    def gradcam_view(self, layer=None) -> Callable:
        """A function ``images -> (feature maps of layer, logits)`` (tensors, for a GradientTape)."""
        view, to_logits = self._view(self._layer(layer)), self._to_logits

        def run(images):
            feats, pre = view(images, training=False)
            return feats, to_logits(pre)

        return run

    # ---------------------------------------------------------------- data
    def prepare(self, images: Any) -> np.ndarray:
        if self.preprocess is not None:
            images = self.preprocess(images)
        x = np.asarray(images)
        if x.ndim != 4:
            raise CourseError(f"expected a batch of images N x H x W x C, got shape {x.shape}. "
                              "For one image use images[None].")
        want = self.input_shape[1:]
        for axis, (got, exp) in enumerate(zip(x.shape[1:], want)):
            if exp is not None and got != exp:
                raise CourseError(f"the model expects images of shape {tuple(want)} (H x W x C) but got "
                                  f"{x.shape[1:]}: axis {axis + 1} is {got}, not {exp}. Resize the images "
                                  "or convert their channels (grey <-> RGB) to match the model.")
        if x.dtype == np.uint8:
            x = x.astype(np.float32)
            x /= 255.0                      # in place: one float copy of the batch, not two
        return require_finite(np.ascontiguousarray(x, dtype=np.float32), "explaining")

    def image_size(self, x: np.ndarray) -> tuple[int, int]:
        return int(x.shape[1]), int(x.shape[2])

    @staticmethod
    def set_region(batch: np.ndarray, j: int, r: int, c: int, size: int, value: float) -> None:
        batch[j, r:r + size, c:c + size, :] = value

    # ---------------------------------------------------------------- passes
    def _chunks(self, n: int):
        for s in range(0, n, self.batch_size):
            yield slice(s, min(n, s + self.batch_size))

    def _logits_tf(self, xb):
        if not self._split:
            return self.model(xb, training=False)
        if self._logit_view is None:
            inp = keras.Input(shape=self.input_shape[1:])
            self._logit_view = keras.Model(inp, self._tensors(self.model, inp, None, True)[1])
        return self._to_logits(self._logit_view(xb, training=False))

    def n_outputs(self, x: np.ndarray) -> int:
        if self._k is None:
            shape = self.model.output_shape              # known without a forward pass (no view to build)
            if isinstance(shape, tuple) and len(shape) == 2 and shape[1] is not None:
                self._k = int(shape[1])
            else:                                        # run it: logits() says what is wrong with the output
                self._k = int(self.logits(x[:1]).shape[1])
        return self._k

    def logits(self, x: np.ndarray) -> np.ndarray:
        outs = [np.asarray(self._logits_tf(tf.constant(x[sl])), dtype=np.float64) for sl in self._chunks(len(x))]
        out = np.concatenate(outs)
        if out.ndim != 2:
            raise CourseError(f"the model should output [N, classes], got shape {out.shape}")
        return out

    @staticmethod
    def _class_scores(logits, t):
        """The explained score per image: the target's logit (``+/-logit`` for a single-logit model)."""
        if logits.shape[1] == 1:
            return tf.where(t == 1, logits[:, 0], -logits[:, 0])
        return tf.gather(logits, t, axis=1, batch_dims=1)

    def layer_activations_and_grads(self, x: np.ndarray, targets: np.ndarray, layer=None):
        target = self._layer(layer)
        view = self._view(target)
        acts, grads = [], []
        for sl in self._chunks(len(x)):
            xb = tf.constant(x[sl])
            with tf.GradientTape() as tape:
                tape.watch(xb)                                    # frozen backbones have no watched variables
                a, pre = view(xb, training=False)
                logits = self._to_logits(pre)
                score = tf.reduce_sum(self._class_scores(logits, tf.constant(targets[sl])))
            if len(a.shape) != 4:
                raise CourseError(f"Grad-CAM needs a layer with N x H x W x C output; {target.name!r} gives "
                                  f"{tuple(a.shape)}. Its convolution layers are: "
                                  f"{', '.join(self.conv_layer_names())}")
            g = tape.gradient(score, a)
            acts.append(np.asarray(a, dtype=np.float64).transpose(0, 3, 1, 2))   # -> N x C x h x w
            grads.append(np.asarray(g, dtype=np.float64).transpose(0, 3, 1, 2))
        return np.concatenate(acts), np.concatenate(grads)

    def input_grads(self, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        out = []
        for sl in self._chunks(len(x)):
            xb = tf.constant(x[sl])
            with tf.GradientTape() as tape:
                tape.watch(xb)
                score = tf.reduce_sum(self._class_scores(self._logits_tf(xb), tf.constant(targets[sl])))
            out.append(np.asarray(tape.gradient(score, xb), dtype=np.float64))
        return np.concatenate(out)

    # ---------------------------------------------------------------- randomisation
    def copy(self, seed: int = 0) -> "KerasAdapter":
        """A copy with the same weights, plus a freshly initialised twin to draw random weights from."""
        try:
            keras.utils.set_random_seed(seed)
            work = keras.models.clone_model(self.model)
            fresh = keras.models.clone_model(self.model)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise CourseError(f"cannot copy this Keras model for the randomisation check ({exc}); "
                              "build it with the Sequential or functional API") from exc
        work.set_weights(self.model.get_weights())
        return KerasAdapter(work, self.preprocess, self.batch_size, fresh=fresh)

    def reset_layers(self, names: list[str]) -> None:
        if self.fresh is None:
            raise CourseError("reset_layers works on a copy: call adapter.copy(seed=...) first")
        for name in names:
            self._find(self.model, name).set_weights(self._find(self.fresh, name).get_weights())
