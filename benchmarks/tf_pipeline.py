#!/usr/bin/env python
"""The course's tf.data pipeline against naive ones, on the same images and the same small model.

The images start as PNG files at their original size (the NIH ``cell_images/<class>/*.png`` layout;
the stand-in cells when the real data set is not available). Each pipeline trains a fresh
``cu.models_keras.small_cnn`` for a few epochs at ``--size`` px with one-hot labels:

* **course**: decode the files once into a uint8 array (timed, reported as a one-time cost), then
  ``cu.data.to_tf_dataset(..., image_size=, one_hot=True, training=True)``: map (convert, resize,
  one-hot) -> cache -> shuffle -> batch -> prefetch. Resizing happens in the first epoch only.
* **naive map**: ``tf.data`` over the file names, ``map(read, decode, resize, one-hot)`` without
  parallel calls, cache or prefetch: every epoch decodes and resizes every original again.
* **naive generator**: a Python generator that opens each file with PIL, resizes it and builds the
  one-hot label, wrapped in ``Dataset.from_generator``; same per-epoch work, in Python.

Per epoch, each pipeline is timed twice: training one epoch, and reading the dataset alone (no
model), round-robin across the pipelines so that load from other processes hits all of them alike.
Reports images/s per epoch and the course/naive ratios (epochs 2+), measured in one run; prints a
markdown table and writes ``benchmarks/results/tf_pipeline.json``. On a CPU the model's own compute
bounds the training ratio; on a GPU the input pipeline is the bottleneck and the read-only ratio is
the better guide.

    .venv/bin/python benchmarks/tf_pipeline.py                  # 2000 images, 128 px originals -> 64 px
    .venv/bin/python benchmarks/tf_pipeline.py --n 500 --epochs 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import course_utils as cu  # noqa: E402

CLASSES = ("Parasitized", "Uninfected")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    p.add_argument("--orig", type=int, default=128, help="size of the original PNG files in px (default 128)")
    p.add_argument("--size", type=int, default=64, help="training image size in px (default 64)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per pipeline (default 3)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tf_pipeline.json"))
    return p.parse_args(argv)


def write_pngs(folder: Path, n: int, size: int) -> tuple[list[str], np.ndarray, str]:
    """Write ``n`` malaria cells as PNG files in the NIH folder layout; returns paths, labels, source."""
    from PIL import Image

    try:  # the real data when tfds has it, else the stand-in (same schema)
        data = cu.data.load_malaria(image_size=size, max_images=n, fractions=(0.7, 0.15, 0.15))
        images = np.concatenate([data.train.images, data.val.images, data.test.images])
        labels = np.concatenate([data.train.labels, data.val.labels, data.test.labels])
        source = data.info.source
    except cu.CourseError:
        images, labels = cu.standin_cache.make_malaria_stand_in(n, image_size=size)
        source = "stand-in"
    paths = []
    for i, (img, y) in enumerate(zip(images, labels)):
        d = folder / CLASSES[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"cell_{i:05d}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths, labels.astype(np.int64), source


def course_pipeline(paths, labels, args):
    """Decode once (timed), then the course's cached, prefetched tf.data pipeline."""
    from PIL import Image

    start = time.perf_counter()
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    load_s = time.perf_counter() - start
    ds = cu.data.to_tf_dataset(images, labels, batch_size=args.batch, training=True, one_hot=True,
                               n_classes=2, image_size=args.size, seed=0)
    return ds, load_s


def naive_map_pipeline(paths, labels, args):
    tf = cu.runtime.import_tensorflow()

    def load(path, y):
        x = tf.io.decode_png(tf.io.read_file(path), channels=3)
        x = tf.image.resize(tf.cast(x, tf.float32) / 255.0, (args.size, args.size), antialias=True)
        return x, tf.one_hot(tf.cast(y, tf.int32), 2)

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(paths), labels)).shuffle(len(paths), seed=0)
    return ds.map(load).batch(args.batch), 0.0  # no parallel calls, no cache, no prefetch


def naive_generator_pipeline(paths, labels, args):
    tf = cu.runtime.import_tensorflow()
    from PIL import Image

    def gen():
        order = np.random.default_rng().permutation(len(paths))
        for i in order:
            img = Image.open(paths[i]).convert("RGB").resize((args.size, args.size), Image.BILINEAR)
            x = np.asarray(img, dtype=np.float32) / 255.0
            y = np.zeros(2, np.float32)
            y[labels[i]] = 1.0
            yield x, y

    sig = (tf.TensorSpec((args.size, args.size, 3), tf.float32), tf.TensorSpec((2,), tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(paths)))  # so Keras knows the epoch length
    return ds.batch(args.batch), 0.0


