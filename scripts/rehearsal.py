"""The full-mode rehearsal's measuring side, used by ``scripts/run_course.py --rehearse`` (``make rehearse``).

While a notebook runs, :class:`MemoryWatch` samples the kernel's resident memory every 0.2 s (the kernel's
RSS plus what each child process adds, its USS: DataLoader workers share the parent's pages) and stops the
kernel once it passes the budget, so that the notebook fails with a clear message instead of being killed by
the operating system. Afterwards :func:`summarize` adds up what the notebook recorded (``course_utils.rehearsal.record_work``,
the ``kind: work`` and ``kind: data`` lines of its report file) and :func:`t4_estimate` turns the counted
work into seconds on a T4.

The T4 estimate, per notebook (every figure below is an assumption, stated once here):

* compute: counted FLOPs (forward passes x FLOPs per image; a training pass is 3x the forward FLOPs) /
  ``T4_SUSTAINED_FLOPS`` = 1.2 TFLOP/s. Source: NVIDIA's published EfficientNet-B0 mixed-precision training
  throughput, about 1,400 images/s on a V100 at 224 px (DeepLearningExamples), is 1,400 x 3 x 0.78 GFLOPs
  = 3.3 TFLOP/s; EfficientNet's depthwise convolutions are memory-bound, so scaled by the T4's memory
  bandwidth (320 vs 900 GB/s) that is 1.2 TFLOP/s, about 2 % of the T4's 65 TFLOP/s fp16 tensor-core peak.
  The same figure is used for torch (AMP) and Keras (``mixed_float16``): the course's models are
  EfficientNets and small CNNs, neither of which comes near the peak.
* per step: ``STEP_OVERHEAD_S`` = 3 ms per batch (optimizer step or inference batch; assumed: a small model's
  step on a T4 is bound by Python, kernel launches, host-to-device copies and the engine's per-step finite
  checks, typically 2-5 ms in eager PyTorch), plus ``KERAS_FIT_OVERHEAD_S`` = 5 s per Keras ``fit`` (graph
  tracing; assumed). A head on precomputed features (under ``HEAD_FLOPS`` = 1 MFLOP per sample: notebook 05's
  active-learning classifier) costs ``HEAD_TRAIN_STEP_S`` = 1 ms per training step and ``HEAD_FORWARD_STEP_S``
  = 0.5 ms per inference batch: lite mode's notebook 05 runs its ~35,000 head steps and their inference in
  40 s on this 2-core CPU, about 1 ms per step in all.
* data: download and preparation per data set loaded (``DATA_PREP_S``: malaria's 337 MB tfds download and
  preparation and the decoding of 27,558 PNGs 240 s, after the README's earlier 2-4 min for download and preparation;
  MedMNIST npz files 5-20 s), plus ``SETUP_S`` = 60 s per notebook (the setup cell's pip
  install and the TensorFlow/torch imports).
"""
from __future__ import annotations

import threading
from typing import Any

T4_SUSTAINED_FLOPS = 1.2e12
STEP_OVERHEAD_S = 0.003
HEAD_FLOPS = 1e6                 # below this many FLOPs per sample a model is a "head" on precomputed features
HEAD_TRAIN_STEP_S = 0.001
HEAD_FORWARD_STEP_S = 0.0005
KERAS_FIT_OVERHEAD_S = 5.0
SETUP_S = 60.0
DATA_PREP_S = {"malaria": 240.0, "chestmnist": 20.0, "pathmnist": 20.0, "dermamnist": 10.0, "breastmnist": 5.0,
               "pneumoniamnist": 5.0, "bloodmnist": 10.0}
TRAIN_FACTOR = 3.0
GB = 1e9


def kernel_pid(client: Any) -> int | None:
    """The kernel's process id, from nbclient's kernel manager (None before the kernel has started)."""
    km = getattr(client, "km", None)
    if km is None:
        return None
    process = getattr(getattr(km, "provisioner", None), "process", None) or getattr(km, "kernel", None)
    return getattr(process, "pid", None)


