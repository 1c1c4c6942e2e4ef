"""The course's PyTorch training engine: one readable loop where each feature is a switch.

In the spirit of torchvision's classification reference script::

    history = fit(model, train_loader, val_loader, epochs=10, task="binary",
                  loss_fn=FocalLoss(alpha=0.25, gamma=2.0))   # -> course_utils.History
    probs, labels = predict(model, test_loader)

Switches: device (CUDA if available, else CPU), ``amp`` (float16 autocast + ``GradScaler`` on CUDA;
never bfloat16, which a T4 cannot run fast), ``channels_last``, AdamW ``weight_decay``, ``schedule``
(per-step cosine decay to ``min_lr_ratio * lr``), ``clip_grad_norm`` (applied after
``scaler.unscale_``), best-state tracking on ``monitor`` and restoring it, ``early_stopping_patience``,
a non-finite guard (a batch whose inputs or loss are NaN/inf is skipped and counted, before any
backward or step), a checkpoint every epoch with ``resume=True`` (model, optimizer, scheduler,
scaler, epoch, best state, RNG states), and two-phase transfer learning (:func:`fit_two_phase`).

Batches are ``(images, labels)`` with float images ``[B, C, H, W]``. Per task, the model's output
and the labels must be:

==============  =========================================  ==========================================
task            model output                               labels
==============  =========================================  ==========================================
binary          ``[B, 1]`` (sigmoid) or ``[B, 2]`` (softmax)  ``[B]`` (or ``[B, 1]``) in {0, 1}
multi-class     ``[B, C]`` (softmax)                       ``[B]`` class indices 0..C-1
multi-label     ``[B, L]`` (independent sigmoids)          ``[B, L]`` in {0, 1}
==============  =========================================  ==========================================

The loss receives ``(logits, targets)`` with targets shaped for it: float ``[B, 1]`` for a
single-logit binary model, long ``[B]`` for softmax outputs, float ``[B, L]`` for multi-label.
``predict`` returns probabilities ``[N, 2]`` for binary (either output form), ``[N, C]`` for
multi-class and ``[N, L]`` for multi-label.
"""
from __future__ import annotations

import copy
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import metrics as _metrics
from .history import History
from .runtime import CourseError, seed_everything

__all__ = ["fit", "fit_two_phase", "predict", "evaluate", "TASKS"]

TASKS = ("binary", "multi-class", "multi-label")
_CHECKPOINT_VERSION = 1
_CHECKPOINTED_META = ("skipped_batches", "skipped_per_epoch", "epoch_seconds")


