"""Data: loaders that return uint8 NHWC images + labels + metadata, stratified splits, and the banner.

Every loader returns an :class:`ImageDataset` (``train`` / ``val`` / ``test`` :class:`Split` s and a
:class:`DataInfo`). ``info.source`` always says where the images came from: ``tfds``, ``medmnist``,
``folder`` or ``stand-in``. With ``source="auto"`` a loader tries the real data first and falls back,
with a warning and a visible :func:`banner`, to a deterministic, learnable stand-in cached on disk
(:mod:`.standin_cache`); ``source="real"`` raises a :class:`CourseError` instead. The arrays then feed either
framework through :func:`to_tf_dataset` (Keras) or :func:`to_torch_loader` (PyTorch), which live in
:mod:`.pipelines` and are re-exported here. Neither TensorFlow nor torch is imported until a function
needs it.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import runtime
from . import tfds_malaria
from .pipelines import to_tf_dataset, to_torch_loader  # re-exported: the notebooks call cu.data.to_*
from ..runtime import CourseError
from .standin_cache import (
    MEDMNIST_SIZES, STAND_IN_VERSION, check_flag_size, make_malaria_stand_in, make_medmnist_stand_in,
    is_stand_in_npz, medmnist_meta, npz_name, npz_problem,
)
from .splits import Split, class_counts, stratified_indices, stratified_split, stratified_subset
from .standins import MEDMNIST_FLAGS

__all__ = [
    "Split", "DataInfo", "ImageDataset", "load_malaria", "load_malaria_folder", "load_image_folder",
    "load_medmnist",
    "stratified_subset", "stratified_split", "class_counts", "resize_images", "to_tf_dataset",
    "to_torch_loader", "banner", "read_image", "MALARIA_CLASSES", "MEDMNIST_FLAGS", "MEDMNIST_SIZES",
]

MALARIA_CLASSES = ["Parasitized", "Uninfected"]  # tfds label order: 0 = parasitized, 1 = uninfected
MALARIA_N = 27_558
MALARIA_ZIP_URL = "https://data.lhncbc.nlm.nih.gov/public/Malaria/cell_images.zip"  # what tfds downloads
LEAKAGE_NOTE = (
    "Splits are made per cell, and one patient contributes many cells, so the same patient's cells land "
    "in train and test: cell-level accuracy is optimistic (published: ~0.99 with leaky cell-level splits "
    "vs ~0.96 with patient-level splits)."
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}
_OS_JUNK = {"thumbs.db", ".ds_store", "desktop.ini"}  # the NIH zip ships Thumbs.db files
_TASKS = {"binary-class": "binary", "multi-class": "multi-class", "multi-label, binary-class": "multi-label",
          "ordinal-regression": "multi-class"}


# ============================================================================ containers
@dataclass
class DataInfo:
    """What the arrays are: class names, task type, and where they came from (``source``).

    ``banner_shown`` records that :func:`banner` has shown this data set's notice (the loaders show it for
    a stand-in), so that a second ``banner(info)`` in the notebook does not repeat it.
    """

    name: str
    class_names: list[str]
    task: str  # "binary" | "multi-class" | "multi-label"
    source: str  # "tfds" | "medmnist" | "folder" | "stand-in"
    image_size: int
    n_channels: int
    notes: str = ""
    banner_shown: bool = field(default=False, repr=False, compare=False)  # set by banner(): each notice once

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_stand_in(self) -> bool:
        return self.source == "stand-in"


@dataclass
class ImageDataset:
    """Train / val / test splits plus their :class:`DataInfo`."""

    train: Split
    val: Split
    test: Split
    info: DataInfo = field(repr=True)

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def summary(self) -> str:
        """One line per split with its size and class counts."""
        lines = [f"{self.info.name} ({self.info.source}, {self.info.task}, {self.info.image_size}px, "
                 f"{self.info.n_channels} channel{'s' if self.info.n_channels > 1 else ''})"]
        for name, split in self.splits().items():
            counts = class_counts(split.labels, self.info.class_names)
            shown = ", ".join(f"{k}: {v}" for k, v in list(counts.items())[:8])
            lines.append(f"  {name:5s} {len(split):6d} images | {shown}{' ...' if len(counts) > 8 else ''}")
        return "\n".join(lines)


# ============================================================================ checks and resizing
def _check_source(source: str) -> None:
    if source not in ("auto", "real", "stand-in"):
        raise CourseError(f"source must be 'auto', 'real' or 'stand-in', not {source!r}.")


def _resize_one(img: np.ndarray, size: int):
    from PIL import Image  # noqa: PLC0415

    if img.ndim == 3 and img.shape[-1] == 1:
        out = np.asarray(Image.fromarray(img[..., 0]).resize((size, size), Image.BILINEAR))
        return out[..., None]
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def resize_images(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """Resize uint8 images (an N x H x W x C array, or a list of differently sized H x W x C) to
    ``size`` x ``size``, once and offline, so that no epoch pays for it again. Antialiased bilinear (PIL).
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise CourseError(f"size must be a positive whole number of pixels, not {size!r}.")
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise CourseError(f"images must be N x H x W x C; got shape {images.shape}.")
        if images.dtype != np.uint8:
            raise CourseError(f"resize_images expects uint8 images; got {images.dtype}.")
        if images.shape[1] == size and images.shape[2] == size:
            return images
        n, channels = len(images), images.shape[-1]
    else:
        n = len(images)
        channels = images[0].shape[-1] if n else 3
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i in runtime.progress(range(n), total=n, desc=f"resizing to {size}px", disable=n < 2000):
        out[i] = _resize_one(np.asarray(images[i], dtype=np.uint8), size)
    return out


