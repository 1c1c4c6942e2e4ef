"""Stand-in renderers: synthetic images in the real data sets' format, and their calibration (numpy/scipy only).

What: a *stand-in* replaces a real data set (NIH malaria cells, a MedMNIST flag) when it cannot be
downloaded (offline, a firewall, CI). Its images are drawn here, each class with a cue modelled on the
real one (ring-shaped parasites in a cell, a dark irregular lesion with a shadow, an enlarged heart, ...),
with the same class names and label order and the real class balance. Writing them to disk in medmnist's
own npz layout, the cache and ``stand_in_sample`` live in :mod:`.standin_cache`.

Why: every lesson must run end to end anywhere, and its assertions ("the loss fell", "above chance")
must mean something; random noise would teach nothing and could not be learned. Nor may a stand-in be
easier than the real data: when every model scores AUC 1.000, a lesson comparing losses or strategies
shows nothing. So each stand-in has a difficulty knob (``DIFFICULTY``) that adds the kind of ambiguity the
real data has (overlapping lesion looks, patches on a tissue border, occult findings, faint ring-like
objects), calibrated so that a reference model lands near the published result on the real data set
(``benchmarks/standin_calibration.py`` prints the comparison). The numbers are stand-in results, not real
ones: the loaders in :mod:`.data` set ``info.source = "stand-in"`` and show a banner.

How: every renderer is ``render(labels, size, rng, difficulty=None) -> uint8 N x S x S x C`` and
deterministic for a given generator (:func:`stand_in_rng` seeds one from a readable key). ``STAND_INS``
maps each MedMNIST flag to its renderer and class priors; :func:`draw_labels` draws a split's labels with
the real balance. Calibration sits next to each renderer: class priors from the real data sets' counts
(``_CHEST_PRIORS``, ``_PATH_PRIORS`` and ``_PNEUMONIA_PRIORS`` per split, ``_DERMA_PRIORS``,
``_BLOOD_PRIORS``), per-class styles (``_PATH_STYLE``, ``_DERMA_STYLE``, ``_BLOOD_STYLE``) and the classes
each is confused with (``_PATH_PARTNERS``, ``_DERMA_PARTNERS``, ``_BLOOD_PARTNERS``). Bump
``RENDERER_VERSION`` when a renderer changes: it is part of every cache name.
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

import numpy as np

from ..runtime import CourseError
from . import _drawing as draw
from .splits import allocate

__all__ = ["DIFFICULTY", "MEDMNIST_FLAGS", "RENDERER_VERSION", "STAND_INS", "draw_labels",
           "labels_from_priors", "render_malaria", "stand_in_rng"]

RENDERER_VERSION = "v2"  # bump it when a renderer changes (v2: difficulty knobs, real class balances)

# Difficulty knobs, calibrated with benchmarks/standin_calibration.py so that its reference CNN lands near
# the published result on the real data set (MedMNIST v2 ResNet-18 at 28 px; NIH malaria cell-level
# accuracy ~0.95-0.97). What each one means is in its renderer's docstring. Their values are part of
# standin_cache.STAND_IN_VERSION, so changing one here never reuses a cache drawn with another (to try a
# value, pass ``difficulty=`` to ``stand_in_sample`` rather than changing this dict at run time).
DIFFICULTY: dict[str, float] = {
    "malaria": 0.04,  # share of cells, in each class, with one faint ring-like object (ambiguous)
    "breastmnist": 2.4,  # d': separation of the latent malignant look of malignant vs benign lesions
    "chestmnist": 0.35,  # share of positive findings that do not show (occult)
    "pathmnist": 0.15,  # share of patches partly covered by a tissue they are confused with
    "dermamnist": 0.7,  # share of lesions whose look is moved toward a class they are confused with
    "pneumoniamnist": 0.25,  # share of the pneumonia findings that do not show
    "bloodmnist": 0.03,  # share of atypical white cells, drawn like a class they are confused with
}


def _knob(name: str, value: float | None) -> float:
    """``value``, or the calibrated ``DIFFICULTY[name]`` when it is None (checked to be a sane number)."""
    v = DIFFICULTY[name] if value is None else float(value)
    if not np.isfinite(v) or v < 0 or (name != "breastmnist" and v > 1):
        raise CourseError(f"difficulty for {name} must be " + ("a separation >= 0" if name == "breastmnist"
                          else "a share between 0 and 1") + f", not {value!r}.")
    return v


# ============================================================================ labels and seeds
def stand_in_rng(*key: Any) -> np.random.Generator:
    """A generator seeded from a readable key, e.g. ("medmnist", flag, split, size, chunk)."""
    parts = [zlib.crc32(str(k).encode()) if not isinstance(k, (int, np.integer)) else int(k) for k in key]
    return np.random.default_rng(parts)


def labels_from_priors(n: int, priors: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Exactly ``round(prior * n)`` labels per class (largest remainders), shuffled."""
    counts = allocate(np.round(np.asarray(priors) * 1_000_000).astype(np.int64), n)
    return rng.permutation(np.repeat(np.arange(len(priors)), counts)).astype(np.int64)


