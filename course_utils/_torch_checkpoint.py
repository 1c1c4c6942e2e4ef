"""Checkpoints of the torch engine (:func:`course_utils.train_torch.fit`): save after every epoch, resume exactly.

A checkpoint holds everything needed to continue where a run stopped: model, optimizer, scheduler,
GradScaler, the epoch, the History so far, the best state, the epochs without improvement and the
RNG states (Python, NumPy, torch, CUDA, and the loader's own generators). It is written atomically
(a temporary file, then a rename), so a disconnect while saving never leaves half a file.
"""
from __future__ import annotations

import copy
import os
import random
import warnings
from pathlib import Path

import numpy as np

from .runtime import CourseError, import_torch

_CHECKPOINT_VERSION = 1
_CHECKPOINTED_META = ("skipped_batches", "skipped_per_epoch", "epoch_seconds")


def _loader_generators(loader) -> list:
    torch = import_torch()
    found = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def _rng_state(loader) -> dict:
    torch = import_torch()
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loader": [g.get_state() for g in _loader_generators(loader)]}


def _set_rng_state(state: dict, loader) -> None:
    torch = import_torch()
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for g, s in zip(_loader_generators(loader), state.get("loader", [])):
        g.set_state(s)


def save_checkpoint(path: Path, epoch, epochs, model, optimizer, scheduler, scaler, history, best, bad_epochs,
                    loader) -> None:
    """Everything needed to continue exactly where we stopped; written atomically (tmp + rename)."""
    torch = import_torch()
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


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler, history, best, loader, dev) -> tuple[int, int]:
    """Restore every piece in place; returns (epochs done, epochs without improvement). Warns when the
    checkpoint looks like another experiment's (other epochs, batches per epoch or learning rate)."""
    torch = import_torch()
    try:
        state = torch.load(path, map_location=dev, weights_only=False)  # our own file (holds RNG states)
    except Exception as exc:  # noqa: BLE001
        raise CourseError(f"could not read the checkpoint {path} ({exc}); delete it to start over") from exc
    if state.get("version") != _CHECKPOINT_VERSION:
        raise CourseError(f"{path} is not a course_utils checkpoint (version {state.get('version')})")
    if state["epochs"] != history.meta["epochs_planned"]:
        warnings.warn(f"the checkpoint was made for epochs={state['epochs']}, this run asks for "
                      f"{history.meta['epochs_planned']}: the learning-rate schedule changes", stacklevel=4)
    if state.get("steps_per_epoch") != len(loader) or state.get("lr") != history.meta["lr"]:
        warnings.warn(f"the checkpoint {path} was made with {state.get('steps_per_epoch')} batches per epoch and "
                      f"lr={state.get('lr')}; this run has {len(loader)} and lr={history.meta['lr']}. "
                      "Is it from another experiment? Delete it (or use another checkpoint_path) to start over.",
                      stacklevel=4)
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