class MemoryWatch(threading.Thread):
    """Samples the kernel's memory every ``interval`` s; stops the kernel once it passes ``budget`` bytes."""

    def __init__(self, client: Any, budget: float | None, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.client, self.budget, self.interval = client, budget, interval
        self.peak = 0
        self.exceeded: int | None = None
        self._stop_event = threading.Event()

    def sample(self) -> int | None:
        import psutil  # noqa: PLC0415

        pid = kernel_pid(self.client)
        if pid is None:
            return None
        try:
            kernel = psutil.Process(pid)
            total = kernel.memory_info().rss
            for child in kernel.children(recursive=True):
                try:
                    total += child.memory_full_info().uss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            used = self.sample()
            if used is not None:
                self.peak = max(self.peak, used)
                if self.budget and used > self.budget and self.exceeded is None:
                    self.exceeded = used
                    self.kill()
            self._stop_event.wait(self.interval)

    def kill(self) -> None:
        import psutil  # noqa: PLC0415

        pid = kernel_pid(self.client)
        if pid is None:
            return
        try:
            kernel = psutil.Process(pid)
            for proc in [*kernel.children(recursive=True), kernel]:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def summarize(reports: list[dict]) -> dict[str, Any]:
    """Per notebook: data loaded and the work full mode would do, from its report lines."""
    data = [r for r in reports if r.get("kind") == "data"]
    work = [r for r in reports if r.get("kind") == "work"]
    train = sum(r["images"] for r in work if r["pass"] == "train")
    forward = sum(r["images"] for r in work if r["pass"] == "forward")
    flops = sum(r["images"] * (r.get("flops_per_image") or 0) * (TRAIN_FACTOR if r["pass"] == "train" else 1)
                for r in work)
    uncounted = sum(r["images"] for r in work if not r.get("flops_per_image"))
    return {
        "datasets": sorted({r["name"] for r in data}),
        "data_images": sum(r["images"] for r in data),
        "data_gb": round(sum(r["bytes"] for r in data) / GB, 2),
        "train_images": train,
        "forward_images": forward,
        "steps": sum(r.get("steps", 0) for r in work),
        "overhead_s": sum(r.get("steps", 0) * _step_cost(r) for r in work),
        "keras_fits": sum(1 for r in work if r["pass"] == "train" and r.get("framework") == "keras"),
        "fits": sum(1 for r in work if r["pass"] == "train"),
        "tflops": round(flops / 1e12, 2),
        "images_without_flops": uncounted,
    }


def _step_cost(rec: dict) -> float:
    """Seconds of overhead per step (batch) of one work record (see the module docstring)."""
    if (rec.get("flops_per_image") or 0) and rec["flops_per_image"] < HEAD_FLOPS:
        return HEAD_TRAIN_STEP_S if rec["pass"] == "train" else HEAD_FORWARD_STEP_S
    return STEP_OVERHEAD_S


def t4_estimate(s: dict[str, Any]) -> dict[str, float]:
    """Seconds on a T4 from the counted work (see the module docstring for every figure)."""
    compute = s["tflops"] * 1e12 / T4_SUSTAINED_FLOPS
    overhead = s["overhead_s"] + s["keras_fits"] * KERAS_FIT_OVERHEAD_S
    data = SETUP_S + sum(DATA_PREP_S.get(name, 10.0) for name in s["datasets"])
    return {"t4_compute_s": round(compute), "t4_overhead_s": round(overhead), "t4_data_setup_s": round(data),
            "t4_estimate_s": round(compute + overhead + data)}


def watch_note(watch: MemoryWatch, name: str, budget_gb: float) -> str:
    """The failure message when a notebook passed the memory budget."""
    return (f"{name}: resident memory reached {watch.exceeded / GB:.1f} GB, over the {budget_gb:g} GB budget "
            f"(Colab has about 12.7 GB): the kernel was stopped. Stream the data (loaders), keep arrays uint8, "
            "or subsample in this notebook's full-mode settings.")
