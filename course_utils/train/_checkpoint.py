"""Checkpoints of the torch engine (:func:`course_utils.train_torch.fit`): save after every epoch, resume exactly.

A checkpoint holds everything needed to continue where a run stopped: model, optimizer, scheduler,
GradScaler, the epoch, the History so far, the best state, the epochs without improvement and the
RNG states (Python, NumPy, torch, CUDA, and the loader's own generators). It is written atomically
(a temporary file, then a rename), so a disconnect while saving never leaves half a file; a write
that fails (a full disk) removes the temporary file and leaves the previous checkpoint as it was.

Safe and checked: everything in it is a tensor, number, string, list or dict, so it is read with
``torch.load(..., weights_only=True)``, which runs no code from the file (a checkpoint from someone
else cannot execute anything). The state is serialised once, its SHA-256 computed, and the file holds
``{"format", "version", "sha256", "payload"}`` (the payload as a uint8 tensor): on resume the digest is
checked before anything is used, so a damaged file (a flipped byte, a truncated copy) is a clear
CourseError instead of an optimizer state silently off.

A checkpoint belongs to its settings (:func:`run_settings`: loss with its constants, model, epochs,
lr, schedule, clipping, weight decay, seed, batches per epoch, plus what the caller adds, e.g. the
data set and image size). They are stored in it; ``resume=True`` with other settings starts fresh and
says so in one line, instead of silently reloading another run; the other run's file is first renamed
(:func:`set_aside`), so a stop in the new run's first epoch never costs the old run's training.
:func:`settings_key` is a short hash of them, for keying the file name (``checkpoint_path="runs/effnet_{key}.pt"``, :func:`keyed_path`).

For :func:`~course_utils.train_torch.fit`: :func:`resume_run` decides where a run starts (fresh, or where
its checkpoint stopped, or fresh with a one-line reason), and :class:`RunProgress` saves a checkpoint after
every epoch and, when a run fails part-way, attaches the finished epochs to the exception and names the
last good checkpoint.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import json
import os
import pickle
import random
import uuid
from pathlib import Path

import numpy as np

from .history import History
from ..integrity import disk_full, seal, unseal
from ..runtime import CourseError, import_torch

_FORMAT = "course_utils.train_torch checkpoint"
_CHECKPOINT_VERSION = 2  # 2: weights_only-safe contents, SHA-256 of the payload
_CHECKPOINTED_META = ("skipped_batches", "skipped_per_epoch", "epoch_seconds")


# ============================================================================ settings
def describe_loss(fn, _depth: int = 0) -> str:
    """A loss function as text that changes when its settings do: a module's class, plain attributes and
    buffers (``pos_weight``); a function's name, the constants in its code (``alpha=0.25``), its closure
    values and defaults; a ``functools.partial``'s arguments. Two lambdas that differ only in a
    constant differ here."""
    torch = import_torch()
    if _depth > 3:
        return "..."
    if isinstance(fn, functools.partial):
        return (f"partial({describe_loss(fn.func, _depth + 1)}, {_plain(fn.args)}, "
                f"{_plain(dict(sorted(fn.keywords.items())))})")
    if isinstance(fn, torch.nn.Module):
        attrs = {k: _plain(v) for k, v in sorted(vars(fn).items()) if not k.startswith("_") and k != "training"}
        buffers = {k: [round(float(x), 6) for x in b.detach().flatten()[:32]] for k, b in fn.named_buffers()}
        return f"{type(fn).__name__}({attrs}, {buffers})"
    code = getattr(fn, "__code__", None)
    if code is None:
        attrs = {k: _plain(v) for k, v in sorted(getattr(fn, "__dict__", {}).items()) if not k.startswith("_")}
        return f"{type(fn).__name__}({attrs})"
    closure = [describe_loss(c.cell_contents, _depth + 1) if callable(c.cell_contents) else _plain(c.cell_contents)
               for c in (fn.__closure__ or ()) if _filled(c)]
    return (f"{getattr(fn, '__qualname__', fn.__name__)}(consts={_code_constants(code)}, names={list(code.co_names)},"
            f" closure={closure}, defaults={_plain(fn.__defaults__)}, kwdefaults={_plain(fn.__kwdefaults__)})")


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:  # an empty cell (a name not assigned yet)
        return False
    return True


def _code_constants(code) -> list:
    out = []
    for c in code.co_consts:
        out.extend(_code_constants(c) if hasattr(c, "co_consts") else [_plain(c)])
    return out


def _plain(value):
    """A value as JSON-able plain data (numbers, text, lists, dicts); anything else as its type name."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, (np.integer, np.floating)):
        return _plain(value.item())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "flatten"):  # a tensor or array: its first values
        flat = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=float).reshape(-1)
        return {"shape": list(shape), "values": [round(float(x), 6) for x in flat[:32]]}
    return type(value).__name__


