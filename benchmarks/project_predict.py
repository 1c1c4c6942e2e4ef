"""Predicting a folder of files: is decoding hidden behind the model, and does memory stay flat? (issue 21)

    .venv/bin/python benchmarks/project_predict.py            # 2,000 JPEG files, EfficientNet-Lite0 at 224 px
    .venv/bin/python benchmarks/project_predict.py --quick    # 200 files at 96 px (a smoke check)

* **Throughput.** ``predict_pool`` (files read and decoded by a worker process while the model runs, confidences
  written to SQLite one transaction per batch, embeddings kept) against the model's forward pass alone on the same
  batches, already decoded in memory. Issue 21 asks for at least 75 % of the forward pass's images per second.
* **Memory.** The peak resident memory of a fresh process that predicts 500 files, and of one that predicts 2,000:
  streaming means the second is not larger (issue 21: no growth with the folder).

Results go to ``benchmarks/results/project_predict.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _files(root: Path, n: int, px: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = rng.integers(0, 255, (px // 8, px // 8, 3), dtype=np.uint8)
        Image.fromarray(a).resize((px, px), Image.BILINEAR).save(root / f"img{i:05d}.jpg", quality=90)


def _project(root: Path, size: int):
    """A store over ``root`` with nothing labelled, and a round-like result holding a Lite0 with 2 outputs."""
    from course_utils.models import torch_models
    from course_utils.project import cycle, folder

    store = folder.open_project(root, ["a", "b"], verbose=False)
    net, info = torch_models.efficientnet_lite0(2, pretrained=True, verbose=False)
    result = cycle.RoundResult(1, net.eval(), info, None, "binary", size, 0, root / "m.pt", root / "h.csv")
    return store, result


def child(root: str, size: int, batch: int) -> None:
    """One prediction pass in a fresh process; prints its peak RSS (MB) and images per second as JSON."""
    import resource

    import torch

    from course_utils.project import cycle

    torch.manual_seed(0)
    store, result = _project(Path(root), size)
    t0 = time.perf_counter()
    n = cycle.predict_pool(store, result, batch_size=batch, progress=False, output_dir=tempfile.mkdtemp())
    seconds = time.perf_counter() - t0
    print(json.dumps({"images": n, "seconds": round(seconds, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def forward_alone(root: Path, size: int, batch: int) -> dict:
    """The same batches, decoded and normalised beforehand: only ``model(x)`` is timed."""
    import torch

    from course_utils.data import augment
    from course_utils.data.loaders import read_image

    store, result = _project(root, size)
    tf = augment.eval_transform(size)
    ids = store.ids("pool", labelled=False)
    paths = [root / r for r in store.refs(ids)]
    seconds = 0.0
    with torch.no_grad():
        for s in range(0, len(paths), batch):
            x = torch.stack([tf(read_image(p, size=size)) for p in paths[s:s + batch]])
            t0 = time.perf_counter()
            result.model(x)
            seconds += time.perf_counter() - t0
    store.close()
    return {"images": len(paths), "seconds": round(seconds, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    n_big, n_small, size, px, batch = (200, 50, 96, 128, 32) if args.quick else (2000, 500, 224, 256, 32)
    out: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                 "load_before": os.getloadavg()[0], "image_size": size, "batch_size": batch}
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        _files(big, n_big, px)
        _files(small, n_small, px)

        def run(folder: Path) -> dict:
            done = subprocess.run([sys.executable, __file__, "--child", str(folder), str(size), str(batch)],
                                  capture_output=True, text=True, check=True)
            return json.loads(done.stdout.strip().splitlines()[-1])

        out["forward_alone"] = forward_alone(big, size, batch)
        out["predict_pool"] = run(big)
        out["predict_pool_small"] = run(small)
    fwd = out["forward_alone"]["images"] / out["forward_alone"]["seconds"]
    pred = out["predict_pool"]["images"] / out["predict_pool"]["seconds"]
    out["forward_images_per_s"] = round(fwd, 1)
    out["predict_images_per_s"] = round(pred, 1)
    out["predict_share_of_forward"] = round(pred / fwd, 3)
    out["peak_rss_mb"] = {n_small: out["predict_pool_small"]["peak_rss_mb"], n_big: out["predict_pool"]["peak_rss_mb"]}
    print(json.dumps(out, indent=2))
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / ("project_predict_quick.json" if args.quick else "project_predict.json")).write_text(
        json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
