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

The crop, flip and rotation are drawn as torchvision's ``RandomResizedCrop``, ``RandomHorizontalFlip``
and ``RandomRotation`` draw them, but applied as ONE affine warp (``affine_grid`` + ``grid_sample``,
bilinear): a rotated corner shows the image around the crop where there is one (black only outside
the image), and one warp instead of three transforms makes a training image about 5 x cheaper
(0.3 ms instead of 1.5 ms at 28-64 px, measured), which is most of a small CNN's epoch on a CPU.
Random numbers come from torch's generator, so ``torch.manual_seed`` makes them repeatable.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..runtime import CourseError, torch_threads

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
        steps.append(_Normalize(mean, std))
    return steps


def _channel_stats(values: Sequence[float], c: int) -> list[float]:
    """Per-channel statistics for ``c`` channels: the first ``c``, or for one grey channel their mean."""
    return list(values)[:c] if c > 1 else [float(np.mean(values))]


class _Normalize:
    """``(x - mean) / std`` per channel; a grey image (one channel) uses the mean of the three means and stds.
    (torchvision's Normalize would broadcast three means over one channel into three channels.)"""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, x):
        import torch  # noqa: PLC0415

        c = x.shape[-3]
        m = torch.tensor(_channel_stats(self.mean, c), dtype=x.dtype)[:, None, None]
        s = torch.tensor(_channel_stats(self.std, c), dtype=x.dtype)[:, None, None]
        return (x - m) / s

    def __repr__(self) -> str:
        return f"Normalize(mean={list(self.mean)}, std={list(self.std)}; grey: their means)"


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
                    flip: bool | float = True, rotation: float = 15.0, jitter: float = 0.2, erase_p: float = 0.2,
                    erase_scale: tuple[float, float] = (0.02, 0.1), mean: Sequence[float] | None = IMAGENET_MEAN,
                    std: Sequence[float] | None = IMAGENET_STD):
    """Random augmentation for training: returns a callable ``uint8 HWC ndarray -> float CHW tensor``.

    ``size``: output side in pixels (``None`` keeps the input size; a random resized crop then needs
    the size, so it is skipped). Set any augmentation to 0 / ``None`` / ``False`` to switch it off.
    ``flip``: ``True`` flips half of the images, a number is the probability (1.0: always, for a figure).
    """
    _check_size(size)
    if crop_scale is not None and not (0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise CourseError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {crop_scale!r}")
    return _TrainAugment(size, rgb=rgb, crop_scale=tuple(crop_scale) if crop_scale and size is not None else None,
                         flip=0.5 if flip is True else float(flip or 0), rotation=float(rotation or 0), jitter=float(jitter or 0),
                         erase_p=float(erase_p or 0), erase_scale=tuple(erase_scale), mean=mean, std=std)


class _TrainAugment:
    """The training transform: crop + flip + rotation as one affine warp, then brightness/contrast,
    normalisation and random erasing, with one torch thread (see :class:`PerImageTransform`)."""

    RATIO = (3 / 4, 4 / 3)         # RandomResizedCrop's aspect-ratio range
    ERASE_RATIO = (0.3, 3.3)       # RandomErasing's

    def __init__(self, size, *, rgb, crop_scale, flip, rotation, jitter, erase_p, erase_scale, mean, std):
        self.size, self.rgb, self.crop_scale, self.flip, self.rotation = size, rgb, crop_scale, flip, rotation
        self.jitter, self.erase_p, self.erase_scale, self.mean, self.std = jitter, erase_p, erase_scale, mean, std
        self._check = _CheckImage()

    def __call__(self, image):
        import torch  # noqa: PLC0415

        with torch_threads(1):
            x = self._to_tensor(self._check(image))                       # float C x H x W in [0, 1]
            if self.crop_scale is not None or self.flip or self.rotation:  # flip: its probability
                x = self._warp(x)
            elif self.size is not None and tuple(x.shape[1:]) != (self.size, self.size):
                x = _v2().functional.resize(x, [self.size, self.size], antialias=True)
            if self.jitter:
                x = self._brightness_contrast(x)
            if self.mean is not None and self.std is not None:
                x = _Normalize(self.mean, self.std)(x)
            if self.erase_p and float(torch.rand(())) < self.erase_p:
                x = self._erase(x)
            return x

    def _to_tensor(self, image):
        import torch  # noqa: PLC0415

        if isinstance(image, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(image.reshape(*image.shape[:2], -1))).permute(2, 0, 1)
        else:
            t = image
        if self.rgb and t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        return t.float().div_(255) if t.dtype == torch.uint8 else t.float()

    @staticmethod
    def _uniform(lo: float, hi: float) -> float:
        import torch  # noqa: PLC0415

        return lo + (hi - lo) * float(torch.rand(()))

    def _crop_box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """RandomResizedCrop's draw, as (scale x, scale y, centre x, centre y) in [-1, 1] coordinates."""
        if self.crop_scale is None:
            return 1.0, 1.0, 0.0, 0.0
        for _ in range(10):
            area = self._uniform(*self.crop_scale)
            ratio = math.exp(self._uniform(math.log(self.RATIO[0]), math.log(self.RATIO[1])))
            sx, sy = math.sqrt(area * ratio * height / width), math.sqrt(area / ratio * width / height)
            if sx <= 1 and sy <= 1:
                return sx, sy, self._uniform(sx - 1, 1 - sx), self._uniform(sy - 1, 1 - sy)
        return 1.0, 1.0, 0.0, 0.0     # torchvision falls back to a centre crop; the whole image here

    def _warp(self, x):
        """Output pixel -> rotate -> flip -> into the crop box -> input pixel: one bilinear resampling."""
        import torch  # noqa: PLC0415
        import torch.nn.functional as F  # noqa: PLC0415

        c, h, w = x.shape
        out_h, out_w = (self.size, self.size) if self.size is not None else (h, w)
        sx, sy, cx, cy = self._crop_box(h, w)   # in [-1, 1] units: a resize of the whole image keeps them
        factor = max(sy * h / out_h, sx * w / out_w)   # input pixels per output pixel, in the crop
        if factor > 1.5:   # the crop is much larger than the output: shrink first, with antialiasing
            x = _v2().functional.resize(x, [max(1, round(h / factor)), max(1, round(w / factor))], antialias=True)
        mirror = -1.0 if self.flip and float(torch.rand(())) < self.flip else 1.0
        angle = math.radians(self._uniform(-self.rotation, self.rotation)) if self.rotation else 0.0
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[sx * mirror * cos, -sx * mirror * sin, cx],
                              [sy * sin, sy * cos, cy]], dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, c, out_h, out_w], align_corners=False)
        # "border" padding: a sample between the edge pixels' centres and the image's edge takes the edge value
        # (zeros padding darkened a border row by up to 26 %). Outside the image is black: each output pixel is
        # weighted by the share of its footprint (half a pixel each side) that lies on the image, so a rotated
        # corner fades out smoothly and a pixel wholly on the image keeps its value exactly.
        out = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        half = torch.tensor([sx / out_w, sy / out_h])              # half an output pixel, in the grid's units
        return out * ((1 - grid[0].abs()) / (2 * half) + 0.5).clamp(0, 1).prod(dim=-1)

    def _brightness_contrast(self, x):
        brightness = self._uniform(max(0.0, 1 - self.jitter), 1 + self.jitter)
        contrast = self._uniform(max(0.0, 1 - self.jitter), 1 + self.jitter)
        x = (x * brightness).clamp_(0, 1)
        grey = x.mean() if x.shape[0] == 1 else (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).mean()
        return ((x - grey) * contrast + grey).clamp_(0, 1)         # ColorJitter's contrast: blend with the mean

    def _erase(self, x):
        """RandomErasing: a rectangle of erase_scale of the area, aspect ratio 0.3-3.3, set to 0."""
        import torch  # noqa: PLC0415

        _, h, w = x.shape
        for _ in range(10):
            area = h * w * self._uniform(*self.erase_scale)
            ratio = math.exp(self._uniform(math.log(self.ERASE_RATIO[0]), math.log(self.ERASE_RATIO[1])))
            eh, ew = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
            if 0 < eh < h and 0 < ew < w:
                top = int(torch.randint(0, h - eh + 1, ()))
                left = int(torch.randint(0, w - ew + 1, ()))
                x = x.clone()
                x[:, top:top + eh, left:left + ew] = 0
                return x
        return x

    def __repr__(self) -> str:
        parts = [f"size={self.size}"]
        if self.crop_scale is not None:
            parts.append(f"RandomResizedCrop(scale={self.crop_scale})")
        if self.flip:
            parts.append(f"HorizontalFlip(p={self.flip:g})")
        if self.rotation:
            parts.append(f"Rotation(+-{self.rotation:g} deg)")
        if self.jitter:
            parts.append(f"BrightnessContrast({self.jitter:g})")
        if self.erase_p:
            parts.append(f"RandomErasing(p={self.erase_p:g}, scale={self.erase_scale})")
        return f"TrainAugment({', '.join(parts)})"


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
    m = torch.tensor(_channel_stats(mean, c)).reshape(shape)
    s = torch.tensor(_channel_stats(std, c)).reshape(shape)
    img = ((t * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    return img.movedim(-3, -1).numpy()
