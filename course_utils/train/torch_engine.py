"""The course's PyTorch training engine, in the style of torchvision's reference ``train.py``.

Three functions a student can read, each in one screen, and ``fit`` composed of them::

    stats = train_one_epoch(model, train_loader, loss_fn, optimizer, task="binary")  # one pass, one step per batch
    result = evaluate(model, val_loader, "binary")       # loss, accuracy, AUC, ... on every sample
    history = fit(model, train_loader, val_loader, epochs=10, task="binary", info=info,
                  loss_fn=FocalLoss(alpha=0.25, gamma=2.0))          # -> course_utils.History
    probs, labels = predict(model, test_loader)
    recalibrate_batchnorm(model, clean_train_loader)   # BatchNorm statistics of clean images, after training

Two-phase transfer learning (head, then fine-tuning) is two calls of ``fit``: :mod:`.two_phase`.

Switches of ``fit`` (each one argument): the device (``runtime.torch_device``: CUDA if available),
``amp`` (float16 autocast + ``GradScaler`` on CUDA; never bfloat16, which a T4 cannot run fast),
``channels_last``, AdamW ``weight_decay``, ``schedule`` (per-step cosine decay to ``min_lr_ratio * lr``),
``clip_grad_norm`` (after ``scaler.unscale_``; the History records the mean norm before clipping and the
share of steps clipped), best-state tracking on ``monitor`` and restoring it, ``early_stopping_patience``,
``batchnorm_eval``, a checkpoint every epoch with ``resume=True`` (a checkpoint belongs to the run's
settings: with other settings it is not resumed, and ``{key}`` in its path becomes their hash). Always on:
the non-finite guard (a batch whose inputs or loss are NaN/inf is skipped and counted, before any
backward or step), checks of the first batch, and of every batch's labels (shape, range, whole class
indices: one min/max on the small labels tensor), with messages that name the batch and say how to fix
the data. An error part-way through a run (a bad batch, a full disk, Ctrl-C) keeps what was done: the
History of the finished epochs is attached to the exception (``exc.history``) and the message names the
last good checkpoint. Checkpoints are read with ``weights_only=True`` and checked against a SHA-256.

Batches are ``(images, labels)`` or ``(images, labels, *extra)`` with float images ``[B, C, H, W]``.
Extra per-sample tensors (e.g. a teacher's logits for self-distillation) are moved to the device and
passed on: ``loss_fn(logits, targets, *extra)``. Per task, the model's output and the labels must be:

==============  =========================================  ==========================================
task            model output                               labels
==============  =========================================  ==========================================
binary          ``[B, 1]`` (sigmoid) or ``[B, 2]`` (softmax)  ``[B]`` (or ``[B, 1]``) in {0, 1}
multi-class     ``[B, C]`` (softmax)                       ``[B]`` class indices 0..C-1
multi-label     ``[B, L]`` (independent sigmoids)          ``[B, L]`` in {0, 1}
==============  =========================================  ==========================================

The loss receives targets shaped for it: float ``[B, 1]`` for a single-logit binary model, long
``[B]`` for softmax outputs, float ``[B, L]`` for multi-label. ``predict`` returns probabilities
(``metrics.probabilities_torch``) ``[N, 2]`` for binary (either output form), ``[N, C]`` for
multi-class and ``[N, L]`` for multi-label. Private helpers: :mod:`._batches` (reading and
checking batches, the default loss), :mod:`._checkpoint` (settings, saving and resuming),
:mod:`._records` (an epoch's running sums, the History line, the best epoch).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from .. import metrics as _metrics
from .. import runtime
from ._batches import (
    CheckedBatches, check_args, check_labels, check_task, default_loss, loss_params, loss_targets, n_outputs,
    name_of, require_batches, split_batch,
)
from ._checkpoint import RunProgress, checkpoint_lock, keyed_path, resume_run, run_settings, settings_key
from ._records import (
    BestEpoch, EpochSums, log_epoch, patience_used_up, restore_best_epoch, user_stacklevel,
)
from .history import History
from ..models.info import ModelInfo
from ..runtime import CourseError, import_torch, seed_everything, torch_device

__all__ = ["fit", "train_one_epoch", "evaluate", "predict", "recalibrate_batchnorm", "settings_key", "depth_lr_scale",
           "TASKS"]

TASKS = _metrics.TASKS


# ============================================================================ one epoch
def train_one_epoch(model, loader, loss_fn: Callable, optimizer, *, task: str = "binary", scheduler=None,
                    scaler=None, clip_grad_norm: float | None = None, amp: bool = False,
                    channels_last: bool = False, batchnorm_eval: bool = False, check: bool = True,
                    progress: bool = False, desc: str = "train") -> dict[str, float]:
    """One pass over ``loader`` with one optimizer step per batch, on the device the model is on.

    Per batch: forward (float16 autocast with ``amp``); the loss ``loss_fn(logits, targets, *extra)``; backward;
    clip the global gradient norm (after unscaling); step the optimizer, the scaler and the per-step
    ``scheduler``. The checks live in :class:`~._batches.CheckedBatches`: every batch's labels, the first batch
    in full (``check``), and batches whose pixels or loss are not finite are skipped (before backward).
    BatchNorm layers whose parameters are all frozen stay in eval mode (every one with ``batchnorm_eval``).

    Returns ``{"loss", "accuracy", "grad_norm", "clipped", "steps", "skipped", "n"}``: mean loss and
    accuracy over the batches used, the mean gradient norm before clipping (NaN without clipping), the
    steps whose norm exceeded ``clip_grad_norm`` (so clipping shortened them; 0 with ``inf``), the
    optimizer steps taken, batches skipped, samples used.
    """
    torch = import_torch()
    dev = next(model.parameters()).device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    scaler = scaler if scaler is not None else torch.amp.GradScaler(dev.type, enabled=amp)
    params = _in_model_order(model, [p for group in optimizer.param_groups for p in group["params"]])
    model.train()
    _frozen_batchnorm_to_eval(model, every=batchnorm_eval)
    run = EpochSums(dev, task)
    bar = _bar(loader, progress, desc)
    batches = CheckedBatches(bar, task, dev, memory_format, check_first=check, desc=desc)   # every check is there
    for x, y, extra in batches:
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
            target, loss = batches.loss(loss_fn, logits, y, extra)
        if not batches.finite(loss):  # checked BEFORE backward/step: the weights stay finite
            continue
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad_norm:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)  # the norm before clipping
            run.add_norm(norm, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        run.add(loss, logits, target)
        if progress and batches.step % 10 == 0:
            bar.set_postfix(loss=f"{run.loss.item() / max(run.n, 1):.4f}", refresh=False)
    run.skipped = batches.skipped
    if run.skipped:
        warnings.warn(f"{desc}: skipped {run.skipped} batch(es) with non-finite inputs or loss "
                      "(NaN/inf pixels, or a learning rate that is too high)", stacklevel=user_stacklevel())
    if run.n == 0:
        raise CourseError(f"{desc}: every batch was skipped because its inputs or loss were "
                          "not finite. Check the images for NaN/inf and lower the learning rate.")
    return run.result()


# ============================================================================ evaluation
def evaluate(model, loader, task: str, *, loss_fn: Callable | None = None, class_names=None,
             threshold: float = 0.5, device: str | None = None, amp: bool | str = "auto",
             channels_last: bool | str = "auto") -> dict[str, Any]:
    """Predict on every sample of ``loader`` (eval mode, no gradients) and score the predictions.

    Returns the same keys as :func:`course_utils.train_keras.evaluate`: ``n`` (samples), ``loss``
    (``loss_fn`` over all samples, extra batch tensors included; default BCE / cross-entropy),
    ``accuracy``, ``macro_f1``, ``auc``, ``ap`` and ``recall_<class>`` (binary / multi-class), all
    from :func:`course_utils.metrics.summarize`, plus the arrays ``probs``, ``y_true`` and ``y_pred``.
    Call it on the test split once, at the end.
    """
    torch = import_torch()
    check_task(task)
    logits, labels, extra = _forward_all(model, loader, device, amp, channels_last, keep_extra=True, task=task)
    if labels is None:
        raise CourseError("evaluate needs a loader that yields (images, labels)")
    loss_fn = loss_fn if loss_fn is not None else default_loss(task, logits.shape[1])
    with torch.no_grad():
        dev = next(iter(p.device for p in loss_params(loss_fn)), torch.device("cpu"))
        target = loss_targets(labels, task, logits.shape[1]).to(dev)
        loss = float(loss_fn(logits.to(dev), target, *(e.to(dev) for e in extra)))
    probs = _metrics.probabilities_torch(logits, task).numpy()
    y_true = labels.numpy()
    scores = _metrics.summarize(y_true, probs, task, class_names=class_names, threshold=threshold)
    return {"n": len(y_true), "loss": loss, **scores, "probs": probs, "y_true": y_true,
            "y_pred": _metrics.to_predictions(probs, task, threshold)}


def predict(model, loader, *, task: str = "auto", device: str | None = None, amp: bool | str = "auto",
            channels_last: bool | str = "auto", progress: bool = False, return_logits: bool = False):
    """Run ``model`` over ``loader`` in eval mode; returns ``(probabilities, labels)`` as NumPy arrays.

    Probabilities: ``[N, 2]`` for binary (a single logit becomes ``[1 - p, p]``), ``[N, C]`` softmax
    for multi-class, ``[N, L]`` sigmoids for multi-label. ``task="auto"`` infers it: 2-D labels mean
    multi-label, one output column means binary, otherwise softmax. ``labels`` is ``None`` when the
    loader yields images only. ``return_logits=True`` adds the raw logits as a third element.
    """
    if task not in ("auto", *TASKS):
        raise CourseError(f"task must be 'auto' or one of {', '.join(TASKS)}, not {task!r}")
    logits, labels, _ = _forward_all(model, loader, device, amp, channels_last, progress=progress)
    labels = labels.numpy() if labels is not None else None
    if task == "auto":
        task = ("multi-label" if labels is not None and labels.ndim == 2 and labels.shape[1] > 1
                else "binary" if logits.shape[1] == 1 else "multi-class")
    probs = _metrics.probabilities_torch(logits, task).numpy()
    return (probs, labels, logits.numpy()) if return_logits else (probs, labels)


def _forward_all(model, loader, device, amp, channels_last, *, progress: bool = False, keep_extra: bool = False,
                 task: str | None = None):
    """Logits (float32, CPU) of every batch, the labels (or None) and the extra tensors, concatenated.
    With ``task`` (for scoring), each batch's labels are checked and its outputs must be finite."""
    torch = import_torch()
    dev = torch.device(torch_device(device))
    use_amp = _switch(amp, dev.type == "cuda", "amp") and dev.type == "cuda"
    memory_format = torch.channels_last if _switch(channels_last, dev.type == "cuda", "channels_last") \
        else torch.contiguous_format
    require_batches(loader, "loader")
    model.to(dev)
    was_training = model.training
    model.eval()
    logits, labels, extras = [], [], []
    try:
        with torch.inference_mode():
            for i, batch in enumerate(_bar(loader, progress, "predict")):
                x, y, extra = split_batch(batch, labels_required=False)
                x = x.to(dev, non_blocking=True, memory_format=memory_format)
                with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
                    out = model(x)
                if out.ndim != 2:
                    raise CourseError(f"the model returned shape {tuple(out.shape)}; expected [batch, outputs]")
                out = out.float().cpu()
                if task is not None:
                    _check_scored_batch(out, y, task, f"evaluate, batch {i + 1}", len(x))
                logits.append(out)
                if y is not None:
                    labels.append(y.cpu())
                if keep_extra:
                    extras.append([e.cpu() if isinstance(e, torch.Tensor) else e for e in extra])
    finally:
        model.train(was_training)
    extra = [torch.cat(parts) for parts in zip(*extras)] if extras else []
    return torch.cat(logits), (torch.cat(labels) if labels else None), extra


