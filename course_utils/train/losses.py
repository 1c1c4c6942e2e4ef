"""Focal loss (Lin et al., 2017) for PyTorch and Keras, and the prior-probability bias initialisation.

Focal loss is cross-entropy times a modulating factor ``(1 - p_t) ** gamma`` that shrinks the loss
of examples the model already gets right (``p_t`` near 1), so the many easy negatives of an
imbalanced data set stop drowning the few hard positives. ``alpha`` additionally weights the
positive class by ``alpha`` and the negative class by ``1 - alpha``::

    FL(p_t) = - alpha_t * (1 - p_t) ** gamma * log(p_t)

``gamma = 0`` and no ``alpha`` is plain cross-entropy. ``alpha`` defaults to None here (not RetinaNet's 0.25,
torchvision's default): 0.25 weighs a rare positive class down, the opposite of what an imbalanced medical data
set needs. The sigmoid version (binary and multi-label)
matches ``torchvision.ops.sigmoid_focal_loss`` and Keras'
``BinaryFocalCrossentropy(apply_class_balancing=True, from_logits=True)``; the tests check both.
Everything works on logits and uses log-sum-exp forms (``binary_cross_entropy_with_logits``,
``log_softmax``), never ``log(sigmoid(x))``, so large logits do not produce ``inf``.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..runtime import CourseError

__all__ = ["sigmoid_focal_loss", "softmax_focal_loss", "FocalLoss", "keras_focal_loss", "prior_bias",
           "init_prior_bias"]

# (1 - p_t) is clamped at this value before the power: for gamma < 1 the derivative of x ** gamma is
# infinite at x = 0 (a saturated sigmoid), which would turn the gradient into NaN. Below 1e-12 the
# loss itself is < 1e-12, so the value is unaffected.
_EPS = 1e-12


def _reduce(loss, reduction: str):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise CourseError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def sigmoid_focal_loss(logits, targets, alpha: float | None = None, gamma: float = 2.0, reduction: str = "mean"):
    """Focal loss for independent sigmoid outputs (binary with one logit, or multi-label).

    ``logits`` and ``targets`` have the same shape (targets 0/1, or soft labels in [0, 1]).
    ``alpha=None`` (the default) switches class balancing off. torchvision's default 0.25 comes from object
    detection and gives a rare positive class a third of the negatives' weight (notebook 04 measures what that
    costs); for a rare disease use about ``1 - prior``, or no ``alpha``.
    """
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    if logits.shape != targets.shape:
        raise CourseError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same "
                          "shape (for one binary logit use targets of shape [N, 1])")
    _check_params(alpha, gamma)
    logits, targets = logits.float(), targets.float()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # = -log(p_t), computed stably
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)              # the probability given to the true label
    loss = ce * (1 - p_t).clamp_min(_EPS) ** gamma           # easy examples (p_t -> 1) count less
    if alpha is not None:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)  # weight positives alpha, negatives 1 - alpha
        loss = alpha_t * loss
    return _reduce(loss, reduction)


def softmax_focal_loss(logits, targets, alpha: float | Sequence[float] | None = None, gamma: float = 2.0,
                       reduction: str = "mean"):
    """Focal loss for one softmax over classes (binary with two logits, or multi-class).

    ``logits`` ``[N, C]``, ``targets`` ``[N]`` class indices. ``alpha`` is one weight per class
    (a sequence of length C), a single number (applied to every class), or ``None``.
    """
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    if logits.ndim != 2 or targets.ndim != 1 or len(logits) != len(targets):
        raise CourseError(f"softmax focal loss needs logits [N, C] and targets [N]; got {tuple(logits.shape)} "
                          f"and {tuple(targets.shape)}")
    _check_params(None, gamma)
    targets = targets.long()
    log_p_t = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)  # log p_t, stably
    p_t = log_p_t.exp()
    loss = -log_p_t * (1 - p_t).clamp_min(_EPS) ** gamma
    if alpha is not None:
        weights = torch.as_tensor(alpha, dtype=loss.dtype, device=loss.device)
        if weights.ndim == 1:
            if len(weights) != logits.shape[1]:
                raise CourseError(f"alpha has {len(weights)} class weights but the logits have "
                                  f"{logits.shape[1]} classes")
            weights = weights[targets]
        loss = weights * loss
    return _reduce(loss, reduction)


def _check_params(alpha, gamma) -> None:
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise CourseError(f"alpha must be in [0, 1] (or None), got {alpha}")
    if gamma < 0:
        raise CourseError(f"gamma must be >= 0, got {gamma}")


def _focal_module():
    import torch.nn as nn  # noqa: PLC0415

    class FocalLoss(nn.Module):
        """Focal loss as an ``nn.Module``, to pass as ``loss_fn`` to :func:`course_utils.train_torch.fit`.

        Picks the sigmoid form for logits ``[N, 1]`` / multi-label targets (float, same shape as the
        logits) and the softmax form for ``[N, C]`` logits with ``[N]`` class-index targets.
        """

        def __init__(self, alpha: float | Sequence[float] | None = None, gamma: float = 2.0,
                     reduction: str = "mean"):
            super().__init__()
            _check_params(alpha if not isinstance(alpha, (list, tuple)) else None, gamma)
            self.alpha, self.gamma, self.reduction = alpha, gamma, reduction

        def forward(self, logits, targets):
            if targets.shape == logits.shape:
                if isinstance(self.alpha, (list, tuple)):
                    raise CourseError("per-class alpha is for softmax outputs; for sigmoid outputs give one number")
                return sigmoid_focal_loss(logits, targets, self.alpha, self.gamma, self.reduction)
            return softmax_focal_loss(logits, targets, self.alpha, self.gamma, self.reduction)

        def extra_repr(self) -> str:
            return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"

    return FocalLoss


def __getattr__(name: str):
    # FocalLoss subclasses torch.nn.Module; build the class on first use so importing this module
    # does not import torch.
    if name == "FocalLoss":
        cls = _focal_module()
        globals()["FocalLoss"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def keras_focal_loss(alpha: float | None = None, gamma: float = 2.0, *, from_logits: bool = True,
                     multi_class: bool = False):
    """The Keras focal loss with the same meaning of ``alpha`` and ``gamma`` as the torch version.

    Binary / multi-label: ``keras.losses.BinaryFocalCrossentropy``. Trap: Keras applies ``alpha``
    only when ``apply_class_balancing=True``, which this sets whenever ``alpha`` is given. Keras clips
    probabilities to [1e-7, 1 - 1e-7]; that matters when it is given probabilities
    (``from_logits=False``), where it differs from the torch version for |logit| > ~15. With
    ``from_logits=True`` (Keras 3.x) we measured agreement to float32 precision up to |logit| = 30.
    ``multi_class=True``: ``keras.losses.CategoricalFocalCrossentropy`` (one-hot targets).
    """
    from ..runtime import import_tensorflow  # noqa: PLC0415

    import_tensorflow()
    import keras  # noqa: PLC0415

    _check_params(alpha, gamma)
    if multi_class:
        return keras.losses.CategoricalFocalCrossentropy(alpha=1.0 if alpha is None else alpha, gamma=gamma,
                                                         from_logits=from_logits)
    return keras.losses.BinaryFocalCrossentropy(apply_class_balancing=alpha is not None,
                                                alpha=0.25 if alpha is None else alpha, gamma=gamma,
                                                from_logits=from_logits)


def prior_bias(pi: float | Sequence[float]):
    """The output bias that makes an untrained sigmoid predict the positive rate ``pi``:
    ``b = -log((1 - pi) / pi)``. Starting there, the first steps are not wasted learning the
    class balance, and with rare positives the initial loss is not dominated by easy negatives."""
    if isinstance(pi, (list, tuple)):
        return [prior_bias(p) for p in pi]
    if not 0.0 < float(pi) < 1.0:
        raise CourseError(f"the positive rate pi must be strictly between 0 and 1, got {pi}")
    return -math.log((1.0 - pi) / pi)


def init_prior_bias(linear, pi: float | Sequence[float]):
    """Set ``linear.bias`` (a torch ``nn.Linear`` with one output per sigmoid) to ``prior_bias(pi)``.

    ``pi`` is one positive rate, or one per output (multi-label). Returns the layer.
    """
    import torch  # noqa: PLC0415

    if getattr(linear, "bias", None) is None:
        raise CourseError("the layer has no bias to initialise (build it with bias=True)")
    values = prior_bias(list(pi) if not isinstance(pi, (int, float)) else pi)
    values = torch.as_tensor(values, dtype=linear.bias.dtype).reshape(-1)
    if values.numel() not in (1, linear.bias.numel()):
        raise CourseError(f"{values.numel()} priors for a layer with {linear.bias.numel()} outputs")
    with torch.no_grad():
        linear.bias.copy_(values.expand_as(linear.bias))
    return linear
