"""The rehearsal's wrappers: each caps one course function from outside and records the work full mode would do.

:func:`install` replaces the functions below (and, once TensorFlow is imported, ``keras.Model.fit`` / ``predict``)
with capped versions; :func:`uninstall` puts every original back. ``import course_utils`` installs them only when
``COURSE_REHEARSAL=1``; a normal run never has any function replaced. Each wrapper records, in ``COURSE_REPORT``,
the image passes full mode WOULD make (kind ``work``): read from the call's own arguments (loader lengths, epochs,
steps, images) and the model's FLOPs per image (:mod:`.flops`), so the T4 estimate counts what full mode does,
not what the capped run did. What is capped and how work is recorded: :mod:`.core`; the XAI wrappers: :mod:`.xai_caps`.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import weakref
from typing import Any, Callable

import numpy as np

from .. import runtime
from .flops import keras_flops_per_image, n_batches, n_images, torch_flops_per_image
from ..data.pipelines import nchw_float
from . import xai_caps
from .core import CAPS, best_effort, model_name, record_work
from .repeat import FirstBatches, FirstOutputs, repeat_rows

__all__ = ["install", "uninstall", "installed"]


_ORIGINALS: list[tuple[Any, str, Any]] = []
def installed() -> bool:
    """True while the capped functions are in place."""
    return bool(_ORIGINALS)


def install() -> bool:
    """Replace the course's loops by capped versions (once; a second call does nothing). Returns True."""
    if _ORIGINALS:
        return True
    # noqa: PLC0415 (below): the targets load here, when a rehearsal starts, not when the module is read
    from ..active import torch_outputs as active_torch  # noqa: PLC0415
    from ..data import loaders as data, pipelines, standin_cache  # noqa: PLC0415
    from ..models import final as final_models, keras_models as models_keras  # noqa: PLC0415
    from ..project import cycle as project_cycle, wholeimage as project_wholeimage  # noqa: PLC0415
    from ..teaching import checks  # noqa: PLC0415
    from ..train import keras_fit as train_keras, torch_engine as train_torch  # noqa: PLC0415
    from ..xai import faithfulness as xai_faithfulness, methods as xai  # noqa: PLC0415

    _patch(train_torch, "train_one_epoch", _capped_epoch)
    _patch(train_torch, "fit", _capped_fit)
    for name in ("evaluate", "predict"):
        _patch(train_torch, name, _torch_first_batches)
    _patch(active_torch, "torch_outputs", _capped_outputs)
    _patch(project_cycle, "stream_probabilities", _first_stream_batches)
    _patch(project_wholeimage, "sliding_heatmap", _first_windows)
    _patch(project_cycle, "predict_files", _first_files)
    _patch(train_keras, "predict", _keras_first_batches)
    _patch(models_keras, "recompute_batchnorm", _capped_recompute)
    for owner in (xai, xai_faithfulness):
        _patch(owner, "adapter", xai_caps.counted_adapter)
    _patch(xai, "predict_logits", xai_caps.first_images)
    _patch(xai, "explain", xai_caps.first_images)
    _patch(xai, "integrated_gradients", xai_caps.capped_ig)
    _patch(xai, "randomization_check", xai_caps.capped_randomisation)
    _patch(xai_faithfulness, "deletion_insertion", xai_caps.capped_deletion)
    for owner in (standin_cache, data):
        _patch(owner, "make_malaria_stand_in", _few_standin_cells)
    for owner in (pipelines, data):
        _patch(owner, "to_tf_dataset", _counted_tf_dataset)
    for name in ("load_malaria", "load_malaria_folder", "load_medmnist"):
        _patch(data, name, _data_recorded)
    for owner in (checks, sys.modules["course_utils"]):
        _patch(owner, "expect", _not_checked)
        _patch(owner, "check_claim", _claim_not_checked)
    _ORIGINALS.append((final_models, "FOLDER", final_models.FOLDER))   # capped models never replace real ones
    final_models.FOLDER = final_models.FOLDER.parent / "rehearsal" / final_models.FOLDER.name
    runtime.AFTER_IMPORT["tensorflow"].append(_install_keras)
    if "keras" in sys.modules:
        _install_keras()
    return True


