"""course_utils: the plumbing shared by the course notebooks.

``import course_utils as cu`` is cheap: it imports neither TensorFlow nor torch. Submodules
(``cu.data``, ``cu.plots``, ...) load on first use; framework code imports its framework inside
the functions that need it.
"""
from __future__ import annotations

import importlib
from typing import Any

from .checks import check, expect
from .history import History
from .runtime import (
    CourseError,
    get_mode,
    in_ci,
    in_colab,
    pick,
    rehearsal as _rehearsal,
    report,
    seed_everything,
    set_mode,
    setup,
)

__version__ = "0.1.0"

_SUBMODULES = {
    "runtime", "data", "history", "checks", "plots", "widgets", "labeller", "metrics", "strategies", "active",
    "active_torch", "active_keras", "labels", "model_info", "exercises", "final_models",
    "xai", "xai_faithfulness", "models_keras", "lite0_keras", "models_torch", "train_keras", "train_torch",
    "losses", "augment", "standins", "standin_cache", "pipelines", "stats",
}

__all__ = [
    "CourseError", "History", "check", "expect", "get_mode", "in_ci", "in_colab", "pick", "report",
    "seed_everything", "set_mode", "setup", *sorted(_SUBMODULES),
]


if _rehearsal():   # a maintainer's full-mode rehearsal (`make rehearse`): it wraps the loops from outside
    importlib.import_module(".rehearsal", __name__).install()


def __getattr__(name: str) -> Any:  # PEP 562: load submodules lazily
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'course_utils' has no attribute {name!r}")
