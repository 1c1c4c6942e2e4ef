"""Faithfulness of heat maps: deletion and insertion (Petsiuk et al. 2018), compared with a random map.

Does a heat map point at what the model uses? Remove the pixels it ranks highest first and the class
probability should collapse (deletion: a low area under the curve); reveal them first and it should
recover quickly (insertion: a high area). :func:`deletion_insertion` scores ``maps`` and a random map on
the same images; removed pixels take a fair baseline (a blurred copy by default, not black, which can add
evidence of its own), and :meth:`DeletionInsertion.compare` gives each paired difference (map minus random,
per image) a t-interval (:func:`course_utils.xai.paired_interval`) and a verdict in words ("inconclusive"
when it covers 0). :func:`region_deletion` asks the narrower question about one part of a map (its hot spots on
the image border, say): does deleting just those pixels lower the probability more than deleting as many other
pixels of the same region? The model plumbing (adapters, target classes, the probability rule) is :mod:`.methods`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..runtime import CourseError
from .methods import adapter, paired_interval, resize_maps, target_classes, target_probs

__all__ = ["deletion_insertion", "DeletionInsertion", "region_deletion", "RegionDeletion", "BASELINES"]


@dataclass
class DeletionInsertion:
    """Deletion / insertion areas under the curve of the target probability (per image), map vs random map.

    Deletion: lower is better (the probability collapses when the top pixels go). Insertion: higher is better.
    ``baseline`` names what deleted pixels become and where insertion starts (see :func:`deletion_insertion`).
    """

    deletion: np.ndarray
    insertion: np.ndarray
    deletion_random: np.ndarray
    insertion_random: np.ndarray
    fractions: np.ndarray
    deletion_curve: np.ndarray       # mean probability per step, [steps + 1]
    insertion_curve: np.ndarray
    deletion_curve_random: np.ndarray
    insertion_curve_random: np.ndarray
    baseline: str = "blur"

    def summary(self) -> dict[str, float]:
        return {"deletion AUC (map)": float(self.deletion.mean()),
                "deletion AUC (random)": float(self.deletion_random.mean()),
                "insertion AUC (map)": float(self.insertion.mean()),
                "insertion AUC (random)": float(self.insertion_random.mean())}

    def compare(self, confidence: float = 0.95, min_difference: float = 0.01) -> dict[str, dict[str, Any]]:
        """Map minus random map, per image, for each score: the mean difference, its t-interval and a verdict.

        ``{"deletion": {...}, "insertion": {...}}``, each with ``interval`` (a :class:`PairedInterval`) and
        ``verdict``: ``"better than random"`` only when the interval excludes 0 on the good side (deletion
        lower, insertion higher), ``"worse than random"`` on the other side, else ``"inconclusive"``; also
        ``"inconclusive"`` when the mean difference is below ``min_difference`` (an AUC), e.g. when both
        curves stay at a probability of 1 and only rounding separates them.
        """
        out = {}
        for name, good, a, b in (("deletion", -1, self.deletion, self.deletion_random),
                                 ("insertion", +1, self.insertion, self.insertion_random)):
            iv = paired_interval(a, b, confidence)
            better, worse = "better than random", "worse than random"
            above, below = (better, worse) if good > 0 else (worse, better)
            out[name] = {"interval": iv, "verdict": iv.verdict(above=above, below=below, neither="inconclusive",
                                                               min_difference=min_difference)}
        return out

    def verdict(self, confidence: float = 0.95, min_difference: float = 0.01) -> str:
        """One verdict for both scores: the shared one when they agree (``"better than random"``,
        ``"worse than random"``, ``"inconclusive"``); ``"the two checks disagree (...)"`` when one is better and
        the other worse; ``"inconclusive (...)"`` when only one of them is clear. The brackets name each."""
        each = {k: v["verdict"] for k, v in self.compare(confidence, min_difference).items()}
        if len(set(each.values())) == 1:
            return each["deletion"]
        detail = f"deletion {each['deletion']}, insertion {each['insertion']}"
        if set(each.values()) == {"better than random", "worse than random"}:
            return f"the two checks disagree ({detail})"
        return f"inconclusive ({detail})"

    @property
    def beats_random(self) -> bool:
        """Deletion lower and insertion higher than with a random map, both beyond their 95 % intervals."""
        return self.verdict() == "better than random"


BASELINES = ("blur", "mean", "zero")


def _check_options(**options: Any) -> None:
    """Refuse a baseline not in :data:`BASELINES` and a count (``steps``, ``draws``) that is not a whole number >= 1."""
    for name, value in options.items():
        if name in ("baseline", "insertion_from") and isinstance(value, str) and value not in BASELINES:
            raise CourseError(f"{name} must be one of {', '.join(map(repr, BASELINES))}, not {value!r}")
        if name in ("steps", "draws") and (not isinstance(value, (int, np.integer)) or value < 1):
            raise CourseError(f"{name} must be a whole number >= 1, got {value!r}")


def _ends(ad, x: np.ndarray, kind: Any, spatial: tuple[int, int], sigma: float) -> np.ndarray:
    """:func:`_baseline_images` for a named baseline; images of the same shape as ``x`` (prepared like them) else."""
    if isinstance(kind, str):
        return _baseline_images(x, kind, spatial, sigma)
    ends = ad.prepare(kind)
    if ends.shape != x.shape:
        raise CourseError(f"a baseline given as images must match the images' shape {x.shape} once prepared, "
                          f"got {ends.shape}: pass one baseline image per image")
    return ends


def _name(kind: Any) -> str:
    return kind if isinstance(kind, str) else "images"


def _baseline_images(x: np.ndarray, kind: str, spatial: tuple[int, int], sigma: float) -> np.ndarray:
    """What deleted pixels become (and where insertion starts), for a batch in the model's input layout."""
    if kind == "zero":
        return np.zeros_like(x)
    if kind == "mean":
        return np.broadcast_to(x.mean(axis=tuple(a + 1 for a in spatial), keepdims=True), x.shape).astype(x.dtype)
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    sig = [0.0] * x.ndim
    for a in spatial:
        sig[a + 1] = sigma
    return gaussian_filter(x, sigma=sig).astype(x.dtype)


