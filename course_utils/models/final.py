"""A notebook's final model, saved under a fixed name so that a later notebook can reuse it (03/04 -> 06).

    cu.final_models.save(model, info, "04_breastmnist", image_size=SIZE, source=src)   # end of notebook 04
    saved = cu.final_models.load("04_breastmnist")    # notebook 06: None when missing or unreadable
    if saved is not None:
        model, info, image_size = saved.model, saved.info, saved.meta["image_size"]

Files live in ``runs/final/`` next to the notebooks (``notebooks/runs/`` is git-ignored): ``<name>.pt`` for
torch, ``<name>.keras`` for Keras. Keyword arguments to :func:`save` are kept as ``meta`` (plain values: what a
later notebook must know to use the model, such as the image size and the data source it was trained on).

- **torch**: a plain dict (state dict, ``ModelInfo`` as a dict, ``meta``), no pickled code, so it is read with
  ``torch.load(..., weights_only=True)``; the model is rebuilt by the :mod:`models_torch` builder named in
  ``info.arch`` (``small_cnn``, ``efficientnet_b0``, ``efficientnet_lite0``; never downloading weights) and the
  state dict loaded into it, strictly. The dict is sealed with its SHA-256 (:func:`~course_utils.integrity.seal`).
- **Keras**: ``model.save("<name>.keras")`` (Keras' own format), and ``<name>.json`` beside it for the info, meta
  and the ``.keras`` file's SHA-256.

:func:`load` never raises for a missing, old, damaged (one flipped bit) or mismatched file: it prints one line
saying why and returns None, so the notebook can train its own model instead. Files are written to a temporary
name of their own (one per writer) and then renamed, so an interrupted or concurrent save leaves the previous
file intact; a failed save (a full disk) is a CourseError that says so, and leaves no temporary file.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .info import ModelInfo
from ..integrity import check_file, disk_full, seal, sealed_bytes, sha256_bytes, sha256_file
from ..runtime import CourseError, framework_of

__all__ = ["FOLDER", "FinalModel", "save", "load", "path_of"]

FOLDER = Path("runs") / "final"      # relative to the notebook's folder, as every run_dir in the course
FORMAT = 2                           # 2: sealed with a SHA-256 (integrity.seal); another version is refused
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TORCH_BUILDERS = ("small_cnn", "efficientnet_b0", "efficientnet_lite0")


@dataclass
class FinalModel:
    """A loaded final model: the model (in eval mode for torch), its ModelInfo (or None), meta, the file."""

    model: Any
    info: ModelInfo | None
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def framework(self) -> str:
        return "keras" if self.path is not None and self.path.suffix == ".keras" else "torch"


# --------------------------------------------------------------------------- helpers
def _folder(folder: str | os.PathLike | None) -> Path:
    return Path(folder) if folder is not None else FOLDER


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".pt", ".keras", ".json")):
        raise CourseError(f"a final model's name is letters, digits, '_', '-' or '.', without a suffix "
                          f"(e.g. '04_breastmnist'); got {name!r}")
    return name


def path_of(name: str, framework: str, folder: str | os.PathLike | None = None) -> Path:
    """Where :func:`save` puts ``name`` for ``framework`` (``"torch"`` or ``"keras"``)."""
    return _folder(folder) / f"{_check_name(name)}{'.pt' if framework == 'torch' else '.keras'}"


def _framework(model: Any) -> str:
    found = framework_of(model)
    if found is not None:
        return found
    raise CourseError(f"save takes a torch nn.Module or a Keras Model, got {type(model).__name__}")


def _as_info(info: Any) -> ModelInfo | None:
    if info is None or isinstance(info, ModelInfo):
        return info
    if isinstance(info, dict):                       # e.g. History.meta["model"]
        try:
            return ModelInfo(**info)
        except TypeError as exc:
            raise CourseError(f"info is not a ModelInfo dict ({exc}); pass the info the model builder returned") \
                from exc
    raise CourseError(f"info must be the ModelInfo the builder returned (or its dict), got {type(info).__name__}")


def _plain(value: Any, key: str) -> Any:
    """meta values must survive JSON and ``weights_only=True``: numbers, text, booleans, None, lists of them."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:      # numpy / torch scalars
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, key) for v in value]
    raise CourseError(f"meta {key}={value!r} is a {type(value).__name__}; give numbers, text, booleans or lists")


def _torch_build_kwargs(model: Any, info: ModelInfo) -> dict[str, int]:
    """What the builder needs besides info to make the same shapes (small_cnn: width and depth)."""
    if info.arch != "small_cnn":
        return {}
    import torch  # noqa: PLC0415

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return {"width": int(convs[0].out_channels), "depth": len(convs)}


