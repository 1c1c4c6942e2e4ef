#!/usr/bin/env python
"""Time the Keras EfficientNet-Lite0 weights: converting from the torch package and caching, then
loading from the cache (issue 11's budget: at most 10 s and 2 s on the course's 2-core CI machine).

Each repeat uses a fresh cache file in a temporary folder:

* **convert + cache**: read the package's ``.pth`` (torch), build the reference Keras model, assign
  the 247 tensors by position, write the ``.npz``: what the first offline ``efficientnet_b0`` call pays.
  torch's own first import is reported apart (a course kernel has usually imported it already).
* **load from cache**: build the headless Lite0 base and set its weights from the ``.npz`` (what
  every later call pays), and the weight loading alone.

Framework imports (TensorFlow, torch) are outside every timing. Prints a markdown table of medians.

    .venv/bin/python benchmarks/keras_lite0.py              # 3 repeats
    .venv/bin/python benchmarks/keras_lite0.py --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils.models import lite0_keras as lk  # noqa: E402
from course_utils.runtime import import_keras  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    import_keras()
    keras_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    import torch  # noqa: F401, PLC0415
    torch_import = time.perf_counter() - t0

    rows: dict[str, list[float]] = {"convert + cache": [], "build base + load from cache": [],
                                    "load from cache (weights only)": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            path = Path(tmp) / f"lite0_{i}.npz"
            t0 = time.perf_counter()
            lk.converted_weights(path)
            rows["convert + cache"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model = lk.build((224, 224, 3), include_top=False)
            t1 = time.perf_counter()
            lk.load_imagenet_weights(model, path)
            t2 = time.perf_counter()
            rows["build base + load from cache"].append(t2 - t0)
            rows["load from cache (weights only)"].append(t2 - t1)
        size_mb = path.stat().st_size / 1e6

    budget = {"convert + cache": 10.0, "build base + load from cache": 2.0, "load from cache (weights only)": 2.0}
    print(f"imports outside the timings: TensorFlow/Keras {keras_import:.1f} s, then torch {torch_import:.1f} s; "
          f"cache file {size_mb:.1f} MB; {args.repeats} repeats")
    print("\n| step | median (s) | max (s) | budget (s) |")
    print("|---|---:|---:|---:|")
    for name, times in rows.items():
        print(f"| {name} | {statistics.median(times):.2f} | {max(times):.2f} | {budget[name]:.0f} |")
    over = [name for name, times in rows.items() if statistics.median(times) > budget[name]]
    if over:
        raise SystemExit(f"over budget: {', '.join(over)}")


if __name__ == "__main__":
    main()
