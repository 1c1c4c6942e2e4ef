"""Active-learning query strategies on plain numpy arrays.

Every strategy has one interface (modelled on scikit-activeml): build it with ``random_state``,
then ``query(...)`` with whatever arrays it needs and get back pool indices to label next::

    s = get_strategy("bald", random_state=0)
    picked = s.query(mc_samples=mc, labelled=mask, batch_size=16)
    picked, utilities = s.query(..., return_utilities=True)   # utilities: [batch_size, N]

Inputs (pass all of them; each strategy reads only what it ``requires``):

* ``probs``        ``[N, C]`` class probabilities (a 1-D vector means P(class 1) of a binary task);
* ``mc_samples``   ``[T, N, C]`` probabilities from T stochastic (MC-dropout) forward passes;
* ``embeddings``   ``[N, D]`` features (penultimate layer) for Coreset and BADGE;
* ``labelled``     a boolean mask ``[N]`` or the indices already labelled (never picked again);
* ``candidates``   optional mask or indices restricting where to pick (default: every unlabelled one).

Scores are computed safely (``scipy.special.xlogy``: no NaN at p = 0), ties are broken at random
by ``random_state``, and no index is returned twice. Coreset never builds an N x N matrix and BADGE
never builds the C x D gradient embedding: both keep a running distance vector instead.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.special import xlogy

from ..runtime import CourseError
from .diversity import k_center_greedy, kmeans_pp, sqnorms  # re-exported: st.k_center_greedy

__all__ = [
    "QueryStrategy", "RandomSampling", "LeastConfidence", "Margin", "Entropy", "DBAL", "BALD",
    "Coreset", "CoresetCosine", "BADGE", "MostConfident", "STRATEGIES", "PROBABILITY_STRATEGIES", "get_strategy",
    "entropy", "least_confidence", "margin", "bald", "predictive_entropy", "gradient_embedding",
    "head_gradient_embedding",
    "check_probs", "k_center_greedy", "kmeans_pp",
]

_PROB_ATOL = 1e-3   # float32 softmax rows sum to 1 within ~1e-6; 1e-3 catches logits passed by mistake


# =========================================================================== scores
def check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    """Validate class probabilities and return them as float64 ``[N, C]``.

    A 1-D vector is read as P(class 1) of a binary task and becomes ``[1 - p, p]``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise CourseError(f"{name} must be an N x C array of class probabilities (C >= 2) or a 1-D vector "
                          f"of P(class 1); got shape {p.shape}.")
    if not np.all(np.isfinite(p)):
        raise CourseError(f"{name} contains NaN or inf; check the model's output (did training diverge?).")
    if p.size and (p.min() < -1e-6 or p.max() > 1 + 1e-6):
        raise CourseError(f"{name} has values outside [0, 1] (min {p.min():.3g}, max {p.max():.3g}): these look "
                          "like logits. Apply softmax (or sigmoid for one output) first.")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _PROB_ATOL)
    if bad.size:
        raise CourseError(f"{name} rows must sum to 1, but {bad.size} do not (row {bad[0]} sums to "
                          f"{sums[bad[0]]:.4f}). Apply softmax over the class axis; for multi-label outputs "
                          "score each label as its own binary task.")
    return np.clip(p, 0.0, 1.0)


def _check_mc(mc_samples: Any) -> np.ndarray:
    mc = np.asarray(mc_samples, dtype=np.float64)
    if mc.ndim == 2:   # [T, N] of P(class 1)
        mc = np.stack([1.0 - mc, mc], axis=2)
    if mc.ndim != 3:
        raise CourseError(f"mc_samples must be T x N x C (T stochastic passes); got shape {mc.shape}.")
    if mc.shape[0] < 2:
        raise CourseError(f"mc_samples has only {mc.shape[0]} pass; use at least 2 (typically 10-20) "
                          "MC-dropout forward passes.")
    t, n, c = mc.shape
    check_probs(mc.reshape(t * n, c), name="mc_samples")
    return np.clip(mc, 0.0, 1.0)