def measure(pipelines: dict, n_images: int, args) -> dict:
    """Round-robin over the pipelines, epoch by epoch, so that load from other processes hits all alike.

    For each pipeline: a fresh ``small_cnn`` (same seed) is compiled once and trained one epoch at a time
    (``model.fit(ds, epochs=1)``), then the dataset is read alone (no model) once per epoch.
    """
    keras = __import__("keras")
    expected_steps = -(-n_images // args.batch)
    out = {name: {"one_time_load_s": round(load_s, 3), "epoch_s": [], "images_per_s": [],
                  "read_only_s": [], "read_only_images_per_s": []} for name, (_, load_s) in pipelines.items()}
    models = {}
    for name in pipelines:
        cu.seed_everything(0)
        model, _ = cu.models_keras.small_cnn((args.size, args.size, 3), 2)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
        models[name] = model
    for epoch in range(args.epochs):
        for name, (ds, _) in pipelines.items():
            start = time.perf_counter()
            hist = models[name].fit(ds, epochs=1, verbose=0)  # first: epoch 1 fills the course's cache
            train_s = time.perf_counter() - start
            start = time.perf_counter()
            steps = sum(1 for _ in ds)
            read_s = time.perf_counter() - start
            if steps != expected_steps:
                raise RuntimeError(f"{name}: {steps} batches per epoch, expected {expected_steps}")
            r = out[name]
            r["epoch_s"].append(round(train_s, 3))
            r["images_per_s"].append(round(n_images / train_s, 1))
            r["read_only_s"].append(round(read_s, 3))
            r["read_only_images_per_s"].append(round(n_images / read_s, 1))
            r["final_loss"] = round(float(hist.history["loss"][-1]), 4)
            print(f"  epoch {epoch + 1} {name:16s} train {train_s:6.2f} s ({n_images / train_s:6.0f} images/s) | "
                  f"read only {read_s:6.2f} s ({n_images / read_s:7.0f} images/s)", flush=True)
    return out


def _later(values: list[float]) -> float:
    return float(np.mean(values[1:] if len(values) > 1 else values))


def markdown(results, args, source):
    lines = [f"tf.data input pipelines: {args.n} PNG cells ({source}), {args.orig} px originals -> {args.size} px, "
             f"batch {args.batch}, small_cnn, {args.epochs} epochs, {os.cpu_count()} CPU cores, no GPU; "
             "images/s per epoch (training, and reading the pipeline alone)",
             "",
             "| pipeline | one-time load (s) | " + " | ".join(f"train epoch {e + 1}" for e in range(args.epochs))
             + " | " + " | ".join(f"read epoch {e + 1}" for e in range(args.epochs))
             + " | course speed-up, train epochs 2+ | course speed-up, read epochs 2+ |",
             "|---|---:|" + "---:|" * (2 * args.epochs) + "---:|---:|"]
    course = results["course"]
    for name, r in results.items():
        if name == "course":
            ratios = "- | -"
        else:
            ratios = (f"{_later(course['images_per_s']) / _later(r['images_per_s']):.1f}x | "
                      f"{_later(course['read_only_images_per_s']) / _later(r['read_only_images_per_s']):.1f}x")
        lines.append(f"| {name} | {r['one_time_load_s']:.2f} | " + " | ".join(f"{v:.0f}" for v in r["images_per_s"])
                     + " | " + " | ".join(f"{v:.0f}" for v in r["read_only_images_per_s"]) + f" | {ratios} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.epochs < 1 or args.n < args.batch:
        raise cu.CourseError("need at least 1 epoch and at least one full batch of images")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = cu.runtime.import_tensorflow()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"writing {args.n} PNG files at {args.orig} px ...", flush=True)
        paths, labels, source = write_pngs(Path(tmp) / "cell_images", args.n, args.orig)
        pipelines = {name: make(paths, labels, args) for name, make in (
            ("course", course_pipeline), ("naive map", naive_map_pipeline),
            ("naive generator", naive_generator_pipeline))}
        results = measure(pipelines, len(paths), args)
    table = markdown(results, args, source)
    print()
    print(table)
    summary = {
        "benchmark": "tf_pipeline", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "tensorflow": tf.__version__, "device": cu.runtime.tf_device()},
        "settings": {"n_images": args.n, "original_px": args.orig, "image_size": args.size, "batch_size": args.batch,
                     "epochs": args.epochs, "model": "course_utils.models.keras_models.small_cnn", "data_source": source},
        "pipelines": results,
        "speedup_train_epochs_2plus": {
            name: round(_later(results["course"]["images_per_s"]) / _later(r["images_per_s"]), 2)
            for name, r in results.items() if name != "course"},
        "speedup_read_epochs_2plus": {
            name: round(_later(results["course"]["read_only_images_per_s"]) / _later(r["read_only_images_per_s"]), 2)
            for name, r in results.items() if name != "course"},
        "markdown": table,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
