"""A labelling project on a folder of image files: scan it, hash each file, and keep one label store for it.

    scan = cu.project.scan("my_images/")                  # what is there, what was skipped and why
    store = cu.project.open_project("my_images/", ["benign", "malignant"])   # or label_names=[...] (multi-label)
    cu.labeller.Labeller(store)                             # label the files with the keys

* Paths are stored relative to the folder, so the folder can move (Google Drive, a new laptop).
* Each file is stored once per content: a copy of an image under another name is reported, not added.
* Each image's split is fixed when it is added, by its content hash (``holdout_of``): 10 % is held out, and
  adding images later never moves one between the pool and the hold-out.
* ``open_project`` again adds only the new images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..active.labels import LabelStore, label_bits
from ..integrity import sha256_file
from ..runtime import CourseError

__all__ = ["IMAGE_SUFFIXES", "STORE_NAME", "Scan", "scan", "holdout_of", "combination_names", "labels_of",
           "open_project", "check_files", "thumbnail", "near_duplicates"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
STORE_NAME = "labels.db"   # inside <folder>/.course/, with the project's models and reports
HOLDOUT_FRACTION = 0.1


@dataclass
class Scan:
    """What a folder holds: image files (relative paths) with their SHA-256, and what was left out and why."""

    root: Path
    files: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)   # kept file -> its copies (not added)
    skipped: dict[str, list[str]] = field(default_factory=dict)      # reason -> files

    def report(self) -> str:
        """One line: how many images, copies and skipped files, each reason with an example."""
        parts = [f"{len(self.files)} image(s) under {self.root}"]
        n_copies = sum(len(v) for v in self.duplicates.values())
        if n_copies:
            kept, copies = next(iter(self.duplicates.items()))
            parts.append(f"{n_copies} duplicate(s) stored once (e.g. {copies[0]} = {kept})")
        for reason, files in self.skipped.items():
            parts.append(f"skipped {len(files)} {reason} (e.g. {files[0]})")
        return "; ".join(parts)


def scan(root: str | os.PathLike) -> Scan:
    """Every image file under ``root`` (recursively; hidden files and folders and the project's own ``.course``
    folder are skipped), each with the SHA-256 of its content; copies are listed once. Files are not opened as
    images here: a corrupt one is found when it is first read, and named then."""
    root = Path(root).expanduser()
    if not root.exists():
        raise CourseError(f"{root} does not exist: give the folder that holds your images.")
    if not root.is_dir():
        raise CourseError(f"{root} is a file, not a folder: give the folder that holds your images.")
    out = Scan(root=root)
    first: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))    # hidden folders, .course
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if name.startswith("."):
                out.skipped.setdefault("hidden file(s)", []).append(rel)
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                out.skipped.setdefault(f"file(s) that are not images ({', '.join(IMAGE_SUFFIXES)})", []).append(rel)
                continue
            try:
                digest = sha256_file(path)
            except OSError as exc:
                out.skipped.setdefault("unreadable file(s)", []).append(f"{rel} ({exc.strerror or exc})")
                continue
            if digest in first:
                out.duplicates.setdefault(first[digest], []).append(rel)
                continue
            first[digest] = rel
            out.files.append(rel)
            out.sha256.append(digest)
    if not out.files:
        raise CourseError(f"no image files under {root} ({', '.join(IMAGE_SUFFIXES)}, any case). "
                          + (out.report().split("; ", 1)[1] if out.skipped or out.duplicates else "The folder is empty."))
    return out


def holdout_of(sha256: str, fraction: float = HOLDOUT_FRACTION) -> bool:
    """Is the image with this content in the hold-out? A fixed rule on its hash (its first 8 hex digits as a
    fraction of 2**32), so the answer never changes, whenever and in whatever order images are added."""
    return int(sha256[:8], 16) / 2 ** 32 < fraction


def combination_names(label_names: Sequence[str]) -> list[str]:
    """The classes of a multi-label store: every yes/no combination, label i being bit i of the class index.
    ``["tool", "magnified"]`` -> ``["none", "tool", "magnified", "tool + magnified"]`` (keys 1-4)."""
    names = [str(n) for n in label_names]
    if not 1 <= len(names) <= 3:
        raise CourseError(f"the keyboard labels up to 3 yes/no labels at once (8 combinations, keys 1-8); got "
                          f"{len(names)}: {names}.")
    if len(set(names)) != len(names):
        raise CourseError(f"label names must differ, got {names}.")
    out = []
    for index in range(2 ** len(names)):
        on = [n for n, yes in zip(names, label_bits([index], len(names))[0]) if yes]
        out.append(" + ".join(on) if on else "none")
    return out


def open_project(folder: str | os.PathLike, class_names: Sequence[str] | None = None, *,
                 label_names: Sequence[str] | None = None, db: str | os.PathLike | None = None,
                 verbose: bool = True) -> LabelStore:
    """The label store of the images under ``folder`` (``<folder>/.course/labels.db`` unless ``db``): made on the
    first call, then only new images are added. Give ``class_names`` (one class per image) or ``label_names``
    (up to 3 yes/no labels per image), the same each time: a store made for other classes or another mode is
    refused, and its labels are never touched."""
    if (class_names is None) == (label_names is None):
        raise CourseError("give class_names (one class per image) or label_names (yes/no labels), not both "
                          "and not neither.")
    classes = combination_names(label_names) if label_names is not None else [str(c) for c in class_names]
    found = scan(folder)
    path = Path(db) if db is not None else found.root / ".course" / STORE_NAME
    if verbose:
        print(found.report())
    if not path.exists():
        store = LabelStore.create(path, found.files, classes, holdout=[holdout_of(d) for d in found.sha256],
                                  sha256=found.sha256, label_names=label_names, root=found.root)
        if verbose:
            c = store.counts()
            print(f"new project {path}: {c['pool']} image(s) to label, {c['holdout']} held out")
        return store
    store = LabelStore(path)
    mode = "multi-label" if label_names is not None else "single-label"
    if store.mode != mode or store.class_names != classes:
        held = store.label_names if store.mode == "multi-label" else store.class_names
        store.close()
        raise CourseError(f"{path} belongs to a {store.mode} project with {held}, not a {mode} one with "
                          f"{list(label_names if label_names is not None else classes)}; its labels are kept. Open "
                          "it with the same names, or pass db= a new file for another project.")
    check_files(store, verbose=verbose, found=found)
    known_refs = set(store.refs(store.ids(None)))
    known = set(store.sha256s().values())
    new = [(f, d) for f, d in zip(found.files, found.sha256) if d not in known and f not in known_refs]
    ids = store.add([f for f, _ in new], holdout=[holdout_of(d) for _, d in new], sha256=[d for _, d in new])
    if verbose:
        print(f"{path}: {len(ids)} new image(s) added" + (f" ({sum(holdout_of(d) for _, d in new)} to the hold-out)"
                                                         if ids else ""))
    return store


def check_files(store: LabelStore, *, verbose: bool = True, found: Scan | None = None) -> int:
    """Mark the images whose file is gone (deleted or moved out after ``init``) so the queues skip them, and
    clear those that are back; their labels are kept either way. With ``found`` (a scan of the folder), a gone
    image whose content is there under another path was renamed or moved inside the folder: it is pointed at
    its new path (``LabelStore.relink``), label, split and predictions kept. Returns how many are missing now."""
    ids = store.ids(None)
    root = store.root
    known = store.unreadable()
    missing, back = {}, []
    for i, ref in zip(ids.tolist(), store.refs(ids)):
        there = (root / ref if root is not None else Path(ref)).is_file()
        if not there:
            missing[i] = "missing: the file is gone"
        elif known.get(i, "").startswith("missing"):
            back.append(i)
    if found is not None and missing:
        by_digest = {d: i for i, d in store.sha256s().items() if i in missing}
        moved = {by_digest[d]: f for f, d in zip(found.files, found.sha256) if d in by_digest}
        store.relink(moved)                      # the same image, found again by its content
        for i in moved:
            del missing[i]
        if verbose and moved:
            print(f"{len(moved)} image(s) renamed or moved inside the folder, found again by their content (e.g. "
                  f"{next(iter(moved.values()))}): their labels and split are kept")
    store.mark_unreadable({i: r for i, r in missing.items() if i not in known}, clear=back)
    if verbose and missing:
        example = store.refs([next(iter(missing))])[0]
        print(f"{len(missing)} image file(s) of this project are missing (e.g. {example}): skipped, their labels kept")
    return len(missing)


def thumbnail(image, side: int = 16):
    """The image as ``side x side`` grey levels (box-averaged), flattened: nearly the same for a copy re-saved,
    resized, recompressed or turned upright by EXIF, far apart for two different pictures."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    grey = np.asarray(image, dtype=np.float32)
    grey = grey.mean(axis=2) if grey.ndim == 3 else grey
    return np.asarray(Image.fromarray(grey, mode="F").resize((side, side), Image.BOX), dtype=np.float32).ravel()