# ============================================================================ the engine
def fit(model, train_loader, val_loader=None, *, epochs: int, loss_fn: Callable | None = None,
        task: str = "binary", lr: float = 1e-3, weight_decay: float = 1e-4, schedule: str = "cosine",
        min_lr_ratio: float = 0.01, clip_grad_norm: float | None = 1.0, monitor: str | None = "auto",
        restore_best: bool = True, early_stopping_patience: int | None = None, device: str | None = None,
        amp: bool | str = "auto", channels_last: bool | str = "auto", checkpoint_path: str | os.PathLike | None = None,
        resume: bool = False, two_phase: bool = False, head_epochs: int = 1, head_lr: float = 1e-3,
        finetune_lr: float = 1e-4, batchnorm_eval: bool = False, progress: bool = True,
        seed: int | None = None) -> History:
    """Train ``model`` on ``train_loader`` for ``epochs`` epochs and return a :class:`History`.

    Args:
        epochs: epochs to train (with ``two_phase=True``: epochs of phase 2, the fine-tuning).
        loss_fn: ``loss_fn(logits, targets) -> scalar``; default ``BCEWithLogitsLoss`` for a single
            logit or multi-label, ``CrossEntropyLoss`` for softmax outputs.
        task: ``"binary"``, ``"multi-class"`` or ``"multi-label"`` (see the module docstring).
        lr, weight_decay: AdamW's learning rate and decoupled weight decay (biases and norm
            parameters get none).
        schedule: ``"cosine"`` (per step from ``lr`` down to ``min_lr_ratio * lr``) or ``"constant"``.
        clip_grad_norm: clip the global gradient norm to this value (``None``: no clipping).
        monitor: validation metric for best-state tracking and early stopping: ``"val_auc"`` (the
            default when there is a validation loader), ``"val_loss"``, ``"val_accuracy"``, ``"val_ap"``,
            or ``None``. With ``restore_best`` the best epoch's weights are restored at the end.
        early_stopping_patience: stop after this many epochs without improvement (``None``: never).
        device: ``"cuda"`` / ``"cpu"``; default CUDA when available.
        amp, channels_last: ``"auto"`` turns each on with CUDA (float16 autocast + GradScaler).
        checkpoint_path: save a checkpoint here after every epoch; ``resume=True`` continues from it.
        two_phase, head_epochs, head_lr, finetune_lr: see :func:`fit_two_phase`.
        batchnorm_eval: keep every BatchNorm layer in eval mode (its running statistics are used
            and not updated), Keras' advice for fine-tuning a pretrained network on a small data set.
            BatchNorm layers whose parameters are all frozen are always kept in eval mode.
        progress: show a tqdm bar per epoch.  seed: seed Python/NumPy/torch first.

    Returns:
        History with per-epoch ``loss``, ``accuracy``, ``lr``, ``grad_norm`` (mean gradient norm
        before clipping, recorded when clipping is on) and, with ``val_loader``, ``val_loss``,
        ``val_accuracy``, ``val_auc``, ``val_ap``; ``meta`` says what happened (device, amp,
        best epoch, whether the best state was restored, skipped batches, early stop, resume).
    """
    if two_phase:
        return fit_two_phase(model, train_loader, val_loader, head_epochs=head_epochs, finetune_epochs=epochs,
                             head_lr=head_lr, finetune_lr=finetune_lr, loss_fn=loss_fn, task=task,
                             weight_decay=weight_decay, schedule=schedule, min_lr_ratio=min_lr_ratio,
                             clip_grad_norm=clip_grad_norm, monitor=monitor, restore_best=restore_best,
                             early_stopping_patience=early_stopping_patience, device=device, amp=amp,
                             channels_last=channels_last, checkpoint_path=checkpoint_path, resume=resume,
                             progress=progress, seed=seed)  # fit_two_phase decides batchnorm_eval per phase
    import torch  # noqa: PLC0415

    # ---------------------------------------------------------------- setup
    _check_args(task, epochs, schedule, min_lr_ratio, train_loader, val_loader)
    if seed is not None:
        seed_everything(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_amp = _switch(amp, dev.type == "cuda", "amp")
    if use_amp and dev.type != "cuda":
        warnings.warn("amp=True needs a CUDA GPU; training in float32 on the CPU.", stacklevel=2)
        use_amp = False
    use_cl = _switch(channels_last, dev.type == "cuda", "channels_last")
    memory_format = torch.channels_last if use_cl else torch.contiguous_format
    model.to(dev, memory_format=memory_format)
    loss_fn = loss_fn if loss_fn is not None else _default_loss(model, task)
    if monitor == "auto":
        monitor = "val_auc" if val_loader is not None else None
    if monitor is not None and monitor.startswith("val_") and val_loader is None:
        raise CourseError(f"monitor={monitor!r} needs a val_loader; pass one, or monitor=None")
    if early_stopping_patience is not None and monitor is None:
        raise CourseError("early stopping needs a monitored metric: pass val_loader (and monitor)")

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CourseError("the model has no trainable parameters (all frozen?): call models_torch.unfreeze(model)")
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]  # biases and norm weights: no weight decay
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    total_steps = epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(total_steps, min_lr_ratio)
                                                  if schedule == "cosine" else (lambda step: 1.0))
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp)

    history = History(meta={
        "engine": "course_utils.train_torch.fit", "task": task, "device": str(dev), "amp": use_amp,
        "amp_dtype": "float16" if use_amp else None, "channels_last": use_cl, "epochs_planned": epochs,
        "lr": lr, "weight_decay": weight_decay, "batchnorm_eval": batchnorm_eval, "schedule": schedule,
        "min_lr_ratio": min_lr_ratio,
        "clip_grad_norm": clip_grad_norm, "monitor": monitor, "loss_fn": _name(loss_fn),
        "model": dict(getattr(model, "course_info", {}) or {"arch": type(model).__name__}),
        "trainable_params": sum(p.numel() for p in params), "skipped_batches": 0, "skipped_per_epoch": [],
        "epoch_seconds": [], "best_epoch": None, "best_value": None, "restored_best": False,
        "stopped_early_at": None, "resumed_from_epoch": None, "checkpoint": None})
    best = _Best(monitor)
    bad_epochs, start_epoch = 0, 0
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if ckpt is not None:
        history.meta["checkpoint"] = str(ckpt)
    if resume:
        if ckpt is None:
            raise CourseError("resume=True needs checkpoint_path")
        if ckpt.exists():
            start_epoch, bad_epochs = _load_checkpoint(ckpt, model, optimizer, scheduler, scaler, history, best,
                                                       train_loader, dev)
            history.meta["resumed_from_epoch"] = start_epoch
            if progress:
                print(f"resumed from {ckpt} after epoch {start_epoch}/{epochs}")
        elif progress:
            print(f"no checkpoint at {ckpt} yet: starting from scratch")

    # ---------------------------------------------------------------- the loop
    with warnings.catch_warnings():
        # the GradScaler may skip the very first optimizer step (inf gradients at its initial
        # scale); torch then warns that the scheduler stepped first. That is expected with AMP.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        for epoch in range(start_epoch, epochs):
            if _patience_used_up(early_stopping_patience, bad_epochs):
                break
            t0 = time.perf_counter()
            model.train()
            _frozen_batchnorm_to_eval(model, every=batchnorm_eval)  # frozen backbone keeps its statistics
            epoch_lr = optimizer.param_groups[0]["lr"]
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev)
            grad_norm_sum, n_norms = torch.zeros((), device=dev), torch.zeros((), device=dev)
            n_seen, n_decisions, skipped, checked = 0, 0, 0, epoch > start_epoch
            bar = _bar(train_loader, progress, f"epoch {epoch + 1}/{epochs}")
            for step, batch in enumerate(bar):
                x, y = _split_batch(batch)
                x = x.to(dev, non_blocking=True, memory_format=memory_format)
                y = y.to(dev, non_blocking=True)
                if not checked:
                    _check_inputs(x, y, task)
                if not bool(torch.isfinite(x.sum())):  # NaN/inf pixels survive a sum: skip before BatchNorm sees them
                    skipped += 1
                    continue
                with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
                    logits = model(x)
                    if not checked:
                        _check_outputs(logits, y, task)
                        checked = True
                    target = _targets(y, task, logits.shape[1])
                    loss = loss_fn(logits, target)
                if not bool(torch.isfinite(loss)):  # check BEFORE backward/step: weights stay finite
                    skipped += 1
                    continue
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if clip_grad_norm:
                    scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                    norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)  # returns the norm before clipping
                    finite = torch.isfinite(norm)  # AMP: an inf norm is a step the GradScaler skips
                    grad_norm_sum += torch.where(finite, norm.detach().float(), 0.0)
                    n_norms += finite
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                # running metrics (tensors: no GPU sync per batch)
                loss_sum += loss.detach().float() * len(x)
                correct += _n_correct(logits.detach(), target, task)
                n_seen += len(x)
                n_decisions += target.numel() if task == "multi-label" else len(x)
                if progress and step % 10 == 0:
                    bar.set_postfix(loss=f"{loss_sum.item() / max(n_seen, 1):.4f}", refresh=False)

            if skipped:
                warnings.warn(f"epoch {epoch + 1}: skipped {skipped} batch(es) with non-finite inputs or loss "
                              "(NaN/inf pixels, or a learning rate that is too high)", stacklevel=2)
            if n_seen == 0:
                raise CourseError(f"epoch {epoch + 1}: every batch was skipped because its inputs or loss were "
                                  "not finite. Check the images for NaN/inf and lower the learning rate.")
            record = {"loss": loss_sum.item() / n_seen, "accuracy": correct.item() / n_decisions, "lr": epoch_lr}
            if n_norms.item():
                record["grad_norm"] = grad_norm_sum.item() / n_norms.item()  # mean global norm before clipping
            if val_loader is not None:
                val = evaluate(model, val_loader, task, loss_fn=loss_fn, device=str(dev), amp=use_amp,
                               channels_last=use_cl)
                record.update({f"val_{k}": val[k] for k in ("loss", "accuracy", "auc", "ap")})
            history.append(**record)
            history.meta["skipped_batches"] += skipped
            history.meta["skipped_per_epoch"].append(skipped)
            history.meta["epoch_seconds"].append(round(time.perf_counter() - t0, 3))

            # best state and early stopping
            if best.monitor is not None:
                if best.update(record, epoch + 1, model):
                    bad_epochs = 0
                else:
                    bad_epochs += 1
            if progress:
                print(f"epoch {epoch + 1}/{epochs}: " + "  ".join(f"{k}={v:.4g}" for k, v in record.items()))
            if ckpt is not None:
                _save_checkpoint(ckpt, epoch + 1, epochs, model, optimizer, scheduler, scaler, history, best,
                                 bad_epochs, train_loader)
            if _patience_used_up(early_stopping_patience, bad_epochs) and epoch + 1 < epochs:
                history.meta["stopped_early_at"] = epoch + 1
                if progress:
                    print(f"early stopping: {best.monitor} did not improve for {bad_epochs} epochs")
                break

    # ---------------------------------------------------------------- the end
    if best.monitor is not None:
        history.meta.update(best_epoch=best.epoch, best_value=best.value, monitor=best.monitor)
        if restore_best and best.state is not None:
            model.load_state_dict(best.state)
            history.meta["restored_best"] = True
            if progress:
                print(f"restored the best weights: epoch {best.epoch}, {best.monitor}={best.value:.4g}")
    return history


