"""A stand-in project folder for notebook 07 and the tests: what a learner's own folder looks like, with the
truth known, so an oracle can answer for a person.

    demo = cu.project.demo.write_folder("my_images", n=240, size=64)   # files, nested folders, mixed formats
    oracle = demo.oracle(store)                                         # the true key for every store id

Each image is a stand-in blood-smear cell (the malaria renderer of 01-03) with two yes/no labels:
**parasite** (ring forms inside the cell) and **magnified** (a closer view: the cell fills the frame). The folder
holds what real folders hold: PNG, JPEG (also ``.JPG``), TIFF and BMP files in nested folders (one with a space
in its name), one JPEG stored sideways with an EXIF orientation tag, one exact copy under another name, one
corrupt file, a hidden file and a text file. :func:`mosaic` lays cells out as a larger image whose parasite
tiles are known, for whole-image inference.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..active.labels import label_bits
from ..data.standins import render_malaria

__all__ = ["LABEL_NAMES", "DemoFolder", "cells", "write_folder", "mosaic"]

LABEL_NAMES = ("parasite", "magnified")
PRIORS = (0.4, 0.3)                 # share of "yes" for each label, drawn independently
DIFFICULTY = None                   # the malaria stand-in's own (calibrated to the published accuracy)
_FOLDERS = ("slide_A", "slide_A/field_2", "slide_B/day 3", "phone")
_FORMATS = (("png", "PNG"), ("jpg", "JPEG"), ("tif", "TIFF"), ("bmp", "BMP"), ("JPG", "JPEG"), ("jpeg", "JPEG"))


@dataclass
class DemoFolder:
    """The written folder: ``truth`` maps each image file (relative path) to its key's class index (label i is
    bit i: 0 none, 1 parasite, 2 magnified, 3 both); the copy, the corrupt file and the sideways JPEG are named."""

    root: Path
    truth: dict[str, int]
    label_names: tuple[str, ...] = LABEL_NAMES
    duplicate: tuple[str, str] = ("", "")          # (the copy, the file it copies)
    corrupt: str = ""
    sideways: str = ""
    skipped: list[str] = field(default_factory=list)
    size: int = 64

    @property
    def cell_refs(self) -> list[str]:
        """The generated cells only (sorted): no sideways photo, no copy. What a fair score counts once each."""
        return sorted(r for r in self.truth if r not in (self.sideways, self.duplicate[0]))

    def oracle(self, store: Any) -> np.ndarray:
        """The true class index of every store id (``-1`` where the file has no truth, e.g. the corrupt one), for
        ``Labeller(..., oracle=...)``: it answers through the same path a key press takes."""
        ids = store.ids(None)
        out = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, dtype=np.int64)
        for i, ref in zip(ids.tolist(), store.refs(ids)):
            out[i] = self.truth.get(ref, -1)
        return out

    @property
    def info(self) -> Any:
        """A DataInfo saying this folder is a stand-in, for ``cu.data.banner``."""
        from ..data.loaders import DataInfo  # noqa: PLC0415

        return DataInfo("a demo folder of your own images", list(self.label_names), "multi-label", "stand-in",
                        self.size, 3, notes=f"Notebook 07 wrote {len(self.cell_refs)} stand-in cell images under "
                        f"{self.root}, plus the awkward files a real folder has (a sideways photo, a copy, a corrupt "
                        "file, files that are not images). Set FOLDER in the parameters cell to a folder of your own images to run "
                        "the same cycle on them.")

    def labels(self, refs: list[str]) -> np.ndarray:
        """The true yes/no labels (``N x 2``) of these files."""
        return label_bits([self.truth[r] for r in refs], len(self.label_names))


def cells(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` stand-in cells (uint8 ``n x size x size x 3``) and their class indices (bit 0 parasite, bit 1
    magnified). Each is the centre of a render 1.8 times larger, zoomed by 1.25-1.8 when magnified and by 1.0-1.35
    when not: views zoomed 1.25-1.35 exist in both classes (as in a real folder), so no model gets every one right."""
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    bits = (rng.random((n, 2)) < np.asarray(PRIORS)).astype(np.int64)
    big = int(round(1.8 * size))
    zoom = np.where(bits[:, 1] == 1, rng.uniform(1.25, 1.8, n), rng.uniform(1.0, 1.35, n))
    out = np.empty((n, size, size, 3), np.uint8)
    for start in range(0, n, 64):                                    # 64 at a time: memory stays small
        rendered = render_malaria(1 - bits[start:start + 64, 0], big, rng, DIFFICULTY)   # its 0: parasitized
        for i, cell in enumerate(rendered, start):
            crop = min(big, int(round(big / zoom[i])))
            lo = (big - crop) // 2
            view = Image.fromarray(cell[lo:lo + crop, lo:lo + crop])
            out[i] = np.asarray(view.resize((size, size), Image.BILINEAR))
    return out, bits[:, 0] + 2 * bits[:, 1]


