"""Active learning around the query strategies: model adapters, a simulated loop, a label store, a widget.

* **Adapters** turn a torch or Keras classifier into the arrays :mod:`course_utils.strategies` reads:
  class probabilities ``[N, C]``, MC-dropout samples ``[T, N, C]`` (dropout on, batch-norm in
  inference mode), penultimate embeddings ``[N, D]`` and BADGE gradient embeddings ``[N, C * D]``
  (C from the model's output size, never from the labels seen so far).
* **simulate(...)** runs pool-based active learning with an oracle: initial labelled set, a budget per
  round, several strategies and seeds, retraining from scratch (or continuing), optionally with
  self-distillation from the previous round's model. It returns a tidy table (:class:`ALResult`).
* **LabelStore** keeps real labelling work in SQLite (WAL, one transaction per write, a seeded 10 %
  hold-out that is never queried, undo, a schema version).
* **LabelingSession** is the ipywidgets front end: click a class (or type its number + Enter).
"""
from __future__ import annotations

import io
import json
import math
import os
import sqlite3
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import strategies as st
from .runtime import CourseError, import_keras, import_torch, torch_threads

__all__ = [
    "torch_probs", "torch_mc_samples", "torch_embeddings", "torch_gradient_embeddings", "torch_outputs",
    "keras_probs", "keras_mc_samples", "keras_embeddings", "keras_gradient_embeddings", "keras_outputs",
    "distillation_loss", "train_torch_classifier", "TorchLearner", "simulate", "ALResult",
    "label_efficiency", "LabelStore", "LabelingSession", "SCHEMA_VERSION",
]


# =========================================================================== torch adapters
def _to_tensor_images(x: np.ndarray):
    """uint8 NHWC (or float NCHW) -> float32 NCHW tensor in [0, 1]."""
    torch = import_torch()
    if isinstance(x, torch.Tensor):
        return x.float()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim == 4:
            x = np.transpose(x, (0, 3, 1, 2))
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _last_linear(model):
    torch = import_torch()
    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            last = m
    if last is None:
        raise CourseError(f"{type(model).__name__} has no nn.Linear layer: the adapters read the penultimate "
                          "features at the input of the final Linear (the classifier).")
    return last


def _logits_to_probs(logits):
    """Softmax over classes; one output column means a sigmoid binary model -> [1 - p, p]."""
    torch = import_torch()
    if logits.ndim == 1 or logits.shape[1] == 1:
        p = torch.sigmoid(logits.reshape(-1))
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def _torch_batches(model, x, batch_size: int, device: str | None):
    torch = import_torch()
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    xt = _to_tensor_images(x)
    for s in range(0, len(xt), batch_size):
        yield xt[s:s + batch_size].to(device)


def torch_outputs(model, x: np.ndarray, *, needs: Iterable[str] = ("probs", "embeddings"), mc_passes: int = 10,
                  batch_size: int = 256, device: str | None = None, seed: int | None = 0) -> dict[str, np.ndarray]:
    """Everything the strategies may need, in as few passes as possible.

    ``needs`` may hold ``probs``, ``mc_samples``, ``embeddings`` (the input of the final Linear, read
    with a forward hook) and ``grad_embeddings``. Probabilities and embeddings come from one pass in
    eval mode; MC samples from ``mc_passes`` passes with only the Dropout modules in train mode, so
    batch-norm keeps its running statistics. The model's own train/eval state is restored afterwards.
    """
    torch = import_torch()
    needs = set(needs)
    unknown = needs - {"probs", "mc_samples", "embeddings", "grad_embeddings"}
    if unknown:
        raise CourseError(f"unknown output(s) {sorted(unknown)}; choose from probs, mc_samples, embeddings, "
                          "grad_embeddings.")
    was_training = {m: m.training for m in model.modules()}
    out: dict[str, np.ndarray] = {}
    head = _last_linear(model)
    try:
        model.eval()
        if needs & {"probs", "embeddings", "grad_embeddings"}:
            feats: list = []
            hook = head.register_forward_hook(lambda _m, inp, _o: feats.append(inp[0].detach().flatten(1).cpu()))
            probs = []
            try:
                with torch.no_grad():
                    for xb in _torch_batches(model, x, batch_size, device):
                        probs.append(_logits_to_probs(model(xb)).cpu())
            finally:
                hook.remove()
            p = torch.cat(probs).double().numpy()
            h = torch.cat(feats).numpy()
            out["probs"], out["embeddings"] = p, h
            if "grad_embeddings" in needs:
                out["grad_embeddings"] = st.gradient_embedding(_probs_for_head(p, head.out_features), h)
        if "mc_samples" in needs:
            dropouts = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
            if not dropouts:
                raise CourseError(f"{type(model).__name__} has no Dropout layer, so MC-dropout samples would all be "
                                  "identical. Add nn.Dropout before the classifier (small_cnn(dropout=0.2) has one).")
            for m in dropouts:
                m.train()
            gen_state = torch.random.get_rng_state()
            if seed is not None:
                torch.manual_seed(seed)
            samples = []
            try:
                with torch.no_grad():
                    for _ in range(mc_passes):
                        samples.append(torch.cat([_logits_to_probs(model(xb)).cpu()
                                                  for xb in _torch_batches(model, x, batch_size, device)]))
            finally:
                torch.random.set_rng_state(gen_state)
            out["mc_samples"] = torch.stack(samples).double().numpy()
    finally:
        for m, flag in was_training.items():
            m.train(flag)
    return {k: v for k, v in out.items() if k in needs}


def _probs_for_head(p: np.ndarray, out_features: int) -> np.ndarray:
    """Check the class count against the head: softmax heads give C columns, a 1-output head gives 2."""
    expected = 2 if out_features == 1 else out_features
    if p.shape[1] != expected:
        raise CourseError(f"the model's final layer has {out_features} outputs but its probabilities have "
                          f"{p.shape[1]} columns.")
    return p