def run_settings(*, model, info, loss_fn, task, epochs, lr, weight_decay, schedule, min_lr_ratio, clip_grad_norm,
                 batchnorm_eval, monitor, seed, train_loader, extra: dict | None = None) -> dict:
    """What makes a training run this run (stored in its checkpoint, hashed by :func:`settings_key`)."""
    params = [(name, list(p.shape), bool(p.requires_grad)) for name, p in model.named_parameters()]
    settings = {
        "task": task, "epochs": epochs, "lr": _plain(lr), "weight_decay": _plain(weight_decay), "schedule": schedule,
        "min_lr_ratio": _plain(min_lr_ratio), "clip_grad_norm": _plain(clip_grad_norm),
        "batchnorm_eval": batchnorm_eval, "monitor": monitor, "seed": seed, "loss": describe_loss(loss_fn),
        "model": _plain(info.to_dict()) if info is not None else type(model).__name__,
        "parameters": hashlib.sha256(json.dumps(params).encode()).hexdigest()[:12],
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "batches_per_epoch": len(train_loader),
    }
    if extra:
        settings["extra"] = _plain(dict(extra))
    return settings


def settings_key(settings: dict) -> str:
    """A short (8 hex digits) hash of the settings: equal settings, equal key."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


def keyed_path(path: str | os.PathLike | None, settings: dict) -> str | os.PathLike | None:
    """``path`` with ``{key}`` replaced by :func:`settings_key` of ``settings``, so each setting gets its own file."""
    if path is not None and "{key}" in str(path):
        return str(path).replace("{key}", settings_key(settings))
    return path


def settings_diff(stored: dict | None, current: dict, limit: int = 3) -> str:
    """'' when the settings match, else the first differences as ``name stored -> current``. A current
    ``seed`` of None accepts any stored seed (the checkpoint carries the random state)."""
    if stored is None:
        return "the checkpoint records no settings (an older one)"
    keys = [k for k in sorted(set(stored) | set(current))
            if stored.get(k) != current.get(k) and not (k == "seed" and current.get(k) is None)]
    parts = [f"{k} {_short(stored.get(k))} -> {_short(current.get(k))}" for k in keys[:limit]]
    return ", ".join(parts) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _short(value, width: int = 40) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[:width - 3] + "..."


# ============================================================================ random state
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
    """Every RNG state as tensors, numbers and lists (what ``weights_only`` loading accepts)."""
    torch = import_torch()
    py_version, py_internal, py_gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [py_version, list(py_internal), py_gauss],
            "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                      float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "loader": [g.get_state() for g in _loader_generators(loader)]}


def _set_rng_state(state: dict, loader) -> None:
    torch = import_torch()
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for g, s in zip(_loader_generators(loader), state.get("loader", [])):
        g.set_state(s)


def save_checkpoint(path: Path, epoch, epochs, model, optimizer, scheduler, scaler, history, best, bad_epochs,
                    loader) -> None:
    """Everything needed to continue exactly where we stopped; written atomically (tmp + rename), with the
    SHA-256 of the payload inside. A failed write (e.g. a full disk) is a CourseError; the previous
    checkpoint stays as it was."""
    torch = import_torch()
    state = {"version": _CHECKPOINT_VERSION, "epoch": epoch, "epochs": epochs, "steps_per_epoch": len(loader),
             "lr": history.meta["lr"], "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
             "history": {"metrics": {k: [float(v) for v in vals] for k, vals in history.metrics.items()},
                         "meta": {k: copy.deepcopy(history.meta[k]) for k in _CHECKPOINTED_META}},
             "best": {"monitor": best.monitor, "value": _number(best.value), "epoch": best.epoch,
                      "state": best.state, "tiebreak": _number(best.tiebreak)},
             "bad_epochs": bad_epochs, "rng": _rng_state(loader), "settings": history.meta.get("settings")}
    wrapped = seal(state, format=_FORMAT, version=_CHECKPOINT_VERSION)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")   # this writer's own
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(wrapped, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's C++ writer raises RuntimeError for a failed write
        with contextlib.suppress(OSError):
            tmp.unlink()
        full = disk_full(exc)
        kept = f"the previous checkpoint at {path} is unchanged" if path.exists() else "no earlier checkpoint exists"
        when = f"after epoch {epoch}" if epoch else "(the initial state, before epoch 1)"
        raise CourseError(f"could not write the checkpoint {path} {when} ({exc}). "
                          + ("The disk is full: free some space or pass a checkpoint_path on another disk; "
                             if full else "Check that the folder is writable and has space; ")
                          + f"{kept}.") from exc


def _number(value):
    """A metric value as a plain Python float (NumPy scalars are not allowed in a weights_only file)."""
    return None if value is None else float(value)


def _read(path: Path, dev) -> dict:
    """The checkpoint's state, read with ``weights_only=True`` and checked against its SHA-256 first."""
    torch = import_torch()
    start_over = "Delete it to start over (or pass another checkpoint_path)."
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise CourseError(
                f"{path} is not a course_utils checkpoint that can be loaded safely: it holds Python objects "
                "that loading would have to run (the course reads checkpoints with weights_only=True, so a file "
                "from someone else cannot run code; checkpoints of course_utils before this check are refused "
                f"too). It was not loaded. {start_over}") from exc
        raise CourseError(f"the checkpoint {path} is damaged and cannot be read ({_first_line(exc)}). "
                          f"{start_over}") from exc
    except Exception as exc:  # noqa: BLE001 - a truncated or empty file: zip, EOF, ... errors
        raise CourseError(f"the checkpoint {path} is damaged and cannot be read ({type(exc).__name__}: "
                          f"{_first_line(exc)}). {start_over}") from exc
    if not isinstance(outer, dict) or outer.get("format") != _FORMAT:
        what = f"keys {sorted(map(str, outer))[:6]}" if isinstance(outer, dict) else type(outer).__name__
        raise CourseError(f"{path} is not a course_utils checkpoint (it holds {what}; one written by "
                          f"train_torch.fit holds format={_FORMAT!r}). {start_over}")
    if outer.get("version") != _CHECKPOINT_VERSION:
        raise CourseError(f"{path} was written by another version of course_utils (checkpoint version "
                          f"{outer.get('version')}, this one reads {_CHECKPOINT_VERSION}). {start_over}")
    data = unseal(outer)
    if data is None:
        raise CourseError(f"the checkpoint {path} is damaged: its contents no longer match the SHA-256 stored when "
                          f"it was written (a changed byte, or a partial copy). {start_over}")
    try:
        return torch.load(io.BytesIO(data), map_location=dev, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - intact bytes that still do not load: not ours
        raise CourseError(f"{path} could not be loaded ({type(exc).__name__}: {_first_line(exc)}). {start_over}") \
            from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no details"


def read_checkpoint(path: Path, dev) -> dict:
    """The checkpoint's state (integrity checked); ``state["settings"]`` are the run's settings."""
    state = _read(path, dev)
    if state.get("version") != _CHECKPOINT_VERSION:
        raise CourseError(f"{path} is not a course_utils checkpoint (version {state.get('version')})")
    return state


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler, history, best, loader, dev,
                    state: dict | None = None) -> tuple[int, int]:
    """Restore every piece in place (from ``state`` if already read); returns (epochs done, epochs without
    improvement). The caller compares the settings first (:func:`settings_diff`)."""
    state = state if state is not None else read_checkpoint(path, dev)
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