def recalibrate_batchnorm(model, loader, *, include_frozen: bool = False) -> int:
    """Recompute the running mean and variance of every BatchNorm layer from one pass over ``loader``.

    During training the running statistics are an exponential average over *training* batches: they
    describe augmented images (crops, rotations, brightness changes) and lag behind the weights early in a
    run. At evaluation the layers use them on clean images, and a mismatch shifts every output, e.g. all
    probabilities towards one class, while the ranking (AUC) stays. One pass over clean training images
    (no augmentation: ``augment.eval_transform``), without gradients, replaces them by the exact average
    over those images ("precise BatchNorm"). Only BatchNorm layers switch to training mode during the
    pass (dropout stays off); layers whose parameters are all frozen keep their (e.g. ImageNet) statistics
    unless ``include_frozen``. Returns the number of layers recalibrated.
    """
    torch = import_torch()
    from torch.nn.modules.batchnorm import _BatchNorm  # noqa: PLC0415

    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
              and (include_frozen or any(p.requires_grad for p in m.parameters(recurse=False)))]
    if not layers:
        return 0
    require_batches(loader, "loader")
    dev = next(model.parameters()).device
    was_training, momenta = model.training, [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass, not an exponential one
        m.train()
    try:
        with torch.no_grad():
            for batch in loader:
                model(split_batch(batch, labels_required=False)[0].to(dev))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(layers)


def _check_scored_batch(out, y, task: str, where: str, n_images: int) -> None:
    """A batch to be scored: labels valid for the task, outputs finite (NaN would only surface later as a
    raw error from scikit-learn, or as a silent NaN loss)."""
    torch = import_torch()
    if y is not None:
        check_labels(y, task, where, out.shape[1], n_images)
    finite = torch.isfinite(out).all(dim=1)
    if not bool(finite.all()):
        raise CourseError(f"{where}: the model's outputs are NaN or inf for {int((~finite).sum())} of {len(out)} "
                          "images. Check these images for NaN/inf pixels (e.g. torch.isfinite(x).all()), or the "
                          "weights (a learning rate that is too high can make them NaN).")


# ============================================================================ fit
def fit(model, train_loader, val_loader=None, *, epochs: int, loss_fn: Callable | None = None,
        task: str = "binary", info: ModelInfo | None = None, lr: float = 1e-3, weight_decay: float = 1e-4,
        schedule: str = "cosine", min_lr_ratio: float = 0.01, clip_grad_norm: float | None = 1.0,
        monitor: str | None = "auto", restore_best: bool = True, early_stopping_patience: int | None = None,
        device: str | None = None, amp: bool | str = "auto", channels_last: bool | str = "auto",
        batchnorm_eval: bool = False, checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
        settings: dict | None = None, progress: bool = True, seed: int | None = None,
        lr_scale: dict[str, float] | None = None) -> History:
    """Train ``model`` for ``epochs`` epochs (:func:`train_one_epoch`, then :func:`evaluate` on
    ``val_loader``) and return a :class:`History`.

    Args:
        loss_fn: ``loss_fn(logits, targets, *extra) -> scalar`` (``extra``: the batch's tensors after
            the labels, if any); default ``BCEWithLogitsLoss`` for a single logit or multi-label,
            ``CrossEntropyLoss`` for softmax outputs.
        task: ``"binary"``, ``"multi-class"`` or ``"multi-label"`` (see the module docstring).
        info: the :class:`ModelInfo` the builder returned (recorded in ``meta["model"]``; gives the
            output count for the default loss).
        lr, weight_decay: AdamW's learning rate and decoupled weight decay (biases and norm
            parameters get none).
        lr_scale: ``{parameter name: factor}``: that parameter's learning rate is ``factor * lr`` (discriminative
            rates, e.g. :func:`depth_lr_scale`: early layers move less than the head); missing names: 1.
        schedule: ``"cosine"`` (per step from ``lr`` down to ``min_lr_ratio * lr``) or ``"constant"``.
        clip_grad_norm: clip the global gradient norm to this value (``None``: no clipping).
        monitor: validation metric for best-state tracking and early stopping: ``"val_auc"`` (the
            default when there is a validation loader), ``"val_loss"``, ``"val_accuracy"``, ``"val_ap"``,
            or ``None``. With ``restore_best`` the best epoch's weights are restored at the end.
        early_stopping_patience: stop after this many epochs without improvement (``None``: never).
        device: ``"cuda"`` / ``"cpu"``; default ``runtime.torch_device()`` (CUDA when available).
        amp, channels_last: ``"auto"`` turns each on with CUDA (float16 autocast + GradScaler).
        batchnorm_eval: keep every BatchNorm layer in eval mode (running statistics used, not updated),
            Keras' advice for fine-tuning a pretrained network on a small data set. BatchNorm layers
            whose parameters are all frozen are always kept in eval mode.
        checkpoint_path: save a checkpoint here before the first epoch and after every epoch;
            ``resume=True`` continues from it exactly (after a stop in epoch 1: from the initial state).
            The checkpoint stores the run's settings (``meta["settings"]``: loss and its constants, model,
            epochs, lr, schedule, clipping, weight decay, seed, batches per epoch, and ``settings``); when
            they differ, ``resume=True`` starts fresh and says so in one line. A ``{key}`` in the path is
            replaced by their short hash (``meta["settings_key"]``), so each setting gets its own file.
        settings: what else makes this run this run and the engine cannot see (the data set, image size,
            augmentation ...), as a dict of plain values: part of the settings and of ``{key}``.
        progress: show a progress bar per epoch.  seed: seed Python/NumPy/torch first.

    Returns:
        History with per-epoch ``loss``, ``accuracy``, ``lr``, ``grad_norm`` (mean gradient norm
        before clipping) and ``clipped`` (share of steps clipping shortened), both when clipping is on,
        and, with ``val_loader``, ``val_loss``, ``val_accuracy``, ``val_auc``, ``val_ap``; ``meta`` says
        what happened (device, amp, best epoch, whether the best state was restored, skipped batches,
        early stop, resume, ``settings`` and ``settings_key``, ``fresh_start``: why a checkpoint was not
        resumed, ``set_aside``: the name that checkpoint was moved to, so that no trained run is lost).

    Raises:
        CourseError: bad data or arguments, named with the epoch and batch. Any exception that stops
            the run part-way carries ``exc.history`` (the finished epochs) and says which checkpoint
            is the last good one.
    """
    torch = import_torch()
    check_args(task, epochs, schedule, min_lr_ratio, train_loader, val_loader)
    if seed is not None:
        seed_everything(seed)
    dev = torch.device(torch_device(device))
    use_amp, use_cl = _amp_switch(amp, dev), _switch(channels_last, dev.type == "cuda", "channels_last")
    model.to(dev, memory_format=torch.channels_last if use_cl else torch.contiguous_format)
    loss_fn = loss_fn if loss_fn is not None else default_loss(task, n_outputs(model, info))
    monitor = _resolve_monitor(monitor, val_loader, early_stopping_patience)
    optimizer, scheduler, scaler = _optimization(model, lr, weight_decay, schedule, min_lr_ratio,
                                                 epochs * len(train_loader), dev, use_amp, lr_scale)
    if lr_scale:                                    # part of what makes this run this run (its checkpoint's key)
        scales = json.dumps(sorted((k, float(v)) for k, v in lr_scale.items()))
        settings = {**(settings or {}), "lr_scale": hashlib.sha256(scales.encode()).hexdigest()[:12]}
    asked = dict(task=task, epochs=epochs, lr=lr, weight_decay=weight_decay, schedule=schedule,
                 min_lr_ratio=min_lr_ratio, clip_grad_norm=clip_grad_norm, batchnorm_eval=batchnorm_eval,
                 monitor=monitor, seed=seed)
    run_key = run_settings(model=model, info=info, loss_fn=loss_fn, train_loader=train_loader, extra=settings, **asked)
    checkpoint_path = keyed_path(checkpoint_path, run_key)
    history = History(meta=_fit_meta(model, info, loss_fn, optimizer, dev, use_amp, use_cl, checkpoint_path,
                                     run_key, asked))
    best, ckpt = BestEpoch(monitor), (Path(checkpoint_path) if checkpoint_path else None)
    state = (model, optimizer, scheduler, scaler, history, best, train_loader)
    train = functools.partial(train_one_epoch, model, train_loader, loss_fn, optimizer, task=task,
                              scheduler=scheduler, scaler=scaler, clip_grad_norm=clip_grad_norm, amp=use_amp,
                              channels_last=use_cl, batchnorm_eval=batchnorm_eval, progress=progress)
    validate = None if val_loader is None else functools.partial(
        evaluate, model, val_loader, task, loss_fn=loss_fn, device=str(dev), amp=use_amp, channels_last=use_cl)
    with checkpoint_lock(ckpt):   # one run per checkpoint at a time
        start_epoch, bad_epochs = resume_run(ckpt, resume, state, dev, epochs, progress)
        run = RunProgress(ckpt, epochs, start_epoch if history.meta["resumed_from_epoch"] is not None else None)
        _run_epochs(train, validate, state, run, start_epoch, bad_epochs, early_stopping_patience, progress)
    restore_best_epoch(model, best, history, restore_best, progress)
    return history


def _run_epochs(train: Callable, validate: Callable | None, state: tuple, run: RunProgress, start_epoch: int,
                bad_epochs: int, patience: int | None, progress: bool) -> None:
    """fit's epoch loop: ``train()`` one epoch, ``validate()``, log it, track the best epoch, save a checkpoint,
    stop early. An error part-way keeps the finished epochs (``exc.history``) and names the last good checkpoint."""
    model, optimizer, history, best = state[0], state[1], state[4], state[5]
    epochs = run.epochs
    with warnings.catch_warnings():
        # the GradScaler may skip the very first optimizer step (inf gradients at its initial
        # scale); torch then warns that the scheduler stepped first. That is expected with AMP.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        try:
            if run.saved_epoch is None:  # the initial state: resume=True after a stop in epoch 1 restarts from it
                run.save(0, state, bad_epochs)
            for epoch in range(start_epoch, epochs):
                if patience_used_up(patience, bad_epochs):
                    break
                run.epoch, run.phase = epoch + 1, "training"
                t0, epoch_lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
                stats = train(check=epoch == start_epoch, desc=f"epoch {epoch + 1}/{epochs}")
                run.phase = "validation"
                record = log_epoch(history, stats, epoch_lr, None if validate is None else validate(), t0)
                if best.monitor is not None:
                    bad_epochs = 0 if best.update(record, epoch + 1, model) else bad_epochs + 1
                if progress:
                    print(f"epoch {epoch + 1}/{epochs}: " + "  ".join(f"{k}={v:.4g}" for k, v in record.items()))
                run.save(epoch + 1, state, bad_epochs)
                if patience_used_up(patience, bad_epochs) and epoch + 1 < epochs:
                    history.meta["stopped_early_at"] = epoch + 1
                    if progress:
                        print(f"early stopping: {best.monitor} did not improve for {bad_epochs} epochs")
                    break
        except BaseException as exc:  # Ctrl-C included: keep what was done, and say where it is
            run.keep(exc, history)
            raise


def _fit_meta(model, info: ModelInfo | None, loss_fn, optimizer, dev, amp: bool, channels_last: bool,
              checkpoint_path, run_key: dict, asked: dict) -> dict[str, Any]:
    """A new run's ``History.meta``: what was asked (``asked``: fit's settings), the device and switches used,
    the model, and what happened so far (nothing yet; filled in as the run goes)."""
    a = asked
    return {
        "engine": "course_utils.train_torch.fit", "task": a["task"], "device": str(dev), "amp": amp,
        "amp_dtype": "float16" if amp else None, "channels_last": channels_last, "epochs_planned": a["epochs"],
        "lr": a["lr"], "weight_decay": a["weight_decay"], "batchnorm_eval": a["batchnorm_eval"],
        "schedule": a["schedule"], "min_lr_ratio": a["min_lr_ratio"], "clip_grad_norm": a["clip_grad_norm"],
        "monitor": a["monitor"], "loss_fn": name_of(loss_fn),
        "model": info.to_dict() if info is not None else {"arch": type(model).__name__},
        "trainable_params": sum(p.numel() for g in optimizer.param_groups for p in g["params"]),
        "skipped_batches": 0, "skipped_per_epoch": [], "epoch_seconds": [], "best_epoch": None, "best_value": None,
        "restored_best": False, "stopped_early_at": None, "resumed_from_epoch": None,
        "checkpoint": str(checkpoint_path) if checkpoint_path else None,
        "settings": run_key, "settings_key": settings_key(run_key), "fresh_start": None,
        "set_aside": None}


# ============================================================================ helpers: optimization
def _optimization(model, lr: float, weight_decay: float, schedule: str, min_lr_ratio: float, total_steps: int,
                  dev, amp: bool, lr_scale: dict[str, float] | None = None) -> tuple:
    """fit's optimizer (:func:`_adamw`), its per-step schedule (cosine or constant) and the GradScaler."""
    torch = import_torch()
    optimizer = _adamw(model, lr, weight_decay, lr_scale)
    factor = _cosine(total_steps, min_lr_ratio) if schedule == "cosine" else (lambda step: 1.0)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor), torch.amp.GradScaler(dev.type, enabled=amp)