# ============================================================================ stand-in renderers
def render_malaria(labels: np.ndarray, s: int, rng: np.random.Generator, difficulty: float | None = None
                    ) -> np.ndarray:
    """Round pinkish cells on a dark background; parasitized (0) ones carry 1-3 purple ring forms.

    Difficulty (``DIFFICULTY["malaria"]``): the share of cells, in each class, that carry one faint, small
    ring-like object drawn the same way in both classes: an early ring form in a parasitized cell, a stain
    precipitate or an overlying platelet in an uninfected one. These cells cannot be told apart, so about
    half of them are misread by any model: accuracy ~ 1 - difficulty / 2 at best.
    """
    ambiguous = _knob("malaria", difficulty)
    n = len(labels)
    yy, xx = draw.grid(s)
    r = lambda lo, hi: rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)  # noqa: E731
    cy, cx = r(-0.08, 0.08), r(-0.08, 0.08)
    rad = r(0.66, 0.84)
    shape = draw.ellipse(yy, xx, cy, cx, rad * r(0.85, 1.0), rad, theta=r(0, np.pi))
    shape = shape + 0.04 * draw.smooth_noise(rng, n, s, s / 10)  # a slightly irregular membrane
    edge = max(0.03, 1.0 / s)
    mask = draw.sigmoid((1 - shape) / edge)
    bg = rng.uniform(0, 12, (n, 1, 1, 1)).astype(np.float32) + rng.normal(0, 3, (n, s, s, 1)).astype(np.float32)
    cell = draw.col(n, (222, 150, 170), 14, rng)
    shading = (0.82 + 0.18 * (1 - np.clip(shape, 0, 1) ** 2))[..., None]  # paler centre, darker rim
    texture = 6 * draw.smooth_noise(rng, n, s, s / 24)[..., None]
    img = bg * (1 - mask[..., None]) + (cell * shading + texture) * mask[..., None]
    # a faint pale inclusion on some cells of both classes (so "any spot" is not the answer)
    pale = (rng.random(n) < 0.35)[:, None, None]
    py, px = cy + r(-0.3, 0.3), cx + r(-0.3, 0.3)
    spot = np.exp(-(((yy - py) ** 2 + (xx - px) ** 2) / r(0.08, 0.14) ** 2))
    img = draw.paint(img, 0.35 * spot * pale * mask, draw.col(n, (185, 125, 165), 10, rng))
    # stain debris: a small dark dot (not a ring) on some cells of both classes, a classic false positive
    debris = (rng.random(n) < 0.2)[:, None, None]
    dy_, dx_ = cy + r(-0.4, 0.4), cx + r(-0.4, 0.4)
    dot_r = max(0.05, 1.0 / s)
    img = draw.paint(img, 0.75 * debris * np.exp(-(((yy - dy_) ** 2 + (xx - dx_) ** 2) / dot_r ** 2)) * mask,
                 draw.col(n, (120, 60, 130), 15, rng))
    # parasites: ring forms (annulus + chromatin dot), 1-3 per parasitized cell; some early, faint ones
    parasitized = labels == 0
    k = rng.choice([1, 1, 1, 2, 3], n) * parasitized
    strength = np.where(rng.random(n) < 0.15, rng.uniform(0.25, 0.45, n), rng.uniform(0.7, 0.95, n))
    # ambiguous cells (both classes alike): a single faint, small ring-like object
    hard = rng.random(n) < ambiguous
    k = np.where(hard, 1, k)
    strength = np.where(hard, rng.uniform(0.2, 0.5, n), strength)
    small = np.where(hard, rng.uniform(0.05, 0.09, n), rng.uniform(0.07, 0.14, n))[:, None, None]
    ring = np.zeros((n, s, s), np.float32)
    thick = max(0.04, 1.0 / s)
    for j in range(3):
        on = (k > j)[:, None, None]
        ang, dist = r(0, 2 * np.pi), np.sqrt(r(0, 1)) * 0.55 * rad
        qy, qx = cy + dist * np.sin(ang), cx + dist * np.cos(ang)
        rr = small if j == 0 else r(0.07, 0.14)
        d = np.sqrt((yy - qy) ** 2 + (xx - qx) ** 2)
        annulus = np.exp(-(((d - rr) / thick) ** 2))
        da = r(0, 2 * np.pi)
        dot = np.exp(-(((yy - qy - rr * np.sin(da)) ** 2 + (xx - qx - rr * np.cos(da)) ** 2) / (1.6 * thick) ** 2))
        ring = np.maximum(ring, on * np.maximum(annulus, dot))
    img = draw.paint(img, strength[:, None, None] * ring * mask, draw.col(n, (105, 35, 125), 15, rng))
    return draw.to_uint8(img)


