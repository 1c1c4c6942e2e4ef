"""Input pipelines: numpy arrays -> tf.data / torch DataLoader, TFRecords, and the one image-layout rule.

Images live in the course as ``uint8`` N x H x W x C (what the loaders in :mod:`.loaders` return). Keras takes
them as they are through :func:`to_tf_dataset`; torch models want float32 N x C x H x W in [0, 1], and
:func:`nchw_float` is the single place that converts (:func:`to_torch_loader` uses it too).
:func:`write_tfrecords` / :func:`read_tfrecords` show the on-disk format tfds uses. Neither TensorFlow nor
torch is imported until a function needs it.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import runtime
from ..runtime import CourseError

__all__ = ["tensor_loader", "nchw_float", "require_finite", "to_tf_dataset", "to_torch_loader", "write_tfrecords", "read_tfrecords",
           "tfrecord_dataset", "augmentation", "TF_CACHE_MAX_BYTES"]

TF_CACHE_MAX_BYTES = 4 * 2**30  # to_tf_dataset caches converted float32 images only below this


def require_finite(images: Any, what: str = "images", chunk: int = 1024) -> Any:
    """``images`` unchanged, or a CourseError naming the images whose pixels hold NaN or inf.

    A model turns such pixels into normal-looking numbers (finite probabilities, normalised heat maps), so they are
    refused where images enter. Integer images cannot hold them; float ones (numpy or torch) are checked in chunks
    of ``chunk`` images, so the check needs little memory.
    """
    if hasattr(images, "detach"):                       # a torch tensor
        flat = images.detach().reshape(len(images), -1) if len(images) else images
        bad = [i for s in range(0, len(images), chunk)
               for i in (s + (~flat[s:s + chunk].isfinite().all(dim=1)).nonzero().flatten()).tolist()]
    else:
        x = np.asarray(images)
        if x.dtype.kind not in "fc" or x.ndim == 0:
            return images
        flat = x.reshape(len(x), -1)
        bad = [s + i for s in range(0, len(x), chunk)
               for i in np.flatnonzero(~np.isfinite(flat[s:s + chunk]).all(axis=1))]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise CourseError(f"{what}: {len(bad)} of {len(images)} images have NaN or inf pixels (index {shown}); a "
                          "model would turn them into normal-looking results. Fix or drop those images, e.g. keep "
                          "images[np.isfinite(images).reshape(len(images), -1).all(axis=1)].")
    return images


def nchw_float(images: np.ndarray) -> np.ndarray:
    """uint8 ``N x H x W [x C]`` -> float32 ``N x C x H x W`` in [0, 1]; float arrays are taken as NCHW already."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise CourseError(f"expected uint8 images N x H x W x C, got shape {x.shape}. "
                              "For one image use images[None].")
        # one pass: convert and scale straight into the NCHW result (no float32 NHWC copy in between)
        out = np.empty((x.shape[0], x.shape[3], x.shape[1], x.shape[2]), np.float32)
        np.multiply(x.transpose(0, 3, 1, 2), np.float32(1 / 255), out=out)
        return out
    if not np.issubdtype(x.dtype, np.floating):
        raise CourseError(f"images must be uint8 (0-255, N x H x W x C) or float (N x C x H x W), not {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


# ============================================================================ tf.data and torch
def _check_arrays(images, labels) -> tuple[np.ndarray, np.ndarray]:
    """The pipelines' input contract: uint8 N x H x W x C images and one label (row) per image."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise CourseError(f"images must be uint8 N x H x W x C; got {images.dtype} {images.shape}.")
    if len(images) != len(labels):
        raise CourseError(f"{len(images)} images but {len(labels)} labels: they must match.")
    if labels.ndim == 1:
        _check_class_indices(labels)
    return images, labels


def _check_class_indices(labels: np.ndarray) -> None:
    """1-D labels are class indices 0, 1, ...: whole, finite, not negative (casting 0.5 to int gives 0)."""
    if labels.dtype == bool or len(labels) == 0:
        return
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise CourseError(f"labels must be class numbers (0, 1, ...), not {labels.dtype}.")
    bad = labels < 0
    if np.issubdtype(labels.dtype, np.floating):
        bad = bad | ~np.isfinite(labels) | (labels != np.round(labels))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CourseError(f"labels must be class indices 0, 1, ... (whole numbers, not negative); found "
                          f"{labels[i].item()!r} at index {i} ({int(bad.sum())} such label(s)). For multi-label or "
                          "soft targets pass an N x L array of 0/1 (or probability) columns.")


def to_tf_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int = 32, training: bool = False,
                  n_classes: int | None = None, one_hot: bool = False, image_size: int | None = None,
                  augment: str | Callable | None = None, cache: bool = True, seed: int = 0):
    """A ``tf.data`` pipeline over uint8 NHWC arrays: float32 images in [0, 1], batched, prefetched.

    Order: from_tensor_slices -> map(convert, resize, one-hot) -> cache -> shuffle (training) -> batch
    (the last partial batch is kept) -> augment (training; ``"flip"`` or a callable / Keras layer) -> prefetch.
    Multi-label labels become float32; ``one_hot=True`` turns class ids into float32 one-hot rows.
    """
    tf = runtime.import_tensorflow()
    images, labels = _check_arrays(images, labels)
    multi_label = labels.ndim == 2
    if one_hot and not multi_label and n_classes is None:
        n_classes = int(labels.max()) + 1

    def convert(x, y):
        x = tf.cast(x, tf.float32) / 255.0
        if image_size is not None and (x.shape[0] != image_size or x.shape[1] != image_size):
            x = tf.image.resize(x, (image_size, image_size), antialias=True)
        if multi_label:
            y = tf.cast(y, tf.float32)
        elif one_hot:
            y = tf.one_hot(tf.cast(y, tf.int32), n_classes, dtype=tf.float32)
        else:
            y = tf.cast(y, tf.int64)
        return x, y

    out_px = (image_size or images.shape[1]) * (image_size or images.shape[2])
    float_bytes = len(images) * out_px * images.shape[-1] * 4
    if cache and float_bytes > TF_CACHE_MAX_BYTES:
        warnings.warn(f"caching {len(images)} float32 images would take {float_bytes / 2**30:.1f} GiB of memory; "
                      "the pipeline converts on the fly instead (pass fewer or smaller images to cache).",
                      stacklevel=2)
        cache = False
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if training and not cache:  # shuffle the uint8 elements: the buffer is 4x smaller than float32
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(tf.autograph.experimental.do_not_convert(convert), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    if cache:
        ds = ds.cache()
        if training:
            ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return _batch_augment_prefetch(tf, ds, batch_size, training, augment, seed)


def _batch_augment_prefetch(tf, ds, batch_size: int, training: bool, augment, seed: int):
    """The end of both pipelines: batch (the last partial batch kept), augment whole batches (training only),
    prefetch."""
    ds = ds.batch(batch_size, drop_remainder=False)
    if training and augment is not None:
        ds = ds.map(tf.autograph.experimental.do_not_convert(_tf_augment(tf, augment, seed)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def augmentation(*, flip: bool = True, rotation: float = 0.05, zoom: float = 0.1, contrast: float = 0.1,
                 seed: int = 0):
    """Keras' random layers as one model, for ``tf.data`` (``augment="standard"``): flips, a rotation of up to
    ``rotation`` of a full turn, a zoom of up to ``zoom``, a contrast change of up to ``contrast``. On a GPU they
    run there, batch by batch, so augmenting costs the input pipeline nothing (DeepXDMDetect's plan)."""
    keras = runtime.import_keras()
    layers = [keras.layers.RandomFlip("horizontal_and_vertical", seed=seed)] if flip else []
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="reflect", seed=seed + 1))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="reflect", seed=seed + 2))
    if contrast:
        layers.append(keras.layers.RandomContrast(contrast, seed=seed + 3))
    return keras.Sequential(layers, name="augmentation")