def _build_torch(info: ModelInfo, build: dict[str, Any]):
    from . import torch_models as models_torch  # noqa: PLC0415

    if info.arch == "small_cnn":
        model, _ = models_torch.small_cnn(info.n_classes, info.in_chans, **build)
    elif info.arch == "efficientnet_b0":
        model, _ = models_torch.efficientnet_b0(info.n_classes, pretrained=False, in_chans=info.in_chans,
                                                verbose=False)
    else:
        model, _ = models_torch.efficientnet_lite0(info.n_classes, pretrained=False, in_chans=info.in_chans,
                                                   verbose=False)
    return model


def _n_outputs(model: Any, framework: str) -> int | None:
    """The model's output count: the last Linear's (torch) or the output shape's last axis (Keras); None if unknown."""
    return _torch_outputs(model) if framework == "torch" else _keras_outputs(model)


def _torch_outputs(model: Any) -> int | None:
    import torch  # noqa: PLC0415

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return int(linears[-1].out_features) if linears else None


def _keras_outputs(model: Any) -> int | None:
    shape = getattr(model, "output_shape", None)
    return int(shape[-1]) if isinstance(shape, tuple) and shape and shape[-1] is not None else None


# --------------------------------------------------------------------------- save
def save(model: Any, info: Any, name: str, *, folder: str | os.PathLike | None = None, verbose: bool = True,
         **meta: Any) -> Path:
    """Save ``model`` as the final model ``name`` (torch: ``<name>.pt``; Keras: ``<name>.keras`` + ``.json``).

    ``info`` is the :class:`ModelInfo` its builder returned (or ``History.meta["model"]``, the same as a dict);
    torch needs it to rebuild the model, Keras keeps it for the reader. ``meta`` keywords (plain values) go
    with the model, e.g. ``image_size=64, source="stand-in"``. Returns the path and prints it in one line.
    """
    name = _check_name(name)
    framework = _framework(model)
    info = _as_info(info)
    meta = {k: _plain(v, k) for k, v in meta.items()}
    if framework == "torch" and info is None:
        raise CourseError("a torch model is saved as weights and rebuilt from its ModelInfo: pass the info its "
                          "builder returned (or History.meta['model'])")
    if info is not None and info.framework != framework:
        raise CourseError(f"info says {info.framework} ({info.arch}) but the model is a {framework} model")
    if framework == "torch" and info.arch not in _TORCH_BUILDERS:
        raise CourseError(f"cannot rebuild a torch {info.arch!r} when loading; final models are built by "
                          f"models_torch ({', '.join(_TORCH_BUILDERS)})")
    outputs = _n_outputs(model, framework)
    if info is not None and outputs is not None and outputs != info.n_classes:
        raise CourseError(f"the model has {outputs} outputs but its info says n_classes={info.n_classes}: the two do "
                          "not belong together (a later load could not rebuild it). Pass the info its builder "
                          "returned with this model.")
    path = path_of(name, framework, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"     # one temporary name per writer: two saves never collide
    tmp = path.with_name(f".{path.stem}.{unique}.tmp{path.suffix}")
    side, side_tmp = path.with_suffix(".json"), path.with_name(f".{path.stem}.{unique}.tmp.json")
    try:
        if framework == "torch":
            n_params = _write_torch(model, info, meta, tmp, path)
        else:
            n_params = _write_keras(model, info, meta, tmp, path, side_tmp, side)
    except (OSError, RuntimeError) as exc:   # torch's writer raises RuntimeError for a failed write
        for leftover in (tmp, side_tmp):
            with contextlib.suppress(OSError):
                leftover.unlink()
        full = disk_full(exc)
        raise CourseError(f"could not save the final model {name!r} to {path} ({_why(exc)}). "
                          + ("The disk is full: free some space, or pass folder= on another disk. "
                             if full else "Check that the folder is writable and has space. ")
                          + ("The previous file is unchanged." if path.exists() else "Nothing was written.")) from exc
    arch = info.arch if info is not None else type(model).__name__
    if verbose:
        print(f"saved the final model {name!r}: {path} ({arch}, {n_params:,} parameters)")
    return path


def _write_torch(model: Any, info: ModelInfo, meta: dict, tmp: Path, path: Path) -> int:
    """The weights, the info to rebuild them and ``meta``, sealed with their SHA-256, written to ``tmp`` and then
    moved over ``path`` in one step; returns the parameter count."""
    import torch  # noqa: PLC0415

    payload = {"info": info.to_dict(), "build": _torch_build_kwargs(model, info), "meta": meta,
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    torch.save(seal(payload, format=FORMAT), tmp)
    os.replace(tmp, path)
    return sum(int(v.numel()) for v in payload["state_dict"].values())


def _write_keras(model: Any, info: ModelInfo | None, meta: dict, tmp: Path, path: Path, side_tmp: Path,
                 side: Path) -> int:
    """The ``.keras`` file and its ``.json`` description (with the file's SHA-256), each moved into place in one
    step; returns the parameter count."""
    model.save(tmp)
    doc = {"format": FORMAT, "info": info.to_dict() if info else None, "meta": meta,
           "sha256": sha256_file(tmp)}    # ties this description to exactly this .keras file
    side_tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(side_tmp, side)
    os.replace(tmp, path)
    return int(model.count_params())


# --------------------------------------------------------------------------- load
def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _load_torch(path: Path) -> tuple[FinalModel | None, str]:
    import torch  # noqa: PLC0415

    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file: say why, train instead
        return None, f"{path} could not be read ({_why(exc)})"
    if not isinstance(outer, dict) or outer.get("format") != FORMAT or "payload" not in outer:
        return None, (f"{path} is not a final model of this course version (an older one, a whole pickled model or "
                      "a training checkpoint?); save it again with cu.final_models.save")
    sealed = sealed_bytes(outer)
    damaged = (f"{path} is damaged: its contents no longer match the SHA-256 stored when it was saved (a changed "
               "byte, or a partial copy); run the notebook that saves it again")
    if sealed is None:
        return None, damaged
    # The SHA-256 is computed in a thread while the model is rebuilt (hashlib releases the GIL): the check is not
    # felt. Unchecked bytes are only read with weights_only=True (no code runs) and dropped if the check fails.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        intact = pool.submit(lambda: sha256_bytes(sealed[0]) == sealed[1])
        loaded, why = _rebuild_torch(path, sealed[0])
        if not intact.result():
            return None, damaged
    return loaded, why


def _rebuild_torch(path: Path, data: memoryview) -> tuple[FinalModel | None, str]:
    """The model rebuilt by its builder from the payload's info, with the payload's weights loaded strictly."""
    import torch  # noqa: PLC0415

    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - bytes that do not load
        return None, f"{path} could not be read ({_why(exc)})"
    try:
        info = ModelInfo(**payload["info"])
    except TypeError as exc:
        return None, f"{path} holds an unknown model description ({_why(exc)})"
    if info.arch not in _TORCH_BUILDERS:
        return None, f"{path} holds a {info.arch!r}, which models_torch cannot rebuild"
    try:
        model = _build_torch(info, payload.get("build", {}))
        model.load_state_dict(payload["state_dict"], strict=True)
    except Exception as exc:  # noqa: BLE001 - shapes that do not fit, a changed builder
        return None, f"{path} does not fit a freshly built {info.arch} ({_why(exc)})"
    model.eval()
    return FinalModel(model, info, dict(payload.get("meta", {})), path), ""


def _load_keras(path: Path) -> tuple[FinalModel | None, str]:
    from ..runtime import import_keras  # noqa: PLC0415

    keras = import_keras()
    info, meta = None, {}
    side = path.with_suffix(".json")
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
        info = ModelInfo(**doc["info"]) if doc.get("info") else None
        meta = dict(doc.get("meta") or {})
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, (f"its description {side.name} could not be read ({_why(exc)}), so {path.name} cannot be "
                      "checked; run the notebook that saves it again")
    problem = check_file(path, doc.get("sha256"))     # the .keras file is the one this description was written for
    if problem:
        return None, f"{problem}; run the notebook that saves it again"
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file: say why, train instead
        return None, f"{path} could not be read ({_why(exc)})"
    return FinalModel(model, info, meta, path), ""


def load(name: str, *, folder: str | os.PathLike | None = None, verbose: bool = True) -> FinalModel | None:
    """The final model ``name`` saved by :func:`save`, or None (with one printed line saying why).

    Looks for ``<name>.pt`` and ``<name>.keras`` (the newer wins if both exist). Returns a :class:`FinalModel`
    with ``model``, ``info``, ``meta`` and ``path``; a torch model comes back on the CPU in eval mode.
    """
    name = _check_name(name)
    candidates = [p for p in (path_of(name, "torch", folder), path_of(name, "keras", folder)) if p.exists()]
    if not candidates:
        if verbose:
            print(f"no saved model {name!r} in {_folder(folder)}/ (the notebook that saves it has not run to its end "
                  "here)")
        return None
    path = max(candidates, key=lambda p: p.stat().st_mtime)
    loaded, why = (_load_torch if path.suffix == ".pt" else _load_keras)(path)
    if verbose:
        if loaded is None:
            print(f"not using the saved model {name!r}: {why}")
        else:
            arch = loaded.info.arch if loaded.info is not None else type(loaded.model).__name__
            extra = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in loaded.meta.items())
            print(f"loaded the saved model {name!r} from {path} ({arch}{', ' + extra if extra else ''})")
    return loaded
