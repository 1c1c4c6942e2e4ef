"""Transfer learning in two phases: train the head on a frozen backbone, then fine-tune everything.

Two calls of the engine's :func:`~course_utils.train.torch_engine.fit` (read that first); this module only
freezes, unfreezes, names the two checkpoints and keeps the better phase.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import torch_engine
from ._records import is_better
from .history import History, join_histories
from ..models.info import ModelInfo
from ..runtime import CourseError

__all__ = ["fit_two_phase"]


def fit_two_phase(model, train_loader, val_loader=None, *, head_epochs: int, finetune_epochs: int,
                  head_lr: float = 1e-3, finetune_lr: float = 1e-4, finetune_batchnorm_eval: bool = True,
                  info: ModelInfo | None = None, checkpoint_path: str | os.PathLike | None = None,
                  seed: int | None = None, **fit_kwargs: Any) -> History:
    """Transfer learning in two phases, the standard recipe for a pretrained backbone: two calls of
    :func:`~course_utils.train.torch_engine.fit` (called through its module, so a wrapped ``fit`` is the one used).

    Phase 1 freezes the backbone (``models_torch.freeze_backbone(model, info)``) and trains only the
    head, ``head_epochs`` at ``head_lr``, so the random head cannot wreck the pretrained features.
    Phase 2 starts from phase 1's best state, unfreezes everything and fine-tunes the whole network,
    ``finetune_epochs`` at the smaller ``finetune_lr``; with ``finetune_batchnorm_eval`` (default) the
    BatchNorm layers keep their pretrained statistics (Keras' fine-tuning advice for small data sets).
    Every other keyword goes to both calls of :func:`fit` (``checkpoint_path`` gets ``_phase1`` /
    ``_phase2`` suffixes; both checkpoints' settings include the whole two-phase recipe). The best
    epoch of BOTH phases is restored at the end (``meta["best_phase"]``).
    The History has both phases' epochs in order; ``meta["phase_epochs"]`` their lengths and
    ``meta["phase1"]`` / ``meta["phase2"]`` each phase's own meta.
    """
    from ..models.torch_models import freeze_backbone, unfreeze  # noqa: PLC0415

    if head_epochs < 0 or finetune_epochs < 0:
        raise CourseError("head_epochs and finetune_epochs must be >= 0")
    if "batchnorm_eval" in fit_kwargs:
        raise CourseError("fit_two_phase sets batchnorm_eval per phase: pass finetune_batchnorm_eval instead")
    settings = {**(fit_kwargs.pop("settings", None) or {}),  # each phase's checkpoint knows the whole recipe
                "two_phase": {"head_epochs": head_epochs, "finetune_epochs": finetune_epochs, "head_lr": head_lr,
                              "finetune_lr": finetune_lr, "finetune_batchnorm_eval": finetune_batchnorm_eval}}
    paths = [None, None]
    if checkpoint_path is not None:
        p = Path(checkpoint_path)
        paths = [p.with_name(f"{p.stem}_phase{i}{p.suffix or '.pt'}") for i in (1, 2)]
    h1 = h2 = History()
    head_best = None
    if head_epochs:
        freeze_backbone(model, info)
        h1 = torch_engine.fit(model, train_loader, val_loader, epochs=head_epochs, lr=head_lr, info=info,
                 checkpoint_path=paths[0], seed=seed, settings=settings, **fit_kwargs)
        if h1.meta.get("restored_best"):
            head_best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    unfreeze(model)
    if finetune_epochs:
        h2 = torch_engine.fit(model, train_loader, val_loader, epochs=finetune_epochs, lr=finetune_lr, info=info,
                 batchnorm_eval=finetune_batchnorm_eval, checkpoint_path=paths[1],
                 seed=None if head_epochs else seed, settings=settings, **fit_kwargs)
    return _join_phases(model, h1, h2, head_best, head_lr=head_lr, finetune_lr=finetune_lr,
                        progress=fit_kwargs.get("progress", True))


def _join_phases(model, h1: History, h2: History, head_best: dict | None, *, head_lr: float, finetune_lr: float,
                 progress: bool) -> History:
    """One History for both phases; restores the phase-1 weights when phase 2 never beat them."""
    history = join_histories(h1, h2)
    last = h2 if h2.n_epochs else h1
    history.meta = {**last.meta, "engine": "course_utils.train_torch.fit_two_phase", "two_phase": True,
                    "phase_epochs": [h1.n_epochs, h2.n_epochs], "head_lr": head_lr, "finetune_lr": finetune_lr,
                    "phase1": h1.meta, "phase2": h2.meta, "best_phase": 2 if last is h2 else 1,
                    "skipped_batches": h1.meta.get("skipped_batches", 0) + h2.meta.get("skipped_batches", 0)}
    if last is h2 and h2.meta.get("best_epoch") is not None:
        history.meta["best_epoch"] = h1.n_epochs + h2.meta["best_epoch"]
        if head_best is not None and h2.meta.get("monitor") == h1.meta.get("monitor") and \
                is_better(h1.meta["best_value"], h2.meta["best_value"], h1.meta["monitor"]):
            model.load_state_dict(head_best)  # fine-tuning never beat the head-only model
            history.meta.update(best_phase=1, best_epoch=h1.meta["best_epoch"], best_value=h1.meta["best_value"])
            if progress:
                print(f"phase 2 never beat phase 1's best {h1.meta['monitor']} ({h1.meta['best_value']:.4g}): "
                      "restored the phase-1 (head-only) weights")
    return history
