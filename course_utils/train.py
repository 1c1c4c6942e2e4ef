"""Training entry points: ``fit`` (the PyTorch engine) and ``fit_keras`` (a thin Keras wrapper).

Both return :class:`course_utils.History`. The framework code lives in ``train_torch`` and
``train_keras``; this module only forwards, so importing it stays cheap.
"""
from __future__ import annotations

from typing import Any

from .history import History

__all__ = ["History", "fit", "fit_keras"]


def fit(*args: Any, **kwargs: Any) -> History:
    """Train a torch model; see :func:`course_utils.train_torch.fit`."""
    from .train_torch import fit as _fit  # noqa: PLC0415

    return _fit(*args, **kwargs)


def fit_keras(*args: Any, **kwargs: Any) -> History:
    """Train a Keras model; see :func:`course_utils.train_keras.fit`."""
    from .train_keras import fit as _fit  # noqa: PLC0415

    return _fit(*args, **kwargs)