def _adamw(model, lr: float, weight_decay: float, lr_scale: dict[str, float] | None = None):
    """AdamW over the trainable parameters; biases and norm weights (1-D) get no weight decay. With ``lr_scale``
    one group per (factor, decay) pair, each starting at ``factor * lr`` (the schedule multiplies every group);
    the first group holds the largest factor, so the History's ``lr`` column is the base rate's."""
    torch = import_torch()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise CourseError("the model has no trainable parameters (all frozen?): call models_torch.unfreeze(model)")
    unknown = sorted(set(lr_scale or {}) - {n for n, _ in model.named_parameters()})
    if unknown:
        raise CourseError(f"lr_scale names parameters the model does not have, e.g. {unknown[0]!r}")
    groups: dict[tuple[float, bool], list] = {}
    for name, p in named:
        groups.setdefault((float((lr_scale or {}).get(name, 1.0)), p.ndim > 1), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": lr * scale, "weight_decay": weight_decay if decays else 0.0}
                              for (scale, decays), ps in sorted(groups.items(), key=lambda kv: (-kv[0][1], -kv[0][0]))],
                             lr=lr)


def depth_lr_scale(model, info: ModelInfo | None = None, *, lowest: float = 0.1) -> dict[str, float]:
    """Discriminative learning rates by depth: the head gets 1, the backbone's parameters from ``lowest`` (the
    first layer) rising geometrically to 1 (the last), in the order the model defines them. Early layers hold
    general features (edges, textures) worth keeping; late layers are the most specific to ImageNet."""
    if not 0 < lowest <= 1:
        raise CourseError(f"lowest must be in (0, 1], got {lowest}")
    head = (info.head if info is not None and getattr(info, "head", None) else None)
    names = [n for n, _ in model.named_parameters()]
    body = [n for n in names if not (head and (n == head or n.startswith(head + ".")))]
    out = {n: float(lowest ** (1 - k / max(len(body) - 1, 1))) for k, n in enumerate(body)}
    out.update({n: 1.0 for n in names if n not in out})
    return out


