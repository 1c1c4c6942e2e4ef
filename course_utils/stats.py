"""Small statistics for comparing models: paired intervals, verdicts from them, AUC errors and chance floors.

Numpy and scipy only. Two questions, two kinds of tool:

- Is A better than B on the same images / seeds? :func:`paired_t_interval` (a t-interval of paired
  differences) or :func:`paired_bootstrap` (seeds and images drawn again), each a :class:`PairedInterval`
  whose :meth:`PairedInterval.verdict` says it in words; :func:`verdict` does the same for any ``(low, high)``;
  :func:`bootstrap_interval` gives any other statistic of the images its interval.
  :func:`detectable_difference` says how small a difference the seeds can show at all.
- Did a model learn anything? :func:`auc_floor` (a *working* model stays above it: expected AUC minus
  ``z`` standard errors, :func:`auc_se`) and :func:`chance_auc_floor` (a model *without skill* stays below it:
  0.5 plus ``z`` standard errors of a chance AUC); :func:`chance_proportion_floor` is the same for a rate.
  ``z = 2.33`` is the one-sided 1 % point of the normal distribution (``norm.ppf(0.99)`` = 2.326).
  Hanley-McNeil is exact at AUC 0.5 and overstates the error of binormal scores above it (~12 % at 0.8):
  :func:`auc_floor` errs on the safe side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .runtime import CourseError

__all__ = [
    "PairedInterval", "paired_t_interval", "paired_bootstrap", "bootstrap_interval", "verdict", "detectable_difference",
    "auc_se", "auc_floor", "macro_auc_floor", "accuracy_floor", "chance_accuracy_bound", "chance_auc_floor",
    "proportion_se", "chance_proportion_floor",
]


def verdict(low: float, high: float, what: str = "", *, above: str = "higher {what}",
            below: str = "lower {what}", neither: str = "no clear difference") -> str:
    """Words for an interval of a difference: ``above`` when it lies wholly above 0, ``below`` when wholly
    below, else ``neither`` (an interval touching or covering 0, or NaN, proves nothing). ``{what}`` is filled in."""
    if low > 0:
        return above.format(what=what)
    if high < 0:
        return below.format(what=what)
    return neither.format(what=what)


@dataclass(frozen=True)
class PairedInterval:
    """Mean of paired differences ``a - b`` (one per image, or per seed) with an interval around it.

    ``method``: ``"t"`` (:func:`paired_t_interval`) or ``"bootstrap"`` (:func:`paired_bootstrap`).
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    method: str = "t"
    unit: str = "images"          # what was paired: images, or seeds

    @property
    def sign(self) -> int:
        """+1 when the whole interval lies above 0, -1 when below, 0 when it covers 0 (no clear difference)."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def verdict(self, what: str = "", *, above: str = "higher {what}", below: str = "lower {what}",
                neither: str = "no clear difference", min_difference: float = 0.0, same: str | None = None,
                margin: float = 0.0) -> str:
        """:func:`verdict` of this interval; also ``neither`` when ``|mean| < min_difference`` (too small to matter).
        ``same`` (with ``margin``): said when the whole interval lies within ``±margin``, i.e. equivalence shown,
        not just no difference found."""
        if same is not None and -margin < self.low and self.high < margin:
            return same.format(what=what)
        if not abs(self.mean) >= min_difference:
            return neither.format(what=what)
        return verdict(self.low, self.high, what, above=above, below=below, neither=neither)

    def __str__(self) -> str:
        kind = "" if self.method == "t" else f" {self.method}"
        return (f"{self.mean:+.3f} ({self.confidence:.0%}{kind} interval {self.low:+.3f} to {self.high:+.3f}, "
                f"{self.n} {self.unit})")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise CourseError(f"confidence must be in (0, 1), got {confidence}")


def paired_t_interval(a: Any, b: Any = 0.0, confidence: float = 0.95, *, unit: str = "images") -> PairedInterval:
    """The mean of ``a - b`` over paired values (one per image or seed) and its t-interval; ``b`` may be one number
    (default 0: ``a`` holds the differences). One pair gives ``(-inf, inf)``; no spread at all, a single point."""
    from scipy import stats  # noqa: PLC0415

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if b.size != 1 and b.size != a.size:
        raise CourseError(f"paired_t_interval needs as many values in b as in a, got {a.size} and {b.size}")
    d = a - b
    if d.size == 0 or not np.isfinite(d).all():
        raise CourseError(f"paired_t_interval needs finite paired values, got {d.size} differences"
                          + ("" if d.size == 0 else " with NaN or inf"))
    _check_confidence(confidence)
    mean = float(d.mean())
    if d.size < 2:
        half = float("inf")
    else:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, d.size - 1) * sd / np.sqrt(d.size)) if sd > 0 else 0.0
    return PairedInterval(mean, mean - half, mean + half, int(d.size), confidence, unit=unit)


def _percentiles(boot: Any, confidence: float, skip_nan: bool = False) -> tuple[float, float]:
    """The two-sided percentile interval of bootstrap values (2.5 and 97.5 for 95 %, exactly)."""
    tail = round(50 * (1 - confidence), 10)
    return tuple((np.nanpercentile if skip_nan else np.percentile)(boot, [tail, 100 - tail]))


def paired_bootstrap(stat: Callable[[np.ndarray, np.ndarray], float], a: Any, b: Any, y: Any, n_boot: int = 1000,
                     seed: Any = 0, confidence: float = 0.95) -> PairedInterval:
    """Mean over seeds of ``stat(a, y) - stat(b, y)`` (scores ``[seeds, images]``) with a percentile bootstrap
    interval: seeds and images drawn again, positives and negatives apart, so it covers both kinds of chance."""
    _check_confidence(confidence)
    a, b, y = np.atleast_2d(np.asarray(a)), np.atleast_2d(np.asarray(b)), np.asarray(y)
    if a.shape != b.shape or a.shape[1] != len(y):
        raise CourseError(f"paired_bootstrap needs a and b of the same shape [seeds, images] and one label per "
                          f"image, got {a.shape}, {b.shape} and {len(y)} labels")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)

    def diff(seeds, idx):
        return np.mean([stat(a[k][idx], y[idx]) - stat(b[k][idx], y[idx]) for k in seeds])

    boot = [diff(rng.integers(0, len(a), len(a)), np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
            for _ in range(n_boot)]
    low, high = _percentiles(boot, confidence)
    return PairedInterval(float(diff(range(len(a)), np.arange(len(y)))), float(low), float(high), len(y),
                          confidence, method="bootstrap")


def bootstrap_interval(stat: Callable[[np.ndarray], float], n: int, n_boot: int = 1000, seed: Any = 0,
                       confidence: float = 0.95, *, unit: str = "images") -> PairedInterval:
    """Any statistic of ``n`` items with a percentile bootstrap interval: ``stat`` takes an index array (the items
    drawn again, with replacement) and returns a number; the estimate is ``stat`` of all items. For numbers that
    are not a plain mean (a ratio, a centre of mass of averaged maps), where a t-interval does not apply."""
    _check_confidence(confidence)
    if n < 2:
        raise CourseError(f"bootstrap_interval needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    boot = [stat(rng.integers(0, n, n)) for _ in range(n_boot)]
    low, high = _percentiles(boot, confidence, skip_nan=True)
    return PairedInterval(float(stat(np.arange(n))), float(low), float(high), int(n), confidence,
                          method="bootstrap", unit=unit)


def detectable_difference(sd: float, n: int, confidence: float = 0.95, power: float = 0.8) -> float:
    """The smallest true paired difference that ``n`` pairs with spread ``sd`` (of the differences) show as
    clear in a fraction ``power`` of experiments: ``(t_(1+c)/2 + t_power) * sd / sqrt(n)`` (the usual t rule)."""
    from scipy import stats  # noqa: PLC0415

    _check_confidence(confidence)
    if not 0 < power < 1:
        raise CourseError(f"power must be in (0, 1), got {power}")
    if n < 2:
        return float("inf")
    return float((stats.t.ppf(0.5 + confidence / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / np.sqrt(n))


def auc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of a ROC-AUC measured on ``n_pos`` positive and ``n_neg`` negative images
    (Hanley & McNeil, 1982): how far a second test set of the same size would move it."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    return float(np.sqrt((auc * (1 - auc) + (n_pos - 1) * (q1 - auc ** 2) + (n_neg - 1) * (q2 - auc ** 2))
                         / (n_pos * n_neg)))


def perfect_auc_lower_bound(n_pos: int, n_neg: int, confidence: float = 0.95) -> float:
    """A lower confidence bound for a ROC-AUC measured as 1.000 (every positive ranked above every negative),
    where the normal approximation collapses to [1, 1]. At a threshold between the classes all ``n_pos`` positives
    and all ``n_neg`` negatives are right; the exact (Clopper-Pearson) bounds for those shares, at half the error
    each, are ``(alpha / 2) ** (1 / n)``, and the ROC curve passes above that corner, so AUC >= their product.
    Conservative, and optimistic only in that the threshold was found on the same images."""
    _check_confidence(confidence)
    if n_pos < 1 or n_neg < 1:
        raise CourseError(f"an AUC needs positives and negatives; got {n_pos} and {n_neg}")
    alpha = 1 - confidence
    return float((alpha / 2) ** (1 / n_pos) * (alpha / 2) ** (1 / n_neg))


def auc_floor(expected: float, n_pos: int, n_neg: int, z: float = 2.33) -> float:
    """An AUC a *working* model (true AUC ``expected``) stays above 99 times in 100: ``expected`` minus
    ``z`` = 2.33 standard errors. For "the model works as expected"; see :func:`chance_auc_floor` for "it learned"."""
    return expected - z * auc_se(expected, n_pos, n_neg)


def macro_auc_floor(expected: float, labels: Any, z: float = 2.33) -> float:
    """:func:`auc_floor` for a macro ROC-AUC (the mean over the columns of ``labels``, ``[N, K]`` 0/1): ``expected``
    minus ``z`` times the mean of the labels' standard errors (conservative: the mean's own error is smaller)."""
    y = np.asarray(labels)
    if y.ndim != 2:
        raise CourseError(f"macro_auc_floor needs labels [N, K], got shape {y.shape}")
    return expected - z * float(np.mean([auc_se(expected, int(c.sum()), int((c == 0).sum())) for c in y.T]))


def accuracy_floor(expected: float, n: int, level: float = 0.01) -> float:
    """An accuracy a model of true accuracy ``expected`` stays at or above ``1 - level`` of the time on ``n`` images:
    the binomial ``level`` quantile (exact, no normal approximation), as a fraction of ``n``."""
    from scipy import stats  # noqa: PLC0415

    return float(stats.binom.ppf(level, n, expected) / n)


def chance_accuracy_bound(chance: float, n: int, level: float = 0.01) -> float:
    """An accuracy that guessing at rate ``chance`` reaches only ``level`` of the time on ``n`` images (the
    binomial ``1 - level`` quantile): above it, luck no longer explains a model's accuracy."""
    from scipy import stats  # noqa: PLC0415

    return float(stats.binom.ppf(1 - level, n, chance) / n)


def chance_auc_floor(n_pos: int, n_neg: int, z: float = 2.33) -> float:
    """An AUC a model *without skill* exceeds only 1 time in 100: 0.5 plus ``z`` = 2.33 times its exact standard
    deviation ``sqrt((n_pos + n_neg + 1) / (12 n_pos n_neg))`` (Mann-Whitney; equal to ``auc_se(0.5, ...)``)."""
    return float(0.5 + z * np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg)))


def proportion_se(p: float, n: int) -> float:
    """Standard error of a share ``p`` (accuracy, recall) measured on ``n`` independent images (binomial)."""
    return float(np.sqrt(p * (1 - p) / n))


def chance_proportion_floor(p: float, n: int, z: float = 2.33) -> float:
    """A share that guessing with success rate ``p`` (the majority share, or a random model's flag rate)
    exceeds only 1 time in 100 on ``n`` images: ``p`` plus ``z`` = 2.33 binomial standard errors."""
    return float(p + z * np.sqrt(p * (1 - p) / n))