# The scores on checked arrays (the strategies call these; the public functions below check first).
def _entropy(p: np.ndarray) -> np.ndarray:
    return -xlogy(p, p).sum(axis=-1)                     # xlogy(0, 0) = 0: no NaN at p = 0


def _least_confidence(p: np.ndarray) -> np.ndarray:
    return 1.0 - p.max(axis=1)


def _margin(p: np.ndarray) -> np.ndarray:
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def entropy(probs: Any) -> np.ndarray:
    """Shannon entropy (nats) of each row: ``-sum p log p``, 0 at p = 0 (xlogy, never NaN)."""
    return _entropy(check_probs(probs))


def least_confidence(probs: Any) -> np.ndarray:
    """``1 - max p``: high when the top class is unsure."""
    return _least_confidence(check_probs(probs))


def margin(probs: Any) -> np.ndarray:
    """``1 - (p_top1 - p_top2)``: high when the two best classes are close (as scikit-activeml)."""
    return _margin(check_probs(probs))


def predictive_entropy(mc_samples: Any) -> np.ndarray:
    """Entropy of the mean prediction over T MC-dropout passes (the DBAL "max entropy" score)."""
    return _entropy(_check_mc(mc_samples).mean(axis=0))


def bald(mc_samples: Any) -> np.ndarray:
    """Mutual information I[y; w] = H[mean_t p_t] - mean_t H[p_t] (Houlsby et al. 2011; Gal et al. 2017).

    Zero when all passes agree, large when each pass is confident but they disagree.
    """
    mc = _check_mc(mc_samples)
    return np.maximum(_entropy(mc.mean(axis=0)) - _entropy(mc).mean(axis=0), 0.0)   # >= 0 by Jensen; clip round-off


def gradient_embedding(probs: Any, features: Any) -> np.ndarray:
    """BADGE's explicit embedding ``g_i = (p_i - onehot(argmax p_i)) (x) h_i``, shape ``[N, C * D]``.

    This is the gradient of the cross-entropy w.r.t. the last linear layer's weights for the
    hypothesised label (sign aside). :class:`BADGE` never builds it; it is here to teach and test.
    """
    p = check_probs(probs)
    h = np.asarray(features, dtype=np.float64)
    if h.ndim != 2 or len(h) != len(p):
        raise CourseError(f"features must be N x D with the same N as probs ({len(p)}); got {h.shape}.")
    a = p - np.eye(p.shape[1])[p.argmax(axis=1)]
    return (a[:, :, None] * h[:, None, :]).reshape(len(p), -1)


def head_gradient_embedding(probs: np.ndarray, embeddings: np.ndarray, n_outputs: int) -> np.ndarray:
    """BADGE embeddings, after checking the class count against the head (a 1-output head gives 2 columns)."""
    expected = 2 if n_outputs == 1 else n_outputs
    if probs.shape[1] != expected:
        raise CourseError(f"the model's final layer has {n_outputs} outputs but its probabilities have "
                          f"{probs.shape[1]} columns.")
    return gradient_embedding(probs, embeddings)


# =========================================================================== helpers
def _generator(random_state: Any) -> np.random.Generator:
    """A numpy Generator from a seed, a Generator (used as is) or a legacy RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    return np.random.default_rng(random_state)


def _as_mask(value: Any, n: int, name: str) -> np.ndarray:
    """A boolean mask of length ``n`` from a mask or a list of indices."""
    if value is None:
        return np.zeros(n, dtype=bool)
    arr = np.asarray(value)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise CourseError(f"{name} as a boolean mask must have length {n} (the pool size); got shape {arr.shape}.")
        return arr.copy()
    if arr.size == 0:
        return np.zeros(n, dtype=bool)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise CourseError(f"{name} must be a boolean mask of length {n} or a 1-D array of integer indices; "
                          f"got dtype {arr.dtype}, shape {arr.shape}.")
    if arr.min() < 0 or arr.max() >= n:
        raise CourseError(f"{name} has indices outside the pool [0, {n}): min {arr.min()}, max {arr.max()}.")
    mask = np.zeros(n, dtype=bool)
    mask[arr] = True
    return mask


def _ranked(scores: np.ndarray, idx: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Top ``k`` of ``idx`` by ``scores`` (descending), ties broken at random."""
    tie = rng.random(len(idx))
    order = np.lexsort((tie, -scores[idx]))
    return idx[order[:k]]


