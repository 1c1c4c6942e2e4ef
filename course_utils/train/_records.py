"""What the torch engine records while it trains (private to :mod:`course_utils.train_torch`).

:class:`EpochSums`: an epoch's running loss, accuracy, gradient norms and clipped steps, kept as tensors on
the device so that no batch waits for the GPU. :func:`log_epoch`: the epoch's line in the History (training
statistics, learning rate, validation metrics, time, skipped batches). :class:`BestEpoch`: the best value
of the monitored metric so far and a CPU copy of the weights at that epoch (``val_loss`` breaks ties);
:func:`restore_best_epoch` puts them back at the end; :func:`patience_used_up` is early stopping's test.
Warnings name the user's ``fit(...)`` line (:func:`user_stacklevel`), not a line of the engine.
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings

from .history import History
from ..runtime import CourseError, import_torch


class EpochSums:
    """The epoch's running sums, kept as tensors on the device (no GPU sync per batch)."""

    def __init__(self, dev, task: str):
        torch = import_torch()
        self.task = task
        self.loss, self.correct = torch.zeros((), device=dev), torch.zeros((), device=dev)
        self.norm_sum, self.n_norms = torch.zeros((), device=dev), torch.zeros((), device=dev)
        self.n_clipped = torch.zeros((), device=dev)
        self.n, self.decisions, self.skipped, self.steps = 0, 0, 0, 0

    def add(self, loss, logits, target) -> None:
        logits = logits.detach()
        self.loss += loss.detach().float() * len(logits)
        if self.task == "multi-label" or logits.shape[1] == 1:
            self.correct += ((logits > 0).float() == target).sum()
        else:
            self.correct += (logits.argmax(dim=1) == target).sum()
        self.n += len(logits)
        self.steps += 1
        self.decisions += target.numel() if self.task == "multi-label" else len(logits)

    def add_norm(self, norm, limit: float) -> None:
        torch = import_torch()
        finite = torch.isfinite(norm)  # AMP: an inf norm is a step the GradScaler skips
        self.norm_sum += torch.where(finite, norm.detach().float(), 0.0)
        self.n_norms += finite
        self.n_clipped += finite & (norm.detach() > limit)  # clip_grad_norm_ rescales only above the limit

    def result(self) -> dict[str, float]:
        n_norms = self.n_norms.item()
        return {"loss": self.loss.item() / self.n, "accuracy": self.correct.item() / self.decisions,
                "grad_norm": self.norm_sum.item() / n_norms if n_norms else math.nan,
                "clipped": int(self.n_clipped.item()), "steps": self.steps, "skipped": self.skipped, "n": self.n}


class BestEpoch:
    """Remembers the best value of the monitored metric and a CPU copy of the weights at that epoch."""

    def __init__(self, monitor: str | None):
        self.monitor = monitor
        self.value: float | None = None
        self.epoch: int | None = None
        self.state: dict | None = None
        self.tiebreak: float | None = None  # val_loss at the best epoch: breaks ties (e.g. AUC stuck at 1.0)

    @property
    def mode(self) -> str:
        return "min" if self.monitor and "loss" in self.monitor else "max"

    def update(self, record: dict, epoch: int, model) -> bool:
        value = record.get(self.monitor)
        if value is None:
            raise CourseError(f"monitor={self.monitor!r} is not a recorded metric; choose one of {sorted(record)}")
        if math.isnan(value) and self.monitor != "val_loss" and not math.isnan(record.get("val_loss", math.nan)):
            warnings.warn(f"{self.monitor} is undefined this epoch (one class only in the validation set?); "
                          "monitoring val_loss instead", stacklevel=user_stacklevel())
            self.monitor, self.value = "val_loss", None
            value = record["val_loss"]
        if math.isnan(value):
            return False
        loss = record.get("val_loss", math.nan)
        better = self.value is None or (value < self.value if self.mode == "min" else value > self.value)
        if not better and value == self.value and self.monitor != "val_loss" and self.tiebreak is not None:
            better = loss < self.tiebreak
        if better:
            self.value, self.epoch, self.tiebreak = float(value), epoch, float(loss)
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return better


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning name the first caller outside ``course_utils`` (the user's
    ``fit(...)`` line, however many of the engine's own frames lie in between)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # course_utils/, above train/
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def patience_used_up(patience: int | None, bad_epochs: int) -> bool:
    """Early stopping's test: ``patience`` epochs in a row without improvement (never with None)."""
    return patience is not None and bad_epochs >= patience


def is_better(a: float | None, b: float | None, monitor: str) -> bool:
    """Is value ``a`` strictly better than ``b`` for ``monitor``?"""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return a is not None and not math.isnan(a) and (b is None or math.isnan(b))
    return a < b if "loss" in monitor else a > b


def log_epoch(history: History, stats: dict, lr: float, val: dict | None, t0: float) -> dict[str, float]:
    """Append the epoch's record (training stats, lr, validation metrics) and bookkeeping to ``history``."""
    record = {"loss": stats["loss"], "accuracy": stats["accuracy"], "lr": lr}
    if not math.isnan(stats["grad_norm"]):
        record["grad_norm"] = stats["grad_norm"]
        record["clipped"] = stats["clipped"] / max(stats["steps"], 1)  # share of steps clipping shortened
    if val is not None:
        record.update({f"val_{k}": val[k] for k in ("loss", "accuracy", "auc", "ap")})
    history.append(**record)
    history.meta["skipped_batches"] += stats["skipped"]
    history.meta["skipped_per_epoch"].append(stats["skipped"])
    history.meta["epoch_seconds"].append(round(time.perf_counter() - t0, 3))
    return record


def restore_best_epoch(model, best: BestEpoch, history: History, restore_best: bool, progress: bool) -> None:
    """Record the best epoch in ``history.meta`` and, with ``restore_best``, load its weights into ``model``."""
    if best.monitor is None:
        return
    history.meta.update(best_epoch=best.epoch, best_value=best.value, monitor=best.monitor)
    if restore_best and best.state is not None:
        model.load_state_dict(best.state)
        history.meta["restored_best"] = True
        if progress:
            print(f"restored the best weights: epoch {best.epoch}, {best.monitor}={best.value:.4g}")
