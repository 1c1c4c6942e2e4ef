"""Active learning around the query strategies: the learner, the simulated loop, its results, distillation.

* **simulate(...)** runs pool-based active learning with an oracle: initial labelled set, a budget per
  round, several strategies and seeds, retraining from scratch (or continuing), optionally with
  self-distillation from the previous round's model. It returns a tidy table (:class:`ALResult`).
* **TorchLearner** says how the loop trains and reads a model; the arrays the strategies need come
  from the adapters in :mod:`course_utils.active_torch` / :mod:`course_utils.active_keras`.
* Real labelling work is kept by :class:`course_utils.labels.LabelStore` and done in
  :class:`course_utils.labeller.Labeller`.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .. import metrics, runtime
from . import strategies as st
from .strategies import head_gradient_embedding  # re-exported: its home is beside the other embeddings
from ..data.pipelines import nchw_float, tensor_loader
from ..runtime import CourseError, import_torch, torch_device, torch_threads
from ..stats import PairedInterval, detectable_difference, paired_t_interval

__all__ = ["distillation_loss", "train_torch_classifier", "TorchLearner", "KerasLearner", "simulate", "ALResult",
           "labels_to_reach", "paired_differences", "head_gradient_embedding", "keras_distillation_loss"]


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
    """The loop's default train step: the course engine (:func:`course_utils.train_torch.fit`) on in-memory arrays.

    Trains ``epochs`` epochs, or more when that would be fewer than ``min_steps`` optimiser steps
    (20 labelled images make one batch per epoch: without a floor, early rounds are under-trained
    and every strategy looks alike). With a ``teacher`` the batches carry its logits (computed once,
    in eval mode) and the loss is :func:`distillation_loss`. Adam (AdamW without decay), constant
    learning rate, no clipping. Returns the trained model, in eval mode.
    """
    torch = import_torch()
    from ..train.torch_engine import fit  # noqa: PLC0415

    device = device or torch_device()
    model.to(device)
    x = np.asarray(x)
    xt = torch.from_numpy(nchw_float(x) if x.dtype == np.uint8 else np.ascontiguousarray(x, dtype=np.float32))
    tensors = [xt, torch.as_tensor(np.asarray(y).reshape(-1), dtype=torch.long)]
    if teacher is None:
        loss_fn = torch.nn.CrossEntropyLoss()
    else:
        teacher.to(device).eval()
        with torch.no_grad():
            tensors.append(torch.cat([teacher(xb.to(device)).cpu() for xb in xt.split(256)]))

        def loss_fn(student_logits, targets, teacher_logits):
            return distillation_loss(student_logits, teacher_logits, targets, temperature=temperature,
                                     weight=distill_weight)
    one_left = len(xt) > 1 and len(xt) % batch_size == 1       # a batch of one breaks BatchNorm in train mode
    loader = tensor_loader(*tensors, batch_size=batch_size, shuffle=True, seed=seed, drop_last=one_left)
    epochs = max(epochs, math.ceil(min_steps / len(loader)))
    fit(model, loader, epochs=epochs, task="multi-class", loss_fn=loss_fn, lr=lr, weight_decay=weight_decay,
        schedule="constant", clip_grad_norm=None, monitor=None, progress=False, seed=seed, device=device)
    return model.eval()


@dataclass
class _LearnerSettings:
    """What every learner of the loop is told: how to build a fresh model and how long to train it, the MC-dropout
    passes for BALD/DBAL, and the self-distillation knobs (see :func:`distillation_loss`)."""

    make_model: Callable[[], Any]
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    min_steps: int = 0
    mc_passes: int = 10
    temperature: float = 5.0
    distill_weight: float = 0.5


@dataclass
class TorchLearner(_LearnerSettings):
    """How the loop trains and reads a torch model.

    ``make_model()`` builds a fresh model; ``train_fn(model, x, y, teacher=..., seed=...)`` trains it
    (default :func:`train_torch_classifier` with ``epochs``/``lr``/``batch_size``); ``outputs``
    uses :func:`course_utils.active_torch.torch_outputs`. ``num_threads=1`` runs torch on one CPU thread while the learner
    works: for tiny models on a busy CPU, thread synchronisation costs more than the arithmetic.
    """

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
        from . import torch_outputs as active_torch  # noqa: PLC0415  (the adapter module imports this one)

        needs = set(needs) | {"probs"}
        with torch_threads(self.num_threads):
            return active_torch.torch_outputs(model, x, needs=needs, mc_passes=self.mc_passes, device=self.device,
                                              seed=seed)

    def clone(self, model):
        import copy  # noqa: PLC0415

        return copy.deepcopy(model)


@dataclass
class KerasLearner(_LearnerSettings):
    """The same loop with a Keras model, as the original BreastMNIST pipeline ran it: ``make_model()`` builds a
    fresh Keras classifier whose last layer is a Dense with **logits** (no activation); it is trained with Adam on
    cross-entropy, or, given a ``teacher``, on :func:`keras_distillation_loss` (the torch version's formula).
    ``outputs`` uses :func:`course_utils.active.keras_outputs.keras_outputs` (MC dropout with BatchNorm frozen)."""

    def fit(self, x, y, *, model=None, teacher=None, seed: int = 0):
        from ..runtime import import_keras  # noqa: PLC0415

        keras = import_keras()
        keras.utils.set_random_seed(seed)
        model = self.make_model() if model is None else model
        x = np.asarray(x, dtype=np.float32)
        n_classes = int(model.output_shape[-1])
        target = np.eye(n_classes, dtype=np.float32)[np.asarray(y, dtype=np.int64)]
        if teacher is not None:
            soft = metrics.probabilities(np.asarray(teacher.predict(x, verbose=0)) / self.temperature)   # softened
            target = np.concatenate([target, soft.astype(np.float32)], axis=1)
            loss = keras_distillation_loss(n_classes, temperature=self.temperature, weight=self.distill_weight)
        else:
            loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.Adam(self.lr), loss=loss)
        per_epoch = max(1, -(-len(x) // self.batch_size))
        reps = max(1, -(-self.min_steps // (per_epoch * self.epochs)))   # at least min_steps steps in all: the few
        model.fit(np.tile(x, (reps, 1) + (1,) * (x.ndim - 2)) if x.ndim > 1 else np.tile(x, reps),   # labels repeated
                  np.tile(target, (reps, 1)), epochs=self.epochs, batch_size=self.batch_size, shuffle=True, verbose=0)
        return model

    def outputs(self, model, x, needs: Iterable[str], seed: int = 0) -> dict[str, np.ndarray]:
        from .keras_outputs import keras_outputs  # noqa: PLC0415

        return keras_outputs(model, np.asarray(x, dtype=np.float32), needs=set(needs) | {"probs"},
                             mc_passes=self.mc_passes, seed=seed)

    def clone(self, model):
        from ..runtime import import_keras  # noqa: PLC0415

        copy = import_keras().models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy


def keras_distillation_loss(n_classes: int, *, temperature: float = 5.0, weight: float = 0.5):
    """The Keras form of :func:`distillation_loss`: ``y_true`` holds the one-hot label and the teacher's softened
    probabilities side by side (``2 * n_classes`` columns), ``y_pred`` the student's logits."""
    from ..runtime import import_keras  # noqa: PLC0415

    ops = import_keras().ops
    if temperature <= 0:
        raise CourseError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= weight <= 1.0:
        raise CourseError(f"weight must be in [0, 1], got {weight}")

    def loss(y_true, logits):
        onehot, soft = y_true[:, :n_classes], y_true[:, n_classes:]
        ce = -ops.sum(onehot * ops.log_softmax(logits, axis=-1), axis=-1)
        kl = ops.sum(soft * (ops.log(ops.clip(soft, 1e-12, 1.0)) - ops.log_softmax(logits / temperature, axis=-1)),
                     axis=-1)
        return (1.0 - weight) * ce + weight * temperature ** 2 * kl
    return loss


# =========================================================================== the loop
def _test_scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Accuracy and ROC-AUC of probabilities ``p`` ``[N, C]`` through :mod:`course_utils.metrics`."""
    task = "binary" if p.shape[1] == 2 else "multi-class"
    with warnings.catch_warnings():   # an AUC undefined on a tiny test set is nan, said once in the table
        warnings.simplefilter("ignore")
        return metrics.accuracy(y, p, task), metrics.roc_auc(y, p, task)


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

    def plot(self, metric: str = "accuracy", strategies: Sequence[str] | None = None, **kw):
        """Learning curves: mean over seeds with a min-max band (see :func:`plots.learning_curves`); ``strategies``:
        only these (eight overlapping bands are unreadable)."""
        from ..teaching.plots import learning_curves  # noqa: PLC0415

        kw.setdefault("source", self.source)
        kw.setdefault("reference", self.full_accuracy if metric == "accuracy" else None)
        table = self.table
        if strategies is not None:
            unknown = sorted(set(strategies) - set(table["strategy"]))
            if unknown:
                raise CourseError(f"no runs of {', '.join(unknown)}; the table has {', '.join(table['strategy'].unique())}")
            table = table[table["strategy"].isin(list(strategies))]
        return learning_curves(table, metric=metric, **kw)

    def plot_versus(self, baseline: str = "random", metric: str = "accuracy", title: str | None = None):
        """Each strategy's paired difference from ``baseline`` with its interval, one row per strategy: what the
        seeds can tell apart, in one figure (eight overlapping learning-curve bands cannot show it)."""
        import matplotlib.pyplot as plt  # noqa: PLC0415

        from ..teaching.plots import source_suffix  # noqa: PLC0415

        diff = self.versus(baseline, metric).iloc[::-1]
        fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(diff) + 1.6))
        y = np.arange(len(diff))
        colours = ["tab:green" if v.startswith("better") else "tab:red" if v.startswith("worse") else "grey"
                   for v in diff["verdict"]]
        for yi, row, colour in zip(y, diff.itertuples(), colours):
            ax.errorbar(row.mean_difference, yi, xerr=[[row.mean_difference - row.ci_low],
                                                       [row.ci_high - row.mean_difference]],
                        fmt="none", ecolor=colour, capsize=3)
        ax.scatter(diff["mean_difference"], y, c=colours, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, diff["strategy"])
        n = int(diff["seeds"].max()) if len(diff) else 0
        ax.set(xlabel=f"{metric} minus {baseline}, mean over rounds (95 % interval, {n} seeds)",
               ylabel="strategy", title=(title or f"Each strategy against {baseline}")
               + source_suffix(self.source))
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        return fig

    def versus(self, baseline: str = "random", metric: str = "accuracy", confidence: float = 0.95):
        """Each strategy minus ``baseline``, paired by seed: see :func:`paired_differences`."""
        return paired_differences(self.table, baseline=baseline, metric=metric, confidence=confidence)

    def label_efficiency(self, fraction: float = 0.95, full_accuracy: float | None = None):
        """Labels each strategy needs to reach ``fraction`` of the full-data accuracy."""
        full = full_accuracy if full_accuracy is not None else self.full_accuracy
        if full is None:
            raise CourseError("label_efficiency needs the full-data accuracy: pass full_accuracy=... or run "
                              "simulate(..., full_data=True).")
        return labels_to_reach(self.table, fraction * full, fraction=fraction)


def paired_differences(table, *, baseline: str = "random", metric: str = "accuracy", confidence: float = 0.95):
    """How much better each strategy is than ``baseline``, judged against the spread over seeds.

    Per seed, the difference in ``metric`` averaged over the rounds after the start (the area under the
    learning curve, per round); the seeds share initial sets, so differences are paired. The mean
    difference gets a t-interval over seeds (:func:`.stats.paired_t_interval`), and the verdict follows the
    interval: "better" or "worse" only when it excludes 0, else "no clear difference" (always so with a single seed).
    ``detectable_80``: the power of that verdict, the smallest true difference these seeds, with this spread, would
    show as clear 8 times in 10 (:func:`.stats.detectable_difference`); smaller effects usually read "no clear".
    """
    import pandas as pd  # noqa: PLC0415

    if metric not in table.columns:
        raise CourseError(f"the table has no column {metric!r}; it has {', '.join(map(str, table.columns))}")
    later = table[table["round"] > 0]
    per_seed = later.groupby(["strategy", "seed"])[metric].mean().unstack("seed")
    if baseline not in per_seed.index:
        raise CourseError(f"baseline {baseline!r} is not in the table; strategies: {', '.join(per_seed.index)}")
    rows = []
    for name in per_seed.index.drop(baseline):
        d = (per_seed.loc[name] - per_seed.loc[baseline]).dropna().to_numpy()
        if len(d):
            iv = paired_t_interval(d, 0.0, confidence)
        else:                                    # no seed in common with the baseline
            iv = PairedInterval(math.nan, math.nan, math.nan, 0, confidence)
        mean, low, high = iv.mean, iv.low, iv.high
        verdict = iv.verdict(baseline, above="better than {what}", below="worse than {what}")
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else math.nan
        rows.append({"strategy": name, "mean_difference": round(mean, 4), "ci_low": round(low, 4),
                     "ci_high": round(high, 4), "seeds": len(d), "verdict": verdict,
                     "detectable_80": round(detectable_difference(sd, len(d), confidence), 4)})
    return pd.DataFrame(rows).sort_values("mean_difference", ascending=False).reset_index(drop=True)


def labels_to_reach(table, target_accuracy: float, *, fraction: float | None = None):
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
    bar = runtime.progress(total=len(seeds) * len(names) * (rounds + 1) + (len(seeds) if full_data else 0),
                           desc="active learning", disable=not progress, leave=True)
    for seed in seeds:
        init = fixed_start if fixed_start is not None else \
            np.random.default_rng(seed).choice(len(y_pool), size=initial, replace=False)
        t0 = time.perf_counter()  # the round-0 model is the same for every strategy of this seed: train it once
        first = learner.fit(x_pool[init], y_pool[init], seed=seed)
        first_seconds = time.perf_counter() - t0
        first_scores = _test_scores(y_test, learner.outputs(first, x_test, (), seed=seed)["probs"])
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
                acc, auc = _test_scores(y_test, learner.outputs(model, x_test, (), seed=seed)["probs"])
                rows.append({"strategy": label, "seed": seed, "round": rnd, "n_labelled": int(labelled.sum()),
                             "accuracy": acc, "auc": auc, "seconds": time.perf_counter() - t0})
                bar.update(1)
                bar.set_description_str(f"{label}, seed {seed}", refresh=False)   # a postfix gets cut at 90 columns
                bar.set_postfix_str(f"acc {acc:.3f}")
        if full_data:
            full = learner.fit(x_pool, y_pool, seed=seed)
            full_accs.append(_test_scores(y_test, learner.outputs(full, x_test, (), seed=seed)["probs"])[0])
            bar.update(1)
    bar.set_description_str("active learning", refresh=False)
    bar.set_postfix_str(f"{len(names)} strategies x {len(seeds)} seeds")
    bar.close()
    table = pd.DataFrame(rows, columns=["strategy", "seed", "round", "n_labelled", "accuracy", "auc", "seconds"])
    return ALResult(table=table, source=source, full_accuracy=float(np.mean(full_accs)) if full_accs else None)
