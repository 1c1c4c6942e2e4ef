"""The work a model does per image, counted for the full-mode rehearsal's T4 estimate.

The rehearsal's wrappers (:mod:`course_utils.rehearsal.caps`) record how many images full mode WOULD pass
through each model, with the FLOPs of one forward pass per image, counted here once per model and input shape:

* torch: ``torch.utils.flop_counter.FlopCounterMode`` on a one-image batch (matrix multiplies and
  convolutions, the operations that dominate; a multiply-add counts as 2 FLOPs).
* Keras: a walk over the layers (nested models too) counting Conv2D, DepthwiseConv2D and Dense from their
  static shapes (within 2 % of TensorFlow's graph profiler on the course's CNN and EfficientNet, and silent).

A training pass is counted as 3x the forward FLOPs (forward + backward, the usual rule).
"""
from __future__ import annotations

import weakref
from typing import Any

from ..runtime import import_torch

__all__ = ["torch_flops_per_image", "keras_flops_per_image", "TRAIN_FACTOR", "n_images", "n_batches"]

TRAIN_FACTOR = 3.0   # a training image pass ~ forward + backward (2x forward) FLOPs
# per model (held weakly: a model that is gone takes its entry with it, so a new model that happens to get the same
# id() never reads another model's count), then per input shape
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached(model, shape: tuple, count) -> float:
    try:
        per_model = _CACHE.setdefault(model, {})
    except TypeError:                          # an object that takes no weak reference: count every time
        return count()
    if shape not in per_model:
        per_model[shape] = count()
    return per_model[shape]


def torch_flops_per_image(model, example) -> float:
    """FLOPs of one forward pass of ``model`` on one sample shaped like ``example[0]`` (a batch ``[N, C, H, W]``
    or ``[N, D]``, or one ``[C, H, W]`` image). Cached per model and shape; the model's train/eval state and its
    BatchNorm statistics are left as they were (the pass runs in eval mode without gradients)."""
    torch = import_torch()
    FlopCounterMode = _flop_counter()  # noqa: N806

    x = example if example.ndim in (2, 4) else example[None]   # a batch ([N, C, H, W] or [N, D]) or one sample
    x = x[:1]
    def count() -> float:
        modes = {m: m.training for m in model.modules()}   # per module: frozen BatchNorm layers stay in eval
        model.eval()
        try:
            dev = next(iter(model.parameters()), torch.empty(0)).device
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x.to(dev, dtype=torch.float32))
            return float(counter.get_total_flops())
        finally:
            for m, flag in modes.items():
                m.training = flag

    return _cached(model, ("torch", tuple(x.shape)), count)


def _flop_counter():
    """``FlopCounterMode``, imported without its one log line (without triton, which the course removes on a machine
    with no NVIDIA GPU, it warns that triton kernels are not counted: the course's models have none)."""
    import logging  # noqa: PLC0415

    log = logging.getLogger("torch.utils.flop_counter")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415
    finally:
        log.setLevel(level)
    return FlopCounterMode


def keras_flops_per_image(model, image_shape: tuple[int, ...] | None = None) -> float | None:
    """FLOPs of one forward pass of a Keras ``model`` on one image (its input shape must be static: H, W, C).
    ``None`` when the size is unknown."""
    shape = tuple(image_shape) if image_shape else _keras_input_shape(model)
    if not shape or any(s is None for s in shape):
        return None
    return _cached(model, ("keras", shape), lambda: _keras_layer_flops(model))


def _keras_input_shape(model) -> tuple | None:
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(shape[1:]) if shape else None


def _keras_layer_flops(model: Any) -> float:
    """2 x multiply-adds of Conv2D / DepthwiseConv2D / Dense layers, from their static shapes (nested models too)."""
    total = 0.0
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers"):
            total += _keras_layer_flops(layer)
            continue
        name = type(layer).__name__
        try:
            out = tuple(layer.output.shape[1:])
            inp = tuple(layer.input.shape[1:])
        except (AttributeError, ValueError):
            continue
        if any(s is None for s in out + inp):
            continue
        positions = 1
        for s in out[:-1]:
            positions *= s
        if name == "Conv2D":
            kh, kw = layer.kernel_size
            total += 2.0 * positions * out[-1] * kh * kw * inp[-1] / getattr(layer, "groups", 1)
        elif name == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            total += 2.0 * positions * out[-1] * kh * kw
        elif name == "Dense":
            total += 2.0 * positions * inp[-1] * out[-1]
    return total


# --------------------------------------------------------------------------- loaders
def n_batches(loader) -> int:
    """Batches per epoch (what full mode runs; the rehearsal stops train_one_epoch early instead)."""
    return len(loader)


def n_images(loader) -> int:
    """Images per epoch: the dataset's length when it has one, else batches x batch size."""
    try:
        return len(loader.dataset)
    except (AttributeError, TypeError):
        return n_batches(loader) * (getattr(loader, "batch_size", None) or 1)
