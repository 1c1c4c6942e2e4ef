"""What does a Grad-CAM cost, compared with one training-style forward-and-backward pass?

Claim checked: ``course_utils.xai.grad_cam`` for a batch of 32 images at 224 px on EfficientNet-B0 costs at most
1.5x one forward + backward pass (gradients of all parameters) of the same batch. Grad-CAM needs one forward pass
and a backward pass only from the output down to the target layer (the last convolution), plus a little NumPy.

Model: torchvision's ``efficientnet_b0`` with random weights (``--model b0``, the default; speed does not depend
on the weights) or timm's ``efficientnet_lite0`` (``--model lite0``). Both in eval mode, float32, on the CPU
unless ``--device cuda``. Each measurement: ``--warmup`` untimed runs, then the median of ``--repeats``.

    python benchmarks/gradcam_cost.py                 # prints a markdown table, writes benchmarks/results/gradcam_cost.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_utils import xai  # noqa: E402


def build(name: str) -> tuple[torch.nn.Module, str]:
    if name == "b0":
        from torchvision.models import efficientnet_b0

        return efficientnet_b0(weights=None), "torchvision efficientnet_b0, random weights"
    import timm

    return timm.create_model("efficientnet_lite0", pretrained=False), "timm efficientnet_lite0, random weights"


def timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("b0", "lite0"), default="b0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=float, default=1.5, help="the claim: Grad-CAM / (forward + backward) <= limit")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gradcam_cost.json"))
    args = ap.parse_args()

    torch.manual_seed(0)
    model, desc = build(args.model)
    model = model.to(args.device).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    with torch.no_grad():
        targets = model(x).argmax(1)
    layer = xai.conv_layers(model)[-1]

    def forward_backward():
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.gather(1, targets[:, None]).sum().backward()        # gradients of every parameter

    def grad_cam_given_target():
        xai.grad_cam(model, x, target=targets.cpu().numpy(), layer=layer)

    def grad_cam_predicted():
        xai.grad_cam(model, x, layer=layer)                      # target=None: one extra forward pass

    rows = {}
    for name, fn in (("forward + backward (all parameter gradients)", forward_backward),
                     ("xai.grad_cam, target given", grad_cam_given_target),
                     ("xai.grad_cam, target=None (predicted class)", grad_cam_predicted)):
        times = timed(fn, args.warmup, args.repeats)
        rows[name] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs_s": times}
    base = rows["forward + backward (all parameter gradients)"]["median_s"]
    for r in rows.values():
        r["ratio"] = r["median_s"] / base
    ratio = rows["xai.grad_cam, target given"]["ratio"]

    print(f"Grad-CAM cost on {desc}: batch {args.batch} x 3 x {args.size} x {args.size}, layer {layer!r}, "
          f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; median of {args.repeats} after {args.warmup} warm-up\n")
    print("| measurement | median (s) | min (s) | max (s) | / forward+backward |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {r['ratio']:.2f}x |")
    ok = ratio <= args.limit
    print(f"\nclaim 'Grad-CAM <= {args.limit}x forward+backward': {'holds' if ok else 'FAILS'} ({ratio:.2f}x)")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "gradcam_cost", "model": desc, "batch": args.batch, "image_size": args.size, "layer": layer,
        "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
        "python": platform.python_version(), "numpy": np.__version__, "warmup": args.warmup, "repeats": args.repeats,
        "results": rows, "ratio_grad_cam_to_forward_backward": ratio, "limit": args.limit, "claim_holds": ok,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2))
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