def write_folder(root: str | os.PathLike, n: int = 240, size: int = 64, seed: int = 0) -> DemoFolder:
    """Write ``n`` stand-in images under ``root`` (nested folders, mixed formats) plus the awkward files a real
    folder has; returns what was written and the truth. Writing the same folder again changes nothing."""
    from PIL import Image  # noqa: PLC0415

    root = Path(root)
    images, classes = cells(n, size, seed)
    truth: dict[str, int] = {}
    for i, (img, c) in enumerate(zip(images, classes)):
        ext, fmt = _FORMATS[i % len(_FORMATS)]
        rel = f"{_FOLDERS[i % len(_FOLDERS)]}/cell_{i:04d}.{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (root / rel).exists():
            Image.fromarray(img).save(root / rel, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        truth[rel] = int(c)
    sideways = "phone/sideways_0000.jpg"                      # pixels turned a quarter, EXIF says turn them back
    if not (root / sideways).exists():
        exif = Image.Exif()
        exif[0x0112] = 6                                       # "rotate 90 degrees clockwise to display"
        Image.fromarray(np.rot90(images[0]).copy()).save(root / sideways, "JPEG", quality=92, exif=exif)
    truth[sideways] = int(classes[0])
    original = next(iter(truth))
    copy = "slide_B/copy of " + Path(original).name
    if not (root / copy).exists():
        shutil.copyfile(root / original, root / copy)
    truth[copy] = truth[original]
    corrupt = "slide_B/scanner_error.png"
    (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)   # a PNG header, then noise
    skipped = [".DS_Store", "slide_A/notes.txt"]
    (root / skipped[0]).write_bytes(b"\x00Bud1")
    (root / skipped[1]).write_text("stained 2026-11-30, 100x oil\n", encoding="utf-8")
    return DemoFolder(root, truth, duplicate=(copy, original), corrupt=corrupt, sideways=sideways, skipped=skipped,
                      size=size)


def mosaic(rows: int, cols: int, tile: int, *, share: float = 0.25, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A ``rows*tile x cols*tile`` image of unmagnified cells, and which tiles (``rows x cols``, bool) hold a
    parasite: the whole-image demo's known answer. A block of tiles is infected (a focus), not random ones."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((rows, cols), bool)
    h, w = max(1, int(round(rows * np.sqrt(share)))), max(1, int(round(cols * np.sqrt(share))))
    r0, c0 = rng.integers(0, rows - h + 1), rng.integers(0, cols - w + 1)
    mask[r0:r0 + h, c0:c0 + w] = True
    from PIL import Image  # noqa: PLC0415

    big = int(round(1.8 * tile))
    rendered = render_malaria(np.where(mask.ravel(), 0, 1), big, rng, DIFFICULTY)
    tiles = [np.asarray(Image.fromarray(t).resize((tile, tile), Image.BILINEAR)) for t in rendered]
    image = np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)
    return image, mask
