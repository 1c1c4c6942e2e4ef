"""Evaluation metrics: thin, checked wrappers over scikit-learn for the course's three tasks.

Conventions (the same as :func:`course_utils.train_torch.predict`):

* ``binary``: labels ``[N]`` in {0, 1}; scores either ``[N]`` (probability of class 1) or
  ``[N, 2]`` (column 1 is used).
* ``multi-class``: labels ``[N]`` in 0..C-1; probabilities ``[N, C]``.
* ``multi-label``: labels ``[N, L]`` in {0, 1}; probabilities ``[N, L]`` (independent sigmoids).

Metrics that are undefined on the given data (an AUC when only one class is present) return
``nan`` with a warning instead of crashing a lesson.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from .runtime import CourseError

TASKS = ("binary", "multi-class", "multi-label")

__all__ = [
    "TASKS", "infer_task", "to_predictions", "accuracy", "per_label_accuracy", "macro_f1", "roc_auc",
    "average_precision", "classification_report", "confusion_matrix", "best_threshold", "class_recall",
    "summarize", "probabilities", "probabilities_torch",
]


# --------------------------------------------------------------------------- logits -> probabilities
# The one rule, used by every adapter, engine and explainer: multi-label -> independent sigmoids;
# a single output column -> a sigmoid binary model, returned as [1 - p, p]; otherwise softmax.
def _check_prob_task(task: str) -> None:
    if task not in ("auto", *TASKS):
        raise CourseError(f"task must be 'auto' or one of {', '.join(TASKS)}, not {task!r}")


def probabilities(logits, task: str = "auto") -> np.ndarray:
    """Class probabilities from raw model outputs (numpy): ``[N, C]``, or ``[N, 2]`` for one logit."""
    _check_prob_task(task)
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2:
        raise CourseError(f"logits must be N x C (one row per image), got shape {z.shape}")
    if task == "multi-label":
        return 1.0 / (1.0 + np.exp(-z))
    if z.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def probabilities_torch(logits, task: str = "auto"):
    """The torch counterpart of :func:`probabilities` (same rule, keeps the tensor on its device)."""
    import torch  # noqa: PLC0415  (metrics itself stays framework-free)

    _check_prob_task(task)
    z = logits.float()
    if z.ndim == 1:
        z = z.unsqueeze(1)
    if task == "multi-label":
        return torch.sigmoid(z)
    if z.shape[1] == 1:
        p = torch.sigmoid(z)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(z, dim=1)


# --------------------------------------------------------------------------- input handling
def _check_task(task: str) -> str:
    if task not in TASKS:
        raise CourseError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    return task


def infer_task(y_true, scores=None) -> str:
    """Guess the task from label/score shapes: 2-D labels are multi-label; more than two score
    columns or labels are multi-class; otherwise binary."""
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] > 1:
        return "multi-label"
    if scores is not None:
        s = np.asarray(scores)
        if s.ndim == 2 and s.shape[1] > 2:
            return "multi-class"
    return "multi-class" if y.size and np.max(y) > 1 else "binary"


def _labels(y_true, task: str) -> np.ndarray:
    y = np.asarray(y_true)
    if task == "multi-label":
        if y.ndim != 2:
            raise CourseError(f"multi-label labels must be N x L (one 0/1 column per label), got shape {y.shape}")
        return y.astype(int)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise CourseError(f"{task} labels must be a vector of class indices, got shape {y.shape}")
    return y.astype(int)


def _binary_scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim == 2 and s.shape[1] == 2:
        return s[:, 1]
    if s.ndim == 2 and s.shape[1] == 1:
        return s[:, 0]
    if s.ndim != 1:
        raise CourseError(f"binary scores must be [N] or [N, 2] probabilities, got shape {s.shape}")
    return s


def _same_length(y: np.ndarray, s: np.ndarray) -> None:
    if len(y) != len(s):
        raise CourseError(f"labels ({len(y)}) and scores ({len(s)}) have different lengths")


def to_predictions(scores, task: str, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions from probabilities: argmax (multi-class) or ``>= threshold`` (binary, multi-label)."""
    _check_task(task)
    s = np.asarray(scores, dtype=float)
    if task == "binary":
        return (_binary_scores(s) >= threshold).astype(int)
    if task == "multi-class":
        if s.ndim != 2:
            raise CourseError(f"multi-class probabilities must be N x C, got shape {s.shape}")
        return s.argmax(axis=1)
    if s.ndim != 2:
        raise CourseError(f"multi-label probabilities must be N x L, got shape {s.shape}")
    return (s >= threshold).astype(int)


def _maybe_scores_to_pred(y_pred, task: str, threshold: float) -> np.ndarray:
    """Accept hard predictions or probabilities (float arrays are thresholded / argmax-ed)."""
    p = np.asarray(y_pred)
    if p.dtype.kind == "f":
        return to_predictions(p, task, threshold)
    return p.astype(int)