# ============================================================================ a run: resume, save, report
def resume_run(ckpt: Path | None, resume: bool, state: tuple, dev, epochs: int, progress: bool) -> tuple[int, int]:
    """(first epoch to run, epochs without improvement so far): (0, 0), or where the checkpoint stopped."""
    if not resume:
        return 0, 0
    if ckpt is None:
        raise CourseError("resume=True needs checkpoint_path")
    if not ckpt.exists():
        if progress:  # not "from scratch": the model object may hold weights from an earlier call
            print(f"no checkpoint at {ckpt} yet: training starts from the model's current weights "
                  "(fresh if it was just built; rebuild it for a clean start)")
        return 0, 0
    stored = read_checkpoint(ckpt, dev)  # integrity first: a damaged file is an error, whatever its settings
    changed = settings_diff(stored.get("settings"), state[4].meta["settings"])
    if changed:  # another run's checkpoint: reloading it would silently skip this run's training
        state[4].meta["fresh_start"] = changed
        aside = set_aside(ckpt, stored.get("settings"))
        state[4].meta["set_aside"] = str(aside)
        print(f"not resumed: {ckpt} holds a run with other settings ({changed}); that run is kept as {aside} "
              "(resume it from there), and this one starts from the model's current weights")
        return 0, 0
    start_epoch, bad_epochs = load_checkpoint(ckpt, *state, dev, state=stored)
    state[4].meta["resumed_from_epoch"] = start_epoch
    if progress:
        print(f"resumed from {ckpt} after epoch {start_epoch}/{epochs}" if start_epoch else
              f"resumed from {ckpt}: no epoch had finished, so training restarts from the initial state saved "
              "there (weights, optimizer and random state as the run began)")
    return start_epoch, bad_epochs