# ============================================================================ loaders
_NOISY_NETWORK = ("NameResolutionError", "HTTPSConnectionPool(", "HTTPConnectionPool(", "Max retries exceeded",
                  "urllib3.")


def plain_reason(exc: BaseException) -> str:
    """One short line for why a download failed: "no network connection to HOST" in place of the urllib3 / requests
    reprs a machine without internet gives (a screen of pool and retry objects); any other error as its type and
    first line, which already says it in words (COURSE_OFFLINE, "no route to host", a bad zip file)."""
    import re  # noqa: PLC0415

    chain, seen = [exc], {id(exc)}
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and id(nxt) not in seen:
        chain.append(nxt)
        seen.add(id(nxt))
    text = " ".join(" ".join(str(e).split()) for e in chain)
    if any(w in text for w in _NOISY_NETWORK):
        host = re.search(r"host=['\"]?([\w.-]+)", text) or re.search(r"https?://([\w.-]+)", text)
        return f"no network connection to {host.group(1) if host else 'the download server'}"
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _fallback(what: str, exc: BaseException, fix: str, source: str) -> str:
    """Raise (source="real") or warn and return the note for the stand-in (source="auto")."""
    reason = plain_reason(exc)
    if isinstance(exc, CourseError):  # our own message already says what is wrong and how to fix it
        reason, fix = str(exc).rstrip("."), "fix what the reason in brackets names."
        if source == "real":
            raise CourseError(f"could not load the real {what}: {reason}. With source='auto' the course would use "
                              "a stand-in data set instead.") from exc
    if source == "real":
        raise CourseError(f"could not load the real {what}: the download (or reading the downloaded file) "
                          f"failed ({reason}). To fix it: {fix} "
                          f"With source='auto' the course would use a stand-in data set instead.") from exc
    note = (f"STAND-IN DATA: the real {what} could not be loaded ({reason}), so a synthetic stand-in with the "
            f"same format is used. Numbers from it are not real results. To use the real data: {fix}")
    if not runtime.in_notebook():  # in a notebook the banner says it (with this reason), once
        warnings.warn(note, stacklevel=3)
    return note