def near_duplicates(store: LabelStore, *, max_rms: float = 3.0, size: int = 64, chunk: int = 2048) -> list[dict]:
    """Pairs of images in ``store`` that are probably the same picture: their 16 x 16 grey thumbnails differ by at
    most ``max_rms`` grey levels (root mean square, of 255), read upright as the project reads them. On the demo
    folder a copy differs by 0.3 and the closest two different cells by 9. Each pair says whether it straddles the
    pool and the hold-out: such a pair leaks, since the model trains on one copy and is tested on the other.
    Every file is read once (unreadable ones are left out); distances are computed ``chunk`` rows at a time."""
    import numpy as np  # noqa: PLC0415

    from ..data.loaders import read_image  # noqa: PLC0415

    ids = store.ids(None)
    held = set(store.ids("holdout").tolist())
    root = store.root
    thumbs, kept = [], []
    for i, ref in zip(ids.tolist(), store.refs(ids)):
        try:
            image = read_image(root / ref if root is not None else Path(ref), size=size)
        except CourseError:
            continue
        thumbs.append(thumbnail(image))
        kept.append((i, ref))
    if len(kept) < 2:
        return []
    t = np.stack(thumbs).astype(np.float64)
    sq = (t ** 2).sum(axis=1)
    pairs = []
    for start in range(0, len(t), chunk):
        block = t[start:start + chunk]
        d2 = sq[start:start + chunk, None] + sq[None, :] - 2 * block @ t.T
        rms = np.sqrt(np.maximum(d2, 0) / t.shape[1])
        for a, b in zip(*np.nonzero(rms <= max_rms)):
            a = int(a) + start
            if b > a:                                               # each pair once, never an image with itself
                (ia, ra), (ib, rb) = kept[a], kept[int(b)]
                pairs.append({"a": ra, "b": rb, "rms": round(float(rms[a - start, b]), 2),
                              "straddles": (ia in held) != (ib in held)})
    return pairs


def labels_of(class_index: int, n_labels: int) -> list[int]:
    """The yes/no labels (0/1 per label) that a multi-label class index stands for."""
    return label_bits([class_index], n_labels)[0].tolist()

