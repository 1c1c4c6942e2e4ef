"""Stand-ins: synthetic data sets in the real ones' format, used when the real data cannot be loaded.

What: a *stand-in* replaces a real data set (NIH malaria cells, a MedMNIST flag) when it cannot be
downloaded (offline, a firewall, CI). It has the real format exactly: uint8 images, the same class names
and label order, the real class balance, and for MedMNIST the real split sizes in medmnist's own npz
layout, so that ``medmnist`` itself loads it. Each class is drawn with a cue modelled on the real one
(ring-shaped parasites in a cell, a dark irregular lesion with a shadow, an enlarged heart, ...).

Why: every lesson must run end to end anywhere, and its assertions ("the loss fell", "above chance")
must mean something; random noise would teach nothing and could not be learned. The numbers are stand-in
results, not real ones: the loaders in :mod:`.data` set ``info.source = "stand-in"`` and show a banner.

How: deterministic (each generator is seeded from a readable key: name, split, size, chunk) and cached on
disk as ``.npz`` under the course cache; ``STAND_IN_VERSION`` is part of every cache name (bump it when a
renderer changes). A cached file is verified in full before it is used (every byte against the zip's
CRC-32, and the arrays' shapes): a truncated, emptied or altered file is reported in one line, deleted and
generated again, instead of failing on every later load. Calibration sits next to each renderer: class
priors (``_CHEST_PRIORS``, ``_DERMA_PRIORS``, ``_BLOOD_PRIORS``), per-class styles (``_PATH_STYLE``,
``_DERMA_STYLE``, ``_BLOOD_STYLE``), and ``_MEDMNIST_META``, the part of ``medmnist.INFO`` needed without
medmnist.
Only numpy and scipy are used (no TensorFlow, no torch).
"""
from __future__ import annotations

import contextlib
import errno
import os
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import runtime
from .runtime import CourseError

__all__ = ["make_malaria_stand_in", "make_medmnist_stand_in", "MEDMNIST_FLAGS", "MEDMNIST_SIZES",
           "STAND_IN_VERSION"]

MEDMNIST_SIZES = (28, 64, 128, 224)
STAND_IN_VERSION = "v1"  # part of every stand-in cache name: bump it when a renderer changes
STAND_IN_MAX_BYTES = int(1.5 * 2**30)  # largest stand-in file we agree to generate


# ============================================================================ labels and cache
def allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over groups proportionally to ``counts`` (largest remainders; never more than a group has).

    Shared with :mod:`.data`, whose stratified splits and subsets use the same rule.
    """
    counts = np.asarray(counts, dtype=np.int64)
    exact = counts * (n / counts.sum())
    take = np.minimum(np.floor(exact).astype(np.int64), counts)
    # every non-empty group gets at least one item when there is room for it
    if n >= (counts > 0).sum():
        take = np.where((counts > 0) & (take == 0), 1, take)
    while take.sum() > n:  # the "at least one" rule overshot: trim the largest groups
        take[np.argmax(take)] -= 1
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while take.sum() < n:
        k = order[i % len(order)]
        if take[k] < counts[k]:
            take[k] += 1
        i += 1
    return take


def _stand_in_dir(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` (or the course cache's ``stand-ins`` folder), or a temporary folder with a warning."""
    if cache_dir is not None:
        return runtime.cache_dir("", base=cache_dir)
    return runtime.cache_dir("stand-ins")


def _stand_in_rng(*key: Any) -> np.random.Generator:
    """A generator seeded from a readable key, e.g. ("medmnist", flag, split, size, chunk)."""
    parts = [zlib.crc32(str(k).encode()) if not isinstance(k, (int, np.integer)) else int(k) for k in key]
    return np.random.default_rng(parts)


# what reading a damaged or foreign npz file raises (truncated, emptied, flipped bytes, other keys or shapes)
_DAMAGE_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, struct.error)


def _npz_problem(path: Path, expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> str | None:
    """Why the npz file at ``path`` cannot be used (None: it is whole and holds ``expected``).

    Verifies the whole file without loading it: every member is read in chunks and checked against
    the CRC-32 the zip stores (what a flipped byte or a truncated file breaks), then each expected
    array's header gives its shape and dtype. Memory stays small however large the file is.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                return f"Bad CRC-32 for {bad}"
            names = set(zf.namelist())
            for key, (shape, dtype) in expected.items():
                if f"{key}.npy" not in names:
                    return f"no array {key!r}"
                with zf.open(f"{key}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    got_shape, _, got_dtype = read_header(f)
                if tuple(got_shape) != tuple(shape) or np.dtype(got_dtype) != np.dtype(dtype):
                    return f"{key} is {np.dtype(got_dtype)}{list(got_shape)}, expected {np.dtype(dtype)}{list(shape)}"
    except _DAMAGE_ERRORS as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreadable'}"
    return None


def _discard_damaged(path: Path, reason: str) -> None:
    """Say in one line that a cache file was damaged, and delete it (the caller writes it again)."""
    warnings.warn(f"the stand-in cache file {path} was damaged or incomplete ({reason}); deleted it, "
                  "generating it again.", stacklevel=3)
    with contextlib.suppress(OSError):
        path.unlink()


def _save_npz(path: Path, **arrays: np.ndarray) -> OSError | None:
    """Write atomically (temp file + rename), so an interrupted run never leaves a broken cache.
    A failed write (e.g. a full disk) removes the temporary file, warns, and is returned."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not write the stand-in cache {path} ({exc}); it will be generated again next time.",
                      stacklevel=3)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return exc
    return None