def uninstall() -> None:
    """Put every original back (the tests use it; a rehearsal's kernel simply ends)."""
    while _ORIGINALS:
        owner, name, original = _ORIGINALS.pop()
        setattr(owner, name, original)
    if _install_keras in runtime.AFTER_IMPORT["tensorflow"]:
        runtime.AFTER_IMPORT["tensorflow"].remove(_install_keras)


def _patch(owner: Any, name: str, make: Callable[[Callable], Callable]) -> None:
    original = getattr(owner, name)
    _ORIGINALS.append((owner, name, original))
    wrapper = functools.wraps(original)(make(original))
    wrapper.rehearsal_original = original     # what a normal session has (the tests compare with it)
    setattr(owner, name, wrapper)


# ============================================================================ the torch engine
_FIT_PLAN: list[dict] = []   # the fit running now: its planned epochs (its train work is recorded once, in full)


def _capped_epoch(original):
    def train_one_epoch(model, loader, *args, **kwargs):
        plan = _FIT_PLAN[-1] if _FIT_PLAN else None

        def note(batch):
            flops = torch_flops_per_image(model, batch[0][:1])
            if plan is not None:
                plan["flops"] = flops
                if plan.pop("record", False):
                    record_work("train", images=plan["epochs"] * n_images(loader),
                                steps=plan["epochs"] * n_batches(loader), flops_per_image=flops,
                                what=model_name(model), framework="torch")
                return
            record_work("train", images=n_images(loader), steps=n_batches(loader), flops_per_image=flops,
                        what=model_name(model), framework="torch")

        return original(model, FirstBatches(loader, CAPS.steps, note), *args, **kwargs)
    return train_one_epoch


def _capped_fit(original):
    def fit(model, train_loader, val_loader=None, *args, epochs: int, **kwargs):
        plan = {"epochs": int(epochs), "record": True}
        run = min(int(epochs), CAPS.epochs)
        _FIT_PLAN.append(plan)
        try:
            history = original(model, train_loader, val_loader, *args, epochs=run, **kwargs)
        finally:
            _FIT_PLAN.remove(plan)
        left = plan["epochs"] - run            # the validation passes of the epochs not run
        if left > 0 and val_loader is not None:
            record_work("forward", images=left * n_images(val_loader), steps=left * n_batches(val_loader),
                        flops_per_image=plan.get("flops"), what=model_name(model), framework="torch")
        return history
    return fit


@functools.lru_cache(maxsize=1)
def _first_batches_module() -> type:
    import torch  # noqa: PLC0415

    class FirstBatchesModel(torch.nn.Module):
        """``model`` run on its first ``CAPS.eval_batches`` batches; later batches repeat their outputs."""

        def __init__(self, model):
            super().__init__()
            self.model, self.first = model, FirstOutputs(CAPS.eval_batches)
            self.flops: float | None = None   # per image, counted on the first batch the model sees
            self.train(model.training)

        def forward(self, x):
            if not self.first.done:
                self.flops = best_effort(lambda: torch_flops_per_image(self.model, x[:1]))
            return self.first(lambda: self.model(x), len(x))

    return FirstBatchesModel


def _torch_first_batches(original):
    def capped(model, loader, *args, **kwargs):
        wrapper = _first_batches_module()
        if isinstance(model, wrapper):
            return original(model, loader, *args, **kwargs)
        proxy = wrapper(model)
        try:
            return original(proxy, loader, *args, **kwargs)
        finally:   # the FLOPs come from the first batch the proxy saw: no extra batch is loaded to count them
            record_work("forward", images=n_images(loader), steps=n_batches(loader), flops_per_image=proxy.flops,
                        what=model_name(model), framework="torch")
    return capped


