"""Splits: one split's arrays, and stratified subsets and splits that keep every class's share.

Numpy only. Multi-label rows are stratified on their rarest positive label, so a rare finding is not left
out of a split. :mod:`.loaders` builds its data sets from these.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..runtime import CourseError

__all__ = ["Split", "stratified_subset", "stratified_split", "stratified_indices", "strata", "class_counts", "allocate"]


@dataclass
class Split:
    """One split: ``images`` uint8 N x H x W x C, ``labels`` int64 [N] (or uint8 [N, L] 0/1 for multi-label)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(len(self.labels))

    def __repr__(self) -> str:
        return (f"Split(images={self.images.dtype}{list(self.images.shape)}, "
                f"labels={self.labels.dtype}{list(self.labels.shape)})")



def strata(labels: np.ndarray) -> np.ndarray:
    """A 1-D key to stratify on: the class, or for multi-label rows the rarest positive label (-1: none)."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == 1:
        return labels[:, 0].astype(np.int64)
    prevalence = labels.sum(axis=0).astype(float)
    rank = np.argsort(np.argsort(prevalence))  # 0 = rarest label
    masked = np.where(labels > 0, rank[None, :], labels.shape[1] + 1)
    best = masked.argmin(axis=1)
    return np.where(labels.any(axis=1), best, -1).astype(np.int64)


def stratified_subset(images: np.ndarray, labels: np.ndarray, n: int, *, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subset of ``n`` items with the class ratios of the whole (all items if ``n >= len``)."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return images, labels
    if n <= 0:
        raise CourseError(f"a subset needs at least one item, not n={n}.")
    idx = stratified_indices(labels, n, seed=seed)
    return images[idx], labels[idx]


def stratified_indices(labels: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` seeded indices with each stratum's share of ``labels`` (:func:`strata`), in random order."""
    rng = np.random.default_rng(seed)
    key = strata(labels)
    classes, counts = np.unique(key, return_counts=True)
    take = allocate(counts, n)
    picked = [rng.permutation(np.flatnonzero(key == c))[:t] for c, t in zip(classes, take)]
    return rng.permutation(np.concatenate(picked))


def stratified_split(images: np.ndarray, labels: np.ndarray,
                     fractions: Sequence[float] = (0.7, 0.15, 0.15), *, seed: int = 0
                     ) -> tuple[Split, Split, Split]:
    """Seeded train/val/test split that keeps each class's share in every split.

    Multi-label rows are stratified on their rarest positive label (a simple, common proxy).
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise CourseError(f"fractions must be three non-negative numbers (train, val, test) that sum to 1; "
                          f"got {fractions}.")
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise CourseError(f"{len(images)} images but {len(labels)} labels: they must match.")
    rng = np.random.default_rng(seed)
    key = strata(labels)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(key):
        idx = rng.permutation(np.flatnonzero(key == c))
        n_train = int(round(len(idx) * fractions[0]))
        n_val = min(int(round(len(idx) * fractions[1])), len(idx) - n_train)
        chunks = (idx[:n_train], idx[n_train:n_train + n_val], idx[n_train + n_val:])
        missing = [name for name, chunk, f in zip(("train", "val", "test"), chunks, fractions) if f > 0 and not len(chunk)]
        if missing:
            what = f"class {c}" if labels.ndim == 1 else f"the stratum of label {c}"
            warnings.warn(f"{what} has only {len(idx)} item(s): the {' and '.join(missing)} split(s) get none of it, "
                          "so they cannot measure it. Add images of that class (at least one per split).",
                          stacklevel=2)
        for part, chunk in zip(parts, chunks):
            part.append(chunk)
    out = []
    for part in parts:
        idx = rng.permutation(np.concatenate(part)) if part else np.array([], dtype=np.int64)
        out.append(Split(images[idx], labels[idx]))
    return out[0], out[1], out[2]


def class_counts(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    """Images per class (multi-label: positives per label), in class order."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return {name: int(v) for name, v in zip(class_names, labels.sum(axis=0))}
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=len(class_names))
    return {name: int(counts[i]) for i, name in enumerate(class_names)}


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