# --------------------------------------------------------------------------- metrics
def accuracy(y_true, y_pred, task: str = "binary", threshold: float = 0.5) -> float:
    """Fraction correct (multi-label: mean over all label decisions). ``y_pred`` may be probabilities."""
    _check_task(task)
    y = _labels(y_true, task)
    p = _maybe_scores_to_pred(y_pred, task, threshold)
    _same_length(y, p)
    return float(np.mean(p == y))


def per_label_accuracy(y_true, y_pred, threshold: float = 0.5) -> np.ndarray:
    """Accuracy of each label column of a multi-label problem (``[L]``)."""
    y = _labels(y_true, "multi-label")
    p = _maybe_scores_to_pred(y_pred, "multi-label", threshold)
    if p.shape != y.shape:
        raise CourseError(f"predictions {p.shape} and labels {y.shape} must have the same shape")
    return (p == y).mean(axis=0)


def macro_f1(y_true, y_pred, task: str = "binary", threshold: float = 0.5) -> float:
    """F1 averaged over classes (or labels) with equal weight: rare classes count as much as common ones."""
    from sklearn.metrics import f1_score  # noqa: PLC0415

    _check_task(task)
    y = _labels(y_true, task)
    p = _maybe_scores_to_pred(y_pred, task, threshold)
    _same_length(y, p)
    return float(f1_score(y, p, average="macro", zero_division=0))


def _undefined(name: str, why: str) -> float:
    warnings.warn(f"{name} is undefined here ({why}); returning nan", stacklevel=3)
    return float("nan")


def roc_auc(y_true, scores, task: str = "binary") -> float:
    """ROC-AUC: binary; multi-class one-vs-rest macro; multi-label macro over labels that have both
    classes present (labels with a single class are skipped, with a warning)."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    _check_task(task)
    y = _labels(y_true, task)
    s = np.asarray(scores, dtype=float)
    _same_length(y, s)
    if task == "multi-class" and s.ndim == 2 and s.shape[1] == 2:
        task = "binary"  # two softmax outputs: the AUC of class 1's probability
    if task == "binary":
        s = _binary_scores(s)
        if len(np.unique(y)) < 2:
            return _undefined("ROC-AUC", "only one class in y_true")
        return float(roc_auc_score(y, s))
    if task == "multi-class":
        present = np.unique(y)
        if len(present) < 2:
            return _undefined("ROC-AUC", "only one class in y_true")
        if len(present) < s.shape[1]:
            # sklearn needs every class present for ovr; score the classes that are
            cols = [c for c in range(s.shape[1]) if c in present]
            return float(np.mean([roc_auc_score(y == c, s[:, c]) for c in cols]))
        return float(roc_auc_score(y, s, multi_class="ovr", average="macro"))
    keep = [j for j in range(y.shape[1]) if len(np.unique(y[:, j])) == 2]
    if not keep:
        return _undefined("ROC-AUC", "no label has both classes present")
    if len(keep) < y.shape[1]:
        warnings.warn(f"ROC-AUC: {y.shape[1] - len(keep)} label(s) have a single class and are skipped", stacklevel=2)
    return float(roc_auc_score(y[:, keep], s[:, keep], average="macro"))


def average_precision(y_true, scores, task: str = "binary") -> float:
    """Average precision (area under the precision-recall curve); macro over classes/labels.

    Its chance level is the positive rate, not 0.5: on a rare class it shows what ROC-AUC hides.
    """
    from sklearn.metrics import average_precision_score  # noqa: PLC0415

    _check_task(task)
    y = _labels(y_true, task)
    s = np.asarray(scores, dtype=float)
    _same_length(y, s)
    if task == "binary":
        if y.sum() == 0:
            return _undefined("average precision", "no positive labels")
        return float(average_precision_score(y, _binary_scores(s)))
    if task == "multi-class":
        cols = [c for c in range(s.shape[1]) if np.any(y == c)]
        if not cols:
            return _undefined("average precision", "no labels")
        return float(np.mean([average_precision_score(y == c, s[:, c]) for c in cols]))
    keep = [j for j in range(y.shape[1]) if y[:, j].any()]
    if not keep:
        return _undefined("average precision", "no positive labels")
    return float(average_precision_score(y[:, keep], s[:, keep], average="macro"))


def classification_report(y_true, y_pred, class_names: Sequence[str] | None = None, *, task: str = "binary",
                          threshold: float = 0.5, output_dict: bool = False):
    """scikit-learn's per-class precision / recall / F1 report (string, or dict with ``output_dict``)."""
    from sklearn.metrics import classification_report as _report  # noqa: PLC0415

    _check_task(task)
    y = _labels(y_true, task)
    p = _maybe_scores_to_pred(y_pred, task, threshold)
    _same_length(y, p)
    n = y.shape[1] if task == "multi-label" else max(int(y.max(initial=0)), int(p.max(initial=0))) + 1
    if class_names is not None:
        n = max(n, len(class_names))
    labels = list(range(n))
    names = list(class_names) if class_names is not None else None
    return _report(y, p, labels=labels, target_names=names, zero_division=0, output_dict=output_dict)