def torch_probs(model, x, **kw) -> np.ndarray:
    """Class probabilities ``[N, C]`` (softmax; a 1-output sigmoid head gives ``[1 - p, p]``), eval mode."""
    return torch_outputs(model, x, needs=("probs",), **kw)["probs"]


def torch_mc_samples(model, x, mc_passes: int = 10, **kw) -> np.ndarray:
    """``[T, N, C]`` probabilities from ``mc_passes`` passes with dropout on and batch-norm in eval mode."""
    return torch_outputs(model, x, needs=("mc_samples",), mc_passes=mc_passes, **kw)["mc_samples"]


def torch_embeddings(model, x, **kw) -> np.ndarray:
    """Penultimate features ``[N, D]``: the input of the model's final ``nn.Linear`` (forward hook)."""
    return torch_outputs(model, x, needs=("embeddings",), **kw)["embeddings"]


def torch_gradient_embeddings(model, x, **kw) -> np.ndarray:
    """BADGE embeddings ``[N, C * D]``, C from the final Linear's ``out_features`` (2 for a 1-output head)."""
    return torch_outputs(model, x, needs=("grad_embeddings",), **kw)["grad_embeddings"]


# =========================================================================== Keras adapters
def _keras_layers(model) -> list:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_keras_layers(layer))
    return out


def _keras_last_dense(model):
    keras = import_keras()
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise CourseError(f"Keras model {model.name!r} has no Dense layer at its top level: the adapters read "
                          "the penultimate features at the input of the last Dense layer.")
    return dense[-1]


def _keras_x(x):
    x = np.asarray(x)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def _keras_probs_from_output(y: np.ndarray, final_activation: str | None) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1 or y.shape[1] == 1:
        p = y.reshape(-1)
        if final_activation not in ("sigmoid",):
            p = 1.0 / (1.0 + np.exp(-p))
        return np.stack([1 - p, p], axis=1)
    if final_activation != "softmax":
        y = y - y.max(axis=1, keepdims=True)
        y = np.exp(y) / np.exp(y).sum(axis=1, keepdims=True)
    return y


def _activation_name(layer) -> str | None:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", None)


def keras_outputs(model, x, *, needs: Iterable[str] = ("probs", "embeddings"), mc_passes: int = 10,
                  batch_size: int = 256, seed: int | None = 0) -> dict[str, np.ndarray]:
    """The Keras counterpart of :func:`torch_outputs`.

    Embeddings come from a functional sub-model ending at the last Dense layer's input. MC samples
    call the model with ``training=True`` while every BatchNormalization layer is temporarily
    ``trainable=False`` (Keras then runs it in inference mode and leaves its moving statistics alone)
    and random augmentation layers are forced to inference; only Dropout-type layers stay stochastic.
    """
    keras = import_keras()
    needs = set(needs)
    head = _keras_last_dense(model)
    act = _activation_name(head)
    xs = _keras_x(x)
    out: dict[str, np.ndarray] = {}
    if needs & {"probs", "embeddings", "grad_embeddings"}:
        sub = keras.Model(model.inputs, [head.input, model.outputs[0]])
        h, y = sub.predict(xs, batch_size=batch_size, verbose=0)
        p = _keras_probs_from_output(y, act)
        out["probs"], out["embeddings"] = p, np.asarray(h).reshape(len(h), -1)
        if "grad_embeddings" in needs:
            out["grad_embeddings"] = st.gradient_embedding(_probs_for_head(p, head.units), out["embeddings"])
    if "mc_samples" in needs:
        layers = _keras_layers(model)
        if not any(isinstance(layer, (keras.layers.Dropout, keras.layers.SpatialDropout2D)) for layer in layers):
            raise CourseError(f"Keras model {model.name!r} has no Dropout layer, so MC-dropout samples would all be "
                              "identical. Add keras.layers.Dropout before the classifier.")
        bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
        augment = [layer for layer in layers if type(layer).__name__.startswith("Random")]
        flags = [(layer, layer.trainable) for layer in bns]
        originals = [(layer, layer.call) for layer in augment]
        if seed is not None:
            keras.utils.set_random_seed(seed)
        try:
            for layer in bns:
                layer.trainable = False           # BN in inference mode even under training=True
            for layer, call in originals:
                layer.call = (lambda c: lambda inputs, training=None, **kw: c(inputs, training=False, **kw))(call)
            samples = []
            for _ in range(mc_passes):
                ys = [np.asarray(model(xs[s:s + batch_size], training=True)) for s in range(0, len(xs), batch_size)]
                samples.append(_keras_probs_from_output(np.concatenate(ys), act))
        finally:
            for layer, flag in flags:
                layer.trainable = flag
            for layer, _call in originals:
                del layer.call
        out["mc_samples"] = np.stack(samples)
    return {k: v for k, v in out.items() if k in needs}


def keras_probs(model, x, **kw) -> np.ndarray:
    """Class probabilities ``[N, C]`` from a Keras classifier (inference mode)."""
    return keras_outputs(model, x, needs=("probs",), **kw)["probs"]


def keras_mc_samples(model, x, mc_passes: int = 10, **kw) -> np.ndarray:
    """``[T, N, C]`` MC-dropout probabilities; batch-norm stays in inference mode."""
    return keras_outputs(model, x, needs=("mc_samples",), mc_passes=mc_passes, **kw)["mc_samples"]


def keras_embeddings(model, x, **kw) -> np.ndarray:
    """Penultimate features: the input of the last Dense layer (functional sub-model)."""
    return keras_outputs(model, x, needs=("embeddings",), **kw)["embeddings"]


def keras_gradient_embeddings(model, x, **kw) -> np.ndarray:
    """BADGE embeddings ``[N, C * D]``, C from the last Dense layer's units (2 for one sigmoid unit)."""
    return keras_outputs(model, x, needs=("grad_embeddings",), **kw)["grad_embeddings"]