_BREAST_NO_LESION = 133 / 570  # share of BreastMNIST's "normal, benign" images that are normal (no lesion)


def _render_ultrasound(labels: np.ndarray, s: int, rng: np.random.Generator, difficulty: float | None = None
                       ) -> np.ndarray:
    """Breast-ultrasound-like speckle with a lesion whose look runs from benign to malignant.

    Every malignant (0) image and 77 % of the normal/benign (1) ones (the rest are normal: no lesion) show a
    lesion whose *malignant look* ``t`` in [0, 1] sets all its features together: a large, dark, taller-than-
    wide, spiculated lesion with a posterior shadow at t = 1; a small, smooth, wider-than-tall oval with
    posterior enhancement at t = 0. ``t`` comes from a latent score that is N(+d/2, 1) for malignant and
    N(-d/2, 1) for benign lesions, so the classes overlap like real indeterminate lesions (BI-RADS 4).
    Difficulty (``DIFFICULTY["breastmnist"]``) is that separation d (d'; smaller is harder): even a model
    that reads ``t`` perfectly reaches only AUC 0.23 + 0.77 * Phi(d / sqrt 2).
    """
    d = _knob("breastmnist", difficulty)
    n = len(labels)
    yy, xx = draw.grid(s)
    r = lambda lo, hi: rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)  # noqa: E731
    speckle = draw.blur(rng.rayleigh(1.0, (n, s, s)).astype(np.float32), max(0.5, s / 56))
    speckle /= speckle.mean(axis=(1, 2), keepdims=True)
    tissue = 0.42 + 0.12 * draw.smooth_noise(rng, n, s, s / 6) + 0.25 * np.exp(-(((yy + 0.78) / 0.14) ** 2))
    tissue = tissue * (1 - 0.35 * (yy + 1) / 2)  # depth attenuation
    malignant = labels == 0
    has = (malignant | (rng.random(n) >= _BREAST_NO_LESION))[:, None, None].astype(np.float32)
    z = rng.standard_normal(n) + np.where(malignant, d / 2, -d / 2)
    t = draw.sigmoid(1.7 * z).astype(np.float32)[:, None, None]  # the lesion's malignant look
    lerp = lambda a, b: a + (b - a) * t  # noqa: E731
    cy, cx = r(-0.25, 0.2), r(-0.3, 0.3)
    theta = np.arctan2(yy - cy, xx - cx)
    spikes = sum(r(0.04, 0.1) * np.sin(r(3, 9).round() * theta + r(0, 2 * np.pi)) for _ in range(3))
    lobes = r(0.0, 0.06) * np.sin(r(2, 4).round() * theta)  # benign: smooth or gently lobulated
    rad = lerp(r(0.12, 0.3), r(0.28, 0.45))
    tall = lerp(r(0.55, 0.85), r(0.9, 1.3))  # height / width: benign wider-than-tall, malignant taller
    shape = draw.ellipse(yy, xx, cy, cx, rad * tall, rad) / (1 + t * spikes + (1 - t) * lobes)
    mask = has * draw.sigmoid((1 - shape) / 0.055)
    below = draw.sigmoid((yy - cy) / 0.05)
    column = below * np.exp(-(((xx - cx) / (0.8 * rad)) ** 4))
    shadow = 1 - has * t * r(0.2, 0.5) * column
    enhance = 1 + 0.25 * has * (1 - t) * column * draw.sigmoid((yy - cy - rad) / 0.05)  # behind a cyst-like lesion
    dark = lerp(r(0.45, 0.7), r(0.65, 0.9))
    img = 255 * tissue * speckle * (1 - dark * mask) * shadow * enhance
    return draw.to_uint8(img)[..., None]