def confusion_matrix(y_true, y_pred, n_classes: int | None = None, *, threshold: float = 0.5,
                     normalize: str | None = None) -> np.ndarray:
    """Rows = true class, columns = predicted class (sklearn's convention). Binary/multi-class only."""
    from sklearn.metrics import confusion_matrix as _cm  # noqa: PLC0415

    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] > 1:
        raise CourseError("confusion_matrix is for binary/multi-class labels; for multi-label use "
                          "per_label_accuracy or sklearn.metrics.multilabel_confusion_matrix")
    task = "binary" if np.asarray(y_pred).ndim == 1 or np.asarray(y_pred).shape[-1] <= 2 else "multi-class"
    y = _labels(y, task)
    p = _maybe_scores_to_pred(y_pred, task, threshold)
    _same_length(y, p)
    n = n_classes or max(int(y.max(initial=0)), int(p.max(initial=0))) + 1
    return _cm(y, p, labels=list(range(n)), normalize=normalize)


def best_threshold(y_true, scores, criterion: str = "f1", *, target: float | None = None) -> float:
    """The decision threshold for a binary score that maximises ``criterion`` on the data given.

    ``"f1"`` (F1 of class 1), ``"youden"`` (sensitivity + specificity - 1) or ``"recall"``: the highest
    threshold that still finds a share ``target`` of class 1 (a screening goal: "miss at most 1 in 10").
    Choose it on the VALIDATION split and apply it unchanged to the test split: choosing it on test is cheating.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: PLC0415

    y = _labels(y_true, "binary")
    s = _binary_scores(scores)
    _same_length(y, s)
    if len(np.unique(y)) < 2:
        raise CourseError("best_threshold needs both classes in y_true (use the validation split)")
    if criterion == "recall":
        if target is None or not 0 < target <= 1:
            raise CourseError(f"criterion='recall' needs target=, the share of class 1 to find (0 to 1), got {target!r}")
        ranked = np.sort(s[y == 1])[::-1]                # class-1 scores, highest first
        return float(ranked[int(np.ceil(target * len(ranked))) - 1])
    if criterion == "youden":
        fpr, tpr, thr = roc_curve(y, s)
        thr = np.clip(thr, 0.0, 1.0) if np.all((s >= 0) & (s <= 1)) else thr
        return float(thr[int(np.argmax(tpr - fpr))])
    if criterion == "f1":
        precision, recall, thr = precision_recall_curve(y, s)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        return float(thr[int(np.argmax(f1))])
    raise CourseError(f"criterion must be 'f1', 'youden' or 'recall', not {criterion!r}")


def class_recall(y_true, y_pred, cls: int | str, class_names: Sequence[str] | None = None, *,
                 threshold: float = 0.5) -> float:
    """Recall (sensitivity) of one class, named or by index: the share of its cases that were found.

    E.g. ``class_recall(y, p, "malignant", info.class_names)``. Binary/multi-class labels.
    """
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] > 1:
        raise CourseError("class_recall is for binary/multi-class labels; index a multi-label column instead")
    if isinstance(cls, str):
        if class_names is None or cls not in list(class_names):
            raise CourseError(f"class {cls!r} is not among class_names {list(class_names or [])}")
        cls = list(class_names).index(cls)
    task = "binary" if np.asarray(y_pred).ndim == 1 or np.asarray(y_pred).shape[-1] <= 2 else "multi-class"
    y = _labels(y, task)
    p = _maybe_scores_to_pred(y_pred, task, threshold)
    _same_length(y, p)
    mask = y == cls
    if not mask.any():
        return _undefined("recall", f"class {cls} does not occur in y_true")
    return float(np.mean(p[mask] == cls))


def summarize(y_true, scores, task: str, *, class_names: Sequence[str] | None = None,
              threshold: float = 0.5) -> dict[str, float]:
    """The headline metrics of one evaluation: accuracy, macro-F1, ROC-AUC, AP and, for
    binary/multi-class, the recall of every class (``recall_<name>``)."""
    _check_task(task)
    y = _labels(y_true, task)
    s = np.asarray(scores, dtype=float)
    pred = to_predictions(s, task, threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {"accuracy": accuracy(y, pred, task), "macro_f1": macro_f1(y, pred, task),
               "auc": roc_auc(y, s, task), "ap": average_precision(y, s, task)}
        if task != "multi-label":
            n = s.shape[1] if s.ndim == 2 and task == "multi-class" else 2
            names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
            for c, name in enumerate(names[:n]):
                out[f"recall_{name}"] = class_recall(y, pred, c)
    return out
