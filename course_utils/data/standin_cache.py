"""Stand-in data sets on disk: medmnist's file format and metadata, the cache, and ``stand_in_sample``.

What: the images come from the renderers in :mod:`.standins`; this module turns them into data sets.
:func:`make_medmnist_stand_in` writes ``<flag>.npz`` in medmnist's own layout with exactly the real split
sizes (``medmnist`` asserts them), so that ``medmnist`` itself loads it; :func:`make_malaria_stand_in`
returns (and caches) malaria-like cells; :func:`stand_in_sample` draws a few images like a stand-in's split,
at any difficulty, without touching the cache (tests, calibration). ``_MEDMNIST_META`` is the part of
``medmnist.INFO`` needed without medmnist; :func:`medmnist_meta`, :func:`check_flag_size` and
:func:`npz_name` also serve :func:`course_utils.data.load_medmnist`, which reads the real files by the
same names.

How: deterministic (each generator is seeded from a readable key: name, split, size, chunk) and cached on
disk as ``.npz`` under the course cache; ``STAND_IN_VERSION`` is part of every cache name (the renderers'
version, bumped by hand when a renderer changes, plus a fingerprint of ``DIFFICULTY``). A cached file is
verified in full before it is used (every byte against the zip's CRC-32, and the arrays' shapes): a
truncated, emptied or altered file is reported in one line, deleted and generated again, instead of
failing on every later load. Writes are atomic (a temporary file, then a rename). Only numpy is used.
"""
from __future__ import annotations

import contextlib
import os
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .. import runtime
from ..integrity import disk_full, remove_orphans
from ..runtime import CourseError
from .standins import (
    DIFFICULTY, MEDMNIST_FLAGS, RENDERER_VERSION, STAND_INS, draw_labels, labels_from_priors, render_malaria,
    stand_in_rng,
)

__all__ = ["make_malaria_stand_in", "make_medmnist_stand_in", "stand_in_sample", "medmnist_meta", "check_flag_size",
           "npz_name", "npz_problem", "is_stand_in_npz", "MEDMNIST_SIZES", "STAND_IN_VERSION"]

MEDMNIST_SIZES = (28, 64, 128, 224)
STAND_IN_MARKER = "course_stand_in"   # an extra array in every stand-in npz, so no loader takes it for MedMNIST
STAND_IN_MAX_BYTES = int(1.5 * 2**30)  # largest stand-in file we agree to generate


def _code_fingerprint(here: Path = Path(__file__).parent) -> str:
    """CRC-32 of the knobs and of the code that draws the stand-ins (standins.py, _drawing.py, splits.py): a changed
    renderer never reuses an old cache, so a warm local cache cannot hide a bug that a fresh clone would show."""
    code = b"".join((here / name).read_bytes() for name in ("standins.py", "_drawing.py", "splits.py"))
    return f"{zlib.crc32(repr(sorted(DIFFICULTY.items())).encode() + code):08x}"


# part of every stand-in cache name: the renderers' version and a fingerprint of knobs and code, e.g. "v2-3fa1c2"
STAND_IN_VERSION = f"{RENDERER_VERSION}-{_code_fingerprint()}"[:9]