# =========================================================================== self-distillation
def distillation_loss(student_logits, teacher_logits, targets, *, temperature: float = 5.0, weight: float = 0.5):
    """``(1 - weight) * CE(student, y) + weight * T^2 * KL(softmax(teacher/T) || softmax(student/T))``.

    Hinton et al. (2015): the T^2 factor keeps the soft-target gradients on the same scale as the
    hard-label ones when T changes. KL is averaged over the batch (``batchmean``).
    """
    torch = import_torch()
    f = torch.nn.functional
    if temperature <= 0:
        raise CourseError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= weight <= 1.0:
        raise CourseError(f"weight must be in [0, 1], got {weight}")
    ce = f.cross_entropy(student_logits, targets)
    log_student = f.log_softmax(student_logits / temperature, dim=1)
    teacher = f.softmax(teacher_logits.detach() / temperature, dim=1)
    kl = f.kl_div(log_student, teacher, reduction="batchmean")
    return (1.0 - weight) * ce + weight * temperature ** 2 * kl


def train_torch_classifier(model, x: np.ndarray, y: np.ndarray, *, epochs: int = 5, lr: float = 1e-3,
                           batch_size: int = 32, teacher=None, temperature: float = 5.0,
                           distill_weight: float = 0.5, seed: int = 0, device: str | None = None,
                           weight_decay: float = 0.0, min_steps: int = 0):
    """A plain Adam loop on in-memory arrays: the loop's default train step.

    Trains ``epochs`` epochs, or more when that would be fewer than ``min_steps`` optimiser steps
    (20 labelled images make one batch per epoch: without a floor, early rounds are under-trained
    and every strategy looks alike). With a ``teacher`` model the loss is :func:`distillation_loss`
    (the teacher's logits are computed per batch in eval mode). Returns the trained model.

    The course's engine :func:`course_utils.train_torch.fit` takes ``loss_fn(logits, targets)``, which
    cannot see a teacher's per-sample outputs; hence this small loop (pass ``train_fn`` to
    :class:`TorchLearner` to use another one).
    """
    torch = import_torch()
    f = torch.nn.functional
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    xt = _to_tensor_images(x)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    if teacher is not None:
        teacher.to(device).eval()
    steps_per_epoch = max(1, math.ceil(len(xt) / batch_size))
    for _ in range(max(epochs, math.ceil(min_steps / steps_per_epoch))):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for s in range(0, len(xt), batch_size):
            idx = order[s:s + batch_size]
            if len(idx) < 2 and len(xt) > 1:   # a batch of one breaks BatchNorm in train mode
                continue
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            logits = model(xb)
            if teacher is None:
                loss = f.cross_entropy(logits, yb)
            else:
                with torch.no_grad():
                    t_logits = teacher(xb)
                loss = distillation_loss(logits, t_logits, yb, temperature=temperature, weight=distill_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model


@dataclass
class TorchLearner:
    """How the loop trains and reads a torch model.

    ``make_model()`` builds a fresh model; ``train_fn(model, x, y, teacher=..., seed=...)`` trains it
    (default :func:`train_torch_classifier` with ``epochs``/``lr``/``batch_size``); ``outputs``
    uses :func:`torch_outputs`. ``num_threads=1`` runs torch on one CPU thread while the learner
    works: for tiny models on a busy CPU, thread synchronisation costs more than the arithmetic.
    """

    make_model: Callable[[], Any]
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    min_steps: int = 0
    mc_passes: int = 10
    temperature: float = 5.0
    distill_weight: float = 0.5
    device: str | None = None
    train_fn: Callable[..., Any] | None = None
    num_threads: int | None = None

    def fit(self, x, y, *, model=None, teacher=None, seed: int = 0):
        torch = import_torch()
        with torch_threads(self.num_threads):
            if model is None:
                torch.manual_seed(seed)
                model = self.make_model()
            if self.train_fn is not None:
                return self.train_fn(model, x, y, teacher=teacher, seed=seed) or model
            return train_torch_classifier(model, x, y, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                          teacher=teacher, temperature=self.temperature,
                                          distill_weight=self.distill_weight, seed=seed, device=self.device,
                                          min_steps=self.min_steps)

    def outputs(self, model, x, needs: Iterable[str], seed: int = 0) -> dict[str, np.ndarray]:
        needs = set(needs) | {"probs"}
        with torch_threads(self.num_threads):
            return torch_outputs(model, x, needs=needs, mc_passes=self.mc_passes, device=self.device, seed=seed)

    def clone(self, model):
        import copy  # noqa: PLC0415

        return copy.deepcopy(model)


# =========================================================================== the loop
def _scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    acc = float((p.argmax(axis=1) == y).mean())
    try:
        if p.shape[1] == 2:
            auc = float(roc_auc_score(y, p[:, 1]))
        else:
            auc = float(roc_auc_score(y, p, multi_class="ovr", labels=np.arange(p.shape[1])))
    except ValueError:  # a class missing from the test labels
        auc = math.nan
    return acc, auc


@dataclass
class ALResult:
    """The loop's tidy table (one row per strategy x seed x round) and what to do with it."""

    table: Any  # pandas.DataFrame
    source: str | None = None
    full_accuracy: float | None = None

    def summary(self):
        """Mean and std of accuracy / AUC over seeds, per strategy and labelled-set size."""
        g = self.table.groupby(["strategy", "n_labelled"])
        return g[["accuracy", "auc", "seconds"]].agg(["mean", "std"]).round(4)

    def final(self):
        """Mean accuracy and AUC at the last round, per strategy (best first)."""
        last = self.table[self.table["round"] == self.table["round"].max()]
        return (last.groupby("strategy")[["n_labelled", "accuracy", "auc", "seconds"]].mean()
                .sort_values("accuracy", ascending=False))

    def plot(self, metric: str = "accuracy", **kw):
        """Learning curves: mean over seeds with a min-max band (see :func:`plots.learning_curves`)."""
        from .plots import learning_curves  # noqa: PLC0415

        kw.setdefault("source", self.source)
        kw.setdefault("reference", self.full_accuracy if metric == "accuracy" else None)
        return learning_curves(self.table, metric=metric, **kw)

    def label_efficiency(self, fraction: float = 0.95, full_accuracy: float | None = None):
        """Labels each strategy needs to reach ``fraction`` of the full-data accuracy."""
        full = full_accuracy if full_accuracy is not None else self.full_accuracy
        if full is None:
            raise CourseError("label_efficiency needs the full-data accuracy: pass full_accuracy=... or run "
                              "simulate(..., full_data=True).")
        return label_efficiency(self.table, fraction * full, fraction=fraction)


def label_efficiency(table, target_accuracy: float, *, fraction: float | None = None):
    """Smallest labelled-set size at which each strategy's mean accuracy (over seeds) reaches the target.

    ``NaN`` when a strategy never gets there within the budget.
    """
    import pandas as pd  # noqa: PLC0415

    mean = table.groupby(["strategy", "n_labelled"])["accuracy"].mean().reset_index()
    rows = []
    for name, g in mean.groupby("strategy", sort=False):
        hit = g[g["accuracy"] >= target_accuracy]
        rows.append({"strategy": name, "target_accuracy": round(float(target_accuracy), 4),
                     **({"fraction_of_full": fraction} if fraction is not None else {}),
                     "labels_needed": float(hit["n_labelled"].min()) if len(hit) else math.nan,
                     "best_mean_accuracy": float(g["accuracy"].max())})
    return pd.DataFrame(rows).sort_values("labels_needed", na_position="last").reset_index(drop=True)


def _needs_of(strategy: st.QueryStrategy) -> set[str]:
    return set(strategy.requires)


def simulate(learner: TorchLearner, x_pool: np.ndarray, y_pool: np.ndarray, x_test: np.ndarray,
             y_test: np.ndarray, *, strategies: Sequence[str] = ("random", "entropy"), initial: Any = 20,
             budget: int = 20, rounds: int = 5, seeds: Sequence[int] = (0, 1, 2), retrain: str = "scratch",
             distill: bool = False, full_data: bool = False, progress: bool = True,
             source: str | None = None) -> ALResult:
    """Pool-based active learning with an oracle (the pool's labels are revealed only when queried).

    For every seed the same random initial set of ``initial`` images is used by all strategies, so
    the curves differ only by what each strategy asks for (``initial`` may also be an array of pool
    indices: the same start for every seed, e.g. to study a cold start). Each round: compute what the
    strategy needs from the current model, query ``budget`` images, reveal their labels, train (from scratch with
    ``retrain="scratch"``, or go on from the current weights with ``"continue"``), evaluate on the test
    set. With ``distill=True`` the previous round's model is the teacher of the next (see
    :func:`distillation_loss`) and the row's strategy is named ``"<name>+distill"``.
    ``full_data=True`` also trains once on the whole pool (per seed) for the label-efficiency summary.
    """
    import pandas as pd  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    y_pool = np.asarray(y_pool).reshape(-1).astype(np.int64)
    y_test = np.asarray(y_test).reshape(-1).astype(np.int64)
    if len(x_pool) != len(y_pool) or len(x_test) != len(y_test):
        raise CourseError(f"images and labels differ in length: pool {len(x_pool)} vs {len(y_pool)}, "
                          f"test {len(x_test)} vs {len(y_test)}.")
    if retrain not in ("scratch", "continue"):
        raise CourseError(f"retrain must be 'scratch' or 'continue', not {retrain!r}.")
    fixed_start = None
    if not isinstance(initial, (int, np.integer)):
        fixed_start = np.unique(np.asarray(initial, dtype=np.int64).reshape(-1))
        if not len(fixed_start) or fixed_start.min() < 0 or fixed_start.max() >= len(y_pool):
            raise CourseError(f"initial indices must be non-empty and inside the pool [0, {len(y_pool)}).")
        initial = len(fixed_start)
    if initial < 1 or budget < 1 or rounds < 0:
        raise CourseError(f"need initial >= 1, budget >= 1, rounds >= 0; got {initial}, {budget}, {rounds}.")
    if initial + budget * rounds > len(y_pool):
        raise CourseError(f"initial + budget x rounds = {initial + budget * rounds} labels, but the pool has only "
                          f"{len(y_pool)} images. Lower the budget or the rounds.")
    names = [st.get_strategy(s).name for s in strategies]
    rows: list[dict[str, Any]] = []
    full_accs = []
    bar = tqdm(total=len(seeds) * len(names) * (rounds + 1) + (len(seeds) if full_data else 0),
               desc="active learning", disable=not progress)
    for seed in seeds:
        init = fixed_start if fixed_start is not None else \
            np.random.default_rng(seed).choice(len(y_pool), size=initial, replace=False)
        t0 = time.perf_counter()  # the round-0 model is the same for every strategy of this seed: train it once
        first = learner.fit(x_pool[init], y_pool[init], seed=seed)
        first_seconds = time.perf_counter() - t0
        first_scores = _scores(y_test, learner.outputs(first, x_test, (), seed=seed)["probs"])
        for name in names:
            label = f"{name}+distill" if distill else name
            strategy = st.get_strategy(name, random_state=seed)
            labelled = np.zeros(len(y_pool), dtype=bool)
            labelled[init] = True
            model = learner.clone(first)
            rows.append({"strategy": label, "seed": seed, "round": 0, "n_labelled": int(labelled.sum()),
                         "accuracy": first_scores[0], "auc": first_scores[1], "seconds": first_seconds})
            bar.update(1)
            for rnd in range(1, rounds + 1):
                t0 = time.perf_counter()
                arrays = learner.outputs(model, x_pool, _needs_of(strategy), seed=seed + rnd) \
                    if strategy.requires else {}
                picked = strategy.query(**arrays, labelled=labelled, n_samples=len(y_pool), batch_size=budget)
                labelled[picked] = True
                idx = np.flatnonzero(labelled)
                teacher = model if distill else None
                start = learner.clone(model) if retrain == "continue" else None
                model = learner.fit(x_pool[idx], y_pool[idx], model=start, teacher=teacher, seed=seed * 1000 + rnd)
                acc, auc = _scores(y_test, learner.outputs(model, x_test, (), seed=seed)["probs"])
                rows.append({"strategy": label, "seed": seed, "round": rnd, "n_labelled": int(labelled.sum()),
                             "accuracy": acc, "auc": auc, "seconds": time.perf_counter() - t0})
                bar.update(1)
                bar.set_postfix(strategy=label, seed=seed, acc=f"{acc:.3f}")
        if full_data:
            full = learner.fit(x_pool, y_pool, seed=seed)
            full_accs.append(_scores(y_test, learner.outputs(full, x_test, (), seed=seed)["probs"])[0])
            bar.update(1)
    bar.close()
    table = pd.DataFrame(rows, columns=["strategy", "seed", "round", "n_labelled", "accuracy", "auc", "seconds"])
    return ALResult(table=table, source=source, full_accuracy=float(np.mean(full_accs)) if full_accs else None)


# =========================================================================== SQLite label store
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    ref TEXT NOT NULL,                              -- a file path, or the index into an image array
    split TEXT NOT NULL CHECK (split IN ('pool', 'holdout')),
    label INTEGER,                                  -- NULL until someone labels it
    confidences TEXT,                               -- JSON list: the model's per-class probabilities
    predicted_at REAL,
    labeled_at REAL
);
CREATE TABLE events (                               -- every label action, so undo is exact
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id),
    old_label INTEGER, new_label INTEGER, old_labeled_at REAL,
    at REAL NOT NULL, undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX items_split_label ON items(split, label);
