"""A thin wrapper over Keras ``compile`` + ``fit`` that returns the course's :class:`History`,
keeps a CSV of every run, and an evaluation helper that predicts on *every* test image.

    model, info = cu.models_keras.small_cnn((64, 64, 3), n_classes=2)
    hist = cu.train_keras.fit(model, train_ds, val_ds, epochs=5, learning_rate=1e-3, run_dir="runs/cnn")
    result = cu.train_keras.evaluate(model, data.test.images, data.test.labels)   # same keys as train_torch's

Mixed precision is decided when a model is built (``cu.models_keras`` builds with
``mixed_float16`` on a GPU only, float32 outputs); ``fit`` records the policy in ``History.meta``.
"""
from __future__ import annotations

import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import metrics as _metrics
from .history import History
from ..runtime import CourseError, cache_dir, get_mode, import_keras, import_tensorflow, in_ci

__all__ = ["fit", "evaluate", "predict", "auto_loss"]


def auto_loss(model, dataset):
    """The Keras loss that fits the model's output and the dataset's labels.

    One output unit -> binary cross-entropy; one-hot labels (``[batch, n_classes]``) -> categorical
    cross-entropy; integer labels -> sparse categorical cross-entropy.
    """
    keras = import_keras()
    units = model.output_shape[-1]
    label_spec = dataset.element_spec[1] if isinstance(dataset.element_spec, tuple) else None
    if units == 1:
        return keras.losses.BinaryCrossentropy()
    if label_spec is not None and label_spec.shape.rank == 2 and label_spec.shape[-1] == units:
        return keras.losses.CategoricalCrossentropy()
    return keras.losses.SparseCategoricalCrossentropy()


