"""Drawing primitives of the stand-in renderers (:mod:`.standins`): smooth noise, blurs, ellipses, paint.

Numpy and scipy only; every function is pure, and the renderers' randomness comes in as a seeded ``rng``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: (yy, xx), each s x s."""
    c = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1
    return np.meshgrid(c, c, indexing="ij")


def blur(x: np.ndarray, sigma: float | tuple[float, float]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    return gaussian_filter(x, sigma=(0, sy, sx), mode="wrap" if x.ndim == 3 else "reflect")


def smooth_noise(rng: np.random.Generator, n: int, s: int, sigma: float | tuple[float, float]) -> np.ndarray:
    """Smooth random fields (n x s x s), zero mean and unit spread."""
    x = blur(rng.standard_normal((n, s, s)).astype(np.float32), sigma)
    x -= x.mean(axis=(1, 2), keepdims=True)
    x /= x.std(axis=(1, 2), keepdims=True) + 1e-6
    return x


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def ellipse(yy, xx, cy, cx, ry, rx, theta=None) -> np.ndarray:
    """Normalised radius of an (optionally rotated) ellipse: < 1 inside. Params are (n,1,1) arrays."""
    dy, dx = yy - cy, xx - cx
    if theta is not None:
        c, s_ = np.cos(theta), np.sin(theta)
        dx, dy = dx * c + dy * s_, -dx * s_ + dy * c
    return np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)


def col(n: int, rgb: Sequence[float], jitter: float, rng: np.random.Generator) -> np.ndarray:
    """n colours (n x 1 x 1 x 3) around ``rgb`` with +-``jitter`` per channel."""
    return (np.asarray(rgb, np.float32) + rng.uniform(-jitter, jitter, (n, 3))).astype(np.float32)[:, None, None, :]


def paint(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Alpha-blend ``color`` over ``img`` (n x s x s x C) where ``alpha`` (n x s x s) is in [0, 1]."""
    a = np.clip(alpha, 0, 1)[..., None]
    return img * (1 - a) + color * a


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
