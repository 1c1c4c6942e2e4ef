"""The one training record every fit in the course returns (Keras wrapper and torch engine alike).

Metric names follow Keras: ``loss``, ``accuracy``, ``auc`` for training and a ``val_`` prefix for
validation, one value per epoch, so curves and results boards work for both frameworks.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["History", "join_histories"]


@dataclass
class History:
    """Per-epoch metrics of one run, plus free-form facts about it (``meta``)."""

    metrics: dict[str, list[float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- building
    def append(self, **values: float) -> None:
        """Add one epoch. Metrics missing this epoch get NaN so all lists stay aligned."""
        n = self.n_epochs
        for key in values:
            self.metrics.setdefault(key, [math.nan] * n)
        for key, series in self.metrics.items():
            series.append(float(values[key]) if key in values and values[key] is not None else math.nan)

    # ---------------------------------------------------------------- reading
    @property
    def n_epochs(self) -> int:
        return max((len(v) for v in self.metrics.values()), default=0)

    @property
    def epochs(self) -> list[int]:
        return list(range(1, self.n_epochs + 1))

    def __getitem__(self, name: str) -> list[float]:
        if name not in self.metrics:
            raise KeyError(f"no metric {name!r} in this history; it has: {', '.join(self.metrics) or 'nothing'}")
        return self.metrics[name]

    def __contains__(self, name: object) -> bool:
        return name in self.metrics

    def last(self, name: str) -> float:
        """The final epoch's value of ``name``."""
        values = self[name]
        if not values:
            raise ValueError(f"metric {name!r} has no values yet")
        return values[-1]

    def best(self, name: str, mode: str = "auto") -> float:
        """The best value of ``name`` (``min`` for losses, ``max`` otherwise, unless ``mode`` says)."""
        values = [v for v in self[name] if not math.isnan(v)]
        if not values:
            raise ValueError(f"metric {name!r} has no finite values")
        if mode == "auto":
            mode = "min" if "loss" in name else "max"
        return min(values) if mode == "min" else max(values)

    def summary(self) -> dict[str, float]:
        """Last value of every metric: handy for a results table."""
        return {k: v[-1] for k, v in self.metrics.items() if v}

    # ---------------------------------------------------------------- files
    def to_frame(self):
        """A pandas DataFrame with an ``epoch`` column and one column per metric."""
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame({"epoch": self.epochs, **self.metrics})

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write ``epoch,metric...`` rows; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.metrics)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", *keys])
            for i in range(self.n_epochs):
                w.writerow([i + 1, *(self.metrics[k][i] for k in keys)])
        return path

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> "History":
        """Read a CSV written by :meth:`to_csv` or by Keras' ``CSVLogger``."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no history file at {path}")
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        hist = cls(meta={"csv": str(path)})
        for row in rows:
            hist.append(**{k: float(v) if v not in ("", None) else math.nan
                           for k, v in row.items() if k != "epoch"})
        return hist

    @classmethod
    def from_keras(cls, keras_history: Any, **meta: Any) -> "History":
        """Convert ``model.fit(...)``'s return value."""
        hist = cls(meta=dict(meta))
        logs = dict(keras_history.history)
        n = max((len(v) for v in logs.values()), default=0)
        for i in range(n):
            hist.append(**{k: (v[i] if i < len(v) else math.nan) for k, v in logs.items()})
        return hist


def join_histories(*histories: History) -> History:
    """One History with the epochs of several runs in order (e.g. the two phases of fine-tuning, for one
    plot); ``meta`` is the last run's."""
    joined = History()
    for part in histories:
        for i in range(part.n_epochs):
            joined.append(**{k: v[i] for k, v in part.metrics.items()})
    joined.meta = dict(histories[-1].meta) if histories else {}
    return joined