def _labels_from_priors(n: int, priors: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Exactly ``round(prior * n)`` labels per class (largest remainders), shuffled."""
    counts = allocate(np.round(np.asarray(priors) * 1_000_000).astype(np.int64), n)
    return rng.permutation(np.repeat(np.arange(len(priors)), counts)).astype(np.int64)


# ============================================================================ stand-in renderers
def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: (yy, xx), each s x s."""
    c = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1
    return np.meshgrid(c, c, indexing="ij")


def _blur(x: np.ndarray, sigma: float | tuple[float, float]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    return gaussian_filter(x, sigma=(0, sy, sx), mode="wrap" if x.ndim == 3 else "reflect")


def _smooth_noise(rng: np.random.Generator, n: int, s: int, sigma: float | tuple[float, float]) -> np.ndarray:
    """Smooth random fields (n x s x s), zero mean and unit spread."""
    x = _blur(rng.standard_normal((n, s, s)).astype(np.float32), sigma)
    x -= x.mean(axis=(1, 2), keepdims=True)
    x /= x.std(axis=(1, 2), keepdims=True) + 1e-6
    return x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _ellipse(yy, xx, cy, cx, ry, rx, theta=None) -> np.ndarray:
    """Normalised radius of an (optionally rotated) ellipse: < 1 inside. Params are (n,1,1) arrays."""
    dy, dx = yy - cy, xx - cx
    if theta is not None:
        c, s_ = np.cos(theta), np.sin(theta)
        dx, dy = dx * c + dy * s_, -dx * s_ + dy * c
    return np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)


def _col(n: int, rgb: Sequence[float], jitter: float, rng: np.random.Generator) -> np.ndarray:
    """n colours (n x 1 x 1 x 3) around ``rgb`` with +-``jitter`` per channel."""
    return (np.asarray(rgb, np.float32) + rng.uniform(-jitter, jitter, (n, 3))).astype(np.float32)[:, None, None, :]


def _paint(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Alpha-blend ``color`` over ``img`` (n x s x s x C) where ``alpha`` (n x s x s) is in [0, 1]."""
    a = np.clip(alpha, 0, 1)[..., None]
    return img * (1 - a) + color * a


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _render_malaria(labels: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Round pinkish cells on a dark background; parasitized (0) ones carry 1-3 purple ring forms."""
    n = len(labels)
    yy, xx = _grid(s)
    r = lambda lo, hi: rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)  # noqa: E731
    cy, cx = r(-0.08, 0.08), r(-0.08, 0.08)
    rad = r(0.66, 0.84)
    shape = _ellipse(yy, xx, cy, cx, rad * r(0.85, 1.0), rad, theta=r(0, np.pi))
    shape = shape + 0.04 * _smooth_noise(rng, n, s, s / 10)  # a slightly irregular membrane
    edge = max(0.03, 1.0 / s)
    mask = _sigmoid((1 - shape) / edge)
    bg = rng.uniform(0, 12, (n, 1, 1, 1)).astype(np.float32) + rng.normal(0, 3, (n, s, s, 1)).astype(np.float32)
    cell = _col(n, (222, 150, 170), 14, rng)
    shading = (0.82 + 0.18 * (1 - np.clip(shape, 0, 1) ** 2))[..., None]  # paler centre, darker rim
    texture = 6 * _smooth_noise(rng, n, s, s / 24)[..., None]
    img = bg * (1 - mask[..., None]) + (cell * shading + texture) * mask[..., None]
    # a faint pale inclusion on some cells of both classes (so "any spot" is not the answer)
    pale = (rng.random(n) < 0.35)[:, None, None]
    py, px = cy + r(-0.3, 0.3), cx + r(-0.3, 0.3)
    spot = np.exp(-(((yy - py) ** 2 + (xx - px) ** 2) / r(0.08, 0.14) ** 2))
    img = _paint(img, 0.35 * spot * pale * mask, _col(n, (185, 125, 165), 10, rng))
    # stain debris: a small dark dot (not a ring) on some cells of both classes, a classic false positive
    debris = (rng.random(n) < 0.2)[:, None, None]
    dy_, dx_ = cy + r(-0.4, 0.4), cx + r(-0.4, 0.4)
    dot_r = max(0.05, 1.0 / s)
    img = _paint(img, 0.75 * debris * np.exp(-(((yy - dy_) ** 2 + (xx - dx_) ** 2) / dot_r ** 2)) * mask,
                 _col(n, (120, 60, 130), 15, rng))
    # parasites: ring forms (annulus + chromatin dot), 1-3 per parasitized cell; some early, faint ones
    parasitized = labels == 0
    k = rng.choice([1, 1, 1, 2, 3], n) * parasitized
    strength = np.where(rng.random(n) < 0.15, rng.uniform(0.25, 0.45, n), rng.uniform(0.7, 0.95, n))
    ring = np.zeros((n, s, s), np.float32)
    thick = max(0.04, 1.0 / s)
    for j in range(3):
        on = (k > j)[:, None, None]
        ang, dist = r(0, 2 * np.pi), np.sqrt(r(0, 1)) * 0.55 * rad
        qy, qx = cy + dist * np.sin(ang), cx + dist * np.cos(ang)
        rr = r(0.07, 0.14)
        d = np.sqrt((yy - qy) ** 2 + (xx - qx) ** 2)
        annulus = np.exp(-(((d - rr) / thick) ** 2))
        da = r(0, 2 * np.pi)
        dot = np.exp(-(((yy - qy - rr * np.sin(da)) ** 2 + (xx - qx - rr * np.cos(da)) ** 2) / (1.6 * thick) ** 2))
        ring = np.maximum(ring, on * np.maximum(annulus, dot))
    img = _paint(img, strength[:, None, None] * ring * mask, _col(n, (105, 35, 125), 15, rng))
    return _to_uint8(img)


def _render_ultrasound(labels: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Breast-ultrasound-like speckle; malignant (0): large dark irregular lesion with a posterior shadow;
    normal/benign (1): no lesion, or a small smooth oval one with posterior enhancement."""
    n = len(labels)
    yy, xx = _grid(s)
    r = lambda lo, hi: rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)  # noqa: E731
    speckle = _blur(rng.rayleigh(1.0, (n, s, s)).astype(np.float32), max(0.5, s / 56))
    speckle /= speckle.mean(axis=(1, 2), keepdims=True)
    tissue = 0.42 + 0.12 * _smooth_noise(rng, n, s, s / 6) + 0.25 * np.exp(-(((yy + 0.78) / 0.14) ** 2))
    tissue = tissue * (1 - 0.35 * (yy + 1) / 2)  # depth attenuation
    malignant = (labels == 0)[:, None, None]
    benign_lesion = ((labels == 1) & (rng.random(n) < 0.6))[:, None, None]
    cy, cx = r(-0.25, 0.2), r(-0.3, 0.3)
    theta = np.arctan2(yy - cy, xx - cx)
    spikes = sum(r(0.04, 0.1) * np.sin(r(3, 9).round() * theta + r(0, 2 * np.pi)) for _ in range(3))
    rm = r(0.28, 0.45)
    mal = _sigmoid((1 - _ellipse(yy, xx, cy, cx, rm * r(0.9, 1.3), rm) / (1 + spikes)) / 0.05)
    rb = r(0.12, 0.3)
    lobes = 1 + r(0.0, 0.06) * np.sin(r(2, 4).round() * theta)  # benign: smooth or gently lobulated
    ben = _sigmoid((1 - _ellipse(yy, xx, cy, cx, rb * r(0.55, 0.85), rb) / lobes) / 0.06)
    below = _sigmoid((yy - cy) / 0.05)
    shadow = 1 - r(0.2, 0.5) * malignant * below * np.exp(-(((xx - cx) / (0.8 * rm)) ** 4))
    behind = below * np.exp(-(((xx - cx) / (0.8 * rb)) ** 4)) * _sigmoid((yy - cy - rb) / 0.05)
    enhance = 1 + 0.25 * benign_lesion * behind  # posterior enhancement behind a cyst-like lesion
    lesion = r(0.65, 0.9) * malignant * mal + r(0.45, 0.7) * benign_lesion * ben
    img = 255 * tissue * speckle * (1 - lesion) * shadow * enhance
    return _to_uint8(img)[..., None]


# ChestMNIST finding prevalences (approximately those of NIH ChestX-ray14)
_CHEST_PRIORS = [0.103, 0.025, 0.119, 0.177, 0.052, 0.056, 0.013, 0.047, 0.042, 0.021, 0.022, 0.015, 0.030, 0.004]


def _render_xray(findings: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Chest-X-ray-like images; ``findings`` is an N x 14 0/1 matrix in ChestMNIST's label order, each
    finding drawn with its own cue (bigger heart, fluid at the base, blobs, haze, dark rim, ...)."""
    n = len(findings)
    yy, xx = _grid(s)
    r = lambda lo, hi, m=n: rng.uniform(lo, hi, (m, 1, 1)).astype(np.float32)  # noqa: E731
    body = _sigmoid((1 - _ellipse(yy, xx, r(0.05, 0.15), 0, r(1.0, 1.1), r(0.86, 0.95))) / 0.06)
    img = 0.15 + 0.55 * body
    side = np.where(xx < 0, -1.0, 1.0)
    lung_cx = side * r(0.38, 0.44)
    emph = findings[:, 10][:, None, None].astype(np.float32)
    grow = 1 + 0.1 * emph  # emphysema: larger, darker lungs
    lung_r = _ellipse(yy, xx, r(-0.08, 0.0), lung_cx, r(0.55, 0.62) * grow, r(0.26, 0.31) * grow)
    lungs = _sigmoid((1 - lung_r) / 0.07)
    ribs = 0.04 * np.sin((yy * 7 + 0.8 * np.abs(xx)) * np.pi) * lungs
    img = img - (0.38 + 0.1 * emph) * lungs + ribs
    img = img + 0.25 * np.exp(-((xx / 0.08) ** 2)) * body  # spine / mediastinum
    cardio = findings[:, 1][:, None, None].astype(np.float32)
    heart_r = r(0.24, 0.28) * (1 + 0.45 * cardio)
    img = img + 0.3 * _sigmoid((1 - _ellipse(yy, xx, r(0.3, 0.38), r(0.08, 0.14), heart_r * 0.85, heart_r)) / 0.06)
    img = img + 0.05 * _smooth_noise(rng, n, s, s / 8)

    def add(k: int, fn: Callable[[int], np.ndarray]) -> None:
        idx = np.flatnonzero(findings[:, k])
        if len(idx):
            img[idx] += fn(len(idx)) * lungs[idx]

    def blob(m: int, rad: tuple[float, float], amp: float) -> np.ndarray:
        by = r(-0.45, 0.35, m)
        bx = np.where(r(0, 1, m) < 0.5, -1, 1) * r(0.3, 0.5, m)
        return amp * np.exp(-(((yy - by) ** 2 + (xx - bx) ** 2) / r(*rad, m) ** 2))

    def lower(m: int, top: float, amp: float) -> np.ndarray:
        return amp * _sigmoid((yy - r(top, top + 0.15, m) - 0.05 * np.sin(xx * 6)) / 0.05)

    add(0, lambda m: 0.22 * np.exp(-(((yy - r(0.2, 0.4, m) + 0.3 * np.abs(xx)) / 0.06) ** 2)))  # atelectasis
    add(2, lambda m: lower(m, 0.25, 0.45))  # effusion: fluid at the base
    add(3, lambda m: 0.22 * np.clip(_smooth_noise(rng, m, s, s / 10), 0, None))  # infiltration
    add(4, lambda m: blob(m, (0.12, 0.18), 0.45))  # mass
    add(5, lambda m: blob(m, (0.04, 0.06), 0.55))  # nodule
    add(6, lambda m: blob(m, (0.22, 0.3), 0.3))  # pneumonia
    add(7, lambda m: -0.25 * _sigmoid((np.abs(xx) - r(0.5, 0.6, m)) / 0.04)
        * _sigmoid(-(yy + 0.1) / 0.1))  # pneumothorax: dark, structureless rim at the apex
    add(8, lambda m: 0.4 * _sigmoid((1 - _ellipse(yy, xx, r(0.0, 0.3, m), np.where(r(0, 1, m) < 0.5, -0.4, 0.4),
                                                    0.22, 0.18)) / 0.04))  # consolidation: dense, sharp-edged
    add(9, lambda m: 0.3 * np.exp(-((np.abs(xx) - 0.25) ** 2 + (yy - 0.05) ** 2) / 0.08))  # edema, perihilar
    add(11, lambda m: 0.18 * (np.sin(xx * s * 0.9) * np.sin(yy * s * 0.9) > 0.5) * (yy > 0))  # fibrosis
    rim = _ellipse(yy, xx, -0.04, side * 0.41, 0.58, 0.28)
    add(12, lambda m: np.broadcast_to(0.35 * np.exp(-(((rim - 0.95) / 0.08) ** 2)), (m, s, s)))  # pleural thickening
    idx = np.flatnonzero(findings[:, 13])  # hernia: round shadow below the heart
    if len(idx):
        img[idx] += 0.3 * np.exp(-((yy - 0.72) ** 2 + (xx - 0.05) ** 2) / 0.02)
    img = img + 0.02 * rng.standard_normal((n, s, s)).astype(np.float32)
    return _to_uint8(255 * img)[..., None]


# Tissue classes of PathMNIST: background colour, nuclei (density per 28x28, radius in px at 28, colour,
# elongation), fibres (strength, anisotropy), white lumen fraction.
_PATH_STYLE = [
    dict(bg=(238, 232, 238), nd=3, nr=0.8, nc=(120, 70, 150), el=1.0, fib=0.9, an=1.0, lumen=0.75),  # adipose
    dict(bg=(226, 224, 230), nd=0, nr=0.8, nc=(120, 70, 150), el=1.0, fib=0.0, an=1.0, lumen=0.0),  # background
    dict(bg=(215, 160, 190), nd=30, nr=0.6, nc=(150, 80, 150), el=1.0, fib=0.3, an=1.0, lumen=0.0),  # debris
    dict(bg=(200, 150, 200), nd=90, nr=0.9, nc=(60, 30, 110), el=1.0, fib=0.0, an=1.0, lumen=0.0),  # lymphocytes
    dict(bg=(205, 195, 228), nd=2, nr=0.8, nc=(120, 80, 160), el=1.0, fib=0.3, an=3.0, lumen=0.0),  # mucus
    dict(bg=(222, 118, 160), nd=10, nr=0.8, nc=(110, 50, 130), el=3.0, fib=0.8, an=5.0, lumen=0.0),  # smooth muscle
    dict(bg=(218, 150, 190), nd=35, nr=0.9, nc=(90, 50, 140), el=1.0, fib=0.2, an=1.0, lumen=0.35),  # normal mucosa
    dict(bg=(232, 160, 188), nd=8, nr=0.7, nc=(110, 60, 140), el=2.5, fib=0.7, an=2.5, lumen=0.0),  # stroma
    dict(bg=(190, 120, 175), nd=45, nr=1.5, nc=(95, 45, 140), el=1.4, fib=0.1, an=1.0, lumen=0.1),  # adenocarcinoma
]


def _render_tissue(labels: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """H&E-like tissue textures, one style per PathMNIST class (nuclei density/size, fibres, lumina)."""
    n = len(labels)
    img = np.zeros((n, s, s, 3), np.float32)
    scale = s / 28
    for c, st in enumerate(_PATH_STYLE):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        m = len(idx)
        x = np.broadcast_to(_col(m, st["bg"], 22, rng), (m, s, s, 3)).copy()
        x += 10 * _smooth_noise(rng, m, s, 2 * scale)[..., None]
        if st["fib"]:
            fib = _smooth_noise(rng, m, s, (0.6 * scale, 0.6 * scale * st["an"]))
            x = _paint(x, st["fib"] * 0.5 * np.exp(-(fib / 0.35) ** 2), _col(m, (235, 130, 175), 10, rng))
        if st["lumen"]:
            lum = _smooth_noise(rng, m, s, 3 * scale)
            thr = np.quantile(lum, 1 - st["lumen"], axis=(1, 2), keepdims=True)
            x = _paint(x, _sigmoid((lum - thr) / 0.15), _col(m, (245, 242, 245), 6, rng))
        if st["nd"]:
            count = rng.poisson(st["nd"] * scale ** 2 * rng.uniform(0.4, 1.6, m))  # density varies per patch
            imp = np.zeros((m, s, s), np.float32)
            owner = np.repeat(np.arange(m), count)
            np.add.at(imp, (owner, rng.integers(0, s, owner.size), rng.integers(0, s, owner.size)), 1.0)
            rad = st["nr"] * scale
            blob = _blur(imp, (rad, rad * st["el"])) * (2 * np.pi * rad * rad * st["el"])
            x = _paint(x, np.clip(blob * 1.6, 0, 0.95), _col(m, st["nc"], 20, rng))
        img[idx] = x
    img *= rng.uniform(0.82, 1.18, (n, 1, 1, 3)).astype(np.float32)  # H&E stain varies from slide to slide
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return _to_uint8(img)


# DermaMNIST lesion styles: colour, radius, border irregularity, second colour share (variegation)
_DERMA_STYLE = [
    dict(c=(190, 105, 95), r=0.45, irr=0.18, c2=(225, 200, 190), v=0.35),  # actinic keratosis: red, scaly
    dict(c=(205, 150, 150), r=0.38, irr=0.08, c2=(170, 60, 70), v=0.15),  # basal cell carcinoma: pearly, vessels
    dict(c=(165, 120, 80), r=0.5, irr=0.1, c2=(130, 90, 60), v=0.3),  # benign keratosis: light brown, waxy
    dict(c=(150, 100, 80), r=0.25, irr=0.05, c2=(215, 180, 160), v=0.5),  # dermatofibroma: small, pale centre
    dict(c=(60, 40, 35), r=0.55, irr=0.25, c2=(95, 105, 135), v=0.45),  # melanoma: dark, blue-grey, irregular
    dict(c=(130, 85, 60), r=0.4, irr=0.04, c2=(115, 75, 50), v=0.1),  # nevus: uniform brown, round
    dict(c=(165, 45, 75), r=0.32, irr=0.12, c2=(110, 30, 80), v=0.4),  # vascular: red-purple, lobulated
]
_DERMA_PRIORS = [0.033, 0.051, 0.110, 0.011, 0.111, 0.670, 0.014]


def _render_skin(labels: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Dermoscopy-like: a lesion on skin, with class-specific colour, size, border and variegation."""
    n = len(labels)
    yy, xx = _grid(s)
    r = lambda lo, hi, m=n: rng.uniform(lo, hi, (m, 1, 1)).astype(np.float32)  # noqa: E731
    img = np.broadcast_to(_col(n, (225, 170, 145), 18, rng), (n, s, s, 3)).copy()
    img += 6 * _smooth_noise(rng, n, s, s / 14)[..., None]
    vignette = 1 - 0.35 * np.clip(yy ** 2 + xx ** 2 - 0.6, 0, None)
    for c, st in enumerate(_DERMA_STYLE):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        m = len(idx)
        cy, cx = r(-0.12, 0.12, m), r(-0.12, 0.12, m)
        theta = np.arctan2(yy - cy, xx - cx)
        wob = 1 + st["irr"] * (np.sin(r(2, 5, m).round() * theta + r(0, 6.3, m)) * r(0.5, 1, m)
                               + 0.6 * np.sin(r(6, 9, m).round() * theta + r(0, 6.3, m)))
        rad = st["r"] * r(0.8, 1.2, m)
        shape = _ellipse(yy, xx, cy, cx, rad * r(0.8, 1.0, m), rad) / wob
        mask = _sigmoid((1 - shape) / 0.06)
        x = _paint(img[idx], 0.92 * mask, _col(m, st["c"], 15, rng))
        var = _smooth_noise(rng, m, s, s / 12)
        x = _paint(x, mask * st["v"] * 2 * _sigmoid((var - 0.5) / 0.2), _col(m, st["c2"], 12, rng))
        img[idx] = x
    img = img * vignette[None, ..., None]
    return _to_uint8(img)


# BloodMNIST cell styles: cell radius, cytoplasm colour, nucleus colour, lobes, nucleus size, granules
_BLOOD_STYLE = [
    dict(r=0.42, cyto=(175, 150, 200), nuc=(60, 30, 95), lobes=1, nr=0.7, gran=(50, 25, 80)),  # basophil
    dict(r=0.45, cyto=(235, 160, 130), nuc=(105, 55, 140), lobes=2, nr=0.35, gran=(225, 110, 80)),  # eosinophil
    dict(r=0.3, cyto=(200, 160, 190), nuc=(45, 20, 70), lobes=1, nr=0.65, gran=None),  # erythroblast
    dict(r=0.55, cyto=(200, 175, 215), nuc=(130, 90, 175), lobes=1, nr=0.6, gran=None),  # immature granulocyte
    dict(r=0.32, cyto=(180, 190, 230), nuc=(85, 45, 150), lobes=1, nr=0.8, gran=None),  # lymphocyte
    dict(r=0.55, cyto=(190, 180, 212), nuc=(120, 80, 170), lobes=2, nr=0.5, gran=None),  # monocyte
    dict(r=0.45, cyto=(225, 195, 215), nuc=(95, 45, 140), lobes=4, nr=0.3, gran=None),  # neutrophil
    dict(r=0.0, cyto=(200, 160, 190), nuc=(120, 60, 150), lobes=0, nr=0.0, gran=None),  # platelets
]
_BLOOD_PRIORS = [0.071, 0.182, 0.091, 0.169, 0.071, 0.083, 0.195, 0.138]


def _render_blood(labels: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Blood-smear-like: pale red cells around one white cell whose nucleus/granules mark its type."""
    n = len(labels)
    yy, xx = _grid(s)
    r = lambda lo, hi, m=n: rng.uniform(lo, hi, (m, 1, 1)).astype(np.float32)  # noqa: E731
    img = np.broadcast_to(_col(n, (235, 220, 205), 10, rng), (n, s, s, 3)).copy()
    for _ in range(6):  # red blood cells (pale discs with a paler centre)
        cy, cx = r(-1, 1), r(-1, 1)
        d = _ellipse(yy, xx, cy, cx, 0.3, 0.3)
        img = _paint(img, 0.8 * _sigmoid((1 - d) / 0.08) * (1 - 0.4 * np.exp(-(d / 0.45) ** 2)),
                     _col(n, (225, 160, 160), 12, rng))
    for c, st in enumerate(_BLOOD_STYLE):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        m = len(idx)
        x = img[idx]
        cy, cx = r(-0.08, 0.08, m), r(-0.08, 0.08, m)
        if st["lobes"] == 0:  # platelets: a few small purple clumps
            for _ in range(4):
                py, px = cy + r(-0.4, 0.4, m), cx + r(-0.4, 0.4, m)
                x = _paint(x, 0.9 * np.exp(-(((yy - py) ** 2 + (xx - px) ** 2) / r(0.05, 0.08, m) ** 2)),
                           _col(m, st["nuc"], 12, rng))
            img[idx] = x
            continue
        rad = st["r"] * r(0.9, 1.1, m)
        cell = _sigmoid((1 - _ellipse(yy, xx, cy, cx, rad, rad * r(0.9, 1.1, m))) / 0.05)
        x = _paint(x, 0.95 * cell, _col(m, st["cyto"], 10, rng))
        nuc = np.zeros((m, s, s), np.float32)
        a0 = r(0, 2 * np.pi, m)
        for j in range(st["lobes"]):
            a = a0 + j * 2 * np.pi / st["lobes"]
            off = 0.0 if st["lobes"] == 1 else 0.45 * rad
            ly, lx = cy + off * np.sin(a), cx + off * np.cos(a)
            lr = rad * st["nr"]
            nuc = np.maximum(nuc, _sigmoid((1 - _ellipse(yy, xx, ly, lx, lr, lr * r(0.7, 1.0, m))) / 0.06))
        if st["gran"] is not None:
            gran = (rng.random((m, s, s)) < 0.25) * cell
            x = _paint(x, 0.7 * _blur(gran.astype(np.float32), max(0.5, s / 60)) * 2, _col(m, st["gran"], 10, rng))
        x = _paint(x, 0.95 * nuc * cell, _col(m, st["nuc"], 25, rng))
        img[idx] = x
    img *= rng.uniform(0.9, 1.1, (n, 1, 1, 3)).astype(np.float32)  # stain and lighting vary between smears
    img = _blur(img.transpose(0, 3, 1, 2).reshape(-1, s, s), rng.uniform(0.3, 0.9) * s / 28)
    img = img.reshape(n, 3, s, s).transpose(0, 2, 3, 1)
    img += rng.normal(0, 5, img.shape).astype(np.float32)
    return _to_uint8(img)


def _xray_pneumonia(labels: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """PneumoniaMNIST: label 1 (pneumonia) gets pneumonia + infiltration/consolidation haze."""
    f = np.zeros((len(labels), 14), np.uint8)
    sick = labels == 1
    f[:, 6] = sick
    f[:, 3] = sick & (rng.random(len(labels)) < 0.6)
    f[:, 8] = sick & (rng.random(len(labels)) < 0.4)
    return _render_xray(f, s, rng)


# flag -> (renderer, class priors or None for multi-label)
_STAND_INS: dict[str, tuple[Callable, Sequence[float] | None]] = {
    "breastmnist": (_render_ultrasound, [0.27, 0.73]),
    "chestmnist": (_render_xray, None),
    "pathmnist": (_render_tissue, [1 / 9] * 9),
    "dermamnist": (_render_skin, _DERMA_PRIORS),
    "pneumoniamnist": (_xray_pneumonia, [0.26, 0.74]),
    "bloodmnist": (_render_blood, _BLOOD_PRIORS),
}
MEDMNIST_FLAGS = tuple(_STAND_INS)


# ============================================================================ MedMNIST metadata
# The parts of medmnist.INFO the stand-ins need, so they work even without medmnist installed
# (tests check these against medmnist.INFO). medmnist_meta, check_flag_size and npz_name also serve
# data.load_medmnist, which reads the real files under the same names.
_MEDMNIST_META = {
    "breastmnist": ("binary-class", 1, {"train": 546, "val": 78, "test": 156},
                    ["malignant", "normal, benign"]),
    "chestmnist": ("multi-label, binary-class", 1, {"train": 78468, "val": 11219, "test": 22433},
                   ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"]),
    "pathmnist": ("multi-class", 3, {"train": 89996, "val": 10004, "test": 7180},
                  ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                   "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"]),
    "dermamnist": ("multi-class", 3, {"train": 7007, "val": 1003, "test": 2005},
                   ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                    "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                    "vascular lesions"]),
    "pneumoniamnist": ("binary-class", 1, {"train": 4708, "val": 524, "test": 624}, ["normal", "pneumonia"]),
    "bloodmnist": ("multi-class", 3, {"train": 11959, "val": 1712, "test": 3421},
                   ["basophil", "eosinophil", "erythroblast",
                    "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                    "monocyte", "neutrophil", "platelet"]),
}


def medmnist_meta(flag: str) -> dict[str, Any]:
    """task, n_channels, n_samples, class names and python class of a flag (from medmnist.INFO when installed)."""
    info = None
    if runtime.has_module("medmnist"):
        import medmnist  # noqa: PLC0415

        info = medmnist.INFO.get(flag)
    if info is not None:
        names = [info["label"][k] for k in sorted(info["label"], key=int)]
        return dict(task=info["task"], n_channels=int(info["n_channels"]), n_samples=dict(info["n_samples"]),
                    class_names=names, python_class=info["python_class"])
    task, ch, n_samples, names = _MEDMNIST_META[flag]
    return dict(task=task, n_channels=ch, n_samples=dict(n_samples), class_names=list(names), python_class=None)


def _valid_flags() -> list[str]:
    flags = set(MEDMNIST_FLAGS)
    if runtime.has_module("medmnist"):
        import medmnist  # noqa: PLC0415

        flags |= {f for f, i in medmnist.INFO.items() if not f.endswith("3d")}
    return sorted(flags)


def check_flag_size(flag: str, size: int) -> None:
    """A clear CourseError for a flag or size that MedMNIST does not have."""
    valid = _valid_flags()
    if flag not in valid:
        raise CourseError(f"unknown MedMNIST flag {flag!r}. Valid flags: {', '.join(valid)} "
                          f"(stand-ins exist for {', '.join(MEDMNIST_FLAGS)}).")
    if size not in MEDMNIST_SIZES:
        raise CourseError(f"MedMNIST has no size {size!r}. Valid sizes: {', '.join(map(str, MEDMNIST_SIZES))}.")


def npz_name(flag: str, size: int) -> str:
    """medmnist's file name for ``flag`` at ``size`` px (the real download and the stand-in alike)."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


# ============================================================================ making stand-ins
def make_medmnist_stand_in(flag: str, *, size: int = 28, root: str | os.PathLike) -> Path:
    """Write ``<root>/<flag>.npz`` (or ``<flag>_<size>.npz``) in medmnist's own format, with exactly
    ``INFO[flag]["n_samples"]`` images per split, so ``medmnist.<Flag>(root=root, download=False)`` loads it.

    Deterministic; an existing file with the right split sizes is reused.
    """
    check_flag_size(flag, size)
    if flag not in _STAND_INS:
        raise CourseError(f"there is no stand-in for {flag!r}; stand-ins exist for {', '.join(MEDMNIST_FLAGS)}. "
                          "Download the real data (internet, or put the npz file in `root`).")
    meta = medmnist_meta(flag)
    n_total = sum(meta["n_samples"].values())
    need = n_total * size * size * meta["n_channels"]
    if need > STAND_IN_MAX_BYTES:
        ok = [sz for sz in MEDMNIST_SIZES if n_total * sz * sz * meta["n_channels"] <= STAND_IN_MAX_BYTES]
        raise CourseError(
            f"a full {flag} stand-in at {size}px would need {need / 2**30:.1f} GiB of memory and disk "
            f"({n_total} images; medmnist insists on the real split sizes), more than the "
            f"{STAND_IN_MAX_BYTES / 2**30:.1f} GiB allowed. Sizes that work for the {flag} stand-in: "
            f"{', '.join(map(str, ok))}. The real data set at {size}px works once downloaded.")
    root = runtime.cache_dir("", base=root)  # not writable: a temporary folder, with a warning
    path = root / npz_name(flag, size)
    if path.exists():  # reused only when the whole file is intact and has medmnist's split sizes
        channels = () if meta["n_channels"] == 1 else (meta["n_channels"],)
        n_labels = 14 if _STAND_INS[flag][1] is None else 1
        expected = {}
        for sp, n in meta["n_samples"].items():
            expected[f"{sp}_images"] = ((n, size, size, *channels), np.dtype(np.uint8))
            expected[f"{sp}_labels"] = ((n, n_labels), np.dtype(np.uint8))
        problem = _npz_problem(path, expected)
        if problem is None:
            return path
        _discard_damaged(path, problem)
    render, priors = _STAND_INS[flag]
    arrays: dict[str, np.ndarray] = {}
    chunk = max(64, int(2**22 // (size * size)))  # ~4 M pixels per chunk keeps memory small
    from tqdm.auto import tqdm  # noqa: PLC0415

    with tqdm(total=n_total, desc=f"{flag} stand-in {size}px", disable=n_total < 5000, leave=False) as bar:
        for split, n in meta["n_samples"].items():
            rng = _stand_in_rng("medmnist", flag, split, size)
            if priors is None:
                labels = (rng.random((n, 14)) < np.asarray(_CHEST_PRIORS)).astype(np.uint8)
            else:
                labels = _labels_from_priors(n, priors, rng)
            images = np.empty((n, size, size, meta["n_channels"]), np.uint8)
            for i, start in enumerate(range(0, n, chunk)):
                stop = min(n, start + chunk)
                chunk_rng = _stand_in_rng("medmnist", flag, split, size, i)
                images[start:stop] = render(labels[start:stop], size, chunk_rng)
                bar.update(stop - start)
            arrays[f"{split}_images"] = images[..., 0] if meta["n_channels"] == 1 else images
            arrays[f"{split}_labels"] = labels.reshape(n, -1).astype(np.uint8)
    failed = _save_npz(path, **arrays)
    if failed is not None or not path.exists():
        full = getattr(failed, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        raise CourseError(f"could not write the stand-in {path} ({failed}); medmnist reads it from disk, so "
                          + ("free some space on that disk, or " if full else "")
                          + "set COURSE_CACHE to a writable folder with room for it.")
    return path


def make_malaria_stand_in(n: int, *, image_size: int = 64, seed: int = 0,
                          cache_dir: str | os.PathLike | None = None, cache: bool = True
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` malaria-like cells (uint8 N x S x S x 3) with labels (0 = parasitized, 1 = uninfected, half each).

    Deterministic for a given (n, image_size, seed); cached on disk (``cache_dir`` or the course cache).
    """
    if n < 2:
        raise CourseError(f"a malaria stand-in needs at least 2 images, not {n}.")
    if image_size < 8:
        raise CourseError(f"image_size must be at least 8 pixels, not {image_size}.")
    path = None
    if cache:
        path = _stand_in_dir(cache_dir) / f"malaria_{STAND_IN_VERSION}_n{n}_{image_size}px_seed{seed}.npz"
        if path.exists():
            found = _read_malaria_cache(path, n, image_size)
            if found is not None:
                return found
    labels = _labels_from_priors(n, [0.5, 0.5], _stand_in_rng("malaria", seed, n))
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    chunk = max(32, int(2**21 // (image_size * image_size)))
    from tqdm.auto import tqdm  # noqa: PLC0415

    starts = range(0, n, chunk)
    for i, start in enumerate(tqdm(starts, total=len(starts), desc="malaria stand-in",
                                   disable=n * image_size ** 2 < 2e7, leave=False)):
        stop = min(n, start + chunk)
        images[start:stop] = _render_malaria(labels[start:stop], image_size, _stand_in_rng("malaria", seed, n, i))
    if path is not None:
        _save_npz(path, images=images, labels=labels)
    return images, labels


def _read_malaria_cache(path: Path, n: int, image_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, read in full (every byte checked against the zip's CRC-32); None, with a
    one-line warning and the file deleted, when the file is damaged or holds other shapes."""
    try:
        with np.load(path) as z:
            images, labels = z["images"], z["labels"]
    except _DAMAGE_ERRORS as exc:
        _discard_damaged(path, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        return None
    if images.shape != (n, image_size, image_size, 3) or images.dtype != np.uint8 or labels.shape != (n,):
        _discard_damaged(path, f"images {images.dtype}{list(images.shape)}, labels {list(labels.shape)}")
        return None
    return images, labels