def fit_two_phase(model, train_loader, val_loader=None, *, head_epochs: int, finetune_epochs: int,
                  head_lr: float = 1e-3, finetune_lr: float = 1e-4, finetune_batchnorm_eval: bool = True,
                  checkpoint_path: str | os.PathLike | None = None, resume: bool = False, seed: int | None = None,
                  **fit_kwargs: Any) -> History:
    """Transfer learning in two phases, the standard recipe for a pretrained backbone.

    Phase 1: the backbone is frozen (``models_torch.freeze_backbone``) and only the new head trains,
    ``head_epochs`` at ``head_lr``, so the random head cannot wreck the pretrained features.
    Phase 2 starts from phase 1's best state, unfreezes everything and fine-tunes the whole network,
    ``finetune_epochs`` at the smaller ``finetune_lr``. With ``finetune_batchnorm_eval`` (default) the
    BatchNorm layers keep their pretrained statistics in phase 2 too (Keras' fine-tuning advice: with a
    small data set, batch statistics would shift them and undo part of phase 1). Other arguments go to
    :func:`fit` for both phases. With best-state tracking, the best epoch of BOTH phases is restored at
    the end (if fine-tuning never beat the head-only model, you get the head-only model, and
    ``meta["best_phase"]`` says so). The returned History has both phases' epochs in order;
    ``meta["phase_epochs"]`` gives their lengths and ``meta["phase1"]`` / ``meta["phase2"]`` each
    phase's own meta.
    """
    from .models_torch import freeze_backbone, unfreeze  # noqa: PLC0415

    if head_epochs < 0 or finetune_epochs < 0:
        raise CourseError("head_epochs and finetune_epochs must be >= 0")
    paths = [None, None]
    if checkpoint_path is not None:
        p = Path(checkpoint_path)
        paths = [p.with_name(f"{p.stem}_phase1{p.suffix or '.pt'}"), p.with_name(f"{p.stem}_phase2{p.suffix or '.pt'}")]
    fit_kwargs.pop("batchnorm_eval", None)
    h1 = h2 = History()
    head_best = None
    if head_epochs:
        freeze_backbone(model)
        h1 = fit(model, train_loader, val_loader, epochs=head_epochs, lr=head_lr, checkpoint_path=paths[0],
                 resume=resume, seed=seed, **fit_kwargs)
        if h1.meta.get("restored_best"):
            head_best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    unfreeze(model)
    if finetune_epochs:
        h2 = fit(model, train_loader, val_loader, epochs=finetune_epochs, lr=finetune_lr, checkpoint_path=paths[1],
                 resume=resume, seed=None if head_epochs else seed, batchnorm_eval=finetune_batchnorm_eval,
                 **fit_kwargs)
    history = History()
    for part in (h1, h2):
        for i in range(part.n_epochs):
            history.append(**{k: v[i] for k, v in part.metrics.items()})
    last = h2 if finetune_epochs else h1
    history.meta = {**last.meta, "engine": "course_utils.train_torch.fit_two_phase", "two_phase": True,
                    "phase_epochs": [h1.n_epochs, h2.n_epochs], "head_lr": head_lr, "finetune_lr": finetune_lr,
                    "phase1": h1.meta, "phase2": h2.meta,
                    "skipped_batches": h1.meta.get("skipped_batches", 0) + h2.meta.get("skipped_batches", 0)}
    history.meta["best_phase"] = 2 if last is h2 else 1
    if last is h2 and h2.meta.get("best_epoch") is not None:
        history.meta["best_epoch"] = h1.n_epochs + h2.meta["best_epoch"]
        if head_best is not None and h2.meta.get("monitor") == h1.meta.get("monitor") and \
                _better(h1.meta["best_value"], h2.meta["best_value"], h1.meta["monitor"]):
            model.load_state_dict(head_best)  # fine-tuning never beat the head-only model
            history.meta.update(best_phase=1, best_epoch=h1.meta["best_epoch"], best_value=h1.meta["best_value"])
            if fit_kwargs.get("progress", True):
                print(f"phase 2 never beat phase 1's best {h1.meta['monitor']} ({h1.meta['best_value']:.4g}): "
                      "restored the phase-1 (head-only) weights")
    return history


