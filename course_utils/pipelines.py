"""Input pipelines: numpy arrays -> tf.data / torch DataLoader, TFRecords, and the one image-layout rule.

Images live in the course as ``uint8`` N x H x W x C (what the loaders return). Torch models want
float32 N x C x H x W in [0, 1]; :func:`nchw_float` is the single place that converts.
"""
from __future__ import annotations

import numpy as np

from .runtime import CourseError

__all__ = ["nchw_float"]


def nchw_float(images: np.ndarray) -> np.ndarray:
    """uint8 ``N x H x W [x C]`` -> float32 ``N x C x H x W`` in [0, 1]; float arrays are taken as NCHW already."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise CourseError(f"expected uint8 images N x H x W x C, got shape {x.shape}. For one image use images[None].")
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255)
    if not np.issubdtype(x.dtype, np.floating):
        raise CourseError(f"images must be uint8 (0-255, N x H x W x C) or float (N x C x H x W), not {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)
