#!/usr/bin/env python
"""``make gpu-check``: full mode on a real CUDA GPU, measured, in one command.

    python scripts/gpu_check.py                  # check for a GPU, run every notebook in full mode
    python scripts/gpu_check.py --only 03 04     # a subset
    python scripts/gpu_check.py --update-readme  # then write the measured times into the README's T4 column

Without a CUDA GPU it says so and exits 1 (nothing runs). With one, it runs the main job
(``scripts/run_course.py --mode full``) with ``COURSE_GPU_REPORT=1``: every kernel records its GPU memory
peak after each cell (``torch.cuda.max_memory_allocated`` and TensorFlow's ``get_memory_info``;
``course_utils.runtime.gpu_memory_peak``), and ``build/summary.csv`` gets per notebook the wall time,
``peak_gpu_gb`` and the GPU's name. ``build/gpu_times.csv`` keeps the same, and ``--update-readme`` replaces
the README table's T4 cells (estimates from ``make rehearse``) by the measured times, naming the GPU.
Offline, with the stand-ins, it is meant to finish within 10 minutes on a large GPU.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def cuda_gpu() -> str | None:
    """The name of the first CUDA GPU, or None. Asks ``nvidia-smi`` first (no framework import), then torch."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20)
            names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0 and names:
                return names[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return None


def fmt_measured(seconds: float, gpu: str) -> str:
    s = int(round(seconds))
    shown = f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"
    return f"{shown} (measured, {gpu})"


def update_readme(readme: str, rows: list[dict], gpu: str) -> str:
    """The README with each notebook's T4 cell replaced by its measured wall time on ``gpu``."""
    import update_times  # noqa: PLC0415  (scripts/update_times.py: the README table's layout)

    measured = {r["notebook"]: float(r["wall_s"]) for r in rows if r.get("status") == "ok"}

    def row(m: re.Match) -> str:
        d = m.groupdict()
        t4 = fmt_measured(measured[d["stem"]], gpu) if d["stem"] in measured else d["t4"].strip()
        return f"| {d['num']} | {d['title']} | {d['fw']} | {t4} | {d['cpu']} | {d['colab']}"

    return update_times.ROW.sub(row, readme)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 03 04")
    p.add_argument("--out", default=str(ROOT / "build"), help="output folder (default: build/)")
    p.add_argument("--update-readme", action="store_true", help="write the measured times into README.md")
    args = p.parse_args(argv)

    gpu = cuda_gpu()
    if gpu is None:
        print("gpu-check needs a CUDA GPU and found none (no nvidia-smi, and torch.cuda.is_available() is False). "
              "Run it on a machine with an NVIDIA GPU, e.g. a Colab T4 runtime; without one, `make rehearse` "
              "measures full mode's memory and estimates its time.", file=sys.stderr)
        return 1
    print(f"GPU: {gpu}")
    import run_course  # noqa: PLC0415

    os.environ["COURSE_GPU_REPORT"] = "1"
    os.environ.pop("COURSE_REHEARSAL", None)
    run_args = ["--mode", "full", "--out", args.out, "--no-html"] + (["--only", *args.only] if args.only else [])
    rc = run_course.main(run_args)
    out = Path(args.out)
    with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(out / "gpu_times.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["notebook", "status", "wall_s", "peak_gpu_gb", "gpu"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows({**r, "gpu": r.get("gpu") or gpu} for r in rows)
    for r in rows:
        print(f"  {r['notebook']}: {r['status']}, {r['wall_s']} s, peak GPU memory {r.get('peak_gpu_gb') or '-'} GB")
    if args.update_readme:
        readme = ROOT / "README.md"
        readme.write_text(update_readme(readme.read_text(encoding="utf-8"), rows, gpu), encoding="utf-8")
        print(f"README.md: T4 column <- measured times on {gpu}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