# ChestMNIST finding prevalences: those of NIH ChestX-ray14 (counts of 112,120 images: 11,559 atelectasis,
# 2,776 cardiomegaly, 13,317 effusion, 19,894 infiltration, 5,782 mass, 6,331 nodule, 1,431 pneumonia,
# 5,302 pneumothorax, 4,667 consolidation, 2,303 edema, 2,516 emphysema, 1,686 fibrosis, 3,385 pleural
# thickening, 227 hernia)
_CHEST_PRIORS = [0.103, 0.025, 0.119, 0.177, 0.052, 0.056, 0.013, 0.047, 0.042, 0.021, 0.022, 0.015, 0.030, 0.002]


def _render_xray(findings: np.ndarray, s: int, rng: np.random.Generator, difficulty: float | None = None,
                 *, knob: str = "chestmnist") -> np.ndarray:
    """Chest-X-ray-like images; ``findings`` is an N x 14 0/1 matrix in ChestMNIST's label order, each
    finding drawn with its own cue (bigger heart, fluid at the base, blobs, haze, dark rim, ...).

    Difficulty (``DIFFICULTY["chestmnist"]``): the share of positive findings that do not show on the
    image (occult: too small, behind the heart, or a label the report mined from text got wrong, as in
    ChestX-ray14's NLP labels); a visible one shows with an intensity between 35 % and 100 % of its cue.
    """
    occult = _knob(knob, difficulty)
    n = len(findings)
    # how strongly each finding shows (0 where absent or occult)
    vis = (findings.astype(np.float32) * (rng.random(findings.shape) >= occult)
           * rng.uniform(0.35, 1.0, findings.shape).astype(np.float32))
    yy, xx = draw.grid(s)
    r = lambda lo, hi, m=n: rng.uniform(lo, hi, (m, 1, 1)).astype(np.float32)  # noqa: E731
    body = draw.sigmoid((1 - draw.ellipse(yy, xx, r(0.05, 0.15), 0, r(1.0, 1.1), r(0.86, 0.95))) / 0.06)
    img = 0.15 + 0.55 * body
    side = np.where(xx < 0, -1.0, 1.0)
    lung_cx = side * r(0.38, 0.44)
    emph = vis[:, 10][:, None, None]
    grow = 1 + 0.1 * emph  # emphysema: larger, darker lungs
    lung_r = draw.ellipse(yy, xx, r(-0.08, 0.0), lung_cx, r(0.55, 0.62) * grow, r(0.26, 0.31) * grow)
    lungs = draw.sigmoid((1 - lung_r) / 0.07)
    ribs = 0.04 * np.sin((yy * 7 + 0.8 * np.abs(xx)) * np.pi) * lungs
    img = img - (0.38 + 0.1 * emph) * lungs + ribs
    img = img + 0.25 * np.exp(-((xx / 0.08) ** 2)) * body  # spine / mediastinum
    cardio = vis[:, 1][:, None, None]
    heart_r = r(0.24, 0.28) * (1 + 0.45 * cardio)
    img = img + 0.3 * draw.sigmoid((1 - draw.ellipse(yy, xx, r(0.3, 0.38), r(0.08, 0.14), heart_r * 0.85, heart_r)) / 0.06)
    img = img + 0.05 * draw.smooth_noise(rng, n, s, s / 8)

    def add(k: int, fn: Callable[[int], np.ndarray]) -> None:
        idx = np.flatnonzero(findings[:, k])
        if len(idx):
            img[idx] += fn(len(idx)) * lungs[idx] * vis[idx, k][:, None, None]

    def blob(m: int, rad: tuple[float, float], amp: float) -> np.ndarray:
        by = r(-0.45, 0.35, m)
        bx = np.where(r(0, 1, m) < 0.5, -1, 1) * r(0.3, 0.5, m)
        return amp * np.exp(-(((yy - by) ** 2 + (xx - bx) ** 2) / r(*rad, m) ** 2))

    def lower(m: int, top: float, amp: float) -> np.ndarray:
        return amp * draw.sigmoid((yy - r(top, top + 0.15, m) - 0.05 * np.sin(xx * 6)) / 0.05)

    add(0, lambda m: 0.22 * np.exp(-(((yy - r(0.2, 0.4, m) + 0.3 * np.abs(xx)) / 0.06) ** 2)))  # atelectasis
    add(2, lambda m: lower(m, 0.25, 0.45))  # effusion: fluid at the base
    add(3, lambda m: 0.22 * np.clip(draw.smooth_noise(rng, m, s, s / 10), 0, None))  # infiltration
    add(4, lambda m: blob(m, (0.12, 0.18), 0.45))  # mass
    add(5, lambda m: blob(m, (0.04, 0.06), 0.55))  # nodule
    add(6, lambda m: blob(m, (0.22, 0.3), 0.3))  # pneumonia
    add(7, lambda m: -0.25 * draw.sigmoid((np.abs(xx) - r(0.5, 0.6, m)) / 0.04)
        * draw.sigmoid(-(yy + 0.1) / 0.1))  # pneumothorax: dark, structureless rim at the apex
    add(8, lambda m: 0.4 * draw.sigmoid((1 - draw.ellipse(yy, xx, r(0.0, 0.3, m), np.where(r(0, 1, m) < 0.5, -0.4, 0.4),
                                                    0.22, 0.18)) / 0.04))  # consolidation: dense, sharp-edged
    add(9, lambda m: 0.3 * np.exp(-((np.abs(xx) - 0.25) ** 2 + (yy - 0.05) ** 2) / 0.08))  # edema, perihilar
    add(11, lambda m: 0.18 * (np.sin(xx * s * 0.9) * np.sin(yy * s * 0.9) > 0.5) * (yy > 0))  # fibrosis
    rim = draw.ellipse(yy, xx, -0.04, side * 0.41, 0.58, 0.28)
    add(12, lambda m: np.broadcast_to(0.35 * np.exp(-(((rim - 0.95) / 0.08) ** 2)), (m, s, s)))  # pleural thickening
    idx = np.flatnonzero(findings[:, 13])  # hernia: round shadow below the heart
    if len(idx):
        img[idx] += 0.3 * vis[idx, 13][:, None, None] * np.exp(-((yy - 0.72) ** 2 + (xx - 0.05) ** 2) / 0.02)
    img = img + 0.02 * rng.standard_normal((n, s, s)).astype(np.float32)
    return draw.to_uint8(255 * img)[..., None]


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