def _to_8_bit(im):
    """A PIL image with more than 8 bits per pixel, scaled to 8 bits (mode ``L``) over its type's range.

    PIL's own ``convert`` clips such pixels at 255 (a 16-bit PNG turns almost all white), so this scales:
    16-bit (``I;16*``, and ``I`` with values in 0-65535, as a 16-bit PNG or TIFF gives) by 255/65535;
    float (``F``) in [0, 1] by 255, float already in [0, 255] as it is. Other ranges have no standard
    8-bit meaning: a CourseError says so. Images with 8 bits per channel are returned unchanged.
    """
    from PIL import Image  # noqa: PLC0415

    mode = im.mode
    if not (mode.startswith("I") or mode == "F"):
        return im
    a = np.asarray(im)
    if a.size == 0:
        return im
    if mode == "F" and not np.isfinite(a).all():
        raise CourseError("float pixels (mode F) include NaN or inf: fix the image and save it as an 8-bit PNG")
    lo, hi = float(a.min()), float(a.max())
    if mode == "F":
        if lo >= 0 and hi <= 1:
            scaled = a * 255.0
        elif lo >= 0 and hi <= 255:
            scaled = a
        else:
            raise CourseError(f"float pixels (mode F) range from {lo:g} to {hi:g}: expected 0-1 (or 0-255). "
                              "Rescale the image and save it as an 8-bit PNG")
    elif mode.startswith("I;16") or (lo >= 0 and hi <= 65535):
        bits = _bit_depth(hi)
        if bits < 16:   # 10/12/14-bit data (most medical cameras, CT, X-ray) stored in 16 bits: use its range
            warnings.warn(f"a 16-bit image holds values up to {hi:g} only: read as {bits}-bit data (scaled by "
                          f"255/{2 ** bits - 1}), not as nearly black 16-bit data. If its images are really 16-bit, "
                          "scale them yourself and save 8-bit PNGs.", stacklevel=4)
        scaled = a.astype(np.float64) * (255.0 / (2 ** bits - 1))
    else:
        raise CourseError(f"32-bit integer pixels (mode {mode}) range from {lo:g} to {hi:g}: no standard 8-bit "
                          "scaling. Rescale the image and save it as an 8-bit (or 16-bit) PNG")
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _bit_depth(hi: float) -> int:
    """The usual bit depth (8, 10, 12, 14 or 16) whose range holds the brightest value ``hi``."""
    return next(b for b in (8, 10, 12, 14, 16) if hi <= 2 ** b - 1) if hi <= 65535 else 16


