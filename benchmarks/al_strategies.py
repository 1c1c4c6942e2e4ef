"""Speed and memory of the two heavy query strategies on pools of realistic size.

    .venv/bin/python benchmarks/al_strategies.py            # both benchmarks, markdown table + JSON
    .venv/bin/python benchmarks/al_strategies.py --quick    # 10x smaller, a few seconds (a smoke check)

* Coreset (k-center greedy): 100,000 x 512 float32 embeddings, 1,000 labelled, pick 1,000.
  Target: <= 15 s and <= 1 GiB of memory beyond the pool itself (an N x N distance matrix would be 37 GiB).
* BADGE: 20,000 points, 2 classes, 1,280-dim features (gradient embeddings of 2,560 dims, never built),
  pick 1,000. Target: <= 30 s.

``seconds`` is wall time, ``cpu_seconds`` the process's CPU time (all BLAS threads together): on a shared
machine the wall time grows with other people's load, so the load average is recorded too. Memory is
measured two ways while the query runs: the peak of numpy allocations (``tracemalloc``; numpy
reports its buffers to it) and the growth of the process's peak resident set (``VmHWM``, reset first
through ``/proc/self/clear_refs`` where Linux allows). Results go to ``benchmarks/results/al_strategies.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils.active import strategies as st  # noqa: E402

GIB = 2**30


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(fn):
    """Run ``fn()``; return (result, (wall s, CPU s), peak numpy bytes, peak RSS growth bytes or None)."""
    reset = _reset_peak_rss()
    rss_before = _status_kib("VmRSS")
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    seconds = (time.perf_counter() - t0, time.process_time() - c0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _status_kib("VmHWM")
    rss_growth = (hwm - rss_before) * 1024 if (reset and hwm is not None and rss_before is not None) else None
    return out, seconds, peak, rss_growth


def bench_coreset(n: int, d: int, n_labelled: int, k: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    labelled = rng.choice(n, n_labelled, replace=False)
    strategy = st.get_strategy("coreset", random_state=seed)
    picked, seconds, peak, rss = measure(lambda: strategy.query(embeddings=x, labelled=labelled, batch_size=k))
    assert len(np.unique(picked)) == k and not np.isin(picked, labelled).any()
    return {"benchmark": "coreset k-center greedy", "pool": f"{n:,} x {d} float32", "labelled": n_labelled,
            "picked": k, "seconds": round(seconds[0], 2), "cpu_seconds": round(seconds[1], 2),
            "numpy_peak_MiB": round(peak / 2**20, 1),
            "rss_growth_MiB": None if rss is None else round(rss / 2**20, 1),
            "pool_MiB": round(x.nbytes / 2**20, 1), "target_seconds": 15, "target_extra_GiB": 1.0,
            "meets_target": bool(seconds[0] <= 15 and peak <= GIB and (rss is None or rss <= GIB))}


def bench_badge(n: int, d: int, n_classes: int, k: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    h = np.maximum(rng.standard_normal((n, d), dtype=np.float32), 0)     # ReLU-like features
    logits = rng.standard_normal((n, n_classes)) * 2
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    strategy = st.get_strategy("badge", random_state=seed)
    picked, seconds, peak, rss = measure(lambda: strategy.query(probs=probs, embeddings=h, batch_size=k))
    assert len(np.unique(picked)) == k
    return {"benchmark": "BADGE k-means++", "pool": f"{n:,} x {d} features, {n_classes} classes "
            f"(gradient embedding {n_classes * d} dims)", "labelled": 0, "picked": k,
            "seconds": round(seconds[0], 2), "cpu_seconds": round(seconds[1], 2),
            "numpy_peak_MiB": round(peak / 2**20, 1),
            "rss_growth_MiB": None if rss is None else round(rss / 2**20, 1),
            "pool_MiB": round(h.nbytes / 2**20, 1), "target_seconds": 30, "target_extra_GiB": None,
            "meets_target": bool(seconds[0] <= 30)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller pools (a smoke check)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "al_strategies.json"))
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rows = [bench_coreset(100_000 // scale, 512, 1_000 // scale, 1_000 // scale),
            bench_badge(20_000 // scale, 1_280, 2, 1_000 // scale)]
    keys = ["benchmark", "pool", "labelled", "picked", "seconds", "cpu_seconds", "target_seconds", "numpy_peak_MiB",
            "rss_growth_MiB", "pool_MiB", "meets_target"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    env = {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
           "machine": platform.machine(), "quick": args.quick,
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out if not args.quick else args.out.replace(".json", "_quick.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "results": rows}, indent=2))
    print(f"\nwritten {out} (load average {env['load_average']})")


if __name__ == "__main__":
    main()