def _better(a: float | None, b: float | None, monitor: str) -> bool:
    """Is value ``a`` strictly better than ``b`` for ``monitor``?"""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return a is not None and not math.isnan(a) and (b is None or math.isnan(b))
    return a < b if "loss" in monitor else a > b


# ============================================================================ inference
def predict(model, loader, *, task: str = "auto", device: str | None = None, amp: bool | str = "auto",
            channels_last: bool | str = "auto", progress: bool = False, return_logits: bool = False):
    """Run ``model`` over ``loader`` in eval mode; returns ``(probabilities, labels)`` as NumPy arrays.

    Probabilities: ``[N, 2]`` for binary (a single logit becomes ``[1 - p, p]``), ``[N, C]`` softmax
    for multi-class, ``[N, L]`` sigmoids for multi-label. ``task="auto"`` infers it: 2-D labels mean
    multi-label, one output column means binary, otherwise softmax. ``labels`` is ``None`` when the
    loader yields images only. ``return_logits=True`` adds the raw logits as a third element.
    """
    import torch  # noqa: PLC0415

    if task not in ("auto", *TASKS):
        raise CourseError(f"task must be 'auto' or one of {', '.join(TASKS)}, not {task!r}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_amp = _switch(amp, dev.type == "cuda", "amp") and dev.type == "cuda"
    use_cl = _switch(channels_last, dev.type == "cuda", "channels_last")
    memory_format = torch.channels_last if use_cl else torch.contiguous_format
    _require_batches(loader, "loader")
    model.to(dev)
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    try:
        with torch.inference_mode():
            for batch in _bar(loader, progress, "predict"):
                x, y = _split_batch(batch, labels_required=False)
                x = x.to(dev, non_blocking=True, memory_format=memory_format)
                with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
                    logits = model(x)
                if logits.ndim != 2:
                    raise CourseError(f"the model returned shape {tuple(logits.shape)}; expected [batch, outputs]")
                all_logits.append(logits.float().cpu())
                if y is not None:
                    all_labels.append(y.cpu())
    finally:
        model.train(was_training)
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels).numpy() if all_labels else None
    if task == "auto":
        task = ("multi-label" if labels is not None and labels.ndim == 2 and labels.shape[1] > 1
                else "binary" if logits.shape[1] == 1 else "multi-class")
    probs = _probabilities(logits, task).numpy()
    return (probs, labels, logits.numpy()) if return_logits else (probs, labels)


