"""Whole-image inference with a patch classifier: slide it over an image larger than its input and read the
probabilities as a heat map (histology slides, mammograms, any scan cut into patches for training).

    heat = cu.project.sliding_heatmap(model, big_image, patch=64, stride=32)   # H x W, P(class) per pixel
    cu.project.overlay(big_image, heat)                                         # the map over the image

Each window's probability is spread over the pixels it covers and averaged where windows overlap. The last
row and column of windows are moved back to end exactly at the image's edge, so every pixel is covered by at
least one window and no window reads past the border (no padding to invent pixels).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from ..runtime import CourseError, import_torch

__all__ = ["window_starts", "sliding_heatmap", "overlay"]


def window_starts(length: int, patch: int, stride: int) -> list[int]:
    """Start offsets of windows of ``patch`` pixels every ``stride`` pixels along ``length``; the last one ends at
    the edge exactly (so the border is covered without padding)."""
    if patch > length:
        raise CourseError(f"the patch ({patch} px) is larger than the image ({length} px): resize the image up, or "
                          "use a model trained on smaller patches.")
    if stride < 1 or patch < 1:
        raise CourseError(f"patch and stride must be positive, got patch={patch}, stride={stride}.")
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def sliding_heatmap(model: Any, image: np.ndarray, *, patch: int, stride: int | None = None, target: int = 1,
                    batch_size: int = 64, transform: Callable | None = None, progress: bool = False,
                    multilabel: bool = False) -> np.ndarray:
    """P(``target``) at every pixel of ``image`` (uint8 ``H x W x C``), from ``model`` (a torch patch classifier:
    softmax over its outputs, or a sigmoid for one output) applied to every ``patch`` x ``patch`` window, ``stride``
    apart (default half a patch), ``batch_size`` windows at a time. ``transform`` turns one window into the
    model's input tensor (default: the course's eval transform, ImageNet normalisation). ``multilabel=True``:
    the model has one sigmoid output per yes/no label, and ``target`` is the label's index."""
    torch = import_torch()
    from ..data import augment  # noqa: PLC0415
    from ..runtime import progress as bar  # noqa: PLC0415

    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise CourseError(f"expected one image H x W (x C), got shape {img.shape}.")
    stride = stride or max(1, patch // 2)
    rows, cols = window_starts(img.shape[0], patch, stride), window_starts(img.shape[1], patch, stride)
    tf = transform or augment.eval_transform(rgb=img.shape[-1] == 3)
    boxes = [(r, c) for r in rows for c in cols]
    start = time.perf_counter()
    total = np.zeros(img.shape[:2], dtype=np.float64)
    count = np.zeros(img.shape[:2], dtype=np.float64)
    was_training = model.training
    first = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    dev = first.device if first is not None else torch.device("cpu")      # the windows go where the model is
    model.eval()
    try:
        with torch.no_grad():
            for s in bar(range(0, len(boxes), batch_size), total=-(-len(boxes) // batch_size),
                         desc="sliding window", disable=not progress):
                chunk = boxes[s:s + batch_size]
                x = torch.stack([tf(np.ascontiguousarray(img[r:r + patch, c:c + patch])) for r, c in chunk])
                logits = model(x.to(dev)).float().cpu()
                if multilabel:
                    p = torch.sigmoid(logits[:, target])
                elif logits.shape[1] == 1:
                    p = torch.sigmoid(logits[:, 0]) if target == 1 else 1 - torch.sigmoid(logits[:, 0])
                else:
                    p = torch.softmax(logits, 1)[:, target]
                for (r, c), v in zip(chunk, p.numpy().astype(np.float64)):
                    total[r:r + patch, c:c + patch] += v
                    count[r:r + patch, c:c + patch] += 1
    finally:
        model.train(was_training)
    if progress:
        print(f"sliding window: {len(boxes)} windows of {patch} px over {img.shape[1]} x {img.shape[0]} px "
              f"in {time.perf_counter() - start:.1f} s")
    return total / count


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45, ax: Any = None, title: str | None = None,
            label: str = "P(class) from the patch classifier"):
    """Draw the heat map (0-1) over the image, with a colour bar; returns the axes."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if heat.shape != np.asarray(image).shape[:2]:
        raise CourseError(f"the heat map {heat.shape} does not match the image {np.asarray(image).shape[:2]}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(image, cmap="gray" if np.asarray(image).ndim == 2 else None)
    shown = ax.imshow(heat, cmap="magma", alpha=alpha, vmin=0, vmax=1)
    ax.figure.colorbar(shown, ax=ax, fraction=0.046, label=label)
    ax.set_title(title or "sliding-window probability over the whole image")
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    return ax
