"""How the torch engine reads and checks its batches (private to :mod:`course_utils.train_torch`).

A batch is ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, *extra)``. The first batch of a run is checked
in full (dtype, shapes, label values, output count against the labels, extra tensors per sample),
with messages that say how to fix the data. Every batch's labels are checked too (:func:`check_labels`:
shape, range and whole numbers for the task, from one min/max on the small labels tensor while it is
still on the CPU), so a bad label in batch 500 is a clear error naming it, not a silent target of 2 for
BCE or a raw IndexError. ``loss_targets`` shapes the labels for the loss; ``default_loss`` is the loss
when none is given (BCE for one logit or multi-label, cross-entropy for softmax outputs).
"""
from __future__ import annotations

from ..metrics import TASKS
from ..models.info import ModelInfo
from ..runtime import CourseError, import_torch


def check_task(task: str) -> None:
    if task not in TASKS:
        raise CourseError(f"task must be one of {', '.join(TASKS)}, not {task!r}")


def check_args(task, epochs, schedule, min_lr_ratio, train_loader, val_loader) -> None:
    check_task(task)
    if not isinstance(epochs, int) or epochs < 0:
        raise CourseError(f"epochs must be a non-negative int, got {epochs!r}")
    if schedule not in ("cosine", "constant"):
        raise CourseError(f"schedule must be 'cosine' or 'constant', not {schedule!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise CourseError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    require_batches(train_loader, "train_loader")
    if val_loader is not None:
        require_batches(val_loader, "val_loader")


def require_batches(loader, name: str) -> None:
    try:
        n = len(loader)
    except TypeError as exc:
        raise CourseError(f"{name} must have a length (a torch DataLoader over a map-style dataset)") from exc
    if n == 0:
        raise CourseError(f"{name} yields no batches: its dataset is empty, or drop_last=True with fewer "
                          "samples than batch_size. Check the split you passed.")


def split_batch(batch, labels_required: bool = True) -> tuple:
    """``(images, labels or None, extra)`` from ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, *extra)``."""
    torch = import_torch()
    if isinstance(batch, torch.Tensor):
        if labels_required:
            raise CourseError("the loader yields images only; training needs (images, labels) batches")
        return batch, None, ()
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1], tuple(batch[2:])
    if isinstance(batch, (tuple, list)) and len(batch) == 1 and not labels_required:
        return batch[0], None, ()
    raise CourseError(f"a batch must be (images, labels); got {type(batch).__name__} of length "
                      f"{len(batch) if hasattr(batch, '__len__') else '?'}")


def to_device(split: tuple, dev, memory_format) -> tuple:
    x, y, extra = split
    x = x.to(dev, non_blocking=True, memory_format=memory_format)
    if extra:
        extra = tuple(e.to(dev, non_blocking=True) if hasattr(e, "to") else e for e in extra)
    return x, y.to(dev, non_blocking=True), extra


def check_inputs(x, y, task: str, extra: tuple = ()) -> None:
    """Cheap checks on the first batch, with messages that say how to fix the data."""
    torch = import_torch()
    if not torch.is_floating_point(x):
        raise CourseError(f"images are {x.dtype}, not float: convert them (e.g. cu.augment.eval_transform(), "
                          "or cu.data.to_torch_loader, which scales uint8 to float)")
    if x.ndim not in (2, 4):            # images, or feature vectors for a head trained on frozen features
        raise CourseError(f"images must be [batch, channels, height, width] (or features [batch, n_features]); "
                          f"got shape {tuple(x.shape)}")
    if len(y) != len(x):
        raise CourseError(f"the batch has {len(x)} images but {len(y)} labels")
    for i, e in enumerate(extra):
        if not hasattr(e, "__len__") or len(e) != len(x):
            raise CourseError(f"the batch has {len(x)} images but its extra tensor {i + 1} (after the labels) "
                              f"has {len(e) if hasattr(e, '__len__') else 'no'} rows: extra targets are per sample")
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


def check_labels(y, task: str, where: str, n_out: int | None = None, n_images: int | None = None) -> None:
    """Every batch's labels, cheaply: the shape for the task, then one min/max (and, for float labels, a
    whole-number test) on the labels tensor, which is small and usually still on the CPU.

    ``n_out`` (the model's outputs, once known) adds the class-index bound for multi-class and the
    whole-number rule for a 2-output binary model. ``where`` names the batch in the message.
    """
    torch = import_torch()
    if n_images is not None and len(y) != n_images:
        raise CourseError(f"{where}: {n_images} images but {len(y)} labels")
    if task == "multi-label":
        if y.ndim != 2 or (n_out is not None and y.shape[1] != n_out):
            raise CourseError(f"{where}: multi-label labels must be [batch, {n_out or 'n_labels'}] 0/1 columns; "
                              f"got shape {tuple(y.shape)}")
    elif not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
        raise CourseError(f"{where}: {task} labels must be [batch] class indices; got shape {tuple(y.shape)}")
    if y.numel() == 0 or y.dtype == torch.bool:
        return
    lo, hi = (float(v) for v in torch.aminmax(y.detach()))
    if task == "multi-class" or (task == "binary" and n_out == 2):  # class indices for the loss
        whole = not y.is_floating_point() or bool((y == y.round()).all())  # NaN is not whole
        top = n_out - 1 if n_out is not None else None
        bad = lo if not lo >= 0 else hi if (top is not None and not hi <= top) else None
        if bad is None and not whole:
            bad = float(y[y != y.round()].reshape(-1)[0])
        if bad is not None:
            rule = ("binary labels must be 0 or 1 (class indices for the 2 outputs)" if task == "binary"
                    else f"class indices must be whole numbers 0..{top}" if top is not None
                    else "class indices must be whole numbers 0, 1, ...")
            fix = (f" (the model has {n_out} outputs: build it with n_classes={int(hi) + 1} or more, or fix the "
                   "labels)" if task == "multi-class" and top is not None and whole and lo >= 0 else "")
            raise CourseError(f"{where}: label {bad:g} is not allowed: {rule}{fix}")
    elif not (lo >= 0 and hi <= 1):  # binary (one logit) and multi-label targets: 0 or 1 (soft targets in between)
        bad = lo if not lo >= 0 else hi
        raise CourseError(f"{where}: label {bad:g} is not 0 or 1: {task} labels must be 0 or 1"
                          + (" (more than two classes: use task='multi-class')" if task == "binary" else ""))