def evaluate(model, loader, task: str, *, loss_fn: Callable | None = None, class_names=None,
             threshold: float = 0.5, device: str | None = None, amp: bool | str = "auto",
             channels_last: bool | str = "auto") -> dict[str, float]:
    """Predict on ``loader`` and return ``metrics.summarize`` (accuracy, macro-F1, AUC, AP, per-class
    recall) plus ``loss`` when ``loss_fn`` is given. Call it on the test split once, at the end."""
    import torch  # noqa: PLC0415

    _check_task(task)
    probs, labels, logits = predict(model, loader, task=task, device=device, amp=amp,
                                    channels_last=channels_last, return_logits=True)
    if labels is None:
        raise CourseError("evaluate needs a loader that yields (images, labels)")
    out = _metrics.summarize(labels, probs, task, class_names=class_names, threshold=threshold)
    if loss_fn is not None:
        logits_t = torch.from_numpy(logits)
        with torch.no_grad():
            dev = next(iter(p.device for p in _loss_params(loss_fn)), torch.device("cpu"))
            target = _targets(torch.from_numpy(labels), task, logits_t.shape[1])
            out["loss"] = float(loss_fn(logits_t.to(dev), target.to(dev)))
    return out


# ============================================================================ helpers
class _Best:
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
                          "monitoring val_loss instead", stacklevel=3)
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