def _tf_augment(tf, augment, seed: int):
    if augment == "standard":
        augment = augmentation(seed=seed)
    if augment in ("flip", True):
        def flip(x, y):
            x = tf.image.random_flip_left_right(x, seed=seed)
            return tf.image.random_flip_up_down(x, seed=seed + 1), y
        return flip
    if callable(augment):
        def call(x, y):
            try:
                return augment(x, training=True), y
            except TypeError:
                return augment(x), y
        return call
    raise CourseError(f"augment must be None, 'flip', 'standard' or a callable (e.g. a Keras layer); got {augment!r}.")


class _ArrayDataset:
    """A torch map-style dataset over uint8 NHWC arrays; fetches whole batches at once (``__getitems__``)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None):
        import torch  # noqa: PLC0415

        self.images = images
        multi = labels.ndim == 2
        self.labels = torch.as_tensor(labels.astype(np.float32) if multi else labels.astype(np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def _image(self, i: int):
        import torch  # noqa: PLC0415

        if self.transform is None:
            return torch.from_numpy(nchw_float(self.images[i:i + 1])[0])
        x = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)  # uint8 C x H x W
        return self.transform(x)

    def __getitem__(self, i: int):
        return self._image(int(i)), self.labels[int(i)]

    def __getitems__(self, indices: list[int]):
        import torch  # noqa: PLC0415

        idx = np.asarray(indices)
        if self.transform is None:
            # NumPy does the conversion single-threaded (one pass into a fresh NCHW batch): torch's intra-op
            # threads cost more than they give for this small copy on a 2-core machine (measured 20x slower
            # when the cores are busy).
            x = torch.from_numpy(nchw_float(self.images[idx]))
        else:
            x = torch.stack([self._image(int(i)) for i in idx])
        return x, self.labels[torch.as_tensor(idx)]


def _batch_collate(batch):
    return batch


def to_torch_loader(images: np.ndarray, labels: np.ndarray, *, batch_size: int = 32, shuffle: bool = False,
                    transform: Callable | None = None, num_workers: int | None = None, seed: int = 0):
    """A ``torch.utils.data.DataLoader``: NCHW float32 images in [0, 1] (or whatever ``transform`` makes of
    a uint8 C x H x W tensor, torchvision.transforms.v2 style), int64 labels (float32 for multi-label).

    Whole batches are sliced from the arrays at once. ``num_workers`` defaults to 0 (smoke mode, 2 CPUs or
    fewer, or no transform: workers cost more than they give) and is at most 2; seeded shuffling.
    """
    import torch  # noqa: PLC0415
    from torch.utils.data import DataLoader  # noqa: PLC0415

    images, labels = _check_arrays(images, labels)
    if num_workers is None:
        cpus = os.cpu_count() or 1
        num_workers = 0 if (runtime.get_mode() == "smoke" or cpus <= 2 or transform is None) else 2
    num_workers = max(0, min(int(num_workers), 2))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(_ArrayDataset(images, labels, transform), batch_size=batch_size, shuffle=shuffle,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(), generator=generator,
                      collate_fn=_batch_collate, drop_last=False, persistent_workers=num_workers > 0)


class _TensorRows:
    """Rows of in-memory tensors, a whole batch fetched with one index (no per-sample collate)."""

    def __init__(self, *tensors) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int):
        return tuple(t[i] for t in self.tensors)

    def __getitems__(self, indices: list[int]):
        import torch  # noqa: PLC0415

        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


def tensor_loader(*tensors, batch_size: int = 32, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
    """A DataLoader over same-length in-memory tensors (e.g. features, labels, a teacher's logits),
    yielding ``(t1[batch], t2[batch], ...)``; seeded shuffling. For small heads, where a per-sample
    ``TensorDataset`` + collate would cost more than the arithmetic."""
    import torch  # noqa: PLC0415
    from torch.utils.data import DataLoader  # noqa: PLC0415

    if not tensors or len({len(t) for t in tensors}) != 1:
        raise CourseError(f"tensor_loader needs tensors of the same length, got {[len(t) for t in tensors]}")
    return DataLoader(_TensorRows(*tensors), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(seed), collate_fn=_batch_collate)


# ============================================================================ TFRecords
def write_tfrecords(images: np.ndarray, labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write images (PNG-encoded) and labels as ``tf.train.Example`` records: the format tfds uses on disk."""
    tf = runtime.import_tensorflow()
    from PIL import Image  # noqa: PLC0415

    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise CourseError(f"images must be uint8 N x H x W x C; got {images.dtype} {images.shape}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for img, label in runtime.progress(zip(images, labels), total=len(images), desc="writing TFRecords",
                                           disable=len(images) < 2000):
            buf = io.BytesIO()
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG")
            feature = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=np.atleast_1d(label).astype(np.int64))),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return path


