"""Reading NIH malaria through tensorflow-datasets: the real code path, quick and quiet when offline.

``tfds.load("malaria")`` spelled out as builder -> download_and_prepare -> as_dataset, so that:
``COURSE_OFFLINE=1`` attempts no download; when the hosts do not answer, one quiet try (no "Downloading
and preparing" line, no progress bars, no urllib3 retries) instead of minutes of retries; a failed try
leaves no empty folders (tfds warns about them on every later call) and no ``tmp*tfds`` folders.
:func:`course_utils.data.load_malaria` decodes and splits what :func:`read_encoded` returns.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import runtime

__all__ = ["MALARIA_HOSTS", "import_tfds", "read_encoded"]

MALARIA_HOSTS = ("data.lhncbc.nlm.nih.gov", "storage.googleapis.com")  # NIH source, tfds' GCS mirror


def import_tfds():
    """tensorflow_datasets, imported after TensorFlow (safely, see runtime.import_tensorflow)."""
    runtime.import_tensorflow()
    import tensorflow_datasets as tfds  # noqa: PLC0415

    return tfds


def read_encoded(data_dir: str | Path | None = None) -> tuple[list[bytes], np.ndarray]:
    """Every cell of tfds' malaria (one ``train`` split) as encoded image bytes, and its int64 labels.

    Downloads and prepares the data set first when needed (about 350 MB); raises when that fails.
    """
    tfds = import_tfds()
    with _no_tfds_temp_leftovers():
        with _quiet_logs():
            builder = tfds.builder("malaria", data_dir=data_dir)
            prepared = builder.is_prepared()
        if not prepared:
            _download(tfds, builder)
        ds = builder.as_dataset(split="train", as_supervised=True,
                                decoders={"image": tfds.decode.SkipDecoding()})  # bytes: decode only what we keep
        encoded, labels = [], []
        for img, label in runtime.progress(tfds.as_numpy(ds), desc="reading malaria"):
            encoded.append(img)
            labels.append(int(label))
    return encoded, np.asarray(labels, dtype=np.int64)


def _download(tfds, builder) -> None:
    if runtime.offline_reason():
        raise ConnectionError(runtime.offline_reason())
    # tfds retries a failing download for minutes; when the hosts cannot even be reached, let the real call
    # fail after one quiet try instead (a proxy may still get through: hence the try).
    from tensorflow_datasets.core.download import downloader  # noqa: PLC0415

    reachable = runtime.can_reach(*MALARIA_HOSTS)
    try:
        with contextlib.nullcontext() if reachable else _quiet_attempt(tfds, downloader):
            builder.download_and_prepare()
    except Exception:
        data_dir = Path(builder.data_dir)
        _remove_empty_download_dirs(data_dir.parents[1] / "downloads")
        _remove_empty_dirs(data_dir, up_to=data_dir.parents[1])
        raise


@contextlib.contextmanager
def _few_retries(module, attr: str = "MAX_RETRIES", value: int = 1):
    old = getattr(module, attr, None)
    if old is not None:
        setattr(module, attr, value)
    try:
        yield
    finally:
        if old is not None:
            setattr(module, attr, old)


@contextlib.contextmanager
def _quiet_attempt(tfds, downloader):
    """One try of a download expected to fail, without the noise: tfds' "Downloading and preparing" line and
    progress bars, urllib3's retry warnings. The error still propagates; its reason reaches the banner."""
    tfds.disable_progress_bar()
    try:
        with _quiet_logs(), _few_retries(downloader), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.enable_progress_bar()


@contextlib.contextmanager
def _quiet_logs(names: tuple[str, ...] = ("urllib3", "absl", "tensorflow_datasets")):
    """Only errors from these loggers inside the block (tfds' "Variant folder ... has no dataset_info.json"
    warning on every check of a data set that is simply not downloaded yet; urllib3's retries)."""
    import logging  # noqa: PLC0415

    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _remove_empty_dirs(folder: Path, up_to: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``up_to`` while they are empty: a failed tfds
    attempt leaves an empty ``malaria/1.0.0``, and the next ``tfds.builder`` warns about it."""
    with contextlib.suppress(OSError):
        while up_to in folder.parents and not (folder.is_dir() and any(folder.iterdir())):
            if folder.is_dir():
                folder.rmdir()
            folder = folder.parent


def _remove_empty_download_dirs(downloads: Path) -> None:
    """tfds leaves an empty ``*.tmp.*`` folder behind for every failed download; tidy those (only empty ones)."""
    with contextlib.suppress(OSError):
        for d in downloads.glob("*/*.tmp.*"):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()


@contextlib.contextmanager
def _no_tfds_temp_leftovers():
    """Remove the ``tmp*tfds`` folders tfds creates in the temp directory during the block (it makes
    one for its metadata each time a builder is created and never removes it); others' stay."""
    tmp = Path(tempfile.gettempdir())
    before = {p.name for p in tmp.glob("tmp*tfds")}
    try:
        yield
    finally:
        for p in tmp.glob("tmp*tfds"):
            if p.name not in before and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