def _patience_used_up(patience: int | None, bad_epochs: int) -> bool:
    return patience is not None and bad_epochs >= patience


def _cosine(total_steps: int, min_ratio: float) -> Callable[[int], float]:
    """lr multiplier: half a cosine from 1 down to ``min_ratio`` over ``total_steps``."""
    def factor(step: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def _switch(value: bool | str, auto: bool, name: str) -> bool:
    if value == "auto":
        return auto
    if isinstance(value, bool):
        return value
    raise CourseError(f"{name} must be True, False or 'auto', not {value!r}")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise CourseError(f"task must be one of {', '.join(TASKS)}, not {task!r}")


def _check_args(task, epochs, schedule, min_lr_ratio, train_loader, val_loader) -> None:
    _check_task(task)
    if not isinstance(epochs, int) or epochs < 0:
        raise CourseError(f"epochs must be a non-negative int, got {epochs!r}")
    if schedule not in ("cosine", "constant"):
        raise CourseError(f"schedule must be 'cosine' or 'constant', not {schedule!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise CourseError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    _require_batches(train_loader, "train_loader")
    if val_loader is not None:
        _require_batches(val_loader, "val_loader")


def _require_batches(loader, name: str) -> None:
    try:
        n = len(loader)
    except TypeError as exc:
        raise CourseError(f"{name} must have a length (a torch DataLoader over a map-style dataset)") from exc
    if n == 0:
        raise CourseError(f"{name} yields no batches: its dataset is empty, or drop_last=True with fewer "
                          "samples than batch_size. Check the split you passed.")


def _split_batch(batch, labels_required: bool = True):
    import torch  # noqa: PLC0415

    if isinstance(batch, torch.Tensor):
        if labels_required:
            raise CourseError("the loader yields images only; training needs (images, labels) batches")
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, (tuple, list)) and len(batch) == 1 and not labels_required:
        return batch[0], None
    raise CourseError(f"a batch must be (images, labels); got {type(batch).__name__} of length "
                      f"{len(batch) if hasattr(batch, '__len__') else '?'}")


def _check_inputs(x, y, task: str) -> None:
    """Cheap checks on the first batch, with messages that say how to fix the data."""
    import torch  # noqa: PLC0415

    if not torch.is_floating_point(x):
        raise CourseError(f"images are {x.dtype}, not float: convert them (e.g. cu.augment.eval_transform(), "
                          "or cu.data.to_torch_loader, which scales uint8 to float)")
    if x.ndim != 4:
        raise CourseError(f"images must be [batch, channels, height, width]; got shape {tuple(x.shape)}")
    if len(y) != len(x):
        raise CourseError(f"the batch has {len(x)} images but {len(y)} labels")
    if task == "multi-label":
        if y.ndim != 2:
            raise CourseError(f"multi-label labels must be [batch, n_labels] 0/1 columns; got shape {tuple(y.shape)}")
    elif not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
        raise CourseError(f"{task} labels must be [batch] class indices; got shape {tuple(y.shape)}"
                          + (" (2-D labels: is this a multi-label task? pass task='multi-label')"
                             if y.ndim == 2 else ""))
    yf = y.float()
    if task != "multi-class" and bool(((yf < 0) | (yf > 1)).any()):
        raise CourseError(f"{task} labels must be 0 or 1; found values from {yf.min().item():g} to {yf.max().item():g}"
                          + (" (more than two classes: use task='multi-class')" if task == "binary" else ""))
    if task == "multi-class" and (bool((yf != yf.round()).any()) or bool((yf < 0).any())):
        raise CourseError("multi-class labels must be non-negative integer class indices")


def _check_outputs(logits, y, task: str) -> None:
    if logits.ndim != 2:
        raise CourseError(f"the model returned shape {tuple(logits.shape)}; expected [batch, outputs] logits")
    k = logits.shape[1]
    if task == "binary" and k not in (1, 2):
        raise CourseError(f"task='binary' needs a model with 1 output (sigmoid) or 2 (softmax); this one has {k}. "
                          "Build it with n_classes=1 or 2, or use task='multi-class'.")
    if task == "multi-class":
        if k < 2:
            raise CourseError(f"task='multi-class' needs one output per class; the model has {k}")
        top = int(y.max().item())
        if top >= k:
            raise CourseError(f"labels go up to {top} but the model has only {k} outputs (classes 0..{k - 1}): "
                              f"build it with n_classes={top + 1} or more")
    if task == "multi-label" and y.shape[1] != k:
        raise CourseError(f"the labels have {y.shape[1]} columns but the model has {k} outputs: "
                          f"build it with n_classes={y.shape[1]}")


def _targets(y, task: str, n_out: int):
    """Labels shaped for the loss: float [B, 1] (single logit), long [B] (softmax), float [B, L]."""
    if task == "multi-label":
        return y.float()
    y = y.reshape(-1)
    if n_out == 1:
        return y.float().unsqueeze(1)
    return y.long()


def _n_correct(logits, target, task: str):
    if task == "multi-label" or logits.shape[1] == 1:
        return ((logits > 0).float() == target).sum()
    return (logits.argmax(dim=1) == target).sum()


def _probabilities(logits, task: str):
    import torch  # noqa: PLC0415

    logits = logits.float()
    if task == "multi-label":
        return torch.sigmoid(logits)
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def _default_loss(model, task: str):
    import torch  # noqa: PLC0415

    n_out = getattr(model, "course_info", {}).get("n_classes")
    if task == "multi-label" or (task == "binary" and n_out == 1):
        return torch.nn.BCEWithLogitsLoss()
    if task == "binary" and n_out is None:
        return _AutoBinaryLoss()
    return torch.nn.CrossEntropyLoss()


class _AutoBinaryLoss:
    """Default binary loss when the output size is not known in advance: BCE for one logit, CE for two."""

    def __call__(self, logits, target):
        import torch.nn.functional as F  # noqa: PLC0415

        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.cross_entropy(logits, target)


def _loss_params(loss_fn):
    params = getattr(loss_fn, "parameters", None)
    buffers = getattr(loss_fn, "buffers", None)
    out = list(params()) if callable(params) else []
    out += list(buffers()) if callable(buffers) else []
    return out


def _name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _frozen_batchnorm_to_eval(model, every: bool = False) -> None:
    from torch.nn.modules.batchnorm import _BatchNorm  # noqa: PLC0415

    for m in model.modules():
        if isinstance(m, _BatchNorm):
            params = list(m.parameters(recurse=False))
            if every or (params and not any(p.requires_grad for p in params)):
                m.eval()


def _bar(iterable, progress: bool, desc: str):
    if not progress:
        return iterable
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(iterable, desc=desc, leave=False, mininterval=0.5)


# ---------------------------------------------------------------------------- checkpoints
def _loader_generators(loader) -> list:
    import torch  # noqa: PLC0415

    found = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def _rng_state(loader) -> dict:
    import torch  # noqa: PLC0415

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loader": [g.get_state() for g in _loader_generators(loader)]}


def _set_rng_state(state: dict, loader) -> None:
    import torch  # noqa: PLC0415

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for g, s in zip(_loader_generators(loader), state.get("loader", [])):
        g.set_state(s)


def _save_checkpoint(path: Path, epoch, epochs, model, optimizer, scheduler, scaler, history, best, bad_epochs,
                     loader) -> None:
    """Everything needed to continue exactly where we stopped; written atomically (tmp + rename)."""
    import torch  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"version": _CHECKPOINT_VERSION, "epoch": epoch, "epochs": epochs, "steps_per_epoch": len(loader),
             "lr": history.meta["lr"], "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
             "history": {"metrics": history.metrics,
                         "meta": {k: history.meta[k] for k in _CHECKPOINTED_META}},
             "best": {"monitor": best.monitor, "value": best.value, "epoch": best.epoch, "state": best.state,
                      "tiebreak": best.tiebreak},
             "bad_epochs": bad_epochs, "rng": _rng_state(loader)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, model, optimizer, scheduler, scaler, history, best, loader, dev) -> tuple[int, int]:
    import torch  # noqa: PLC0415

    try:
        state = torch.load(path, map_location=dev, weights_only=False)  # our own file (holds RNG states)
    except Exception as exc:  # noqa: BLE001
        raise CourseError(f"could not read the checkpoint {path} ({exc}); delete it to start over") from exc
    if state.get("version") != _CHECKPOINT_VERSION:
        raise CourseError(f"{path} is not a course_utils checkpoint (version {state.get('version')})")
    if state["epochs"] != history.meta["epochs_planned"]:
        warnings.warn(f"the checkpoint was made for epochs={state['epochs']}, this run asks for "
                      f"{history.meta['epochs_planned']}: the learning-rate schedule changes", stacklevel=3)
    if state.get("steps_per_epoch") != len(loader) or state.get("lr") != history.meta["lr"]:
        warnings.warn(f"the checkpoint {path} was made with {state.get('steps_per_epoch')} batches per epoch and "
                      f"lr={state.get('lr')}; this run has {len(loader)} and lr={history.meta['lr']}. "
                      "Is it from another experiment? Delete it (or use another checkpoint_path) to start over.",
                      stacklevel=3)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError) as exc:
        raise CourseError(f"the checkpoint {path} does not fit this model/optimizer ({exc}). Was it made by a "
                          "different model or training phase? Delete it or choose another checkpoint_path.") from exc
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    history.metrics = copy.deepcopy(state["history"]["metrics"])
    history.meta.update(state["history"]["meta"])
    b = state["best"]
    best.monitor, best.value, best.epoch, best.tiebreak = b["monitor"], b["value"], b["epoch"], b.get("tiebreak")
    best.state = {k: v.cpu() for k, v in b["state"].items()} if b["state"] is not None else None
    _set_rng_state(state["rng"], loader)
    return int(state["epoch"]), int(state["bad_epochs"])