# ============================================================================ the cache
def _stand_in_dir(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` (or the course cache's ``stand-ins`` folder), or a temporary folder with a warning."""
    if cache_dir is not None:
        return runtime.cache_dir("", base=cache_dir)
    return runtime.cache_dir("stand-ins")


# what reading a damaged or foreign npz file raises (truncated, emptied, flipped bytes, other keys or shapes)
_DAMAGE_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, struct.error)


def is_stand_in_npz(path: str | os.PathLike) -> bool:
    """Whether an npz file in MedMNIST's layout was written by :func:`make_medmnist_stand_in` (it carries the
    stand-in marker): copied into a ``root=`` folder, it must still be reported as a stand-in, not as MedMNIST."""
    try:
        with zipfile.ZipFile(path) as zf:
            return f"{STAND_IN_MARKER}.npy" in zf.namelist()
    except _DAMAGE_ERRORS:
        return False


def npz_problem(path: Path, expected: dict[str, tuple[tuple[int, ...], np.dtype]]) -> str | None:
    """Why the npz file at ``path`` cannot be used (None: it is whole and holds ``expected``).

    Verifies the whole file without loading it: every member is read in chunks and checked against
    the CRC-32 the zip stores (what a flipped byte or a truncated file breaks), then each expected
    array's header gives its shape and dtype. Memory stays small however large the file is.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                return f"Bad CRC-32 for {bad}"
            names = set(zf.namelist())
            for key, (shape, dtype) in expected.items():
                if f"{key}.npy" not in names:
                    return f"no array {key!r}"
                with zf.open(f"{key}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    got_shape, _, got_dtype = read_header(f)
                if tuple(got_shape) != tuple(shape) or np.dtype(got_dtype) != np.dtype(dtype):
                    return f"{key} is {np.dtype(got_dtype)}{list(got_shape)}, expected {np.dtype(dtype)}{list(shape)}"
    except _DAMAGE_ERRORS as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreadable'}"
    return None


def _discard_damaged(path: Path, reason: str) -> None:
    """Say in one line that a cache file was damaged, and delete it (the caller writes it again)."""
    warnings.warn(f"the stand-in cache file {path} was damaged or incomplete ({reason}); deleted it, "
                  "generating it again.", stacklevel=3)
    with contextlib.suppress(OSError):
        path.unlink()


def _save_npz(path: Path, **arrays: np.ndarray) -> OSError | None:
    """Write atomically (temp file + rename), so an interrupted run never leaves a broken cache.
    A failed write (e.g. a full disk) removes the temporary file, warns, and is returned."""
    _remove_orphans(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not write the stand-in cache {path} ({exc}); it will be generated again next time.",
                      stacklevel=3)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return exc
    return None


def _remove_orphans(path: Path) -> None:
    """Remove the ``<name>.tmp<pid>.npz`` files of writers that died mid-write (a living writer's are kept)."""
    remove_orphans(path.parent, re.escape(path.name) + r"\.tmp(?P<pid>\d+)\.npz")


# ============================================================================ a sample, without a file
def stand_in_sample(flag: str, n: int, *, split: str = "train", size: int = 28, seed: int = 0,
                    difficulty: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images drawn like ``flag``'s stand-in ``split`` (``flag`` a MedMNIST flag or "malaria"), without
    writing or reading a file: the same renderer, class balance and difficulty, but other draws than the
    cached file. For tests and the calibration benchmark, which may set ``difficulty`` (default: the
    calibrated ``DIFFICULTY``). Returns uint8 N x S x S x C images and labels (int64 [N], or uint8 N x 14).
    """
    if flag == "malaria":
        rng = stand_in_rng("malaria-sample", split, size, seed, n)
        labels = labels_from_priors(n, [0.5, 0.5], rng)
        return render_malaria(labels, size, rng, difficulty), labels
    check_flag_size(flag, 28)
    if flag not in STAND_INS:
        raise CourseError(f"there is no stand-in for {flag!r}; stand-ins exist for {', '.join(MEDMNIST_FLAGS)}.")
    render = STAND_INS[flag][0]
    rng = stand_in_rng("medmnist-sample", flag, split, size, seed, n)
    labels = draw_labels(flag, split, n, rng)
    images = render(labels, size, rng) if difficulty is None else render(labels, size, rng, difficulty)
    return images, labels


# ============================================================================ MedMNIST metadata
# The parts of medmnist.INFO the stand-ins need, so they work even without medmnist installed
# (tests check these against medmnist.INFO). medmnist_meta, check_flag_size and npz_name also serve
# data.load_medmnist, which reads the real files under the same names.
_MEDMNIST_META = {
    "breastmnist": ("binary-class", 1, {"train": 546, "val": 78, "test": 156},
                    ["malignant", "normal, benign"]),
    "chestmnist": ("multi-label, binary-class", 1, {"train": 78468, "val": 11219, "test": 22433},
                   ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"]),
    "pathmnist": ("multi-class", 3, {"train": 89996, "val": 10004, "test": 7180},
                  ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                   "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"]),
    "dermamnist": ("multi-class", 3, {"train": 7007, "val": 1003, "test": 2005},
                   ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                    "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                    "vascular lesions"]),
    "pneumoniamnist": ("binary-class", 1, {"train": 4708, "val": 524, "test": 624}, ["normal", "pneumonia"]),
    "bloodmnist": ("multi-class", 3, {"train": 11959, "val": 1712, "test": 3421},
                   ["basophil", "eosinophil", "erythroblast",
                    "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                    "monocyte", "neutrophil", "platelet"]),
}


def medmnist_meta(flag: str) -> dict[str, Any]:
    """task, n_channels, n_samples, class names and python class of a flag (from medmnist.INFO when installed)."""
    info = None
    if runtime.has_module("medmnist"):
        import medmnist  # noqa: PLC0415

        info = medmnist.INFO.get(flag)
    if info is not None:
        names = [info["label"][k] for k in sorted(info["label"], key=int)]
        return dict(task=info["task"], n_channels=int(info["n_channels"]), n_samples=dict(info["n_samples"]),
                    class_names=names, python_class=info["python_class"])
    task, ch, n_samples, names = _MEDMNIST_META[flag]
    return dict(task=task, n_channels=ch, n_samples=dict(n_samples), class_names=list(names), python_class=None)


def _valid_flags() -> list[str]:
    flags = set(MEDMNIST_FLAGS)
    if runtime.has_module("medmnist"):
        import medmnist  # noqa: PLC0415

        flags |= {f for f, i in medmnist.INFO.items() if not f.endswith("3d")}
    return sorted(flags)


def check_flag_size(flag: str, size: int) -> None:
    """A clear CourseError for a flag or size that MedMNIST does not have."""
    valid = _valid_flags()
    if flag not in valid:
        raise CourseError(f"unknown MedMNIST flag {flag!r}. Valid flags: {', '.join(valid)} "
                          f"(stand-ins exist for {', '.join(MEDMNIST_FLAGS)}).")
    if size not in MEDMNIST_SIZES:
        raise CourseError(f"MedMNIST has no size {size!r}. Valid sizes: {', '.join(map(str, MEDMNIST_SIZES))}.")


def npz_name(flag: str, size: int) -> str:
    """medmnist's file name for ``flag`` at ``size`` px (the real download and the stand-in alike)."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


# ============================================================================ making stand-ins
def make_medmnist_stand_in(flag: str, *, size: int = 28, root: str | os.PathLike) -> Path:
    """Write ``<root>/<flag>.npz`` (or ``<flag>_<size>.npz``) in medmnist's own format, with exactly
    ``INFO[flag]["n_samples"]`` images per split, so ``medmnist.<Flag>(root=root, download=False)`` loads it.

    Deterministic; an existing file with the right split sizes is reused.
    """
    check_flag_size(flag, size)
    if flag not in STAND_INS:
        raise CourseError(f"there is no stand-in for {flag!r}; stand-ins exist for {', '.join(MEDMNIST_FLAGS)}. "
                          "Download the real data (internet, or put the npz file in `root`).")
    meta = medmnist_meta(flag)
    n_total = sum(meta["n_samples"].values())
    need = n_total * size * size * meta["n_channels"]
    if need > STAND_IN_MAX_BYTES:
        ok = [sz for sz in MEDMNIST_SIZES if n_total * sz * sz * meta["n_channels"] <= STAND_IN_MAX_BYTES]
        raise CourseError(
            f"a full {flag} stand-in at {size}px would need {need / 2**30:.1f} GiB of memory and disk "
            f"({n_total} images; medmnist insists on the real split sizes), more than the "
            f"{STAND_IN_MAX_BYTES / 2**30:.1f} GiB allowed. Sizes that work for the {flag} stand-in: "
            f"{', '.join(map(str, ok))}. The real data set at {size}px works once downloaded.")
    root = runtime.cache_dir("", base=root)  # not writable: a temporary folder, with a warning
    path = root / npz_name(flag, size)
    if path.exists():  # reused only when the whole file is intact and has medmnist's split sizes
        channels = () if meta["n_channels"] == 1 else (meta["n_channels"],)
        n_labels = 14 if STAND_INS[flag][1] is None else 1
        expected = {}
        for sp, n in meta["n_samples"].items():
            expected[f"{sp}_images"] = ((n, size, size, *channels), np.dtype(np.uint8))
            expected[f"{sp}_labels"] = ((n, n_labels), np.dtype(np.uint8))
        problem = npz_problem(path, expected)
        if problem is None and not is_stand_in_npz(path):    # whole, from before stand-ins carried their marker:
            with np.load(path) as old:                         # the same arrays, written again with it
                arrays = {k: old[k] for k in old.files}
            if _save_npz(path, **arrays, **{STAND_IN_MARKER: np.array(STAND_IN_VERSION)}) is None:
                return path
            problem = "it could not be written again with the stand-in marker"
        if problem is None:
            return path
        _discard_damaged(path, problem)
    render = STAND_INS[flag][0]
    arrays: dict[str, np.ndarray] = {}
    chunk = max(64, int(2**22 // (size * size)))  # ~4 M pixels per chunk keeps memory small
    with runtime.progress(total=n_total, desc=f"{flag} stand-in {size}px", disable=n_total < 5000) as bar:
        for split, n in meta["n_samples"].items():
            rng = stand_in_rng("medmnist", flag, split, size)
            labels = draw_labels(flag, split, n, rng)
            images = np.empty((n, size, size, meta["n_channels"]), np.uint8)
            for i, start in enumerate(range(0, n, chunk)):
                stop = min(n, start + chunk)
                chunk_rng = stand_in_rng("medmnist", flag, split, size, i)
                images[start:stop] = render(labels[start:stop], size, chunk_rng)
                bar.update(stop - start)
            arrays[f"{split}_images"] = images[..., 0] if meta["n_channels"] == 1 else images
            arrays[f"{split}_labels"] = labels.reshape(n, -1).astype(np.uint8)
    arrays[STAND_IN_MARKER] = np.array(STAND_IN_VERSION)
    failed = _save_npz(path, **arrays)
    if failed is not None or not path.exists():
        full = failed is not None and disk_full(failed)
        raise CourseError(f"could not write the stand-in {path} ({failed}); medmnist reads it from disk, so "
                          + ("free some space on that disk, or " if full else "")
                          + "set COURSE_CACHE to a writable folder with room for it.")
    return path


def make_malaria_stand_in(n: int, *, image_size: int = 64, seed: int = 0,
                          cache_dir: str | os.PathLike | None = None, cache: bool = True,
                          distinct: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` malaria-like cells (uint8 N x S x S x 3) with labels (0 = parasitized, 1 = uninfected, half each).

    Deterministic for a given (n, image_size, seed); cached on disk (``cache_dir`` or the course cache).
    ``distinct``: render only the first that many cells and repeat them to ``n``, uncached (the same arrays and
    memory in minutes, not the 11 min that 27,558 cells at 160 px take on 2 cores).
    """
    if n < 2:
        raise CourseError(f"a malaria stand-in needs at least 2 images, not {n}.")
    if image_size < 8:
        raise CourseError(f"image_size must be at least 8 pixels, not {image_size}.")
    path = None
    distinct = n if distinct is None else max(1, min(int(distinct), n))
    if cache and distinct == n:
        path = _stand_in_dir(cache_dir) / f"malaria_{STAND_IN_VERSION}_n{n}_{image_size}px_seed{seed}.npz"
        if path.exists():
            found = _read_malaria_cache(path, n, image_size)
            if found is not None:
                return found
    labels = labels_from_priors(n, [0.5, 0.5], stand_in_rng("malaria", seed, n))
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    chunk = max(32, int(2**21 // (image_size * image_size)))
    starts = range(0, n, chunk)
    for i, start in enumerate(runtime.progress(starts, total=len(starts), desc="malaria stand-in",
                                               disable=n * image_size ** 2 < 2e7)):
        stop = min(n, start + chunk)
        if start >= distinct:  # full-size arrays, the rendered cells repeated (not cached)
            images[start:stop] = images[np.arange(start, stop) % distinct]
            labels[start:stop] = labels[np.arange(start, stop) % distinct]
            continue
        images[start:stop] = render_malaria(labels[start:stop], image_size, stand_in_rng("malaria", seed, n, i))
    if path is not None:
        _save_npz(path, images=images, labels=labels)
    return images, labels


def _read_malaria_cache(path: Path, n: int, image_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, read in full (every byte checked against the zip's CRC-32); None, with a
    one-line warning and the file deleted, when the file is damaged or holds other shapes."""
    try:
        with np.load(path) as z:
            images, labels = z["images"], z["labels"]
    except _DAMAGE_ERRORS as exc:
        _discard_damaged(path, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
        return None
    if images.shape != (n, image_size, image_size, 3) or images.dtype != np.uint8 or labels.shape != (n,):
        _discard_damaged(path, f"images {images.dtype}{list(images.shape)}, labels {list(labels.shape)}")
        return None
    return images, labels