"""


class LabelStore:
    """Labels for one image collection in one SQLite file: safe to stop, resume and share.

    * ``LabelStore.create(path, refs, class_names)`` makes a new store (it refuses to replace an
      existing file unless ``reuse=True``, which opens it instead); ``LabelStore(path)`` resumes one.
    * A seeded ``holdout_fraction`` (10 %) of the images is set aside at insertion and never queried.
    * WAL journal and one transaction per write: a crash loses at most the write in progress, and
      two processes can label at once.
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 30.0):
        self.path = Path(path)
        if not self.path.exists():
            raise CourseError(f"no label store at {self.path}. Create one with LabelStore.create(path, refs, "
                              "class_names).")
        self._conn = self._connect(self.path, timeout)
        self._check_schema()
        meta = self._meta()
        self.class_names: list[str] = json.loads(meta["class_names"])
        self.n_classes = len(self.class_names)
        self._holdout_warned = False

    # ---------------------------------------------------------------- creating
    @classmethod
    def create(cls, path: str | os.PathLike, refs: int | Sequence[Any], class_names: Sequence[str], *,
               holdout_fraction: float = 0.1, seed: int = 0, reuse: bool = False) -> "LabelStore":
        """A new store with one row per image (``refs``: paths, or ``n`` for array indices 0..n-1).

        An existing file is never replaced: ``reuse=True`` opens it (and checks it holds the same
        images and classes), otherwise this raises.
        """
        path = Path(path)
        refs = [str(i) for i in range(refs)] if isinstance(refs, (int, np.integer)) else [str(r) for r in refs]
        class_names = [str(c) for c in class_names]
        if len(class_names) < 2:
            raise CourseError(f"a label store needs at least two class names, got {class_names}.")
        if not refs:
            raise CourseError("a label store needs at least one image reference.")
        if len(set(refs)) != len(refs):
            raise CourseError("image references must be unique (two images share a path or index).")
        if not 0.0 <= holdout_fraction < 1.0:
            raise CourseError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}.")
        if path.exists():
            if not reuse:
                raise CourseError(f"{path} already exists and holds labelling work; it is never overwritten. Open "
                                  "it with LabelStore(path) to resume, pass reuse=True, or choose a new file name.")
            store = cls(path)
            stored = [r for (r,) in store._conn.execute("SELECT ref FROM items ORDER BY id")]
            if stored != refs or store.class_names != class_names:
                store.close()
                raise CourseError(f"{path} holds a different image list or class names; choose a new file name.")
            return store
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = cls._connect(path, 30.0)
        n_hold = int(round(holdout_fraction * len(refs)))
        holdout = np.zeros(len(refs), dtype=bool)
        holdout[np.random.default_rng(seed).choice(len(refs), size=n_hold, replace=False)] = True
        try:
            conn.execute("BEGIN IMMEDIATE")
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(stmt)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("class_names", json.dumps(class_names)),
                ("holdout_fraction", str(holdout_fraction)), ("seed", str(seed)),
                ("created_at", str(time.time())), ("holdout_evaluations", "0")])
            conn.executemany("INSERT INTO items (id, ref, split) VALUES (?, ?, ?)",
                             [(i, r, "holdout" if h else "pool") for i, (r, h) in enumerate(zip(refs, holdout))])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            path.unlink(missing_ok=True)
            raise
        conn.close()
        return cls(path)

    @staticmethod
    def _connect(path: Path, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)  # explicit transactions
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise CourseError(f"{path} is not a SQLite label store ({exc}); choose another file.") from exc
        conn.execute("PRAGMA synchronous=NORMAL")   # with WAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _check_schema(self) -> None:
        try:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise CourseError(f"{self.path} is a SQLite file but not a course label store ({exc}). Use a new "
                              "file name for a new store.") from exc
        if row is None or row[0] != str(SCHEMA_VERSION):
            self._conn.close()
            raise CourseError(f"{self.path} has label-store schema version {row[0] if row else 'unknown'}, but this "
                              f"course_utils reads version {SCHEMA_VERSION}. Open it with the course_utils version "
                              "that wrote it, or start a new store under another name.")

    def _meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` inside one IMMEDIATE transaction (taken up front, so writers queue, never deadlock)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self._conn)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        return result

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.counts()
        return (f"LabelStore({str(self.path)!r}: {c['labelled']}/{c['pool']} pool images labelled, "
                f"{c['holdout']} held out)")

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def counts(self) -> dict[str, int]:
        """How many images are in the pool, held out, labelled (pool only) and predicted."""
        q = self._conn.execute
        return {
            "pool": q("SELECT COUNT(*) FROM items WHERE split='pool'").fetchone()[0],
            "holdout": q("SELECT COUNT(*) FROM items WHERE split='holdout'").fetchone()[0],
            "labelled": q("SELECT COUNT(*) FROM items WHERE split='pool' AND label IS NOT NULL").fetchone()[0],
            "predicted": q("SELECT COUNT(*) FROM items WHERE split='pool' AND confidences IS NOT NULL").fetchone()[0],
        }

    def ids(self, split: str | None = "pool", labelled: bool | None = None) -> np.ndarray:
        """Item ids, optionally of one split (``pool`` / ``holdout`` / ``None`` for all) and labelled state."""
        sql, args = "SELECT id FROM items WHERE 1=1", []
        if split is not None:
            if split not in ("pool", "holdout"):
                raise CourseError(f"split must be 'pool', 'holdout' or None, not {split!r}.")
            sql += " AND split = ?"
            args.append(split)
        if labelled is not None:
            sql += " AND label IS NOT NULL" if labelled else " AND label IS NULL"
        return np.array([r for (r,) in self._conn.execute(sql + " ORDER BY id", args)], dtype=np.int64)

    def refs(self, ids: Iterable[int]) -> list[str]:
        """The stored path / array index of each id."""
        ids = [int(i) for i in ids]
        rows = dict(self._conn.execute(f"SELECT id, ref FROM items WHERE id IN ({','.join('?' * len(ids))})", ids))
        return [rows[i] for i in ids]

    def labels(self, split: str | None = "pool") -> dict[int, int]:
        """``{id: label}`` of every labelled item in ``split``."""
        sql = "SELECT id, label FROM items WHERE label IS NOT NULL" + (" AND split = ?" if split else "")
        return dict(self._conn.execute(sql, (split,) if split else ()).fetchall())

    def table(self):
        """All items as a pandas DataFrame (confidences parsed)."""
        import pandas as pd  # noqa: PLC0415

        df = pd.read_sql_query("SELECT * FROM items ORDER BY id", self._conn)
        df["confidences"] = df["confidences"].map(lambda s: json.loads(s) if isinstance(s, str) else None)
        return df

    # ---------------------------------------------------------------- writing
    def write_predictions(self, ids: Sequence[int], probs: Any) -> int:
        """Store the model's per-class probabilities for ``ids`` (one transaction); returns the count."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        p = st.check_probs(probs)
        if len(ids) != len(p):
            raise CourseError(f"write_predictions got {len(ids)} ids but {len(p)} probability rows.")
        if p.shape[1] != self.n_classes:
            raise CourseError(f"probabilities have {p.shape[1]} classes, the store has {self.n_classes} "
                              f"({', '.join(self.class_names)}).")
        self._require_ids(ids)
        now = time.time()
        rows = [(json.dumps([round(float(v), 6) for v in row]), now, i) for i, row in zip(ids, p)]
        self._write(lambda c: c.executemany("UPDATE items SET confidences = ?, predicted_at = ? WHERE id = ?", rows))
        return len(rows)

    def _require_ids(self, ids: Sequence[int]) -> None:
        known = {r for (r,) in self._conn.execute(
            f"SELECT id FROM items WHERE id IN ({','.join('?' * len(ids))})", list(ids))} if ids else set()
        missing = [i for i in ids if i not in known]
        if missing:
            raise CourseError(f"unknown item id(s) {missing[:5]}; valid ids are 0..{len(self) - 1}.")

    def label(self, item_id: int, label: int) -> None:
        """Record ``label`` for ``item_id`` at once (its own transaction). Hold-out items are refused."""
        item_id, label = int(item_id), int(label)
        if not 0 <= label < self.n_classes:
            raise CourseError(f"label {label} is not a class index; use 0..{self.n_classes - 1} "
                              f"({', '.join(self.class_names)}).")

        def write(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT split, label, labeled_at FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise CourseError(f"no item with id {item_id} in this store.")
            if row[0] == "holdout":
                raise CourseError(f"item {item_id} is in the hold-out set, which is never labelled through the "
                                  "labelling queue; use set_holdout_labels(...) for its reference labels.")
            now = time.time()
            c.execute("INSERT INTO events (item_id, old_label, new_label, old_labeled_at, at) VALUES (?, ?, ?, ?, ?)",
                      (item_id, row[1], label, row[2], now))
            c.execute("UPDATE items SET label = ?, labeled_at = ? WHERE id = ?", (label, now, item_id))

        self._write(write)

    def undo(self) -> int | None:
        """Undo the most recent label action not yet undone; returns its item id (``None`` if nothing to undo)."""
        def write(c: sqlite3.Connection) -> int | None:
            row = c.execute("SELECT seq, item_id, old_label, old_labeled_at FROM events WHERE undone = 0 "
                            "ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                return None
            seq, item_id, old, old_at = row
            c.execute("UPDATE items SET label = ?, labeled_at = ? WHERE id = ?", (old, old_at, item_id))
            c.execute("UPDATE events SET undone = 1 WHERE seq = ?", (seq,))
            return int(item_id)

        return self._write(write)

    def set_holdout_labels(self, labels: dict[int, int] | Sequence[int]) -> None:
        """Reference labels for the hold-out (e.g. from an expert panel), in one transaction.

        ``labels`` is ``{id: label}`` or a sequence aligned with ``ids("holdout")``.
        """
        hold = self.ids("holdout")
        pairs = labels.items() if isinstance(labels, dict) else zip(hold, labels)
        pairs = [(int(i), int(y)) for i, y in pairs]
        if not isinstance(labels, dict) and len(pairs) != len(hold):
            raise CourseError(f"got {len(pairs)} labels for {len(hold)} hold-out items.")
        bad = [i for i, _ in pairs if i not in set(hold.tolist())]
        if bad:
            raise CourseError(f"ids {bad[:5]} are not in the hold-out set.")
        if any(not 0 <= y < self.n_classes for _, y in pairs):
            raise CourseError(f"hold-out labels must be class indices 0..{self.n_classes - 1}.")
        now = time.time()
        self._write(lambda c: c.executemany("UPDATE items SET label = ?, labeled_at = ? WHERE id = ?",
                                            [(y, now, i) for i, y in pairs]))

    # ---------------------------------------------------------------- querying
    def next_batch(self, strategy_name: str = "entropy", batch_size: int = 8, *, random_state: Any = None) -> list[int]:
        """Ids of the next unlabelled pool images to label, chosen by a named strategy.

        Probability-based strategies (random, least_confidence, margin, entropy) read the stored
        confidences; the hold-out is never a candidate. Images without predictions are skipped by
        those strategies (call :meth:`write_predictions` after each training round).
        """
        strategy = st.get_strategy(strategy_name, random_state=random_state)
        if strategy.name not in st.PROBABILITY_STRATEGIES:
            raise CourseError(f"the label store keeps class probabilities only, so it can run "
                              f"{', '.join(st.PROBABILITY_STRATEGIES)}; {strategy.name!r} needs "
                              f"{', '.join(strategy.requires)}. Query with course_utils.strategies directly and "
                              "label the returned ids.")
        rows = self._conn.execute("SELECT id, confidences FROM items WHERE split = 'pool' AND label IS NULL "
                                  "ORDER BY id").fetchall()
        if strategy.requires:
            rows = [r for r in rows if r[1] is not None]
            if not rows:
                raise CourseError(f"no stored predictions for the unlabelled pool, which {strategy.name!r} needs: "
                                  "call store.write_predictions(ids, probs) first (or use 'random').")
        if not rows:
            raise CourseError("every pool image is labelled: nothing left to query.")
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        arrays = {"probs": np.array([json.loads(r[1]) for r in rows])} if strategy.requires else {}
        picked = strategy.query(**arrays, n_samples=len(ids), batch_size=min(batch_size, len(ids)))
        return [int(i) for i in ids[picked]]

    # ---------------------------------------------------------------- the hold-out
    def evaluate_holdout(self, probs: Any, labels: Sequence[int] | None = None) -> dict[str, float]:
        """Accuracy / AUC of ``probs`` (rows aligned with ``ids("holdout")``) on the hold-out.

        Labels come from ``labels`` or the stored hold-out labels. The number of evaluations is
        recorded in the file: every look at the hold-out spends some of its honesty, so a second
        evaluation warns.
        """
        hold = self.ids("holdout")
        p = st.check_probs(probs)
        if len(p) != len(hold):
            raise CourseError(f"probs has {len(p)} rows but the hold-out has {len(hold)} images "
                              "(use store.ids('holdout') to get them, in order).")
        if labels is None:
            stored = self.labels("holdout")
            if len(stored) != len(hold):
                raise CourseError(f"{len(hold) - len(stored)} hold-out images have no reference label; pass "
                                  "labels=... or call set_holdout_labels first.")
            labels = [stored[int(i)] for i in hold]
        y = np.asarray(labels, dtype=np.int64)
        if len(y) != len(hold):
            raise CourseError(f"labels has {len(y)} entries, the hold-out has {len(hold)}.")

        def bump(c: sqlite3.Connection) -> int:
            n = int(c.execute("SELECT value FROM meta WHERE key = 'holdout_evaluations'").fetchone()[0]) + 1
            c.execute("UPDATE meta SET value = ? WHERE key = 'holdout_evaluations'", (str(n),))
            return n

        n = self._write(bump)
        if n > 1:
            warnings.warn(f"the hold-out of {self.path.name} has now been evaluated {n} times. Choosing models by "
                          "hold-out scores makes them optimistic: tune on a validation split and look at the "
                          "hold-out once, at the end.", stacklevel=2)
        acc, auc = _scores(y, p)
        return {"accuracy": acc, "auc": auc, "n": int(len(y)), "evaluations": n}


# =========================================================================== labelling widget
def _png(image: np.ndarray, size: int = 96) -> bytes:
    from PIL import Image  # noqa: PLC0415

    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    img = Image.fromarray(a)
    scale = max(1, size // max(img.size))
    img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class LabelingSession:
    """Label the images a strategy asks for, one click each; every click is written to the store at once.

    ``images`` is indexed by the store's refs (array indices). Keyboard: ipywidgets has no key events,
    so type the class number (1, 2, ...) in the box and press Enter to label the first unlabelled
    image of the batch (``u`` + Enter undoes). The box reacts to a change of its value, which works in
    ipywidgets 7.7.1 and 8.x alike (``on_submit`` is deprecated in 8). ``oracle`` (true labels,
    indexed like ``images``) lets :meth:`label_with_oracle`
    click the right buttons itself, for simulations and CI.
    """

    def __init__(self, store: LabelStore, images: np.ndarray, class_names: Sequence[str] | None = None, *,
                 strategy: str = "entropy", batch_size: int = 8, oracle: Sequence[int] | None = None,
                 random_state: Any = 0, image_px: int = 96):
        import ipywidgets as w  # noqa: PLC0415

        self.store, self.images = store, np.asarray(images)
        self.class_names = list(class_names) if class_names is not None else store.class_names
        if len(self.class_names) != store.n_classes:
            raise CourseError(f"{len(self.class_names)} class names given, the store has {store.n_classes}.")
        self.strategy, self.batch_size, self.image_px = strategy, int(batch_size), image_px
        self.oracle = None if oracle is None else np.asarray(oracle).reshape(-1)
        self._rng = np.random.default_rng(random_state)
        self.batch: list[int] = []
        self.done: dict[int, int] = {}
        self.labelled_this_session = 0
        self._w = w
        self.counter = w.HTML()
        self.grid = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.undo_button = w.Button(description="Undo", icon="undo", tooltip="undo the last label")
        self.next_button = w.Button(description="Next batch", icon="forward", button_style="primary")
        self.keys = w.Text(value="", placeholder=f"type 1-{len(self.class_names)} + Enter", continuous_update=False,
                           description="key:", layout=w.Layout(width="220px"))
        self.undo_button.on_click(lambda _b: self.undo())
        self.next_button.on_click(lambda _b: self.next_batch())
        self.keys.observe(self._on_key, names="value")
        legend = ", ".join(f"{i + 1} = {n}" for i, n in enumerate(self.class_names))
        self.widget = w.VBox([w.HTML(f"<b>Label the queried images</b> ({legend})"), self.grid,
                              w.HBox([self.undo_button, self.next_button, self.keys]), self.counter])
        self.cards: dict[int, tuple[Any, list[Any]]] = {}
        self.next_batch()

    # ---------------------------------------------------------------- actions
    def next_batch(self) -> list[int]:
        """Ask the store for the next batch and show it."""
        seed = int(self._rng.integers(2**31 - 1))
        try:
            self.batch = self.store.next_batch(self.strategy, self.batch_size, random_state=seed)
        except CourseError as exc:
            self.batch = []
            self.counter.value = f"<span style='color:#b00020'>{exc}</span>"
            return []
        self.done = {}
        self._render()
        return self.batch

    def label(self, item_id: int, label: int) -> None:
        """Label one shown image (what its button does)."""
        self.store.label(item_id, label)
        self.done[item_id] = label
        self.labelled_this_session += 1
        self._mark(item_id)
        self._update_counter()

    def undo(self) -> int | None:
        """Undo the last label in the store and show that image as unlabelled again."""
        item = self.store.undo()
        if item is not None:
            self.labelled_this_session = max(0, self.labelled_this_session - 1)
            if item in self.done:
                restored = self.store.labels().get(item)
                if restored is None:
                    self.done.pop(item)
                else:
                    self.done[item] = restored
                self._mark(item)
        self._update_counter()
        return item

    def label_with_oracle(self, n_batches: int = 1) -> int:
        """Label ``n_batches`` batches from the ground truth by clicking the buttons; returns labels written."""
        if self.oracle is None:
            raise CourseError("this session has no oracle: pass oracle=true_labels to simulate a labeller.")
        count = 0
        for b in range(n_batches):
            if b and not self.next_batch():
                break
            for item_id in list(self.batch):
                if item_id in self.done:
                    continue
                ref = int(self.store.refs([item_id])[0])
                self.cards[item_id][1][int(self.oracle[ref])].click()
                count += 1
        return count

    def _on_key(self, change: dict) -> None:
        text = str(change["new"]).strip()
        if not text:
            return
        self.keys.value = ""
        if text.lower() in ("u", "z", "undo"):
            self.undo()
            return
        if not text.isdigit() or not 1 <= int(text) <= len(self.class_names):
            self.counter.value = f"<span style='color:#b00020'>type a class number 1-{len(self.class_names)}</span>"
            return
        open_items = [i for i in self.batch if i not in self.done]
        if not open_items:
            self.next_batch()
            open_items = list(self.batch)
            if not open_items:
                return
        self.label(open_items[0], int(text) - 1)

    # ---------------------------------------------------------------- drawing
    def _render(self) -> None:
        w = self._w
        self.cards = {}
        boxes = []
        refs = self.store.refs(self.batch) if self.batch else []
        for item_id, ref in zip(self.batch, refs):
            img = w.Image(value=_png(self.images[int(ref)], self.image_px), format="png",
                          layout=w.Layout(width=f"{self.image_px}px", height=f"{self.image_px}px"))
            buttons = []
            for k, name in enumerate(self.class_names):
                b = w.Button(description=f"{k + 1} {name}"[:14], layout=w.Layout(width=f"{self.image_px + 30}px"),
                             tooltip=f"label as {name}")
                b.on_click(lambda _b, i=item_id, k=k: self.label(i, k))
                buttons.append(b)
            caption = w.HTML(f"<small>id {item_id}</small>")
            self.cards[item_id] = (caption, buttons)
            boxes.append(w.VBox([img, caption, *buttons], layout=w.Layout(margin="4px")))
        self.grid.children = tuple(boxes)
        self._update_counter()

    def _mark(self, item_id: int) -> None:
        if item_id not in self.cards:
            return
        caption, buttons = self.cards[item_id]
        chosen = self.done.get(item_id)
        for k, b in enumerate(buttons):
            b.button_style = "success" if k == chosen else ""
        caption.value = (f"<small>id {item_id}: <b>{html_escape(self.class_names[chosen])}</b></small>"
                         if chosen is not None else f"<small>id {item_id}</small>")

    def _update_counter(self) -> None:
        c = self.store.counts()
        self.counter.value = (f"this batch: {len(self.done)}/{len(self.batch)} | this session: "
                              f"{self.labelled_this_session} | store: {c['labelled']}/{c['pool']} pool images "
                              f"labelled ({c['holdout']} held out, never shown)")

    def display(self) -> None:
        from IPython.display import display  # noqa: PLC0415

        display(self.widget)

    def _ipython_display_(self) -> None:
        self.display()


def html_escape(text: str) -> str:
    import html  # noqa: PLC0415

    return html.escape(str(text))
