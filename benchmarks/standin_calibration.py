"""Are the stand-ins as hard as the real data? Train a reference model on each stand-in and compare with
the published result on the real data set.

    .venv/bin/python benchmarks/standin_calibration.py                 # the five sets the notebooks load
    .venv/bin/python benchmarks/standin_calibration.py --sets all      # + PneumoniaMNIST and BloodMNIST
    .venv/bin/python benchmarks/standin_calibration.py --sets breastmnist,pathmnist
    .venv/bin/python benchmarks/standin_calibration.py --sets dermamnist --knob dermamnist=0.6   # a sweep step

Published results (what the difficulty knobs in ``course_utils.data.standins.DIFFICULTY`` are calibrated to):
MedMNIST v2 (Yang et al., Sci. Data 2023, Table 3), ResNet-18 at 28 px, test split: BreastMNIST AUC 0.901 /
ACC 0.863, PathMNIST 0.983 / 0.907, ChestMNIST 0.768 / 0.947, DermaMNIST 0.917 / 0.735 (and, not loaded
by the notebooks, PneumoniaMNIST 0.944 / 0.854, BloodMNIST 0.998 / 0.958); NIH malaria cells:
accuracy ~0.95-0.97 (cell-level CNNs with patient-level splits, e.g. Rajaraman et al. 2018/2019; leaky
cell-level splits reach ~0.99). Goal: every stand-in AUC within 0.05 of the published one (malaria:
accuracy in 0.93-0.98), and no model at 1.000.

The reference model is NOT ResNet-18. On this machine (2 shared CPU cores) a torchvision ResNet-18
adapted to 28 px (3x3 stride-1 stem, no max-pool, as MedMNIST's) trains at ~6-14 images/s, and even the
stock stride-4 stem only ~15-110 images/s: 100 epochs on 90,000 PathMNIST images would take days. So the
reference is a small VGG-style CNN (``reference_cnn``: 3 conv layers 32-64-128 with BatchNorm and ReLU,
two max-pools, global average pooling, a linear head; ~94 k parameters), ~450 images/s with one thread,
trained with Adam (lr 3e-3, one-cycle schedule, batch 64, plain cross-entropy, no augmentation, no
class weights) on a stratified subsample of each stand-in's train split (sizes in the table; BreastMNIST
and DermaMNIST use all of it) and scored on the test split (subsampled to at most ``--test`` images) with
MedMNIST's own metrics (``medmnist.evaluator.getAUC`` / ``getACC``: macro one-vs-rest AUC, mean per-label
AUC for ChestMNIST, accuracy at argmax / 0.5). Malaria: the stand-in drawn at 32 px (the notebooks use
32-64 px), split 70/15/15 as ``load_malaria`` does.

Because the reference is weaker and sees less data than a ResNet-18 trained on the full split, the knobs
make difficulty come mainly from the data itself (ambiguous cases that no model can read: overlap of class
appearance, occult findings, ambiguous ring-like objects; see each renderer's docstring), so a stronger
model gains little: it cannot pass the ceiling the ambiguity sets.

Without ``--knob`` the data come through the course's own loaders (``load_medmnist(..., source="stand-in")``,
``load_malaria``), i.e. exactly the cached files the notebooks use; the first run generates them (about
1-2 minutes of the wall time for ChestMNIST and PathMNIST), later runs read the cache. With ``--knob FLAG=V``
that set is drawn with ``standin_cache.stand_in_sample`` at difficulty V instead (same renderer and class
balance, nothing cached): the calibration sweep.

Measured wall time of the whole default run: see the last line it prints (target: at most 10 minutes on
this 2-core machine, shared with other jobs; the load average is printed too).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils.data import loaders as D  # noqa: E402
from course_utils.data import standin_cache as C  # noqa: E402
from course_utils.data import standins as S  # noqa: E402

# published result on the real data: (AUC, ACC); malaria: accuracy only
PUBLISHED = {
    "breastmnist": (0.901, 0.863),
    "pathmnist": (0.983, 0.907),
    "chestmnist": (0.768, 0.947),
    "dermamnist": (0.917, 0.735),
    "malaria": (None, 0.96),
    "pneumoniamnist": (0.944, 0.854),
    "bloodmnist": (0.998, 0.958),
}
TASK = {"breastmnist": "binary-class", "pathmnist": "multi-class", "chestmnist": "multi-label, binary-class",
        "dermamnist": "multi-class", "malaria": "binary-class", "pneumoniamnist": "binary-class",
        "bloodmnist": "multi-class"}
# train images (stratified subsample; None = the whole train split) and epochs for each set
PLAN = {
    "breastmnist": (None, 30),
    "pathmnist": (3000, 6),
    "chestmnist": (6000, 4),
    "dermamnist": (None, 4),
    "malaria": (2500, 6),
    "pneumoniamnist": (2500, 6),
    "bloodmnist": (2500, 6),
}
MALARIA_SIZE = int(os.environ.get("CALIBRATION_MALARIA_SIZE", 32))
DEFAULT_SETS = ("breastmnist", "pathmnist", "chestmnist", "dermamnist", "malaria")  # what the notebooks load
ALL_SETS = DEFAULT_SETS + ("pneumoniamnist", "bloodmnist")  # --sets all


def reference_cnn(in_channels: int, n_out: int):
    """The reference model: a small VGG-style CNN for 28-32 px inputs (see the module docstring for why)."""
    import torch.nn as nn  # noqa: PLC0415

    def block(i: int, o: int) -> list:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    return nn.Sequential(*block(in_channels, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2),
                         *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, n_out))


def _tensor(images: np.ndarray):
    import torch  # noqa: PLC0415

    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
    return x.div_(127.5).sub_(1.0)  # [-1, 1], as MedMNIST's Normalize(mean=.5, std=.5)


def train_and_score(train_x, train_y, test_x, test_y, task: str, *, epochs: int, seed: int = 0,
                    batch_size: int = 64, lr: float = 3e-3) -> dict:
    """Train ``reference_cnn`` on the train arrays; AUC and ACC on the test arrays (MedMNIST's metrics)."""
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    torch.manual_seed(seed)
    multi_label = task.startswith("multi-label")
    n_out = train_y.shape[1] if multi_label else int(max(train_y.max(), test_y.max())) + 1
    model = reference_cnn(train_x.shape[-1], n_out)
    x_all, y_all = _tensor(train_x), torch.from_numpy(train_y.astype(np.float32 if multi_label else np.int64))
    steps = epochs * int(np.ceil(len(x_all) / batch_size))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2:
                continue
            out = model(x_all[idx])
            loss = (F.binary_cross_entropy_with_logits(out, y_all[idx]) if multi_label
                    else F.cross_entropy(out, y_all[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    scores = []
    with torch.no_grad():
        x_test = _tensor(test_x)
        for i in range(0, len(x_test), 512):
            out = model(x_test[i:i + 512])
            scores.append((torch.sigmoid(out) if multi_label else torch.softmax(out, 1)).numpy())
    score = np.concatenate(scores)
    from medmnist.evaluator import getACC, getAUC  # noqa: PLC0415

    y = test_y.reshape(len(test_y), -1)
    return {"auc": float(getAUC(y, score, task)), "acc": float(getACC(y, score, task))}


def _subsample(images, labels, n, seed):
    if n is None or n >= len(labels):
        return images, labels
    return D.stratified_subset(images, labels, n, seed=seed)


def load_set(flag: str, n_train: int | None, n_test: int, difficulty: float | None, seed: int = 0):
    """(train_x, train_y, test_x, test_y, note) for one set."""
    if difficulty is not None:  # a sweep step: fresh draws at this difficulty, nothing cached
        size = MALARIA_SIZE if flag == "malaria" else 28
        n_tr = n_train or C.medmnist_meta(flag)["n_samples"]["train"]
        tr = C.stand_in_sample(flag, n_tr, split="train", size=size, seed=seed, difficulty=difficulty)
        te = C.stand_in_sample(flag, n_test, split="test", size=size, seed=seed + 1, difficulty=difficulty)
        return (*tr, *te, f"sample, difficulty {difficulty:g}")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # no fallback warning, no banner
        warnings.simplefilter("ignore")
        if flag == "malaria":
            n_total = int(np.ceil(n_train / 0.7))
            ds = D.load_malaria(source="stand-in", image_size=MALARIA_SIZE, max_images=n_total, seed=seed)
        else:
            ds = D.load_medmnist(flag, source="stand-in", size=28, seed=seed)
    tr_x, tr_y = _subsample(ds.train.images, ds.train.labels, n_train, seed)
    te_x, te_y = _subsample(ds.test.images, ds.test.labels, n_test, seed + 1)
    return tr_x, tr_y, te_x, te_y, "cached stand-in"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(DEFAULT_SETS), help="comma-separated flags (and 'malaria')")
    ap.add_argument("--knob", action="append", default=[], metavar="FLAG=VALUE",
                    help="draw FLAG at this difficulty (a calibration sweep step) instead of the cached stand-in")
    ap.add_argument("--train", type=int, default=None, help="train images per set (default: PLAN)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per set (default: PLAN)")
    ap.add_argument("--test", type=int, default=3000, help="at most this many test images per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    args = ap.parse_args(argv)
    import torch  # noqa: PLC0415

    torch.set_num_threads(args.threads)
    knobs = {k: float(v) for k, v in (item.split("=", 1) for item in args.knob)}
    sets = list(ALL_SETS) if args.sets == "all" else [s.strip() for s in args.sets.split(",") if s.strip()]
    t_all = time.perf_counter()
    rows = []
    for flag in sets:
        n_plan, e_plan = PLAN[flag]
        n_train = args.train if args.train is not None else n_plan
        epochs = args.epochs if args.epochs is not None else e_plan
        t0 = time.perf_counter()
        tr_x, tr_y, te_x, te_y, how = load_set(flag, n_train, args.test, knobs.get(flag), args.seed)
        t_data = time.perf_counter() - t0
        res = train_and_score(tr_x, tr_y, te_x, te_y, TASK[flag], epochs=epochs, seed=args.seed)
        dt = time.perf_counter() - t0
        knob = knobs.get(flag, S.DIFFICULTY[flag])
        rows.append((flag, len(tr_y), epochs, len(te_y), res, knob, how, dt))
        print(f"  {flag}: AUC {res['auc']:.3f} ACC {res['acc']:.3f}  ({len(tr_y)} train x {epochs} epochs, "
              f"{len(te_y)} test; {how}; data {t_data:.0f} s, total {dt:.0f} s)", flush=True)
    total = time.perf_counter() - t_all
    print()
    print("| data set | stand-in AUC | published AUC | stand-in ACC | published ACC | difficulty knob | "
          "reference CNN: train images x epochs, test images | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for flag, n_tr, epochs, n_te, res, knob, how, dt in rows:
        p_auc, p_acc = PUBLISHED[flag]
        auc_pub = "-" if p_auc is None else f"{p_auc:.3f}"
        acc_pub = "0.95-0.97" if flag == "malaria" else f"{p_acc:.3f}"
        delta = "" if p_auc is None else f" ({res['auc'] - p_auc:+.3f})"
        print(f"| {flag} | {res['auc']:.3f}{delta} | {auc_pub} | {res['acc']:.3f} | {acc_pub} | {knob:g} | "
              f"{n_tr} x {epochs}, {n_te} | {dt:.0f} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nwall time {total:.0f} s ({total / 60:.1f} min) on {os.cpu_count()} CPU cores, "
          f"{args.threads} torch thread(s), load average {load:.1f}; stand-in version {C.STAND_IN_VERSION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
