"""Diversity on embeddings for the batch strategies (Coreset, BADGE): greedy k-center and k-means++ seeding.

Numpy only, never an N x N matrix: distances are computed in chunks from squared norms.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..runtime import CourseError

__all__ = ["sqnorms", "k_center_greedy", "kmeans_pp"]


def sqnorms(x: np.ndarray) -> np.ndarray:
    """Squared L2 norm of every row (one pass, no copy)."""
    return np.einsum("ij,ij->i", x, x)


def k_center_greedy(features: np.ndarray, labelled: np.ndarray, candidates: np.ndarray, k: int, *,
                    metric: str = "euclidean", rng: np.random.Generator | None = None,
                    chunk_bytes: int = 64 * 2**20) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center (Sener & Savarese 2018): pick the candidate farthest from every chosen center.

    ``labelled`` / ``candidates`` are index arrays. Keeps one running min-distance vector over the
    candidates (never an N x N matrix); distances use ``|a|^2 + |b|^2 - 2 a.b`` in float32, computed
    in chunks of about ``chunk_bytes``. Returns the picked indices and, per step, the distance
    (L2, or cosine distance 1 - cos) of the picked point to its nearest center.
    """
    rng = rng or np.random.default_rng()
    x = np.asarray(features, dtype=np.float32)
    if metric == "cosine":
        norms = np.sqrt(sqnorms(x))
        x = x / np.maximum(norms, 1e-12)[:, None]
    elif metric != "euclidean":
        raise CourseError(f"metric must be 'euclidean' or 'cosine', not {metric!r}.")
    cand = np.asarray(candidates, dtype=np.int64)
    if 2 * len(cand) >= len(x):      # most of the pool: work on it in place and mask the rest (no copy)
        xc, pos = x, cand
    else:                            # a small candidate set: a compact copy makes every step cheaper
        xc, pos = x[cand], np.arange(len(cand))
    eligible = np.zeros(len(xc), dtype=bool)
    eligible[pos] = True
    sq_c = sqnorms(xc)
    min_d2 = np.full(len(xc), np.inf, dtype=np.float32)
    centers = np.asarray(labelled, dtype=np.int64)
    if len(centers):
        rows = max(1, chunk_bytes // (4 * len(centers)))
        xl = x[centers]
        sq_l = sqnorms(xl)
        for s in range(0, len(xc), rows):             # min over labelled centers, a block of rows at a time
            block = xc[s:s + rows] @ xl.T
            block *= -2.0
            block += sq_l[None, :]
            block += sq_c[s:s + rows, None]
            min_d2[s:s + rows] = block.min(axis=1)
    np.maximum(min_d2, 0.0, out=min_d2)
    min_d2[~eligible] = -1.0                          # labelled or not a candidate: never picked
    picked = np.empty(k, dtype=np.int64)
    gains = np.empty(k, dtype=np.float64)
    tie = rng.random(len(xc)).astype(np.float32)
    for step in range(k):
        if step == 0 and not len(centers):
            j = int(pos[rng.integers(len(pos))])       # no center yet: start anywhere (seeded)
            gain = np.inf
        else:
            best = min_d2.max()
            ties = np.flatnonzero(min_d2 == best)
            j = int(ties[np.argmax(tie[ties])]) if len(ties) > 1 else int(ties[0])
            gain = float(best)
        picked[step], gains[step] = j, gain
        d2 = xc @ xc[j]
        d2 *= -2.0
        d2 += sq_c
        d2 += sq_c[j]
        np.maximum(d2, 0.0, out=d2)
        np.minimum(min_d2, d2, out=min_d2)            # picked / ineligible rows stay negative
        min_d2[j] = -1.0
    if xc is not x:
        picked = cand[picked]
    dist = np.sqrt(gains)
    if metric == "cosine":
        dist = gains / 2.0                               # |a - b|^2 = 2 - 2 cos for unit vectors
    return picked, dist


def kmeans_pp(sq_norm: np.ndarray, dist2_to: Any, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding over points given only their squared norms and a distance function.

    ``dist2_to(j)`` returns the squared distances of every point to point ``j``. The first pick is the
    point of largest norm (ties at random), each next one is drawn with probability proportional to
    its squared distance to the nearest pick (D^2 sampling). Returns (local indices, the sampling
    probability of each pick; 1.0 for the first).
    """
    n = len(sq_norm)
    picked = np.empty(k, dtype=np.int64)
    probs = np.empty(k, dtype=np.float64)
    tie = rng.random(n)
    j = int(np.lexsort((tie, -sq_norm))[0])
    picked[0], probs[0] = j, 1.0
    taken = np.zeros(n, dtype=bool)
    taken[j] = True
    min_d2 = np.maximum(np.asarray(dist2_to(j), dtype=np.float64), 0.0)
    for step in range(1, k):
        w = np.where(taken, 0.0, min_d2)
        total = w.sum()
        if not np.isfinite(total) or total <= 0.0:       # all left are duplicates of picks: uniform
            w = (~taken).astype(np.float64)
            total = w.sum()
        p = w / total
        j = int(rng.choice(n, p=p))
        picked[step], probs[step] = j, p[j]
        taken[j] = True
        np.minimum(min_d2, np.maximum(dist2_to(j), 0.0), out=min_d2)
    return picked, probs