def read_tfrecords(path: str | os.PathLike, *, image_size: int, channels: int, n_labels: int | None = None):
    """Read what :func:`write_tfrecords` wrote: a dataset of (uint8 H x W x C image, int64 label).

    ``n_labels`` for multi-label records (labels come back as int64 [n_labels]).
    """
    tf = runtime.import_tensorflow()
    if not Path(path).exists():
        raise CourseError(f"no TFRecord file at {path}; write one first with write_tfrecords(images, labels, path).")
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([n_labels] if n_labels else [], tf.int64)}

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        img = tf.io.decode_png(ex["image"], channels=channels)
        img = tf.ensure_shape(img, (image_size, image_size, channels))
        return img, ex["label"]

    return tf.data.TFRecordDataset(str(path)).map(tf.autograph.experimental.do_not_convert(parse),
                                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def tfrecord_dataset(path: str | os.PathLike, *, image_size: int, channels: int, batch_size: int = 32,
                     training: bool = False, augment: str | Callable | None = None, cache: bool = True,
                     shuffle_buffer: int = 10_000, seed: int = 0):
    """A training (or evaluation) pipeline that streams a TFRecord file: parse and decode -> float32 in [0, 1] ->
    cache (decoded once, if it fits) -> shuffle (training) -> batch -> augment (training; as in
    :func:`to_tf_dataset`) -> prefetch. The file need not fit in memory; with ``cache=False`` it is decoded
    again every epoch, which is what a data set in cloud storage does."""
    tf = runtime.import_tensorflow()

    def convert(x, y):
        return tf.cast(x, tf.float32) / 255.0, y

    ds = read_tfrecords(path, image_size=image_size, channels=channels)
    n = int(tf.data.TFRecordDataset(str(path)).reduce(np.int64(0), lambda count, _: count + 1))   # records, unparsed
    ds = ds.apply(tf.data.experimental.assert_cardinality(n))     # Keras then knows an epoch's length
    ds = ds.map(tf.autograph.experimental.do_not_convert(convert), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return _batch_augment_prefetch(tf, ds, batch_size, training, augment, seed)
