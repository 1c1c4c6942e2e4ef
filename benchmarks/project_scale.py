"""How a labelling project on a folder scales (issue 21's performance list, first part).

    .venv/bin/python benchmarks/project_scale.py            # 10,000 files; stores of 1,000 / 20,000 / 100,000
    .venv/bin/python benchmarks/project_scale.py --quick    # 10x smaller (a smoke check)

* ``init`` of N small PNG files (written first into a temporary folder): scan, SHA-256 of each, the store.
* Writing N predictions (``LabelStore.write_predictions``, one transaction).
* A queue refill (``next_batch("entropy", 8)``) with every pool image predicted, at three store sizes: it is
  what a key press waits for when the queue runs out. The store keeps each strategy's score per image in an
  index (written with the predictions), so a refill reads the top of it instead of scoring the whole pool.

Results go to ``benchmarks/results/project_scale.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_utils.active.labels import LabelStore  # noqa: E402
from course_utils.project import folder  # noqa: E402


def _files(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / f"d{i % 50:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(sub / f"img{i:06d}.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    scale = 10 if args.quick else 1
    n_files = 10_000 // scale
    out: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                 "load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        _files(root, n_files)
        t0 = time.perf_counter()
        store = folder.open_project(root, ["a", "b"], verbose=False)
        out["init_files"] = n_files
        out["init_s"] = round(time.perf_counter() - t0, 2)
        ids = store.ids("pool")
        probs = np.random.default_rng(1).dirichlet([1, 1], len(ids))
        t0 = time.perf_counter()
        store.write_predictions(ids, probs)
        out["write_predictions"] = {"n": int(len(ids)), "s": round(time.perf_counter() - t0, 3)}
        store.close()
        refills = {}
        for n in (1_000 // scale, 20_000 // scale, 100_000 // scale):
            s = LabelStore.create(Path(tmp) / f"s{n}.db", n, ["a", "b"], holdout_fraction=0.0)
            s.write_predictions(s.ids("pool"), np.random.default_rng(2).dirichlet([1, 1], n))
            times = []
            for k in range(5):
                t0 = time.perf_counter()
                s.next_batch("entropy", 8, random_state=k)
                times.append(time.perf_counter() - t0)
            refills[str(n)] = round(1000 * float(np.median(times)), 1)
            s.close()
        out["refill_ms_median_of_5"] = refills
    print(json.dumps(out, indent=1))
    target = Path(__file__).parent / "results" / "project_scale.json"
    if not args.quick:
        target.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
