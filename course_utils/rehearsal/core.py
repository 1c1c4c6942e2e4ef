"""What a rehearsal cuts (:class:`Caps`) and the record of the work full mode would do (:func:`record_work`).

Shared by the wrappers of :mod:`.caps` and :mod:`.xai_caps`; ``scripts/run_course.py --rehearse`` sums the
records into the T4 estimate.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Callable

from .. import runtime

__all__ = ["Caps", "CAPS", "TALLIES", "record_work", "model_name", "best_effort"]


@dataclasses.dataclass(frozen=True)
class Caps:
    """What a full-mode rehearsal cuts: full-size data and models, every training and query loop shortened so that
    a notebook runs on a CPU in minutes. With 32 integrated-gradients steps instead of 128, notebook 06's
    completeness check does not hold for an EfficientNet (SiLU): a rehearsal skips the lessons' checks."""

    steps: int = 2                 # optimizer steps per epoch (torch engine, Keras fit)
    epochs: int = 1                # epochs per fit
    mc_passes: int = 2             # MC-dropout forward passes
    ig_steps: int = 32             # integrated-gradients steps (128 took 6 min for 8 images on this CPU)
    randomisation_steps: int = 2   # layer groups re-initialised in the randomisation check
    deletion_steps: int = 4        # deletion/insertion steps (20 in full mode)
    standin_images: int = 2048     # distinct malaria stand-in cells rendered; repeated to the full count
    eval_batches: int = 4          # batches evaluate/predict run through a model; later batches reuse those outputs


CAPS = Caps()


CAPS = Caps()
TALLIES: list[Counter] = []   # open counters of work records (the XAI wrappers scale theirs)


def record_work(kind: str, *, images: int, steps: int = 0, flops_per_image: float | None = None, what: str = "",
                framework: str = "") -> None:
    """Note work full mode WOULD do: ``images`` passes of ``kind`` (``"train"``: forward and backward, or
    ``"forward"``), their FLOPs per image, ``steps`` batches; ``scripts/run_course.py --rehearse`` sums them."""
    if images <= 0:
        return
    for tally in TALLIES:
        tally[kind] += int(images)
    runtime.append_report({"kind": "work", "pass": kind, "images": int(images), "steps": int(steps),
                           "flops_per_image": None if flops_per_image is None else float(flops_per_image),
                           "model": what, "framework": framework})


def model_name(model: Any) -> str:
    """The name a work record gives a model: a Keras model's own name, a torch module's class."""
    return getattr(model, "name", "") if runtime.framework_of(model) == "keras" else type(model).__name__


def best_effort(count: Callable[[], float | None]) -> float | None:
    """``count()``, or None when it fails: counting never stops a rehearsal."""
    try:
        return count()
    except Exception:  # noqa: BLE001  (counting is best effort: never stop a rehearsal over it)
        return None
