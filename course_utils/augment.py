"""Image transforms for small medical data sets, built from torchvision's ``transforms.v2``.

Both transforms take ONE image: a uint8 NumPy array ``H x W x C`` / ``H x W`` (as the data layer's
arrays hold it) or a uint8 tensor ``C x H x W`` (as ``cu.data.to_torch_loader`` hands it to its
``transform``), grey or RGB, and return a float32 tensor ``3 x H x W`` (``C x H x W`` with ``rgb=False``)
normalised with the ImageNet mean and std, ready for an ImageNet backbone::

    train_tf = cu.augment.train_transform(64)   # random: for the training split only
    eval_tf = cu.augment.eval_transform(64)     # deterministic: validation, test, prediction

Training augmentation (each a parameter, so a lesson can switch one off): random resized crop
(scale 0.8-1.0), horizontal flip, rotation up to 15 degrees, brightness/contrast jitter 0.2 and
random erasing (p 0.2, 2-10% of the image). They are mild on purpose: a lesion must stay a lesion.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .runtime import CourseError, torch_threads

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "train_transform", "eval_transform", "denormalize", "PerImageTransform"]


def _v2():
    from torchvision.transforms import v2  # noqa: PLC0415

    return v2


def _check_size(size) -> None:
    if size is not None and (not isinstance(size, int) or size < 1):
        raise CourseError(f"size must be a positive int (pixels per side) or None, got {size!r}")


def _head(rgb: bool):
    """uint8 H x W (x C) NumPy -> uint8 C x H x W tensor image, grey repeated to 3 channels if rgb."""
    v2 = _v2()
    steps = [_CheckImage(), v2.ToImage()]
    if rgb:
        steps.append(v2.RGB())
    return steps


def _tail(mean, std):
    import torch  # noqa: PLC0415

    v2 = _v2()
    steps = [v2.ToDtype(torch.float32, scale=True)]  # uint8 0..255 -> float 0..1
    if mean is not None and std is not None:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return steps


class PerImageTransform:
    """A ``transforms.v2.Compose`` run with one torch thread.

    A single small image gains nothing from intra-op parallelism, but paying for it is expensive:
    on a busy 2-core machine a 28 px rotation took 4 ms with 2 threads and 0.15 ms with 1 (measured).
    DataLoader workers already use one thread each; this does the same when there are no workers.
    """

    def __init__(self, compose):
        self.compose = compose
        self.transforms = compose.transforms

    def __call__(self, image):
        with torch_threads(1):
            return self.compose(image)

    def __repr__(self) -> str:
        return repr(self.compose)


class _CheckImage:
    """Reject what the transforms would silently mangle (floats in 0..255, wrong rank), with a fix."""

    def __call__(self, image):
        if isinstance(image, np.ndarray):
            if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
                raise CourseError(f"expected one image H x W x C (C = 1 or 3) or H x W; got shape {image.shape}. "
                                  "Transforms take a single image, not a batch.")
            if image.dtype != np.uint8:
                raise CourseError(f"expected a uint8 image (0..255), got {image.dtype}: convert with "
                                  "np.clip(img, 0, 255).astype(np.uint8) (or (img * 255) for 0..1 floats)")
        elif hasattr(image, "dtype") and hasattr(image, "ndim"):  # a torch tensor: C x H x W
            import torch  # noqa: PLC0415

            if image.ndim != 3 or image.shape[0] not in (1, 3):
                raise CourseError(f"expected one image tensor C x H x W (C = 1 or 3); got shape {tuple(image.shape)}. "
                                  "Transforms take a single image, not a batch.")
            if image.dtype != torch.uint8:
                raise CourseError(f"expected a uint8 image tensor (0..255), got {image.dtype}")
        return image

    def __repr__(self) -> str:
        return "CheckImage(uint8 H x W x C)"


def train_transform(size: int | None = None, *, rgb: bool = True, crop_scale: tuple[float, float] | None = (0.8, 1.0),
                    flip: bool = True, rotation: float = 15.0, jitter: float = 0.2, erase_p: float = 0.2,
                    erase_scale: tuple[float, float] = (0.02, 0.1), mean: Sequence[float] | None = IMAGENET_MEAN,
                    std: Sequence[float] | None = IMAGENET_STD):
    """Random augmentation for training: returns a callable ``uint8 HWC ndarray -> float CHW tensor``.

    ``size``: output side in pixels (``None`` keeps the input size; a random resized crop then needs
    the size, so it is skipped). Set any augmentation to 0 / ``None`` / ``False`` to switch it off.
    """
    _check_size(size)
    v2 = _v2()
    steps = _head(rgb)
    if crop_scale and size is not None:
        steps.append(v2.RandomResizedCrop(size, scale=tuple(crop_scale), antialias=True))
    elif size is not None:
        steps.append(v2.Resize((size, size), antialias=True))
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if rotation:
        steps.append(v2.RandomRotation(degrees=rotation, interpolation=v2.InterpolationMode.BILINEAR))
    if jitter:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter))
    steps += _tail(mean, std)
    if erase_p:
        steps.append(v2.RandomErasing(p=erase_p, scale=tuple(erase_scale), value=0))
    return PerImageTransform(v2.Compose(steps))


def eval_transform(size: int | None = None, *, rgb: bool = True, mean: Sequence[float] | None = IMAGENET_MEAN,
                   std: Sequence[float] | None = IMAGENET_STD):
    """Deterministic transform for validation, test and prediction: resize (if ``size``), to float,
    normalise. Same output format as :func:`train_transform`."""
    _check_size(size)
    v2 = _v2()
    steps = _head(rgb)
    if size is not None:
        steps.append(v2.Resize((size, size), antialias=True))
    return PerImageTransform(v2.Compose(steps + _tail(mean, std)))


def denormalize(x, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Undo the normalisation for display: a float tensor ``C x H x W`` (or ``N x C x H x W``) to a
    uint8 array ``H x W x C`` (``N x H x W x C``)."""
    import torch  # noqa: PLC0415

    t = torch.as_tensor(x).detach().float().cpu()
    if t.ndim not in (3, 4):
        raise CourseError(f"expected C x H x W or N x C x H x W, got shape {tuple(t.shape)}")
    shape = (-1, 1, 1) if t.ndim == 3 else (1, -1, 1, 1)
    c = t.shape[-3]
    m = torch.tensor(list(mean)[:c] if c > 1 else [float(np.mean(mean))]).reshape(shape)
    s = torch.tensor(list(std)[:c] if c > 1 else [float(np.mean(std))]).reshape(shape)
    img = ((t * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    return img.movedim(-3, -1).numpy()