def check_outputs(logits, y, task: str) -> None:
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


def first_loss(loss_fn, logits, target, extra: tuple):
    """The first batch's loss, with a clear message when ``loss_fn`` cannot take the extra tensors."""
    try:
        return loss_fn(logits, target, *extra)
    except TypeError as exc:
        if not extra:
            raise
        raise CourseError(f"the loader yields {len(extra)} extra tensor(s) after the labels, so the loss is called "
                          f"as loss_fn(logits, targets, *extra), and {name_of(loss_fn)} does not take them ({exc}). "
                          "Pass a loss_fn that uses them, or a loader of (images, labels).") from exc


def loss_targets(y, task: str, n_out: int):
    """Labels shaped for the loss: float [B, 1] (single logit), long [B] (softmax), float [B, L]."""
    if task == "multi-label":
        return y.float()
    y = y.reshape(-1)
    if n_out == 1:
        return y.float().unsqueeze(1)
    return y.long()


def name_of(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


# ============================================================================ the default loss
def n_outputs(model, info: ModelInfo | None) -> int | None:
    """The model's output count: from ``info``, else the last ``nn.Linear`` (None if there is none)."""
    if info is not None:
        return info.n_classes
    torch = import_torch()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1].out_features if linears else None


def default_loss(task: str, n_out: int | None):
    """The loss when none is given: BCE for one logit or multi-label, cross-entropy for softmax outputs."""
    torch = import_torch()
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


def loss_params(loss_fn) -> list:
    """The loss's parameters and buffers (e.g. a ``pos_weight``): their device is where the loss runs."""
    params = getattr(loss_fn, "parameters", None)
    buffers = getattr(loss_fn, "buffers", None)
    out = list(params()) if callable(params) else []
    out += list(buffers()) if callable(buffers) else []
    return out


class CheckedBatches:
    """An epoch's batches with every check in one place, so the training step between them stays plain.

    Iterating yields ``(x, y, extra)`` on the device: each batch's labels are checked on the CPU first (shape,
    range, whole class indices: cheap), the first batch in full with ``check_first``, and a batch whose pixels
    are not finite is skipped (counted in ``skipped``) before BatchNorm sees it. :meth:`loss` computes a batch's
    targets and loss (the first batch's outputs and loss checked in full); :meth:`finite` skips a batch whose
    loss is not finite, before any backward pass or step.
    """

    def __init__(self, loader, task: str, device, memory_format, *, check_first: bool = True, desc: str = "train"):
        self.loader, self.task, self.device, self.memory_format = loader, task, device, memory_format
        self.first, self.desc = check_first, desc
        self.n_out: int | None = None   # the model's output count, known after the first forward pass
        self.step, self.skipped, self.where = -1, 0, desc

    def __iter__(self):
        import torch  # noqa: PLC0415

        for self.step, batch in enumerate(self.loader):
            x, y, extra = split_batch(batch)
            if self.first:
                check_inputs(x, y, self.task, extra)
            self.where = f"{self.desc}, batch {self.step + 1}"
            check_labels(y, self.task, self.where, self.n_out, len(x))
            x, y, extra = to_device((x, y, extra), self.device, self.memory_format)
            if not bool(torch.isfinite(x.sum())):   # NaN/inf pixels survive a sum
                self.skipped += 1
                continue
            yield x, y, extra

    def loss(self, loss_fn, logits, y, extra: tuple):
        """``(targets, loss)`` of a batch: ``loss_fn(logits, targets, *extra)`` with targets shaped for it."""
        if self.first:
            check_outputs(logits, y, self.task)
        if self.n_out is None:
            self.n_out = logits.shape[1]
            check_labels(y, self.task, self.where, self.n_out)   # the bounds that need the output count
        target = loss_targets(y, self.task, logits.shape[1])
        loss = first_loss(loss_fn, logits, target, extra) if self.first else loss_fn(logits, target, *extra)
        self.first = False
        return target, loss

    def finite(self, loss) -> bool:
        """False (and the batch counted as skipped) when ``loss`` is NaN or inf."""
        import torch  # noqa: PLC0415

        if bool(torch.isfinite(loss)):
            return True
        self.skipped += 1
        return False