def _verbose(verbose: int | str) -> int:
    """``"auto"``: one line per epoch, except a progress bar in a terminal. In a notebook Keras' bar is
    redrawn by printing fragments (hundreds per cell, unreadable in an executed notebook), so not there."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() and not in_ci() and "ipykernel" not in sys.modules else 2
    return int(verbose)


def fit(model, train_ds, val_ds=None, *, epochs: int, learning_rate: float = 1e-3,
        run_dir: str | Path | None = None, verbose: int | str = "auto", callbacks: Sequence = (),
        loss: Any = None, metrics: Sequence[Any] = ("accuracy",), optimizer: str = "adam",
        class_weight: dict[int, float] | None = None, name: str | None = None,
        run_eagerly: bool | str = "auto") -> History:
    """Compile ``model`` and train it on ``train_ds`` (a ``tf.data.Dataset`` of ``(images, labels)``).

    Compiles on every call, so freezing/unfreezing layers between calls takes effect (and the
    optimizer starts fresh). Writes ``history.csv`` (Keras ``CSVLogger``) into ``run_dir`` (default:
    a new folder under the course cache). Returns a :class:`History` whose ``meta`` holds the run
    folder, the CSV path, the learning rate, the dtype policy and the wall time.

    ``run_eagerly="auto"`` runs a large model (> 1M parameters) eagerly in smoke mode only: tracing
    EfficientNetB0's training graph takes 10-40 s on a CPU, far more than the few steps CI runs.
    """
    keras = import_keras()
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise CourseError(f"epochs must be a whole number >= 1; got {epochs!r}")
    if not learning_rate > 0:
        raise CourseError(f"learning_rate must be positive; got {learning_rate!r}")
    if learning_rate >= 0.1:
        warnings.warn(f"learning_rate={learning_rate} is very large for Adam; 1e-3 (scratch) or 1e-4 "
                      "(fine-tuning) are usual", stacklevel=2)
    name = name or model.name
    if run_dir is None:
        run_dir = cache_dir("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S-%f}"
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "history.csv"

    optimizers = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
                  "rmsprop": keras.optimizers.RMSprop}
    if optimizer.lower() not in optimizers:
        raise CourseError(f"optimizer must be one of {', '.join(optimizers)}; got {optimizer!r}")
    opt = optimizers[optimizer.lower()](learning_rate=float(learning_rate))
    model.compile(optimizer=opt, loss=loss if loss is not None else auto_loss(model, train_ds),
                  metrics=list(metrics),
                  run_eagerly=_eager(model, run_eagerly))
    policy = getattr(model.dtype_policy, "name", str(model.dtype_policy))
    if policy == "mixed_float16":
        tf = import_tensorflow()
        if not tf.config.list_physical_devices("GPU"):
            warnings.warn("this model computes in mixed_float16 but there is no GPU: float16 is slow on a "
                          "CPU; build it with mixed_precision=False", stacklevel=2)
    start = time.perf_counter()
    keras_hist = model.fit(train_ds, validation_data=val_ds, epochs=int(epochs), verbose=_verbose(verbose),
                           callbacks=[keras.callbacks.CSVLogger(str(csv_path)), *callbacks],
                           class_weight=class_weight, shuffle=False)  # tf.data shuffles itself
    wall = time.perf_counter() - start
    return History.from_keras(keras_hist, run_dir=str(run_dir), csv=str(csv_path), model=name,
                              learning_rate=float(learning_rate), epochs=int(epochs),
                              dtype_policy=policy, wall_s=round(wall, 2))


def _eager(model, run_eagerly: bool | str) -> bool:
    if run_eagerly == "auto":
        return get_mode() == "smoke" and model.count_params() > 1_000_000
    return bool(run_eagerly)


def _model_size(model) -> tuple[int, int] | None:
    shape = model.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    if len(shape) == 4 and shape[1] and shape[2]:
        return int(shape[1]), int(shape[2])
    return None


def predict(model, data, *, batch_size: int = 64, check_dataset: bool = True
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities ``[N, C]`` for every sample of ``data``; returns ``(probs, labels or None)``.
    A model with one sigmoid unit gives ``[N, 2]`` columns ``[1 - p, p]``, as :func:`train_torch.predict` does.

    ``data`` is a uint8 (0-255) or float ([0, 1]) image array, or a ``tf.data.Dataset`` of
    ``(images, labels)`` or images. Arrays are fed in slices of ``batch_size`` including the last,
    short one, and resized to the model's input size when they differ, so no sample is dropped. A dataset
    batched with ``drop_remainder=True`` that leaves images out is refused (counted before its batching);
    ``check_dataset=False`` refuses only a count it can read (evaluate, given labels, counts against them).
    """
    tf = import_tensorflow()
    if isinstance(data, tf.data.Dataset):
        probs, labels = [], []
        for batch in data:
            x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
            probs.append(np.asarray(model(x, training=False), dtype=np.float64))
            if y is not None:
                y = np.asarray(y)
                labels.append(y.argmax(-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1))
        if not probs:
            raise CourseError("predict got an empty dataset")
        probs = np.concatenate(probs)
        _check_nothing_dropped(data, len(probs), counted_elsewhere=not check_dataset)
        return _two_columns(probs), (np.concatenate(labels) if labels else None)
    images = np.asarray(data)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) == 0:
        raise CourseError(f"predict needs a non-empty N x H x W x C image array; got shape {images.shape}")
    size = _model_size(model)
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        if size is not None and x.shape[1:3] != size:
            x = tf.image.resize(x, size).numpy()
        out.append(np.asarray(model(x, training=False), dtype=np.float64))
    return _two_columns(np.concatenate(out)), None


def _batching_of(ds):
    """The outermost batching step of a tf.data pipeline (``batch``, ``padded_batch``, parallel batch),
    found through the datasets' ``_input_dataset`` links; None when there is none or it cannot be seen."""
    for _ in range(64):
        if ds is None:
            return None
        if hasattr(ds, "_drop_remainder") and hasattr(ds, "_input_dataset"):
            return ds
        ds = getattr(ds, "_input_dataset", None)
    return None