# Tissues a PathMNIST patch can be confused with (the confusions reported for NCT-CRC-HE: muscle and
# stroma, debris and mucus, normal mucosa and tumour, adipose and background, ...)
_PATH_PARTNERS = [[1], [0], [4, 3, 8], [2], [2, 7], [7], [8], [5], [6, 2]]
# PathMNIST class balance: train and val come from NCT-CRC-HE-100K, test from CRC-VAL-HE-7K
_PATH_PRIORS = {
    "train": np.array([10407, 10566, 11512, 11557, 8896, 13536, 8763, 10446, 14317]) / 100_000,
    "test": np.array([1338, 847, 339, 634, 1035, 592, 741, 421, 1233]) / 7180,
}
_PATH_PRIORS["val"] = _PATH_PRIORS["train"]


def _tissue_texture(labels: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Float RGB textures (n x s x s x 3), one style per PathMNIST class, before stain and noise."""
    n = len(labels)
    img = np.zeros((n, s, s, 3), np.float32)
    scale = s / 28
    for c, st in enumerate(_PATH_STYLE):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        m = len(idx)
        x = np.broadcast_to(draw.col(m, st["bg"], 22, rng), (m, s, s, 3)).copy()
        x += 10 * draw.smooth_noise(rng, m, s, 2 * scale)[..., None]
        if st["fib"]:
            fib = draw.smooth_noise(rng, m, s, (0.6 * scale, 0.6 * scale * st["an"]))
            x = draw.paint(x, st["fib"] * 0.5 * np.exp(-(fib / 0.35) ** 2), draw.col(m, (235, 130, 175), 10, rng))
        if st["lumen"]:
            lum = draw.smooth_noise(rng, m, s, 3 * scale)
            thr = np.quantile(lum, 1 - st["lumen"], axis=(1, 2), keepdims=True)
            x = draw.paint(x, draw.sigmoid((lum - thr) / 0.15), draw.col(m, (245, 242, 245), 6, rng))
        if st["nd"]:
            count = rng.poisson(st["nd"] * scale ** 2 * rng.uniform(0.4, 1.6, m))  # density varies per patch
            imp = np.zeros((m, s, s), np.float32)
            owner = np.repeat(np.arange(m), count)
            np.add.at(imp, (owner, rng.integers(0, s, owner.size), rng.integers(0, s, owner.size)), 1.0)
            rad = st["nr"] * scale
            blob = draw.blur(imp, (rad, rad * st["el"])) * (2 * np.pi * rad * rad * st["el"])
            x = draw.paint(x, np.clip(blob * 1.6, 0, 0.95), draw.col(m, st["nc"], 20, rng))
        img[idx] = x
    return img


def _partners(labels: np.ndarray, table: Sequence[Sequence[int]], rng: np.random.Generator) -> np.ndarray:
    """For each label, one of the classes it is confused with (``table[label]``), chosen at random."""
    pick = rng.random(len(labels))
    return np.array([table[c][int(u * len(table[c]))] for c, u in zip(labels, pick)], dtype=np.int64)


def _render_tissue(labels: np.ndarray, s: int, rng: np.random.Generator, difficulty: float | None = None
                   ) -> np.ndarray:
    """H&E-like tissue textures, one style per PathMNIST class (nuclei density/size, fibres, lumina).

    Difficulty (``DIFFICULTY["pathmnist"]``): the share of patches that lie on a border with a tissue they
    are often confused with (``_PATH_PARTNERS``); that tissue covers a random share (uniform in 0-1) of the
    patch, so about half of these patches show more of the other tissue than of their own.
    """
    mixed_share = _knob("pathmnist", difficulty)
    n = len(labels)
    img = _tissue_texture(labels, s, rng)
    mixed = np.flatnonzero(rng.random(n) < mixed_share)
    if len(mixed):
        m = len(mixed)
        other = _tissue_texture(_partners(labels[mixed], _PATH_PARTNERS, rng), s, rng)
        field = draw.smooth_noise(rng, m, s, 4 * s / 28)  # smooth regions: where the other tissue lies
        share = rng.uniform(0, 1, m)
        ranked = np.sort(field.reshape(m, -1), axis=1)
        thr = ranked[np.arange(m), np.minimum((1 - share) * s * s, s * s - 1).astype(int)][:, None, None]
        a = draw.sigmoid((field - thr) / 0.1)[..., None]
        img[mixed] = img[mixed] * (1 - a) + other * a
    img *= rng.uniform(0.82, 1.18, (n, 1, 1, 3)).astype(np.float32)  # H&E stain varies from slide to slide
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return draw.to_uint8(img)


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
_DERMA_PRIORS = list(np.array([327, 514, 1099, 115, 1113, 6705, 142]) / 10015)  # HAM10000's 10,015 images


# Lesions a DermaMNIST class is confused with (most errors on HAM10000 involve nevi, melanoma and keratoses)
_DERMA_PARTNERS = [[2, 1], [2, 5], [5, 4, 0], [5], [5], [4, 2], [5]]


def _render_skin(labels: np.ndarray, s: int, rng: np.random.Generator, difficulty: float | None = None
                 ) -> np.ndarray:
    """Dermoscopy-like: a lesion on skin, with class-specific colour, size, border and variegation.

    Difficulty (``DIFFICULTY["dermamnist"]``): the share of lesions whose look (colour, size, border,
    variegation) lies between their class's and that of a class they are often confused with
    (``_DERMA_PARTNERS``: a nevus that looks like a melanoma, ...), by a random amount (uniform in 0-1): about
    half of them look more like the other class.
    """
    mixed_share = _knob("dermamnist", difficulty)
    n = len(labels)
    yy, xx = draw.grid(s)
    r = lambda lo, hi, m=n: rng.uniform(lo, hi, (m, 1, 1)).astype(np.float32)  # noqa: E731
    img = np.broadcast_to(draw.col(n, (225, 170, 145), 18, rng), (n, s, s, 3)).copy()
    img += 6 * draw.smooth_noise(rng, n, s, s / 14)[..., None]
    vignette = 1 - 0.35 * np.clip(yy ** 2 + xx ** 2 - 0.6, 0, None)
    # each lesion's style: its class's, moved toward a partner class's by w (0 for most lesions)
    partner = _partners(labels, _DERMA_PARTNERS, rng)
    w = np.where(rng.random(n) < mixed_share, rng.uniform(0, 1, n), 0.0)
    style = {k: np.array([st[k] for st in _DERMA_STYLE], np.float32) for k in _DERMA_STYLE[0]}
    mix = {k: (1 - w[:, None]) * v[labels].reshape(n, -1) + w[:, None] * v[partner].reshape(n, -1)
           for k, v in style.items()}
    def col(rgb: np.ndarray, jitter: float) -> np.ndarray:  # n colours (n x 1 x 1 x 3), +-jitter per channel
        return (rgb + rng.uniform(-jitter, jitter, (n, 3))).astype(np.float32)[:, None, None, :]

    cy, cx = r(-0.12, 0.12), r(-0.12, 0.12)
    theta = np.arctan2(yy - cy, xx - cx)
    irr = mix["irr"][:, :, None]
    wob = 1 + irr * (np.sin(r(2, 5).round() * theta + r(0, 6.3)) * r(0.5, 1)
                     + 0.6 * np.sin(r(6, 9).round() * theta + r(0, 6.3)))
    rad = mix["r"][:, :, None] * r(0.8, 1.2)
    shape = draw.ellipse(yy, xx, cy, cx, rad * r(0.8, 1.0), rad) / wob
    mask = draw.sigmoid((1 - shape) / 0.06)
    img = draw.paint(img, 0.92 * mask, col(mix["c"], 15))
    var = draw.smooth_noise(rng, n, s, s / 12)
    img = draw.paint(img, mask * mix["v"][:, :, None] * 2 * draw.sigmoid((var - 0.5) / 0.2), col(mix["c2"], 12))
    img = img * vignette[None, ..., None]
    return draw.to_uint8(img)


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


# White cells a BloodMNIST class is confused with (immature granulocytes with monocytes and neutrophils,
# lymphocytes with erythroblasts, ...)
_BLOOD_PARTNERS = [[3], [6], [4], [5, 6], [2, 5], [3, 4], [3, 1], [2]]


def _render_blood(labels: np.ndarray, s: int, rng: np.random.Generator, difficulty: float | None = None
                  ) -> np.ndarray:
    """Blood-smear-like: pale red cells around one white cell whose nucleus/granules mark its type.

    Difficulty (``DIFFICULTY["bloodmnist"]``): the share of atypical cells, drawn like a class they are often
    confused with (``_BLOOD_PARTNERS``), which no model can get right.
    """
    atypical = _knob("bloodmnist", difficulty)
    n = len(labels)
    swap = rng.random(n) < atypical
    labels = labels.copy()
    labels[swap] = _partners(labels[swap], _BLOOD_PARTNERS, rng)  # the look, not the label
    yy, xx = draw.grid(s)
    r = lambda lo, hi, m=n: rng.uniform(lo, hi, (m, 1, 1)).astype(np.float32)  # noqa: E731
    img = np.broadcast_to(draw.col(n, (235, 220, 205), 10, rng), (n, s, s, 3)).copy()
    for _ in range(6):  # red blood cells (pale discs with a paler centre)
        cy, cx = r(-1, 1), r(-1, 1)
        d = draw.ellipse(yy, xx, cy, cx, 0.3, 0.3)
        img = draw.paint(img, 0.8 * draw.sigmoid((1 - d) / 0.08) * (1 - 0.4 * np.exp(-(d / 0.45) ** 2)),
                     draw.col(n, (225, 160, 160), 12, rng))
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
                x = draw.paint(x, 0.9 * np.exp(-(((yy - py) ** 2 + (xx - px) ** 2) / r(0.05, 0.08, m) ** 2)),
                           draw.col(m, st["nuc"], 12, rng))
            img[idx] = x
            continue
        rad = st["r"] * r(0.9, 1.1, m)
        cell = draw.sigmoid((1 - draw.ellipse(yy, xx, cy, cx, rad, rad * r(0.9, 1.1, m))) / 0.05)
        x = draw.paint(x, 0.95 * cell, draw.col(m, st["cyto"], 10, rng))
        nuc = np.zeros((m, s, s), np.float32)
        a0 = r(0, 2 * np.pi, m)
        for j in range(st["lobes"]):
            a = a0 + j * 2 * np.pi / st["lobes"]
            off = 0.0 if st["lobes"] == 1 else 0.45 * rad
            ly, lx = cy + off * np.sin(a), cx + off * np.cos(a)
            lr = rad * st["nr"]
            nuc = np.maximum(nuc, draw.sigmoid((1 - draw.ellipse(yy, xx, ly, lx, lr, lr * r(0.7, 1.0, m))) / 0.06))
        if st["gran"] is not None:
            gran = (rng.random((m, s, s)) < 0.25) * cell
            x = draw.paint(x, 0.7 * draw.blur(gran.astype(np.float32), max(0.5, s / 60)) * 2, draw.col(m, st["gran"], 10, rng))
        x = draw.paint(x, 0.95 * nuc * cell, draw.col(m, st["nuc"], 25, rng))
        img[idx] = x
    img *= rng.uniform(0.9, 1.1, (n, 1, 1, 3)).astype(np.float32)  # stain and lighting vary between smears
    img = draw.blur(img.transpose(0, 3, 1, 2).reshape(-1, s, s), rng.uniform(0.3, 0.9) * s / 28)
    img = img.reshape(n, 3, s, s).transpose(0, 2, 3, 1)
    img += rng.normal(0, 5, img.shape).astype(np.float32)
    return draw.to_uint8(img)


def _xray_pneumonia(labels: np.ndarray, s: int, rng: np.random.Generator, difficulty: float | None = None
                    ) -> np.ndarray:
    """PneumoniaMNIST: label 1 (pneumonia) gets pneumonia + infiltration/consolidation haze.

    Difficulty (``DIFFICULTY["pneumoniamnist"]``): the share of these findings that do not show (as for
    ChestMNIST)."""
    f = np.zeros((len(labels), 14), np.uint8)
    sick = labels == 1
    f[:, 6] = sick
    f[:, 3] = sick & (rng.random(len(labels)) < 0.6)
    f[:, 8] = sick & (rng.random(len(labels)) < 0.4)
    return _render_xray(f, s, rng, difficulty, knob="pneumoniamnist")


# PneumoniaMNIST: train/val from the Kermany training folder (1,341 normal, 3,875 pneumonia), test from its
# test folder (234 normal, 390 pneumonia)
_PNEUMONIA_PRIORS = {"train": [1341 / 5216, 3875 / 5216], "val": [1341 / 5216, 3875 / 5216],
                     "test": [234 / 624, 390 / 624]}

# flag -> (renderer, class priors: one list, or one per split; None for multi-label)
STAND_INS: dict[str, tuple[Callable, Any]] = {
    "breastmnist": (_render_ultrasound, [210 / 780, 570 / 780]),  # 210 malignant of 780
    "chestmnist": (_render_xray, None),
    "pathmnist": (_render_tissue, _PATH_PRIORS),
    "dermamnist": (_render_skin, _DERMA_PRIORS),
    "pneumoniamnist": (_xray_pneumonia, _PNEUMONIA_PRIORS),
    "bloodmnist": (_render_blood, _BLOOD_PRIORS),
}
MEDMNIST_FLAGS = tuple(STAND_INS)


def _split_priors(flag: str, split: str) -> Sequence[float] | None:
    """The class priors of ``flag``'s stand-in in ``split`` (None: multi-label)."""
    priors = STAND_INS[flag][1]
    return priors[split] if isinstance(priors, dict) else priors


def draw_labels(flag: str, split: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Labels of ``n`` stand-in images of ``split``: the real class balance (exact counts), or for
    ChestMNIST each finding drawn with its real prevalence (N x 14, 0/1)."""
    priors = _split_priors(flag, split)
    if priors is None:
        return (rng.random((n, 14)) < np.asarray(_CHEST_PRIORS)).astype(np.uint8)
    return labels_from_priors(n, priors, rng)

