"""course_utils: the plumbing shared by the course notebooks.

``import course_utils as cu`` is cheap: it imports neither TensorFlow nor torch. Modules load on first use;
framework code imports its framework inside the functions that need it. The package is grouped by concern:

- ``cu.data``: loaders, pipelines, augmentation, stand-ins;
- ``cu.models``: the networks for Keras and PyTorch, and the final models later notebooks reuse;
- ``cu.train``: the PyTorch engine, the Keras wrapper, losses, ``History``;
- ``cu.active``: query strategies, the loop, the label store and the labeller;
- ``cu.xai``: heat maps and their sanity and faithfulness checks;
- ``cu.teaching``: checks, exercises, plots and widgets;
- ``cu.runtime``, ``cu.metrics``, ``cu.stats`` at the top; ``rehearsal/`` is a maintainer's tool.

The notebooks' short names stay: ``cu.train_torch`` is ``cu.train.torch_engine``, ``cu.xai_faithfulness`` is
``cu.xai.faithfulness``, and so on (``ALIASES``).
"""
from __future__ import annotations

import importlib

from ._lazy import face
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
from .teaching.checks import check, check_claim, expect
from .train.history import History

__version__ = "0.1.0"

GROUPS = ("data", "models", "train", "active", "xai", "teaching", "project", "runtime", "metrics", "stats")
ALIASES = {  # the short names the notebooks use -> where the module lives
    "pipelines": "data.pipelines", "augment": "data.augment", "standins": "data.standins",
    "standin_cache": "data.standin_cache", "tfds_malaria": "data.tfds_malaria",
    "models_keras": "models.keras_models", "lite0_keras": "models.lite0_keras", "models_torch": "models.torch_models",
    "model_info": "models.info", "final_models": "models.final",
    "train_torch": "train.torch_engine", "train_keras": "train.keras_fit", "losses": "train.losses",
    "history": "train.history",
    "strategies": "active.strategies", "active_torch": "active.torch_outputs", "active_keras": "active.keras_outputs",
    "labels": "active.labels", "labeller": "active.labeller",
    "xai_faithfulness": "xai.faithfulness", "xai_keras": "xai.keras_adapter", "xai_torch": "xai.torch_adapter",
    "checks": "teaching.checks", "exercises": "teaching.exercises", "plots": "teaching.plots",
    "widgets": "teaching.widgets",
}

__all__ = [
    "CourseError", "History", "check", "check_claim", "expect", "get_mode", "in_ci", "in_colab", "pick", "report",
    "seed_everything", "set_mode", "setup", *GROUPS, *sorted(ALIASES),
]

__getattr__, __dir__ = face(__name__, GROUPS, aliases=ALIASES)

if _rehearsal():   # a maintainer's full-mode rehearsal (`make rehearse`): it wraps the loops from outside
    importlib.import_module(".rehearsal", __name__).install()