def set_aside(ckpt: Path, settings: dict | None) -> Path:
    """Move another run's checkpoint out of the way, never over a file: ``run.pt`` becomes
    ``run.settings-<its key>.pt`` (``-2``, ``-3``, ... when that name is taken). A rename, so nothing is copied."""
    key = settings_key(settings) if settings else "unknown"
    suffix = ckpt.suffix or ".pt"
    for n in range(1, 1000):
        aside = ckpt.with_name(f"{ckpt.stem}.settings-{key}{'' if n == 1 else f'-{n}'}{suffix}")
        try:
            try:
                os.link(ckpt, aside)   # fails if the name exists: no earlier run is ever overwritten
                os.unlink(ckpt)
            except FileExistsError:
                continue
            except OSError:            # no hard links here (FAT, some network drives): a rename to a free name
                if aside.exists():
                    continue
                os.rename(ckpt, aside)
        except OSError as exc:
            raise CourseError(f"{ckpt} holds a run with other settings, and it could not be kept aside as {aside} "
                              f"({exc}); nothing was changed. Pass another checkpoint_path, or move {ckpt} "
                              "yourself to train with the new settings.") from exc
        return aside
    raise CourseError(f"{ckpt}: 999 earlier runs are already kept beside it; clean up the folder")


@contextlib.contextmanager
def checkpoint_lock(ckpt: Path | None):
    """Hold ``<checkpoint>.lock`` for a whole run: a second run on the same checkpoint (another notebook, kernel or
    process with the same settings) is refused at once, instead of overwriting this run's epochs with its own. The
    operating system drops the lock when the process ends, so a killed run never leaves a stale lock."""
    try:
        import fcntl  # noqa: PLC0415 - POSIX (Linux, macOS, Colab); elsewhere runs are not locked
    except ImportError:
        fcntl = None
    if ckpt is None or fcntl is None:
        yield
        return
    lock = ckpt.with_name(ckpt.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CourseError(f"cannot use the checkpoint folder {ckpt.parent} ({exc}): check that it is writable, or "
                          "pass a checkpoint_path somewhere else.") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise CourseError(f"another run is training into {ckpt} right now ({holder}): two runs on one checkpoint "
                              "would overwrite each other's epochs. Wait for it to finish, stop it, or pass another "
                              "checkpoint_path.") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)                              # closing releases the lock


class RunProgress:
    """Where a fit run is (epoch, phase, last checkpoint written), so that an error can say so."""

    def __init__(self, ckpt: Path | None, epochs: int, saved_epoch: int | None):
        self.ckpt, self.epochs, self.saved_epoch = ckpt, epochs, saved_epoch
        self.epoch, self.phase = None, "starting"

    def save(self, epoch: int, state: tuple, bad_epochs: int) -> None:
        """Write the checkpoint after ``epoch`` (0: the initial state), when the run has one, and note it as the
        last good one. ``state`` is fit's ``(model, optimizer, scheduler, scaler, history, best, loader)``."""
        if self.ckpt is None:
            return
        self.phase = "saving the checkpoint" if epoch else "saving the initial checkpoint"
        save_checkpoint(self.ckpt, epoch, self.epochs, *state[:6], bad_epochs, state[6])
        self.saved_epoch = epoch

    def keep(self, exc: BaseException, history: History) -> None:
        """Attach the History of the finished epochs to ``exc`` (``exc.history``) and say where the run
        stopped and which checkpoint is the last good one: in a CourseError's message, or as a note."""
        with contextlib.suppress(AttributeError, TypeError):
            exc.history = history
        if history.n_epochs == 0 and not self.saved_epoch:
            return  # nothing done yet: the error speaks for itself
        where = f"epoch {self.epoch}/{self.epochs} ({self.phase})" if self.epoch else self.phase
        text = (f"fit stopped in {where}; the History of the {history.n_epochs} finished epoch(s) is attached as "
                "exc.history (e.g. `except CourseError as exc: history = exc.history`)")
        if self.ckpt is None:
            text += "; no checkpoint was saved (pass checkpoint_path= to be able to resume)."
        elif self.saved_epoch is None:
            text += f"; no checkpoint was written to {self.ckpt}."
        else:
            text += (f"; the last good checkpoint is {self.ckpt} (after epoch {self.saved_epoch}): "
                     f"fit(..., checkpoint_path={str(self.ckpt)!r}, resume=True) continues from it.")
        if isinstance(exc, CourseError) and exc.args and isinstance(exc.args[0], str):
            exc.args = (f"{exc.args[0].rstrip('.')}. {text[0].upper()}{text[1:]}", *exc.args[1:])
        elif hasattr(exc, "add_note"):
            exc.add_note(text)
