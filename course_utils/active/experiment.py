"""A simulated active-learning experiment from the command line: notebook 05's set-up on any MedMNIST data set.

    python -m course_utils.active simulate --dataset dermamnist --strategies random entropy coreset_cosine \\
        --seeds 0 1 2 --rounds 6 --budget 30 --out results/derma

It loads the data set (a stand-in when it cannot be downloaded, and it says so), turns every image into the
features of the frozen ImageNet EfficientNet-Lite0 that ships with the course, and runs ``simulate`` with a
small head per round, as 05 does. It writes ``table.csv`` (every round of every strategy and seed),
``versus.csv`` (each strategy minus random, paired by seed, with its interval and the difference the seeds
could detect), ``curves.png``, ``versus.png`` and ``settings.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..runtime import CourseError

__all__ = ["backbone_features", "run_experiment", "main"]


def backbone_features(images: np.ndarray, *, size: int = 64, batch: int = 256) -> np.ndarray:
    """Each image (uint8 ``N x H x W x C``, grey or RGB) as the 1280 features a frozen ImageNet EfficientNet-Lite0
    gives it at ``size`` px: computed once, so that each round trains only a small head (notebook 05)."""
    from ..data.pipelines import nchw_float  # noqa: PLC0415
    from ..models import torch_models  # noqa: PLC0415
    from ..runtime import import_torch  # noqa: PLC0415
    from .torch_outputs import torch_embeddings  # noqa: PLC0415

    torch = import_torch()
    backbone, info = torch_models.efficientnet_lite0(2, pretrained=True, verbose=False)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(nchw_float(images[start:start + batch]))
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)                                           # grey -> RGB
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out.append(torch_embeddings(backbone, (x - mean) / std))
    return np.concatenate(out)


def run_experiment(dataset: str = "pathmnist", *, strategies: Sequence[str] = ("random", "entropy", "coreset"),
                   seeds: Sequence[int] = (0, 1, 2), initial: int = 30, budget: int = 30, rounds: int = 6,
                   pool: int = 3000, test: int = 1000, feature_px: int = 64, epochs: int = 20,
                   min_steps: int = 200, out: str | Path | None = None, source: str = "auto",
                   framework: str = "torch", distill: bool = False, progress: bool = True):
    """Run the experiment and, with ``out``, write its table, comparison and figures there. Returns the
    ``ALResult``. ``"random"`` is always among the strategies: every other one is compared with it.
    ``framework="keras"`` trains the head in Keras (:class:`~course_utils.active.loop.KerasLearner`, as the
    original BreastMNIST pipeline did); ``distill=True`` makes each round's model the next one's teacher."""
    from ..data.loaders import MEDMNIST_FLAGS, load_medmnist  # noqa: PLC0415
    from .loop import TorchLearner, simulate  # noqa: PLC0415
    from .strategies import get_strategy  # noqa: PLC0415

    if framework not in ("torch", "keras"):
        raise CourseError(f"framework must be 'torch' or 'keras', not {framework!r}")
    if dataset not in MEDMNIST_FLAGS:
        raise CourseError(f"unknown data set {dataset!r}; choose one of {', '.join(MEDMNIST_FLAGS)}")
    for name in strategies:
        get_strategy(name)                                   # an unknown name fails now, not after the features
    strategies = ["random", *[s for s in strategies if s != "random"]]
    if initial + budget * rounds > pool:
        raise CourseError(f"{initial} initial labels + {rounds} rounds x {budget} need {initial + budget * rounds} "
                          f"images, but the pool has {pool}: lower the budget or rounds, or raise --pool")
    ds = load_medmnist(dataset, size=28, max_per_split=max(pool, test), seed=seeds[0], source=source)
    if ds.info.task != "multi-class" and ds.info.task != "binary":
        raise CourseError(f"{dataset} is {ds.info.task}: the simulation needs one class per image")
    x_pool = backbone_features(ds.train.images[:pool], size=feature_px)
    x_test = backbone_features(ds.test.images[:test], size=feature_px)
    n_classes = ds.info.n_classes
    width = x_pool.shape[1]

    def make_head():
        import torch  # noqa: PLC0415

        return torch.nn.Sequential(torch.nn.Linear(width, 64), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                   torch.nn.Linear(64, n_classes))

    def make_keras_head():
        from ..runtime import import_keras  # noqa: PLC0415

        keras = import_keras()
        return keras.Sequential([keras.Input((width,)), keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dropout(0.3), keras.layers.Dense(n_classes)])   # logits

    if framework == "keras":
        from .loop import KerasLearner  # noqa: PLC0415

        learner = KerasLearner(make_keras_head, epochs=epochs, min_steps=min_steps, batch_size=32, lr=1e-3)
    else:
        learner = TorchLearner(make_head, epochs=epochs, min_steps=min_steps, batch_size=32, lr=1e-3, num_threads=1)
    result = simulate(learner, x_pool, ds.train.labels[:pool], x_test, ds.test.labels[:test],
                      strategies=strategies, initial=initial, budget=budget, rounds=rounds, seeds=list(seeds),
                      distill=distill, progress=progress, source=ds.info.source)
    if out is not None:
        _write(result, Path(out), dataset=dataset, source=ds.info.source, strategies=strategies, seeds=list(seeds),
               initial=initial, budget=budget, rounds=rounds, pool=len(x_pool), test=len(x_test),
               feature_px=feature_px, epochs=epochs, min_steps=min_steps, framework=framework, distill=distill)
    return result


def _baseline(distill: bool) -> str:
    """The strategy every other one is compared with: random, distilled too when the others are."""
    return "random+distill" if distill else "random"


def _write(result, out: Path, **settings) -> None:
    """table.csv, versus.csv, curves.png, versus.png and settings.json under ``out``."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "table.csv", index=False)
    baseline = _baseline(settings.get("distill", False))
    versus = result.versus(baseline)
    versus.to_csv(out / "versus.csv", index=False)
    title = f"{settings['dataset']}, {len(settings['seeds'])} seeds"           # the plots add "[stand-in data]"
    fig = result.plot("accuracy", title=f"Learning curves: {title}")
    fig.savefig(out / "curves.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    if len(versus):
        fig = result.plot_versus(baseline, title=f"Each strategy minus {baseline}: {title}")
        fig.savefig(out / "versus.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    (out / "settings.json").write_text(json.dumps(settings, indent=1), encoding="utf-8")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m course_utils.active", description="Simulated active learning "
                                "(notebook 05's set-up) on a MedMNIST data set, from the command line.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("simulate", help="run strategies against random over seeds; write the table and figures",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    s.add_argument("--dataset", default="pathmnist", help="a MedMNIST flag: pathmnist, dermamnist, bloodmnist, "
                                                          "breastmnist, ... [pathmnist]")
    s.add_argument("--strategies", nargs="+", default=["random", "entropy", "coreset"],
                   help="random, least_confidence, margin, entropy, dbal, bald, coreset, coreset_cosine, badge")
    s.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one run per seed [0 1 2]")
    s.add_argument("--initial", type=int, default=30, help="random labels to start from [30]")
    s.add_argument("--budget", type=int, default=30, help="labels bought per round [30]")
    s.add_argument("--rounds", type=int, default=6, help="rounds [6]")
    s.add_argument("--pool", type=int, default=3000, help="unlabelled pool size [3000]")
    s.add_argument("--test", type=int, default=1000, help="evaluation images [1000]")
    s.add_argument("--feature-px", type=int, default=64, help="pixels per side the backbone reads [64]")
    s.add_argument("--epochs", type=int, default=20, help="head epochs per round [20]")
    s.add_argument("--min-steps", type=int, default=200, help="at least this many optimiser steps per round [200]")
    s.add_argument("--source", choices=["auto", "real", "stand-in"], default="auto",
                   help="auto: the real data, or a stand-in when it cannot be downloaded [auto]")
    s.add_argument("--framework", choices=["torch", "keras"], default="torch",
                   help="train each round's head in PyTorch (as notebook 05) or Keras (as the original pipeline)")
    s.add_argument("--distill", action="store_true", help="self-distillation: each round's model teaches the next")
    s.add_argument("--out", type=Path, required=True, help="folder for table.csv, versus.csv and the figures")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 2 a usage error, 3 bad input (the message says what to do)."""
    args = parser().parse_args(argv)
    try:
        result = run_experiment(args.dataset, strategies=args.strategies, seeds=args.seeds, initial=args.initial,
                                budget=args.budget, rounds=args.rounds, pool=args.pool, test=args.test,
                                feature_px=args.feature_px, epochs=args.epochs, min_steps=args.min_steps,
                                out=args.out, source=args.source, framework=args.framework,
                                distill=args.distill)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    versus = result.versus(_baseline(args.distill))
    print(f"{args.dataset} ({result.source}): each strategy minus {_baseline(args.distill)}, accuracy averaged over rounds, "
          f"{len(args.seeds)} seed(s):")
    for row in versus.itertuples():
        print(f"  {row.strategy:17s} {row.mean_difference:+.3f}  95 % interval [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
              f"  -> {row.verdict}")
    print(f"written: {args.out}/table.csv, versus.csv, curves.png, versus.png, settings.json")
    return 0
