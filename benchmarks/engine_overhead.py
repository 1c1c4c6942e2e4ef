"""How much does the course's training engine cost over a bare, hand-written PyTorch loop?

Both train the same small CNN on the same synthetic data for the same number of optimizer steps with
the same maths (AdamW with the same parameter groups, per-step cosine schedule, gradient clipping at
1.0, BCE-with-logits). The engine adds its checks (first-batch validation, every batch's labels, the
non-finite guard on inputs and loss), running metrics and the epoch record. A fourth row runs the engine
with the per-batch label validation switched off; because that effect is far below the machine's scatter,
it is also timed directly (``label_check_seconds``), and ``checkpoint_cost`` times a checkpoint with its
integrity check against a plain ``torch.save`` / ``torch.load``. Validation and progress bars are off in
both, so the comparison is about the loop itself; a third row shows the engine with its progress bar on.

Runs are interleaved (bare, engine, engine+progress, bare, ...) after a warm-up, and the median of
``--repeats`` runs is reported, because on a shared machine the load changes while we measure. Both
wall time and the process's CPU time are reported; with ``--threads 1`` the CPU time measures the
work done and is the fair figure on a busy machine (wall time then mostly measures the neighbours).

    .venv/bin/python benchmarks/engine_overhead.py                 # markdown table + JSON (about 5 min)
    .venv/bin/python benchmarks/engine_overhead.py --t4-estimate   # + the notebook-04 full-mode estimate

Issue 9 (fit split into helpers: the epoch loop, resume and checkpoint progress in ``_torch_checkpoint``,
epoch records in ``_torch_records``; the per-batch code unchanged), measured with ``nice .venv/bin/python
benchmarks/engine_overhead.py`` on the shared 2-core machine while another job ran (load 2.35 -> 1.85,
256 steps, median of 9, CPU time): bare loop 6.05 s, engine 5.77 s (-4.6 %), engine with progress bar
5.95 s (-1.7 %); paired medians +5.5 % (engine, single pairs -13.1 to +10.8 %) and +8.4 % (with the bar,
-20.4 to +38.7 %): within the 5 % target by the medians, and the paired figures are the machine's scatter.

Issue 14 (per-batch label validation, checkpoint integrity), measured with ``nice .venv/bin/python
benchmarks/engine_overhead.py`` on the shared 2-core machine (load 2.3 to 3.6, 256 steps, median of 9):
the label validation costs 6.4 us of CPU per batch, timed directly = 0.036 % of the engine's time per step
(the interleaved A/B rows scatter from -27 % to +24 % per pair at that load, paired median -5.4 %: noise);
a checkpoint with its SHA-256 takes 3.4 ms to write (plain torch.save 2.5 ms), +0.19 % of an epoch, and
7.0 ms to read and verify once on resume (plain torch.load 2.7 ms). Engine vs bare loop in the same run:
CPU medians 4.59 s vs 4.80 s, paired median +3.4 %.

Earlier result (2026-12-01, the engine split into ``train_one_epoch`` / ``evaluate`` / ``fit``; a 2-core
machine shared with three other jobs, load 3.7 falling to 2.1, 256 steps, median of 9, CPU time):
bare loop 5.70 s, engine 6.10 s (+6.9 %), engine with progress bar 5.56 s (-2.5 %); paired medians
+4.1 % (engine) and +1.1 % (with progress bar), single pairs from -19 % to +52 %. At that load the
scatter is far larger than the effect (the progress-bar run, which does strictly more work, came out
faster): rerun on a quiet machine for a figure to quote. Previous run (2026-11-22, load ~1, the
single-function engine): bare 2.31 s, engine 2.39 s (+3.5 %), with progress bar 2.41 s (+4.2 %).

Results go to ``benchmarks/results/engine_overhead.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from course_utils.models import torch_models as mt  # noqa: E402
from course_utils.train import torch_engine as tt  # noqa: E402


def make_data(n: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    x[:, 1] += (y.float() - 0.5)[:, None, None]
    return TensorDataset(x, y)


def loader(ds, batch_size: int, seed: int):
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def bare_loop(model, train_loader, epochs: int, lr: float = 1e-3, weight_decay: float = 1e-4,
              min_lr_ratio: float = 0.01, clip: float = 1.0) -> float:
    """The hand-written reference: the same maths as the engine, nothing else. Returns the last loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
                                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}], lr=lr)
    total = epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0))))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    loss = torch.zeros(())
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            loss = loss_fn(model(x), y.float().unsqueeze(1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            scheduler.step()
    return float(loss.detach())


def engine(model, train_loader, epochs: int, progress: bool = False, label_checks: bool = True) -> float:
    """The engine; ``label_checks=False`` switches off the per-batch label validation (the first batch is
    still checked in full), to measure what that validation costs."""
    real = tt.check_labels
    if not label_checks:
        tt.check_labels = lambda *a, **k: None
    try:
        hist = tt.fit(model, train_loader, None, epochs=epochs, task="binary", loss_fn=torch.nn.BCEWithLogitsLoss(),
                      progress=progress)
    finally:
        tt.check_labels = real
    return hist["loss"][-1]


def timed(fn, *args, **kwargs) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). With one torch thread the CPU time is the work
    done, nearly unaffected by other processes competing for the cores; wall time is not."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args, **kwargs)
    return time.perf_counter() - t0, time.process_time() - c0


def measure(n: int, size: int, batch_size: int, epochs: int, repeats: int, width: int) -> dict:
    ds = make_data(n, size)
    steps = epochs * math.ceil(n / batch_size)

    def fresh():
        torch.manual_seed(0)
        model, _ = mt.small_cnn(1, width=width)
        return model

    # warm-up: one epoch each (allocator, kernels, lazy imports such as sklearn and tqdm)
    bare_loop(fresh(), loader(ds, batch_size, 0), 1)
    engine(fresh(), loader(ds, batch_size, 0), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine(fresh(), loader(ds, batch_size, 0), 1, progress=True)

    runs = {"bare loop": lambda r: (bare_loop, fresh(), loader(ds, batch_size, r), epochs),
            "engine": lambda r: (engine, fresh(), loader(ds, batch_size, r), epochs),
            "engine + progress bar": lambda r: (engine, fresh(), loader(ds, batch_size, r), epochs, True),
            "engine, labels checked on the first batch only": lambda r: (engine, fresh(), loader(ds, batch_size, r),
                                                                         epochs, False, False)}
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for r in range(repeats):
        for name, make in runs.items():
            w, c = timed(*make(r))
            wall[name].append(w)
            cpu[name].append(c)
    med_w = {k: statistics.median(v) for k, v in wall.items()}
    med_c = {k: statistics.median(v) for k, v in cpu.items()}
    # paired: each repeat's engine run against the bare run just before it (same load, roughly)
    paired = {k: sorted(100 * (e / b - 1) for e, b in zip(cpu[k], cpu["bare loop"])) for k in runs if k != "bare loop"}
    # what the per-batch label validation adds: each repeat's engine run against its run without it
    no_checks = cpu["engine, labels checked on the first batch only"]
    label_checks = sorted(100 * (e / b - 1) for e, b in zip(cpu["engine"], no_checks))
    per_batch = label_check_seconds(ds, batch_size)
    return {"steps": steps,
            "label_check_us_per_batch": 1e6 * per_batch,
            "label_check_pct_of_step": 100 * per_batch * steps / med_c["engine"],
            "label_checks_paired_pct_cpu": {"median": statistics.median(label_checks), "min": label_checks[0],
                                            "max": label_checks[-1]},
            "label_checks_median_pct_cpu": 100 * (med_c["engine"] / statistics.median(no_checks) - 1),
            "wall_s": wall, "cpu_s": cpu, "median_wall_s": med_w, "median_cpu_s": med_c,
            "paired_overhead_pct_cpu": {k: {"median": statistics.median(v), "min": v[0], "max": v[-1]}
                                        for k, v in paired.items()},
            "overhead_pct_cpu": 100 * (med_c["engine"] / med_c["bare loop"] - 1),
            "overhead_pct_wall": 100 * (med_w["engine"] / med_w["bare loop"] - 1),
            "overhead_pct_cpu_with_progress": 100 * (med_c["engine + progress bar"] / med_c["bare loop"] - 1)}


def label_check_seconds(ds, batch_size: int, passes: int = 30) -> float:
    """CPU seconds of the engine's per-batch label validation (``check_labels``, as ``train_one_epoch``
    calls it) per batch, on this benchmark's own batches: timed directly, many times over, because the
    interleaved A/B runs above scatter far more than this small effect on a shared machine."""
    from course_utils.train._batches import check_labels

    batches = [(x, y) for x, y in loader(ds, batch_size, 0)]
    for x, y in batches:  # warm-up
        check_labels(y, "binary", "w", 1, len(x))
    t0 = time.process_time()
    for _ in range(passes):
        for i, (x, y) in enumerate(batches):
            check_labels(y, "binary", f"epoch 1/8, batch {i + 1}", 1, len(x))
    return (time.process_time() - t0) / (passes * len(batches))


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_cost(n: int, size: int, batch_size: int, width: int, repeats: int = 9) -> dict:
    """What the checkpoint integrity costs per checkpoint: the SHA-256 and the second serialisation on
    writing, the digest check and the weights_only reading on loading, against a plain
    ``torch.save`` / ``torch.load(weights_only=False)`` of the same state (the old checkpoint), and as a
    share of one epoch of the engine (median CPU time)."""
    import io
    import tempfile

    from course_utils.train import _checkpoint as ck

    ds = make_data(n, size)
    torch.manual_seed(0)
    model, _ = mt.small_cnn(1, width=width)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.pt"
        plain = Path(tmp) / "plain.pt"
        epoch_cpu = []
        for r in range(3):
            _, c = timed(engine, model, loader(ds, batch_size, r), 1)
            epoch_cpu.append(c)
        tt.fit(model, loader(ds, batch_size, 0), None, epochs=1, task="binary", progress=False,
               checkpoint_path=path)
        state = ck._read(path, "cpu")
        new_w, old_w, new_r, old_r = [], [], [], []
        for _ in range(repeats):
            t0 = time.process_time()
            buf = io.BytesIO()
            torch.save(state, buf)
            payload = buf.getbuffer()
            wrapped = {"format": ck._FORMAT, "version": ck._CHECKPOINT_VERSION,
                       "sha256": ck.hashlib.sha256(payload).hexdigest(),
                       "payload": torch.frombuffer(payload, dtype=torch.uint8)}
            torch.save(wrapped, path)
            new_w.append(time.process_time() - t0)
            t0 = time.process_time()
            torch.save(state, plain)
            old_w.append(time.process_time() - t0)
            t0 = time.process_time()
            ck._read(path, "cpu")
            new_r.append(time.process_time() - t0)
            t0 = time.process_time()
            torch.load(plain, map_location="cpu", weights_only=False)
            old_r.append(time.process_time() - t0)
        size_bytes = path.stat().st_size
    med = statistics.median
    extra = med(new_w) - med(old_w)
    return {"checkpoint_bytes": size_bytes, "epoch_cpu_s": med(epoch_cpu),
            "write_ms": {"checked": 1e3 * med(new_w), "plain": 1e3 * med(old_w)},
            "read_ms": {"checked": 1e3 * med(new_r), "plain": 1e3 * med(old_r)},
            "extra_write_pct_of_epoch": 100 * extra / med(epoch_cpu)}


# ------------------------------------------------------------------------------------------ T4 estimate
def t4_estimate() -> dict:
    """Expected full-mode time of notebook 04 on a Colab T4, from measured and stated quantities.

    Method: count the images each part of the notebook pushes through training/validation in `full`
    mode (read from its parameters cell), then per part take the larger of
      * GPU compute: training FLOPs per image (3 x the forward FLOPs counted by torch's
        FlopCounterMode; validation counts one forward) x images / an ASSUMED sustained T4
        throughput (stated below), plus an ASSUMED fixed cost per optimizer step (launches, Python);
      * CPU data pipeline: per-image augmentation time MEASURED here with one thread (Colab gives
        2 vCPUs, so cu.data.to_torch_loader uses no workers and transforms run in the main process).
    Plus fixed costs: imports, data and weight downloads (ASSUMED). Low/high bracket the assumptions.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from course_utils.data import augment

    def train_flops(model, shape):
        # forward FLOPs x 3 (backward ~ 2 x forward), the usual rule: FlopCounterMode's own count of
        # convolution_backward treats depthwise convolutions as dense (13x too high for EfficientNet)
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(torch.randn(*shape))
        return 3 * fc.get_total_flops() / shape[0]

    def per_image_transform_s(tf, size, n=300):
        img = np.random.default_rng(0).integers(0, 256, (size, size, 1), dtype=np.uint8)
        tf(img)
        t0 = time.perf_counter()
        for _ in range(n):
            tf(img)
        return (time.perf_counter() - t0) / n

    torch.set_num_threads(1)
    flops = {
        "small_cnn 64px": train_flops(mt.small_cnn(1)[0], (8, 3, 64, 64)),
        "small_cnn 28px grey": train_flops(mt.small_cnn(3, in_chans=1)[0], (8, 1, 28, 28)),
        "efficientnet_b0 128px": train_flops(mt.efficientnet_b0(1, pretrained=False, verbose=False)[0],
                                             (4, 3, 128, 128)),
    }
    tf_cost = {"train 64px": per_image_transform_s(augment.train_transform(64), 64),
               "eval 64px": per_image_transform_s(augment.eval_transform(64), 64),
               "train 128px": per_image_transform_s(augment.train_transform(128), 128),
               "eval 128px": per_image_transform_s(augment.eval_transform(128), 128)}
    # full-mode workload of notebook 04 (parameters cell): BreastMNIST 546 train / 78 val / 156 test
    n_tr, n_va = 546, 78
    breast_epochs = 3 * 30 + 1 * 30 + 2 * 20 + 1 * 20 + 2 * 20   # 3 losses, slider default, wd x2, schedule, clip x2
    chest_train, chest_val, chest_epochs = 20000, 11219, 8         # max_per_split=20000 (val has 11,219)
    ft_epochs = 4 + 12
    parts = {
        "BreastMNIST small-CNN runs (64 px)": dict(
            train=breast_epochs * n_tr, val=breast_epochs * n_va, flops=flops["small_cnn 64px"],
            steps=breast_epochs * math.ceil(n_tr / 32),
            cpu=breast_epochs * (n_tr * tf_cost["train 64px"] + n_va * tf_cost["eval 64px"])),
        "ChestMNIST multi-label (28 px, no augmentation)": dict(
            train=chest_epochs * chest_train, val=chest_epochs * chest_val, flops=flops["small_cnn 28px grey"],
            steps=chest_epochs * math.ceil(chest_train / 64), cpu=0.0),
        "EfficientNet two-phase (128 px)": dict(
            train=ft_epochs * n_tr, val=ft_epochs * n_va, flops=flops["efficientnet_b0 128px"],
            steps=ft_epochs * math.ceil(n_tr / 32),
            cpu=ft_epochs * (n_tr * tf_cost["train 128px"] + n_va * tf_cost["eval 128px"])),
    }
    assumptions = {"low": {"tflops": 8.0, "step_ms": 3.0, "fixed_s": 40.0},
                   "high": {"tflops": 2.0, "step_ms": 10.0, "fixed_s": 120.0}}
    out = {"flops_per_train_image": flops, "transform_s_per_image_measured_here": tf_cost, "parts": {},
           "assumptions": {
               "tflops": "sustained fp16 training throughput on a T4 (peak 65 TFLOP/s tensor-core): 8 (low) "
                         "to 2 (high) TFLOP/s, since small convs and depthwise convs are memory-bound",
               "step_ms": "fixed cost per optimizer step (launches, Python, optimizer): 3 to 10 ms",
               "fixed_s": "imports, downloads of BreastMNIST 64/128 px, ChestMNIST 28 px and EfficientNet-B0 "
                          "weights, kernel start: 40 to 120 s",
               "cpu": "Colab's CPU assumed as fast per core as this machine's"}}
    for bound in ("low", "high"):
        a = assumptions[bound]
        total = a["fixed_s"]
        for name, p in parts.items():
            gpu = (p["train"] * p["flops"] + p["val"] * p["flops"] / 3) / (a["tflops"] * 1e12) \
                + p["steps"] * a["step_ms"] / 1e3
            t = max(gpu, p["cpu"])
            out["parts"].setdefault(name, {})[bound + "_s"] = round(t, 1)
            total += t
        out[f"total_{bound}_s"] = round(total, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1024, help="training images")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: CPU time then measures the work, see above)")
    ap.add_argument("--t4-estimate", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine_overhead.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    res = measure(args.n, args.size, args.batch_size, args.epochs, args.repeats, args.width)
    res.update(config=vars(args), torch_threads=torch.get_num_threads(), torch=torch.__version__,
               python=platform.python_version(), cpu_count=os.cpu_count(), loadavg_before=load_before,
               loadavg_after=os.getloadavg(), device="cpu",
               date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    print(f"\nEngine overhead: small CNN, {args.n} images of {args.size} px, batch {args.batch_size}, "
          f"{res['steps']} optimizer steps, CPU, {res['torch_threads']} torch thread(s), median of {args.repeats}")
    print("\n| loop | median CPU time (s) | vs bare (CPU) | median wall time (s) | vs bare (wall) "
          "| all runs, wall (s) |"
          "\n|---|---|---|---|---|---|")
    bare_c, bare_w = res["median_cpu_s"]["bare loop"], res["median_wall_s"]["bare loop"]
    for k in res["median_cpu_s"]:
        c, w = res["median_cpu_s"][k], res["median_wall_s"][k]
        runs = ", ".join(f"{t:.2f}" for t in res["wall_s"][k])
        print(f"| {k} | {c:.2f} | {100 * (c / bare_c - 1):+.1f} % | {w:.2f} | {100 * (w / bare_w - 1):+.1f} % "
              f"| {runs} |")
    for k, v in res["paired_overhead_pct_cpu"].items():
        print(f"\npaired CPU-time overhead, {k}: median {v['median']:+.1f} % "
              f"(range {v['min']:+.1f} to {v['max']:+.1f} %)")
    lc = res["label_checks_paired_pct_cpu"]
    print(f"\nper-batch label validation: {res['label_check_us_per_batch']:.1f} us of CPU per batch, timed directly = "
          f"{res['label_check_pct_of_step']:.3f} % of the engine's time per step; interleaved runs (engine vs. "
          f"engine with labels checked on the first batch only): paired median {lc['median']:+.2f} % "
          f"(range {lc['min']:+.1f} to {lc['max']:+.1f} %: the machine's scatter), medians "
          f"{res['label_checks_median_pct_cpu']:+.2f} %")
    cc = checkpoint_cost(args.n, args.size, args.batch_size, args.width)
    res["checkpoint_integrity"] = cc
    print(f"\ncheckpoint integrity ({cc['checkpoint_bytes'] / 1e3:.0f} kB checkpoint): write "
          f"{cc['write_ms']['checked']:.1f} ms (plain torch.save {cc['write_ms']['plain']:.1f} ms), read "
          f"{cc['read_ms']['checked']:.1f} ms (plain torch.load {cc['read_ms']['plain']:.1f} ms); the extra write "
          f"time is {cc['extra_write_pct_of_epoch']:+.2f} % of one epoch ({cc['epoch_cpu_s']:.2f} s CPU)")
    print(f"\nload average before/after: {load_before[0]:.2f} / {res['loadavg_after'][0]:.2f} "
          "(a shared machine: compare only rows of the same run)")
    if args.t4_estimate:
        est = t4_estimate()
        res["t4_estimate_notebook04_full"] = est
        print("\nNotebook 04, full mode, expected time on a Colab T4 (estimate; method in t4_estimate's docstring)")
        print("\n| part | low (s) | high (s) |\n|---|---|---|")
        for name, p in est["parts"].items():
            print(f"| {name} | {p['low_s']} | {p['high_s']} |")
        print(f"| total incl. fixed costs | {est['total_low_s']} | {est['total_high_s']} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