def _perturbation_curves(ad, x, targets, maps, steps: int, mode: str, start_from: np.ndarray,
                         chunk_images: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Target probability after changing the top-ranked ``k/steps`` of the pixels, ``k = 0..steps``, per image.

    Deletion goes from the image to ``start_from`` (the baseline), insertion from the baseline to the image.
    Pixels the map ranks equal are taken in ``tiebreak``'s order (``[N, H, W]``, lower first), else row by row.
    """
    H, W = ad.image_size(x)
    counts = np.round(np.linspace(0, H * W, steps + 1)).astype(int)
    curves = np.zeros((len(x), steps + 1))
    for s in range(0, len(x), chunk_images):
        sl = slice(s, min(len(x), s + chunk_images))
        src, dst = (x[sl], start_from[sl]) if mode == "deletion" else (start_from[sl], x[sl])
        key = -maps[sl].reshape(len(src), -1)
        order = (np.argsort(key, axis=1, kind="stable") if tiebreak is None
                 else np.lexsort((tiebreak[sl].reshape(len(src), -1), key), axis=-1))
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(H * W)[None], axis=1)      # 0 = the most relevant pixel
        changed = ranks.reshape(len(src), 1, H, W) < counts[None, :, None, None]     # [n, steps + 1, H, W]
        changed = changed[:, :, None] if ad.channel_axis == 1 else changed[..., None]
        batch = np.where(changed, dst[:, None], src[:, None]).astype(x.dtype)
        batch = batch.reshape(-1, *x.shape[1:])
        t = np.repeat(targets[sl], steps + 1)
        curves[sl] = target_probs(ad.logits(batch), t).reshape(len(src), steps + 1)
    return curves


def deletion_insertion(model: Any, images: Any, maps: np.ndarray, target: Any = None, *, steps: int = 20,
                       seed: int = 0, baseline: Any = "blur", blur_sigma: float | None = None,
                       insertion_from: Any = None, preprocess: Callable | None = None,
                       batch_size: int = 128, map_size: tuple[int, int] | None = None) -> DeletionInsertion:
    """Deletion and insertion scores of ``maps`` (one per image), and of a random map on the same images.

    Deletion replaces the most relevant pixels by ``baseline``, ``1/steps`` of the image at a time; insertion
    starts from the baseline and puts the most relevant pixels back. The score is the area under the
    target-class probability curve over the fraction of pixels changed (0 to 1).

    ``baseline`` (in the model's input space, after ``preprocess``):

    - ``"blur"`` (default): a Gaussian-blurred copy of the image (``blur_sigma``, default ``max(H, W) / 16``
      pixels). Removes fine evidence without drawing anything new.
    - ``"mean"``: each channel's mean over the image (a flat image of its average colour).
    - ``"zero"``: 0, i.e. black for ``[0, 1]`` images (or the mean colour after ImageNet normalisation).
      Black pixels can *add* evidence (dark spots, edges) and keep the probability high: not a fair test.
    - images, one per image (the same shape, prepared the same way): a reference the model scores low, e.g. a
      clearly negative image, when every simple baseline still looks positive to the model.

    ``map_size``: ``(h, w)`` of the layer the maps come from (Grad-CAM's feature map). The random map is then
    drawn at that resolution and up-sampled the same way (bilinear), so it deletes blocks as coarse as the
    heat map's: a per-pixel random map scatters its deletions as fine noise, which removes evidence at a
    different rate, and the comparison would be about resolution, not about where the map points. None: per pixel
    (right for pixel-level maps such as saliency).

    Pixels a map ranks equal (the zeros of a sparse map, such as HiResCAM's) are taken in a random order, the same
    for every map: row by row, a map that is zero over most of the image would delete its top rows first.

    ``insertion_from`` overrides the baseline for insertion only (default: the same). If the baseline
    itself still shows the evidence, neither curve can tell maps apart: look at the curves' end points.
    Compare with :meth:`DeletionInsertion.compare` (intervals over the images), not with the means alone.
    """
    _check_options(steps=steps, baseline=baseline, insertion_from=insertion_from)
    ad = adapter(model, preprocess, batch_size=batch_size)
    x = ad.prepare(images)
    maps = np.asarray(maps, dtype=np.float64)
    if maps.shape != (len(x), *ad.image_size(x)):
        raise CourseError(f"maps must be [N, H, W] = {(len(x), *ad.image_size(x))} to match the images, "
                          f"got {maps.shape}")
    if not np.isfinite(maps).all():
        raise CourseError("maps contain NaN or inf: a heat map must rank every pixel")
    t = target_classes(ad, x, target)
    H, W = ad.image_size(x)
    spatial = (1, 2) if ad.channel_axis == 1 else (0, 1)               # H, W axes of one image
    sigma = blur_sigma if blur_sigma is not None else max(H, W) / 16
    del_end = _ends(ad, x, baseline, spatial, sigma)
    ins_end = del_end if insertion_from is None else _ends(ad, x, insertion_from, spatial, sigma)
    if map_size is None:
        rand = np.random.default_rng(seed).random(maps.shape)
    else:
        h, w = (int(v) for v in map_size)
        if not (1 <= h <= H and 1 <= w <= W):
            raise CourseError(f"map_size must be (h, w) with 1 <= h <= {H} and 1 <= w <= {W}, got {map_size!r}")
        rand = resize_maps(np.random.default_rng(seed).random((len(x), h, w)), (H, W))
    fr = np.linspace(0, 1, steps + 1)
    chunk = max(1, batch_size * 4 // (steps + 1))
    ties = np.random.default_rng([seed, 1]).random(maps.shape)
    res = {}
    for name, m in (("map", maps), ("random", rand)):
        res[(name, "deletion")] = _perturbation_curves(ad, x, t, m, steps, "deletion", del_end, chunk, ties)
        res[(name, "insertion")] = _perturbation_curves(ad, x, t, m, steps, "insertion", ins_end, chunk, ties)
    auc = {k: np.trapezoid(v, fr, axis=1) for k, v in res.items()}
    return DeletionInsertion(auc[("map", "deletion")], auc[("map", "insertion")],
                             auc[("random", "deletion")], auc[("random", "insertion")], fr,
                             res[("map", "deletion")].mean(0), res[("map", "insertion")].mean(0),
                             res[("random", "deletion")].mean(0), res[("random", "insertion")].mean(0),
                             baseline=_name(baseline))


@dataclass
class RegionDeletion:
    """Target probability per image: intact, with the chosen pixels deleted, and with as many random pixels of the
    same region deleted (the mean over ``draws`` random choices). Only images with at least one chosen pixel."""

    intact: np.ndarray
    chosen: np.ndarray
    random: np.ndarray
    n_pixels: np.ndarray          # chosen pixels per image
    kept: np.ndarray              # indices (into the images passed) of the images scored
    baseline: str = "mean"

    def compare(self, confidence: float = 0.95):
        """Probability after deleting the chosen pixels minus after deleting random ones of the region, per image:
        a :class:`PairedInterval` (below 0: the chosen pixels carry more of the evidence than the rest)."""
        return paired_interval(self.chosen, self.random, confidence)

    def verdict(self, confidence: float = 0.95, min_difference: float = 0.01) -> str:
        """``"carry more evidence than random pixels of the region"`` (the interval lies below 0), ``"carry less
        evidence than random pixels of the region"`` (above 0) or ``"inconclusive"``; ``"no such pixels"`` when no image had any."""
        if len(self.kept) == 0:
            return "no such pixels"
        return self.compare(confidence).verdict(above="carry less evidence than random pixels of the region",
                                                below="carry more evidence than random pixels of the region",
                                                neither="inconclusive",
                                                min_difference=min_difference)

    def reading(self, confidence: float = 0.95) -> str:
        """What :meth:`verdict` means for the chosen pixels as a finding, in a few words."""
        return {"carry more evidence than random pixels of the region": "the model uses what lies there: look at them",
                "carry less evidence than random pixels of the region": "not where the model's evidence is: not "
                                                                        "findings",
                "inconclusive": "these images cannot tell",
                "no such pixels": "nothing to delete"}[self.verdict(confidence)]


def region_deletion(model: Any, images: Any, chosen: np.ndarray, region: np.ndarray, target: Any = None, *,
                    baseline: Any = "mean", draws: int = 8, seed: int = 0, blur_sigma: float | None = None,
                    preprocess: Callable | None = None, batch_size: int = 128) -> RegionDeletion:
    """Delete only the ``chosen`` pixels of each image (``[N, H, W]`` booleans, inside ``region``, an ``[H, W]``
    boolean mask such as the border band) and compare with deleting as many pixels drawn at random from the same
    region, ``draws`` times. Deleted pixels take ``baseline`` (as in :func:`deletion_insertion`).

    This tests one part of a heat map on its own (its border hot spots, say), where deletion of the whole ranking
    cannot: a map can beat a random map overall while some of its hot spots carry nothing.
    """
    _check_options(draws=draws, baseline=baseline)
    ad = adapter(model, preprocess, batch_size=batch_size)
    x = ad.prepare(images)
    H, W = ad.image_size(x)
    chosen, region = np.asarray(chosen, dtype=bool), np.asarray(region, dtype=bool)
    if chosen.shape != (len(x), H, W) or region.shape != (H, W):
        raise CourseError(f"chosen must be [N, H, W] = {(len(x), H, W)} and region [H, W] = {(H, W)}, "
                          f"got {chosen.shape} and {region.shape}")
    if (chosen & ~region).any():
        raise CourseError("chosen pixels must lie inside region: the random pixels are drawn from region")
    n_px = chosen.reshape(len(x), -1).sum(axis=1)
    kept = np.flatnonzero((n_px > 0) & (n_px < region.sum()))
    t = target_classes(ad, x, target)
    spatial = (1, 2) if ad.channel_axis == 1 else (0, 1)
    sigma = blur_sigma if blur_sigma is not None else max(H, W) / 16
    rng = np.random.default_rng(seed)
    cells = np.flatnonzero(region.ravel())
    masks, owners = [], []
    for i in kept:
        masks.append(chosen[i])
        for _ in range(draws):
            m = np.zeros(H * W, dtype=bool)
            m[rng.choice(cells, n_px[i], replace=False)] = True
            masks.append(m.reshape(H, W))
        owners += [i] * (draws + 1)
    if not len(kept):
        empty = np.zeros(0)
        return RegionDeletion(empty, empty, empty, np.zeros(0, int), kept, _name(baseline))
    owners = np.asarray(owners)
    src = x[owners]
    dst = _ends(ad, x, baseline, spatial, sigma)[kept][np.repeat(np.arange(len(kept)), draws + 1)]
    m = np.stack(masks)[:, None] if ad.channel_axis == 1 else np.stack(masks)[..., None]
    probs = target_probs(ad.logits(np.where(m, dst, src).astype(x.dtype)), t[owners]).reshape(len(kept), draws + 1)
    intact = target_probs(ad.logits(x[kept]), t[kept])
    return RegionDeletion(intact, probs[:, 0], probs[:, 1:].mean(axis=1), n_px[kept], kept, _name(baseline))