def _cosine(total_steps: int, min_ratio: float) -> Callable[[int], float]:
    """lr multiplier: half a cosine from 1 down to ``min_ratio`` over ``total_steps``."""
    def factor(step: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def _in_model_order(model, params: list) -> list:
    """The optimizer's parameters in ``model.parameters()`` order: the global norm that clipping computes
    is then rounded exactly as ``clip_grad_norm_(model.parameters(), ...)`` rounds it (a float sum depends
    on its order, and Adam turns such last-bit differences into visibly different weights)."""
    position = {id(p): i for i, p in enumerate(model.parameters())}
    return sorted(params, key=lambda p: position.get(id(p), len(position)))


def _frozen_batchnorm_to_eval(model, every: bool = False) -> None:
    from torch.nn.modules.batchnorm import _BatchNorm  # noqa: PLC0415

    for m in model.modules():
        if isinstance(m, _BatchNorm):
            params = list(m.parameters(recurse=False))
            if every or (params and not any(p.requires_grad for p in params)):
                m.eval()


def _bar(iterable, progress: bool, desc: str):
    """The epoch's progress bar (runtime.progress: a text bar that also reads right in a static notebook;
    unlike tqdm.auto's widget it does not iterate the loader when made, which drew one more shuffle)."""
    return runtime.progress(iterable, desc=desc) if progress else iterable


# ============================================================================ helpers: switches
def _switch(value: bool | str, auto: bool, name: str) -> bool:
    if value == "auto":
        return auto
    if isinstance(value, bool):
        return value
    raise CourseError(f"{name} must be True, False or 'auto', not {value!r}")


def _amp_switch(amp: bool | str, dev) -> bool:
    use_amp = _switch(amp, dev.type == "cuda", "amp")
    if use_amp and dev.type != "cuda":
        warnings.warn("amp=True needs a CUDA GPU; training in float32 on the CPU.", stacklevel=3)
        return False
    return use_amp


def _resolve_monitor(monitor: str | None, val_loader, patience: int | None) -> str | None:
    if monitor == "auto":
        monitor = "val_auc" if val_loader is not None else None
    if monitor is not None and monitor.startswith("val_") and val_loader is None:
        raise CourseError(f"monitor={monitor!r} needs a val_loader; pass one, or monitor=None")
    if patience is not None and monitor is None:
        raise CourseError("early stopping needs a monitored metric: pass val_loader (and monitor)")
    return monitor