def _first_stream_batches(original):
    def stream_probabilities(store, result, ids, *, batch_size: int, **kwargs):
        """A project's prediction pass: its work recorded in full, its first batches run, their outputs repeated
        for the other images (so every image still gets a row, as in full mode)."""
        first = ids[:CAPS.eval_batches * batch_size]
        flops = best_effort(lambda: torch_flops_per_image(result.model, _float_tensor(
            np.zeros((1, result.image_size, result.image_size, 3), np.uint8), True)))
        record_work("forward", images=len(ids), steps=-(-len(ids) // batch_size), flops_per_image=flops,
                    what=model_name(result.model), framework="torch")
        seen = []
        for out in original(store, result, first, batch_size=batch_size, **kwargs):
            seen.append(out)
            yield out
        if not seen:
            return
        probs = np.concatenate([s[1] for s in seen])
        feats = None if seen[0][3] is None else np.concatenate([s[3] for s in seen])
        for start in range(len(first), len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            rows = np.arange(start, start + len(chunk)) % len(probs)
            yield chunk, probs[rows], np.ones(len(chunk), bool), None if feats is None else feats[rows]
    return stream_probabilities


def _first_files(original):
    def predict_files(result, paths, *, batch_size: int = 32):
        """Files outside a project (07's fresh images): all recorded, the first batches run, their rows repeated."""
        import dataclasses  # noqa: PLC0415

        proxy = _first_batches_module()(result.model)
        try:
            return original(dataclasses.replace(result, model=proxy), paths, batch_size=batch_size)
        finally:
            record_work("forward", images=len(paths), steps=-(-len(paths) // batch_size), flops_per_image=proxy.flops,
                        what=model_name(result.model), framework="torch")
    return predict_files


def _first_windows(original):
    def sliding_heatmap(model, image, *, patch: int, stride: int | None = None, batch_size: int = 64, **kwargs):
        """Whole-image inference: every window's work recorded, the first batches of windows run, their
        outputs repeated for the rest (the map keeps its full size)."""
        from ..project.wholeimage import window_starts  # noqa: PLC0415

        step = stride or max(1, patch // 2)
        n = len(window_starts(image.shape[0], patch, step)) * len(window_starts(image.shape[1], patch, step))
        proxy = _first_batches_module()(model)
        try:
            return original(proxy, image, patch=patch, stride=stride, batch_size=batch_size, **kwargs)
        finally:
            record_work("forward", images=n, steps=-(-n // batch_size), flops_per_image=proxy.flops,
                        what=model_name(model), framework="torch")
    return sliding_heatmap


# ============================================================================ active-learning outputs
_SEEN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _capped_outputs(original):
    def torch_outputs(model, x, *, needs=("probs", "embeddings"), mc_passes: int = 10, batch_size: int = 256,
                      **kwargs):
        needs, n = tuple(needs), len(x)
        passes = (1 if set(needs) & {"probs", "embeddings", "grad_embeddings"} else 0) + \
            (mc_passes if "mc_samples" in needs else 0)
        images = getattr(x, "ndim", 0) == 4                      # images; a head on features runs in full
        if n:
            flops = best_effort(lambda: torch_flops_per_image(model, _float_tensor(x[:1], images)))
            record_work("forward", images=passes * n, steps=passes * -(-n // batch_size), flops_per_image=flops,
                        what=model_name(model), framework="torch")
        call = functools.partial(original, model, needs=needs, mc_passes=min(mc_passes, CAPS.mc_passes),
                                 batch_size=batch_size, **kwargs)
        if not images:
            return call(x)
        done = _SEEN.setdefault(model, {}).setdefault(needs, [])   # this model's first batches, over all calls
        room = CAPS.eval_batches * batch_size - sum(_rows(d) for d in done)
        if room > 0:
            done.append(call(x[:room]))
            if room >= n:
                return done[-1]
        return {k: _tile([d[k] for d in done], n, axis=1 if k == "mc_samples" else 0) for k in done[0]}
    return torch_outputs


def _rows(out: dict) -> int:
    k, v = next(iter(out.items()))
    return v.shape[1] if k == "mc_samples" else len(v)


def _tile(parts: list, n: int, axis: int) -> np.ndarray:
    whole = np.moveaxis(np.concatenate(parts, axis=axis), axis, 0)
    return np.moveaxis(repeat_rows(whole, n), 0, axis)


def _float_tensor(x, images: bool):
    import torch  # noqa: PLC0415

    if isinstance(x, torch.Tensor):
        return x.float()
    return torch.from_numpy(nchw_float(x) if images else np.asarray(x, np.float32))


# ============================================================================ Keras
def _install_keras() -> None:
    """Cap every ``keras.Model.fit`` and ``predict`` (the course's and a notebook's own); once per install."""
    import keras  # noqa: PLC0415

    if any(owner is keras.Model for owner, _, _ in _ORIGINALS):
        return
    _patch(keras.Model, "fit", _capped_keras_fit)
    _patch(keras.Model, "predict", _capped_keras_predict)


_TF_IMAGES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # images per epoch of to_tf_dataset's pipelines


def _counted_tf_dataset(original):
    def to_tf_dataset(images, *args, **kwargs):
        ds = original(images, *args, **kwargs)
        with contextlib.suppress(TypeError):
            _TF_IMAGES[ds] = len(images)
        return ds
    return to_tf_dataset


def _keras_batches(data, batch_size) -> int | None:
    """Batches per epoch of a ``tf.data.Dataset`` (its cardinality) or an array (``batch_size``, default 32)."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)):
        data = data[0]
    if hasattr(data, "cardinality"):
        n = int(data.cardinality())
        return n if n > 0 else None
    if hasattr(data, "shape"):
        return -(-len(data) // (batch_size or 32))
    return None


def _keras_images(data, batches: int) -> int:
    """Images per epoch: an array's length, a ``to_tf_dataset`` pipeline's count, else batches x 32."""
    if isinstance(data, (tuple, list)):
        data = data[0]
    if hasattr(data, "shape") and not hasattr(data, "cardinality"):
        return len(data)
    with contextlib.suppress(TypeError):
        if data in _TF_IMAGES:
            return _TF_IMAGES[data]
    return batches * 32


def _keras_flops(model, data=None) -> float | None:
    shape = None
    spec = getattr(data, "element_spec", None)
    if isinstance(spec, tuple):
        spec = spec[0]
    if getattr(spec, "shape", None) is not None and spec.shape.rank == 4:
        shape = tuple(spec.shape[1:])
    return best_effort(lambda: keras_flops_per_image(model, shape))


def _capped_keras_fit(original):
    signature = inspect.signature(original)

    def fit(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        a = bound.arguments
        epochs = int(a.get("epochs", 1))
        full_steps = a.get("steps_per_epoch") or _keras_batches(a.get("x"), a.get("batch_size"))
        if full_steps:
            flops = _keras_flops(self, a.get("x"))
            record_work("train", images=epochs * _keras_images(a.get("x"), full_steps), steps=epochs * full_steps,
                        flops_per_image=flops, what=self.name, framework="keras")
            val = a.get("validation_data")
            val_steps = _keras_batches(val, None) if val is not None else None
            if val_steps:
                record_work("forward", images=epochs * _keras_images(val, val_steps), steps=epochs * val_steps,
                            flops_per_image=flops, what=self.name, framework="keras")
            a["steps_per_epoch"] = min(full_steps, CAPS.steps)
            if val_steps:
                a["validation_steps"] = min(val_steps, CAPS.eval_batches)
        a["epochs"] = min(epochs, CAPS.epochs)
        with _quiet_retracing():
            return original(*bound.args, **bound.kwargs)
    return fit


def _capped_keras_predict(original):
    def predict(self, x, *args, **kwargs):
        limit, batch_size = CAPS.eval_batches, kwargs.get("batch_size") or 32
        if hasattr(x, "cardinality"):      # a tf.data.Dataset of batches (or of (images, labels) batches)
            tf = runtime.import_tensorflow()
            sizes = [int(tf.nest.flatten(b)[0].shape[0]) for b in x]   # the input pipeline only, no model
            images, steps = sum(sizes), len(sizes)
            head = x.take(limit)
        elif isinstance(x, np.ndarray) and x.ndim >= 2:
            images, steps = len(x), _keras_batches(x, batch_size)
            head = x[:limit * batch_size]
        else:
            return original(self, x, *args, **kwargs)
        with _quiet_retracing():
            out = original(self, head, *args, **kwargs)
        record_work("forward", images=images, steps=steps, flops_per_image=_keras_flops(self, x), what=self.name,
                    framework="keras")
        if not isinstance(out, np.ndarray) or steps <= limit:
            return out
        return repeat_rows(out, images)   # later batches repeat the first outputs
    return predict


@contextlib.contextmanager
def _quiet_retracing():
    """Hide TensorFlow's "triggered tf.function retracing" warning inside a capped call: the rehearsal's short,
    differently sized epochs cause it (a full-mode run does not). Other TensorFlow warnings still show."""
    log = logging.getLogger("tensorflow")
    quiet = _DropRetracing()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


class _DropRetracing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


class _FirstBatchesKeras:
    """A Keras model run on its first ``CAPS.eval_batches`` batches; later calls repeat their outputs."""

    def __init__(self, model):
        self._model, self._first = model, FirstOutputs(CAPS.eval_batches)

    def __call__(self, x, *args, **kwargs):
        return self._first(lambda: np.asarray(self._model(x, *args, **kwargs)), len(x))

    def __getattr__(self, name):
        return getattr(self._model, name)


def _keras_first_batches(original):
    def predict(model, data, *args, batch_size: int = 64, **kwargs):
        if isinstance(model, _FirstBatchesKeras):
            return original(model, data, *args, batch_size=batch_size, **kwargs)
        batches = _keras_batches(data, batch_size) or 0
        n = _keras_images(data, batches) if hasattr(data, "cardinality") else len(data)
        record_work("forward", images=n, steps=batches, what=model.name, framework="keras",
                    flops_per_image=_keras_flops(model, data if hasattr(data, "cardinality") else None))
        return original(_FirstBatchesKeras(model), data, *args, batch_size=batch_size, **kwargs)
    return predict


def _capped_recompute(original):
    def recompute_batchnorm(model, images, *, batch_size: int = 64, **kwargs):
        summary = original(model, images, batch_size=batch_size, max_batches=CAPS.eval_batches, **kwargs)
        total = len(images) if hasattr(images, "__len__") and not hasattr(images, "cardinality") else summary["images"]
        record_work("forward", images=total, steps=-(-total // batch_size), what=model.name, framework="keras",
                    flops_per_image=best_effort(lambda: keras_flops_per_image(model)))
        return summary
    return recompute_batchnorm


# ============================================================================ lessons and data
def _not_checked(original):
    def expect(condition, claim: str) -> None:
        """A rehearsal's models are trained for two steps: a lesson's claim cannot hold, so it is not checked."""
        if not condition:
            print(f"[rehearsal] not checked: {claim}")
    return expect



def _claim_not_checked(original):
    def check_claim(claim: str, interval, *, above: float = 0.0) -> None:
        """As :func:`_not_checked`, for a claim checked by its interval."""
        if not float(interval.low) > above:
            print(f"[rehearsal] not checked: {claim} ({interval})")
        else:
            original(claim, interval, above=above)
    return check_claim


def _few_standin_cells(original):
    def make_malaria_stand_in(n: int, *args, **kwargs):
        return original(n, *args, distinct=min(int(n), CAPS.standin_images), **kwargs)
    return make_malaria_stand_in


def _data_recorded(original):
    """A loader that also records what full mode holds in memory, for the rehearsal's table."""
    def load(*args, **kwargs):
        ds = original(*args, **kwargs)
        splits = ds.splits().values()
        runtime.append_report({"kind": "data", "name": ds.info.name, "images": int(sum(len(s) for s in splits)),
                               "bytes": int(sum(s.images.nbytes for s in splits)),
                               "shape": list(next(iter(splits)).images.shape[1:])})
        return ds
    return load