def _decode(encoded: bytes, size: int | None, channels: int = 3, max_side: int | None = None) -> np.ndarray:
    """One image file's bytes -> uint8 ``size x size x channels``, as a viewer shows it: turned upright by its EXIF
    orientation (a phone or camera stores some photos sideways), transparency laid over white (not the colours
    hidden under it), 16-bit and float pixels scaled, not clipped. ``max_side``: a larger image is shrunk (aspect
    kept) so its longer side fits; a JPEG is then decoded at a fraction of its size, never whole."""
    from PIL import Image, ImageOps  # noqa: PLC0415

    with Image.open(io.BytesIO(encoded)) as im:
        want = size or max_side
        if want and im.format == "JPEG" and max(im.size) > 2 * want:
            im.draft(im.mode, (2 * want, 2 * want))              # the decoder skips detail it would throw away
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
        im = _to_8_bit(im).convert("RGB" if channels == 3 else "L")
        if max_side and max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.BILINEAR)
        # np.array, not asarray: PIL's buffer is read-only, and torch warns about (and may write to) such arrays
        arr = np.array(im if size is None else im.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    return arr if channels == 3 else arr[..., None]


def read_image(path: str | os.PathLike, *, size: int | None = None, channels: int = 3,
               max_side: int | None = None) -> np.ndarray:
    """One image file as uint8 ``H x W x channels`` (``size``: resized to ``size x size``; ``max_side``: shrunk,
    aspect kept, until its longer side fits), read as a viewer shows it: upright by its EXIF orientation,
    transparency over white, 16-bit and float pixels scaled. A file that is missing, not an image, or larger than
    Pillow's safety limit is a CourseError that names it."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    path = Path(path)
    try:
        return _decode(path.read_bytes(), size, channels, max_side)
    except Image.DecompressionBombError as exc:
        raise CourseError(f"the image {path} is too large to open safely ({exc}). Cut it into tiles, or, if you "
                          "trust the file, raise PIL.Image.MAX_IMAGE_PIXELS before reading it.") from exc
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise CourseError(f"cannot read the image {path} ({exc}): is it there, and is it a PNG, JPEG or TIFF?") \
            from exc


def _decode_subset(encoded: list[bytes], labels: np.ndarray, image_size: int, max_images: int | None,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified subset of encoded images (chosen before decoding: only those are decoded), resized once."""
    idx = np.arange(len(labels))
    if max_images is not None and max_images < len(idx):
        idx = np.sort(stratified_indices(labels, max_images, seed=seed))
    images = np.empty((len(idx), image_size, image_size, 3), np.uint8)
    for j, i in enumerate(runtime.progress(idx, total=len(idx), desc=f"decoding + resizing to {image_size}px",
                                           disable=len(idx) < 2000)):
        images[j] = _decode(encoded[i], image_size)
    return images, labels[idx]


def load_malaria(*, source: str = "auto", image_size: int = 64, max_images: int | None = None,
                 fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                 data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """NIH malaria cells from tensorflow-datasets (``tfds.load("malaria", split="train", as_supervised=True)``,
    spelled out as builder -> download_and_prepare -> as_dataset so that an offline failure is quick), made into
    seeded stratified train/val/test splits at ``image_size`` px. ``max_images``: a stratified subset taken
    before splitting (only those images are decoded). ``source``: "auto" | "real" | "stand-in".
    """
    _check_source(source)
    notes = LEAKAGE_NOTE
    used = "stand-in"
    if source != "stand-in":
        try:
            encoded, labels = tfds_malaria.read_encoded(data_dir)
            images, labels = _decode_subset(encoded, labels, image_size, max_images, seed)
            used = "tfds"
        except Exception as exc:  # noqa: BLE001 - any failure of the real path means: fall back or explain
            fix = ("check the internet connection (the download is ~350 MB), or pass data_dir= to a folder "
                   f"where tfds already prepared 'malaria', or download {MALARIA_ZIP_URL}, unzip it and use "
                   "load_malaria_folder(path).")
            notes = _fallback("NIH malaria data (tensorflow-datasets)", exc, fix, source) + " " + LEAKAGE_NOTE
    if used == "stand-in":
        n = MALARIA_N if max_images is None else int(max_images)
        images, labels = make_malaria_stand_in(n, image_size=image_size, seed=seed, cache_dir=cache_dir)
    train, val, test = stratified_split(images, labels, fractions, seed=seed)
    info = DataInfo("malaria", list(MALARIA_CLASSES), "binary", used, image_size, 3, notes)
    return _loaded(ImageDataset(train, val, test, info))


def _loaded(ds: "ImageDataset") -> "ImageDataset":
    """Every loader's last step: note the source for the course summary, show the stand-in banner."""
    runtime.record_data_source(ds.info.name, ds.info.source)
    if ds.info.source == "stand-in":
        banner(ds.info)
    return ds


def _find_class_dir(root: Path, name: str) -> Path | None:
    for p in root.iterdir():
        if p.is_dir() and p.name.lower() == name.lower():
            return p
    return None


def load_malaria_folder(path: str | os.PathLike, *, image_size: int = 64, on_error: str = "raise",
                        max_images: int | None = None, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                        seed: int = 0) -> ImageDataset:
    """The NIH download unpacked: ``cell_images/Parasitized/*.png`` and ``cell_images/Uninfected/*.png``.

    ``on_error="skip"`` skips unreadable or non-image files and says how many; ``"raise"`` names the first.
    16-bit and float images are scaled to 8 bits over their type's range (not clipped); images in
    subfolders of a class folder are not read, and a warning says how many there are.
    """
    layout = ("expected layout:\n  <path>/Parasitized/*.png\n  <path>/Uninfected/*.png\n"
              "(the NIH cell_images.zip unpacked; <path> may also be the folder that contains cell_images/)")
    root = Path(path).expanduser()
    if root.is_dir() and (root / "cell_images").is_dir() and _find_class_dir(root, "Parasitized") is None:
        root = root / "cell_images"
    return load_image_folder(root, class_names=MALARIA_CLASSES, name="malaria", image_size=image_size,
                             on_error=on_error, max_images=max_images, fractions=fractions, seed=seed,
                             layout=layout, notes=LEAKAGE_NOTE)


def load_image_folder(path: str | os.PathLike, *, class_names: Sequence[str] | None = None, name: str | None = None,
                      image_size: int = 64, on_error: str = "raise", max_images: int | None = None,
                      fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0, layout: str | None = None,
                      notes: str = "") -> ImageDataset:
    """Your own data set: one folder per class, ``<path>/<class name>/*.png`` (or .jpg/.tif/.bmp), split
    stratified into train/val/test by ``fractions``. ``class_names`` fixes the classes and their order (label i is
    ``class_names[i]``, folder names matched without case); without it, every subfolder holding images is a class,
    in sorted order. Files are read as notebook 07's project reads them (upright by EXIF, 16-bit scaled).

    ``on_error="skip"`` skips unreadable or non-image files and says how many; ``"raise"`` names the first.
    Images in subfolders of a class folder are not read, and a warning says how many there are. The split is per
    image: if one patient has several images, split by patient yourself (one folder tree per split) instead."""
    if on_error not in ("raise", "skip"):
        raise CourseError(f"on_error must be 'raise' or 'skip', not {on_error!r}.")
    root = Path(path).expanduser()
    if class_names is None:
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                       and any(f.suffix.lower() in _IMAGE_SUFFIXES for f in p.iterdir())) if root.is_dir() else []
        class_names = found
    class_names = list(class_names)
    layout = layout or ("expected layout: one folder per class, e.g.\n  <path>/benign/*.png\n  <path>/malignant/*.png"
                        + (f"\n(found class folders: {', '.join(class_names) or 'none'})" if root.is_dir() else ""))
    if not root.is_dir():
        raise CourseError(f"{root} is not a folder; {layout}")
    if len(class_names) < 2:
        raise CourseError(f"{root} needs at least two class folders with images in them; {layout}")
    dirs = {c: _find_class_dir(root, c) for c in class_names}
    missing = [c for c, d in dirs.items() if d is None]
    if missing:
        raise CourseError(f"{root} has no {' or '.join(missing)} folder; {layout}")
    files: list[Path] = []
    labels_list: list[int] = []
    bad: list[str] = []
    nested: list[Path] = []  # images in subfolders of a class folder: not read, but counted and reported
    for k, c in enumerate(class_names):
        for f in sorted(dirs[c].iterdir()):
            if f.is_dir():
                nested += [g for g in sorted(f.rglob("*")) if g.suffix.lower() in _IMAGE_SUFFIXES and g.is_file()]
                continue
            if f.name.lower() in _OS_JUNK or f.name.startswith("."):
                continue
            if f.suffix.lower() not in _IMAGE_SUFFIXES:
                if on_error == "raise":
                    raise CourseError(f"{f} is not an image file (expected .png/.jpg/.tif/.bmp). Remove it, or pass "
                                      "on_error='skip' to skip such files.")
                bad.append(str(f))
                continue
            files.append(f)
            labels_list.append(k)
    labels = np.asarray(labels_list, dtype=np.int64)
    if len(labels) == 0:
        raise CourseError(f"no images found under {root}; {layout}")
    idx = np.arange(len(files))
    if max_images is not None and max_images < len(files):
        idx = np.sort(stratified_indices(labels, max_images, seed=seed))
    images = np.empty((len(idx), image_size, image_size, 3), np.uint8)
    keep = np.ones(len(idx), bool)
    for j, i in enumerate(runtime.progress(idx, total=len(idx), desc="reading images", disable=len(idx) < 2000)):
        try:
            images[j] = _decode(files[i].read_bytes(), image_size)
        except Exception as exc:  # noqa: BLE001 - PIL raises several types for broken files
            if on_error == "raise":
                why = str(exc) if isinstance(exc, CourseError) else f"{type(exc).__name__}: {exc}"
                raise CourseError(f"cannot read image {files[i]} ({why}). Remove or replace the file, or pass "
                                  "on_error='skip' to skip unreadable files.") from exc
            bad.append(str(files[i]))
            keep[j] = False
    images, labels = images[keep], labels[idx][keep]
    if bad:
        msg = f"skipped {len(bad)} unreadable or non-image file(s), e.g. {bad[0]}"
        warnings.warn(msg, stacklevel=2)
        notes = msg + ". " + notes
    if nested:
        folders = sorted({str(p.parent) for p in nested})
        msg = (f"skipped {len(nested)} image file(s) in subfolders of the class folders ({', '.join(folders[:3])}"
               f"{' ...' if len(folders) > 3 else ''}): only images directly inside "
               f"{' and '.join(c + '/' for c in class_names)} are read; move them up if they belong to the data set")
        warnings.warn(msg, stacklevel=2)
        notes = msg + ". " + notes
    if len(np.unique(labels)) < 2:
        raise CourseError(f"only one class has readable images under {root}; {layout}")
    train, val, test = stratified_split(images, labels, fractions, seed=seed)
    task = "binary" if len(class_names) == 2 else "multi-class"
    info = DataInfo(name or root.name, class_names, task, "folder", image_size, 3, notes.strip())
    return _loaded(ImageDataset(train, val, test, info))


def _medmnist_split(cls, split: str, size: int, root: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        ds = cls(split=split, size=size, root=root, download=download)
        len(ds)  # medmnist asserts here that the split has INFO's n_samples
    except AssertionError as exc:  # medmnist's bare assert: say which sizes it expected and which it found
        raise CourseError(_split_size_problem(cls.flag, size, root)) from exc
    return np.asarray(ds.imgs), np.asarray(ds.labels)


def _split_size_problem(flag: str, size: int, root: str) -> str:
    """medmnist's split-size assertion, explained: the sizes it expects and the sizes the file has."""
    path = Path(root) / npz_name(flag, size)
    expected = medmnist_meta(flag)["n_samples"]
    try:
        with np.load(path) as z:
            found = ", ".join(f"{sp} {len(z[f'{sp}_labels'])}" for sp in expected)
    except Exception as exc:  # noqa: BLE001 - a damaged file says why
        found = f"no readable split sizes ({type(exc).__name__}: {exc})"
    want = ", ".join(f"{sp} {n}" for sp, n in expected.items())
    return (f"{path} has {found} images, but medmnist expects exactly {want} "
            f"(medmnist.INFO[{flag!r}]['n_samples']): the file is incomplete, altered or from another "
            "MedMNIST version. Delete it so that it is downloaded again, or replace it with the original file")


def _read_medmnist(flag: str, size: int, root: str, download: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All three splits through medmnist's own dataset class (or np.load if medmnist is missing)."""
    if runtime.has_module("medmnist"):
        import medmnist  # noqa: PLC0415

        cls = getattr(medmnist, medmnist.INFO[flag]["python_class"])
        out = {}
        for i, split in enumerate(("train", "val", "test")):
            out[split] = _medmnist_split(cls, split, size, root, download and i == 0)
    else:
        if download:
            raise CourseError("medmnist is not installed: `pip install medmnist` (the Colab setup cell does it).")
        with np.load(Path(root) / npz_name(flag, size)) as z:
            out = {sp: (z[f"{sp}_images"], z[f"{sp}_labels"]) for sp in ("train", "val", "test")}
    for split, (images, labels) in out.items():
        _check_medmnist_arrays(flag, size, split, images, labels, Path(root) / npz_name(flag, size))
    return out


def _check_medmnist_arrays(flag: str, size: int, split: str, images: np.ndarray, labels: np.ndarray,
                           path: Path) -> None:
    """Refuse a file whose images are not ``size`` pixels or whose labels fall outside the flag's classes."""
    meta = medmnist_meta(flag)
    fix = "Delete it so that it is downloaded again, or replace it with the original file."
    if images.ndim < 3 or tuple(images.shape[1:3]) != (size, size):
        raise CourseError(f"{path}: the {split} images are {tuple(images.shape[1:3])} pixels, not {size} x {size} as "
                          f"its name says. {fix}")
    n_classes = len(meta["class_names"])
    multi_label = meta["task"].startswith("multi-label")
    top = 1 if multi_label else n_classes - 1
    if labels.size and (labels.min() < 0 or labels.max() > top):
        raise CourseError(f"{path}: the {split} labels range from {labels.min()} to {labels.max()}, but {flag} has "
                          f"{n_classes} {'labels (0 or 1 each)' if multi_label else 'classes (0..' + str(top) + ')'}. "
                          f"{fix}")


def load_medmnist(flag: str, *, size: int = 28, source: str = "auto", root: str | os.PathLike | None = None,
                  max_per_split: int | None = None, seed: int = 0) -> ImageDataset:
    """A MedMNIST v2 data set (e.g. breastmnist, chestmnist, pathmnist, dermamnist) through medmnist itself.

    Labels: int64 [N] for binary / multi-class, uint8 [N, 14] for chestmnist; grey images are N x H x W x 1.
    ``max_per_split``: a seeded, stratified subset of each split. A downloaded file is checked in full
    first (a damaged one is downloaded again); ``COURSE_OFFLINE=1`` attempts no download.
    """
    _check_source(source)
    flag = str(flag).lower()
    check_flag_size(flag, size)
    meta = medmnist_meta(flag)
    notes = ""
    used = "stand-in"
    data = None
    if source != "stand-in":
        try:
            if not runtime.has_module("medmnist"):
                raise ModuleNotFoundError("medmnist is not installed (pip install medmnist)")
            import medmnist  # noqa: PLC0415

            real_root = Path(root if root is not None else getattr(medmnist.info, "DEFAULT_ROOT", None)
                             or runtime.cache_dir("medmnist")).expanduser()
            real_root.mkdir(parents=True, exist_ok=True)
            real_file = real_root / npz_name(flag, size)
            cached = real_file.exists()  # a downloaded file is used as it is, once it is known to be whole
            if cached and (damage := npz_problem(real_file, {})) is not None:
                if runtime.offline_reason():
                    raise CourseError(f"{real_file} is damaged ({damage}) and {runtime.offline_reason()}: delete it and "
                                      "download it again (or unset COURSE_OFFLINE)")
                warnings.warn(f"{real_file} is damaged ({damage}); downloading it again.", stacklevel=2)
                cached = False  # medmnist checks the file's MD5 and downloads it again
            if not cached and runtime.offline_reason():
                raise ConnectionError(runtime.offline_reason())
            copied_stand_in = cached and is_stand_in_npz(real_file)
            if copied_stand_in and source == "real":
                raise CourseError(f"{real_file} is one of this course's generated stand-ins, not MedMNIST (source='real' "
                                  "asks for the real data): replace it with the file from https://zenodo.org/records/10519652.")
            data = _read_medmnist(flag, size, str(real_root), download=not cached)
            used = "stand-in" if copied_stand_in else "medmnist"
            if copied_stand_in:
                notes = (f"{real_file} is one of this course's generated stand-ins (make_medmnist_stand_in), not "
                         "MedMNIST: it shows that the code works, not how well the method does.")
        except Exception as exc:  # noqa: BLE001
            fix = (f"check the internet connection, or download {npz_name(flag, size)} from "
                   "https://zenodo.org/records/10519652 and pass root= the folder that holds it.")
            notes = _fallback(f"MedMNIST data set {flag!r} ({size}px)", exc, fix, source)
    if data is None:
        stand_in_root = runtime.cache_dir(f"stand-ins/medmnist-{STAND_IN_VERSION}")
        path = make_medmnist_stand_in(flag, size=size, root=stand_in_root)
        data = _read_medmnist(flag, size, str(path.parent), download=False)
    task = _TASKS.get(meta["task"], "multi-class")
    splits = []
    for i, name in enumerate(("train", "val", "test")):
        images, labels = data[name]
        if images.ndim == 3:
            images = images[..., None]
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = labels.astype(np.uint8) if task == "multi-label" else labels.reshape(-1).astype(np.int64)
        if max_per_split is not None:
            images, labels = stratified_subset(images, labels, max_per_split, seed=seed + i)
        splits.append(Split(images, labels))
    info = DataInfo(flag, meta["class_names"], task, used, size, meta["n_channels"], notes)
    return _loaded(ImageDataset(*splits, info))


# ============================================================================ banner
def banner(info: DataInfo, *, force: bool = False) -> None:
    """A visible notice when stand-in data replaced the real data set (a one-line summary otherwise).

    The loaders call it for a stand-in. It marks ``info.banner_shown``: calling it again for the same
    ``info`` shows nothing unless ``force=True``, so each notice appears once per load.
    """
    if info.banner_shown and not force:
        return
    info.banner_shown = True
    if not info.is_stand_in:
        print(f"data: {info.name} from {info.source} ({info.task}, {info.n_classes} classes, {info.image_size}px)")
        return
    text = (f"STAND-IN DATA for {info.name}: synthetic images with the same format replace the real data set "
            "(why, and how to get the real one: {where}). The lesson runs the same way, but every "
            f"number it prints is a stand-in result, not a real one.")
    if runtime.in_notebook():
        import html  # noqa: PLC0415

        from IPython.display import HTML, display  # noqa: PLC0415

        why = (f'<div style="font-weight:normal; margin-top:4px">{html.escape(info.notes)}</div>'
               if info.notes else "")
        display(HTML('<div style="border:3px solid #c60; background:#fff3e0; padding:8px 12px; font-weight:bold; '
                     'color:#803300">&#9888; ' + html.escape(text.replace("{where}", "below")) + why + "</div>"))
    else:
        line = "!" * 78
        print(f"{line}\n{text.replace('{where}', 'the warning above, and info.notes')}\n{line}")