# =========================================================================== strategies
class QueryStrategy:
    """Base class: validates inputs, resolves the candidate set, and returns unique pool indices.

    Subclasses set ``name`` and ``requires`` and implement :meth:`_select`.
    """

    name: ClassVar[str] = "base"
    requires: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def __init__(self, random_state: Any = None):
        self.random_state = random_state
        self._rng = _generator(random_state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(random_state={self.random_state!r})"

    def tie_break(self, n: int) -> np.ndarray:
        """``n`` random numbers from this strategy's own generator, to break ties in a ranking done elsewhere
        (the label store ranks stored scores in SQL)."""
        return self._rng.random(n)

    # ---------------------------------------------------------------- public
    def query(self, *, probs: Any = None, mc_samples: Any = None, embeddings: Any = None,
              labelled: Any = None, n_samples: int | None = None, batch_size: int = 1,
              candidates: Any = None, return_utilities: bool = False):
        """Pick ``batch_size`` pool indices to label next.

        Returns an int64 array of indices into the pool; with ``return_utilities=True`` also a
        ``[batch_size, N]`` float array: the score of every candidate at each pick (NaN where a
        point was not eligible at that step).
        """
        arrays = self._arrays(probs=probs, mc_samples=mc_samples, embeddings=embeddings)
        given = {"probs": probs, "mc_samples": mc_samples, "embeddings": embeddings}
        n = self._pool_size({**{k: v for k, v in given.items() if v is not None}, **arrays}, labelled, n_samples)
        lab = _as_mask(labelled, n, "labelled")
        cand = np.ones(n, dtype=bool) if candidates is None else _as_mask(candidates, n, "candidates")
        cand &= ~lab
        cand_idx = np.flatnonzero(cand)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise CourseError(f"batch_size must be a positive integer; got {batch_size!r}.")
        if batch_size > len(cand_idx):
            raise CourseError(f"asked for {batch_size} samples but only {len(cand_idx)} unlabelled candidates "
                              f"are left (pool {n}, labelled {int(lab.sum())}). Lower batch_size or add data.")
        # a [batch_size, N] array is big: _select builds it only on request
        picked, util = self._select(arrays, np.flatnonzero(lab), cand_idx, int(batch_size), n,
                                    utilities=bool(return_utilities))
        picked = np.asarray(picked, dtype=np.int64)
        assert len(np.unique(picked)) == len(picked) == batch_size, "internal error: duplicate picks"
        return (picked, util) if return_utilities else picked

    # ---------------------------------------------------------------- plumbing
    def _arrays(self, **given: Any) -> dict[str, np.ndarray]:
        missing = [k for k in self.requires if given.get(k) is None]
        if missing:
            raise CourseError(f"strategy {self.name!r} needs {', '.join(missing)}; pass "
                              + ", ".join(f"{m}=..." for m in missing)
                              + " (see course_utils.active for model adapters that compute them).")
        out: dict[str, np.ndarray] = {}
        if "probs" in self.requires:
            out["probs"] = check_probs(given["probs"])
        if "mc_samples" in self.requires:
            out["mc_samples"] = _check_mc(given["mc_samples"])
        if "embeddings" in self.requires:
            emb = np.asarray(given["embeddings"])
            if emb.ndim != 2:
                raise CourseError(f"embeddings must be N x D; got shape {emb.shape}.")
            if not np.all(np.isfinite(emb)):
                raise CourseError("embeddings contain NaN or inf.")
            out["embeddings"] = emb
        return out

    def _pool_size(self, arrays: dict[str, np.ndarray], labelled: Any, n_samples: int | None) -> int:
        sizes = {}
        for k, v in arrays.items():
            shape = np.shape(v)
            if shape:
                sizes[k] = (shape[1] if len(shape) > 1 else 0) if k == "mc_samples" else shape[0]
        if n_samples is not None:
            sizes["n_samples"] = int(n_samples)
        lab = None if labelled is None else np.asarray(labelled)
        if lab is not None and lab.dtype == bool:
            sizes["labelled mask"] = len(lab)
        if len(set(sizes.values())) > 1:
            raise CourseError("array lengths do not match: " + ", ".join(f"{k} has {v}" for k, v in sizes.items())
                              + ". Compute all of them on the same pool, in the same order.")
        if not sizes:
            raise CourseError(f"strategy {self.name!r} cannot tell the pool size: pass n_samples=N or a boolean "
                              "labelled mask of length N.")
        return next(iter(sizes.values()))

    def _select(self, arrays: dict[str, np.ndarray], labelled_idx: np.ndarray, cand_idx: np.ndarray, k: int,
                n: int, *, utilities: bool) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover - abstract
        """Pick ``k`` of ``cand_idx``; return them and, if ``utilities``, the ``[k, n]`` utilities (else None)."""
        raise NotImplementedError


class _ScoreStrategy(QueryStrategy):
    """Rank candidates by a per-sample score; the top ``batch_size`` (ties at random) are picked."""

    def score(self, arrays: dict[str, np.ndarray], n: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _select(self, arrays, labelled_idx, cand_idx, k, n, *, utilities):
        scores = self.score(arrays, n)
        picked = _ranked(scores, cand_idx, k, self._rng)
        if not utilities:
            return picked, None
        util = np.full((k, n), np.nan)
        row = np.full(n, np.nan)
        row[cand_idx] = scores[cand_idx]
        for i, j in enumerate(picked):  # same scores each step, minus what was already picked
            util[i] = row
            row[j] = np.nan
        return picked, util


class RandomSampling(_ScoreStrategy):
    """Uniform random picks: the baseline every other strategy must beat (and often does not)."""

    name, requires = "random", ()
    description = "uniform at random"

    def score(self, arrays, n):
        return self._rng.random(n)


class LeastConfidence(_ScoreStrategy):
    name, requires = "least_confidence", ("probs",)
    description = "1 - max p"

    def score(self, arrays, n):
        return _least_confidence(arrays["probs"])


class MostConfident(_ScoreStrategy):
    """The images the model is surest about: not a query for learning, but a check. A confident mistake is a
    systematic error (a shortcut, a mislabelled batch), and a person sees it at once in this queue."""

    name, requires = "confident", ("probs",)
    description = "max p (check the surest for systematic errors)"

    def score(self, arrays, n):
        return 1.0 - _least_confidence(arrays["probs"])


class Margin(_ScoreStrategy):
    name, requires = "margin", ("probs",)
    description = "1 - (p_top1 - p_top2)"

    def score(self, arrays, n):
        return _margin(arrays["probs"])


class Entropy(_ScoreStrategy):
    name, requires = "entropy", ("probs",)
    description = "-sum p log p"

    def score(self, arrays, n):
        return _entropy(arrays["probs"])


class DBAL(_ScoreStrategy):
    """Deep Bayesian AL (Gal et al. 2017): predictive entropy of the MC-dropout mean."""

    name, requires = "dbal", ("mc_samples",)
    description = "entropy of the MC-dropout mean"

    def score(self, arrays, n):
        return predictive_entropy(arrays["mc_samples"])


class BALD(_ScoreStrategy):
    """Bayesian AL by disagreement: mutual information between label and weights."""

    name, requires = "bald", ("mc_samples",)
    description = "H[mean p] - mean H[p] over MC-dropout passes"

    def score(self, arrays, n):
        return bald(arrays["mc_samples"])


class Coreset(QueryStrategy):
    """Core-set by greedy k-center on embeddings (Sener & Savarese 2018), L2 or cosine distance."""

    name, requires = "coreset", ("embeddings",)
    description = "k-center greedy on embeddings"
    metric: ClassVar[str] = "euclidean"

    def __init__(self, random_state: Any = None, metric: str | None = None, chunk_bytes: int = 64 * 2**20):
        super().__init__(random_state)
        self.metric = metric or type(self).metric
        if self.metric not in ("euclidean", "cosine"):
            raise CourseError(f"metric must be 'euclidean' or 'cosine', not {self.metric!r}.")
        self.chunk_bytes = chunk_bytes

    def _select(self, arrays, labelled_idx, cand_idx, k, n, *, utilities):
        picked, dist = k_center_greedy(arrays["embeddings"], labelled_idx, cand_idx, k, metric=self.metric,
                                       rng=self._rng, chunk_bytes=self.chunk_bytes)
        if not utilities:
            return picked, None
        util = np.full((k, n), np.nan)       # the chosen point's distance to its nearest center, per step
        for i, (j, d) in enumerate(zip(picked, dist)):
            util[i, j] = d
        return picked, util


class CoresetCosine(Coreset):
    name = "coreset_cosine"
    description = "k-center greedy, cosine distance"
    metric = "cosine"


class BADGE(QueryStrategy):
    """Batch AL by diverse gradient embeddings (Ash et al. 2020): k-means++ on ``(p - onehot) (x) h``.

    Needs ``probs`` and penultimate ``embeddings`` h. Distances are factorised,
    ``g_i . g_j = (a_i . a_j)(h_i . h_j)`` with ``a = p - onehot(argmax p)``, so the ``C x D``
    gradient embedding is never built.
    """

    name, requires = "badge", ("probs", "embeddings")
    description = "k-means++ on gradient embeddings"

    def _select(self, arrays, labelled_idx, cand_idx, k, n, *, utilities):
        p = arrays["probs"][cand_idx]
        if len(arrays["embeddings"]) != len(arrays["probs"]):
            raise CourseError("probs and embeddings must describe the same pool (same N).")
        h = np.ascontiguousarray(arrays["embeddings"][cand_idx], dtype=np.float32)
        a = (p - np.eye(p.shape[1])[p.argmax(axis=1)]).astype(np.float32)
        sq_a, sq_h = sqnorms(a).astype(np.float64), sqnorms(h).astype(np.float64)
        sq_g = sq_a * sq_h                                  # |g_i|^2 = |a_i|^2 |h_i|^2

        def dist2_to(j: int) -> np.ndarray:
            dot = (a @ a[j]).astype(np.float64) * (h @ h[j]).astype(np.float64)
            return sq_g + sq_g[j] - 2.0 * dot

        local, probs = kmeans_pp(sq_g, dist2_to, k, self._rng)
        picked = cand_idx[local]
        if not utilities:
            return picked, None
        util = np.full((k, n), np.nan)                      # D^2-sampling probability of each pick
        util[np.arange(k), picked] = probs
        return picked, util


STRATEGIES: dict[str, type[QueryStrategy]] = {
    cls.name: cls for cls in (RandomSampling, LeastConfidence, Margin, Entropy, DBAL, BALD,
                              Coreset, CoresetCosine, BADGE, MostConfident)
}
PROBABILITY_STRATEGIES = tuple(k for k, v in STRATEGIES.items() if set(v.requires) <= {"probs"})
_ALIASES = {"least_confident": "least_confidence", "lc": "least_confidence", "uncertainty": "least_confidence",
            "margin_sampling": "margin", "max_entropy": "entropy", "core_set": "coreset",
            "k_center": "coreset", "mc_entropy": "dbal"}


def get_strategy(name: str, random_state: Any = None, **kwargs: Any) -> QueryStrategy:
    """Build a strategy by name, e.g. ``get_strategy("bald", random_state=0)``."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in STRATEGIES:
        raise CourseError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    return STRATEGIES[key](random_state=random_state, **kwargs)