def _check_nothing_dropped(ds, n_predicted: int, *, counted_elsewhere: bool = False) -> None:
    """Refuse a dataset that was given more images than it yields (``drop_remainder=True``).

    The count comes from before the batching step (its input's cardinality), so it does not depend on
    the batching. A fixed batch size whose input count cannot be read is refused too, unless the
    images are counted elsewhere (labels passed separately to :func:`evaluate`).
    """
    tf = import_tensorflow()
    fix = ("Evaluate on every test sample: batch with drop_remainder=False (cu.data.to_tf_dataset does), or pass "
           "the image array and its labels.")
    batching = _batching_of(ds)
    if batching is not None:
        if not bool(tf.get_static_value(batching._drop_remainder)):
            return
        n_given = int(batching._input_dataset.cardinality())
        if n_given >= 0:
            if n_given > n_predicted:
                raise CourseError(f"this dataset was batched with drop_remainder=True: it yields {n_predicted} of "
                                  f"the {n_given} images it was given ({n_given - n_predicted} dropped). {fix}")
            return
    element = ds.element_spec[0] if isinstance(ds.element_spec, tuple) else ds.element_spec
    static_batch = getattr(element, "shape", None) is not None and element.shape.rank and element.shape[0] is not None
    if static_batch and not counted_elsewhere:
        raise CourseError(f"this dataset has a fixed batch size of {element.shape[0]} (batched with "
                          "drop_remainder=True?) and the number of images it was given cannot be read, so evaluate "
                          f"cannot check that none was dropped. {fix}")


def _two_columns(probs: np.ndarray) -> np.ndarray:
    """A single sigmoid column p becomes [1 - p, p]; softmax outputs stay as they are."""
    return np.concatenate([1.0 - probs, probs], axis=1) if probs.shape[1] == 1 else probs


def _class_indices(labels) -> np.ndarray:
    """Labels as int64 class indices ``[N]`` (one-hot rows become their argmax)."""
    y = np.asarray(labels) if labels is not None else None
    if y is None or y.ndim == 0:
        raise CourseError("evaluate needs labels: pass them, or a dataset of (images, labels)")
    if y.ndim == 2 and y.shape[-1] > 1:
        y = y.argmax(-1)
    return y.reshape(-1).astype(np.int64)


def evaluate(model, images, labels=None, *, batch_size: int = 64, class_names=None,
             threshold: float = 0.5) -> dict[str, Any]:
    """Score a model on a whole test set: every sample predicted (checked), metrics from :mod:`course_utils.metrics`.

    ``images``: an image array (then ``labels`` are required) or a dataset of ``(images, labels)``; a dataset's
    own labels are used, and ``labels=`` given with it must agree with them (or a CourseError says so).
    A dataset is counted before its batching: one batched with ``drop_remainder=True`` that leaves images
    out is refused, as are labels that do not match the predictions in number.
    Returns the same keys as :func:`course_utils.train_torch.evaluate`: ``n`` (always the number of
    test samples), ``loss`` (log loss), ``accuracy``, ``macro_f1``, ``auc`` (binary AUC, or macro
    one-vs-rest over the classes present; NaN with one class only), ``ap``, ``recall_<class>`` (one
    per class, named by ``class_names``), and the arrays ``probs``, ``y_true`` and ``y_pred``.
    """
    from sklearn.metrics import log_loss  # noqa: PLC0415

    probs, ds_labels = predict(model, images, batch_size=batch_size, check_dataset=labels is None)
    y_true = _class_indices(labels if labels is not None else ds_labels)
    if len(probs) != len(y_true):
        raise CourseError(f"{len(probs)} predictions for {len(y_true)} labels: some samples were dropped "
                          "(a dataset batched with drop_remainder=True?). Evaluate on every test sample.")
    own = _class_indices(ds_labels) if labels is not None and ds_labels is not None else y_true
    if not np.array_equal(y_true, own):
        wrong = int(np.sum(y_true != own))
        raise CourseError(f"the dataset carries its own labels, and labels= differs from them for {wrong} of "
                          f"{len(y_true)} images (a shuffled dataset yields them in another order). Pass the dataset "
                          "alone (its own labels are used), or the image array with its labels.")
    if y_true.min() < 0 or y_true.max() >= probs.shape[1]:
        raise CourseError(f"labels must be class indices 0..{probs.shape[1] - 1} for this model's {probs.shape[1]} "
                          f"outputs; got values from {y_true.min()} to {y_true.max()}.")
    task = "binary" if probs.shape[1] == 2 else "multi-class"
    scores = _metrics.summarize(y_true, probs, task, class_names=class_names, threshold=threshold)
    p = np.clip(probs, 1e-7, 1.0)
    p = p / p.sum(1, keepdims=True)
    loss = float(log_loss(y_true, p, labels=list(range(probs.shape[1]))))
    return {"n": int(len(y_true)), "loss": loss, **scores, "probs": probs, "y_true": y_true,
            "y_pred": _metrics.to_predictions(probs, task, threshold)}
