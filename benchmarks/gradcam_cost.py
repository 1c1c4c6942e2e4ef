"""What does a Grad-CAM cost, compared with one training-style forward-and-backward pass?

Claim checked: ``course_utils.xai.grad_cam`` for a batch of 32 images at 224 px on EfficientNet-B0 costs at most
1.5x one forward + backward pass (gradients of all parameters) of the same batch. Grad-CAM needs one forward pass
and a backward pass only from the output down to the target layer (the last convolution), plus a little NumPy.

Model: torchvision's ``efficientnet_b0`` with random weights (``--model b0``, the default; speed does not depend
on the weights) or timm's ``efficientnet_lite0`` (``--model lite0``). Both in eval mode, float32, on the CPU
unless ``--device cuda``. Each measurement: ``--warmup`` untimed runs, then the median of ``--repeats``.

``xai`` keeps no cache between calls: every call wraps the model in a fresh adapter. The rows "adapter held by the
caller" (``xai.adapter(model)`` passed instead of the model) show what that costs; ``--keras`` measures the same on
notebook 06's Keras CNN (64 px), where each fresh adapter rebuilds a functional view of the model.

    python benchmarks/gradcam_cost.py                 # prints a markdown table, writes benchmarks/results/gradcam_cost.json
    python benchmarks/gradcam_cost.py --keras         # also the Keras per-call adapter cost
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
from course_utils.xai import methods as xai  # noqa: E402


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


def keras_adapter_cost(warmup: int, repeats: int) -> dict:
    """Keras Grad-CAM on notebook 06's malaria CNN: a fresh adapter per call vs one the caller holds."""
    from course_utils.runtime import import_keras

    keras = import_keras()
    L = keras.layers
    blocks = []
    for i, width in enumerate((16, 32, 32), start=1):
        blocks += [L.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}"),
                   L.BatchNormalization(name=f"bn{i}"), L.ReLU(name=f"relu{i}")]
        if i < 3:
            blocks.append(L.MaxPooling2D(2, name=f"pool{i}"))
    model = keras.Sequential([keras.Input((64, 64, 3)), *blocks, L.GlobalMaxPooling2D(),
                              L.Dense(2, activation="softmax")], name="malaria_cnn")
    held = xai.adapter(model)
    rows = {}
    print("\n| Keras Grad-CAM (notebook 06 CNN, 64 px) | median (s) | min (s) |")
    print("|---|---:|---:|")
    for n in (4, 32):
        x = (np.random.default_rng(0).random((n, 64, 64, 3)) * 255).astype(np.uint8)
        fns = {f"{n} images, adapter built per call": lambda: xai.grad_cam(model, x, target=0),
               f"{n} images, adapter held by the caller": lambda: xai.grad_cam(held, x, target=0)}
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        runs = {k: [] for k in fns}
        for _ in range(repeats):                                 # interleaved: both see the same machine load
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                runs[k].append(time.perf_counter() - t0)
        for k, v in runs.items():
            rows[k] = {"median_s": statistics.median(v), "min_s": min(v), "runs_s": v}
            print(f"| {k} | {rows[k]['median_s']:.3f} | {rows[k]['min_s']:.3f} |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("b0", "lite0"), default="b0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=float, default=1.5, help="the claim: Grad-CAM / (forward + backward) <= limit")
    ap.add_argument("--keras", action="store_true", help="also: Keras adapter built per call vs held by the caller")
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

    held = xai.adapter(model)

    def grad_cam_held_adapter():
        xai.grad_cam(held, x, target=targets.cpu().numpy(), layer=layer)

    rows = {}
    for name, fn in (("forward + backward (all parameter gradients)", forward_backward),
                     ("xai.grad_cam, target given", grad_cam_given_target),
                     ("xai.grad_cam, target=None (predicted class)", grad_cam_predicted),
                     ("xai.grad_cam, target given, adapter held by the caller", grad_cam_held_adapter)):
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
    keras_rows = keras_adapter_cost(args.warmup, max(args.repeats, 9)) if args.keras else None

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "gradcam_cost", "model": desc, "batch": args.batch, "image_size": args.size, "layer": layer,
        "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
        "python": platform.python_version(), "numpy": np.__version__, "warmup": args.warmup, "repeats": args.repeats,
        "results": rows, "ratio_grad_cam_to_forward_backward": ratio, "limit": args.limit, "claim_holds": ok,
        "keras_adapter_per_call": keras_rows,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2))
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
