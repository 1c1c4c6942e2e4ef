"""A project's report, as PNG files and one HTML page in ``<project>/.course/report/``.

    cu.project.write_report(store)      # command line: course-project report FOLDER

What it shows: each round's loss and validation curves (read back from its history CSV), the validation score
against the number of labels across rounds, the hold-out's ROC and precision-recall curves (once it has been
evaluated), and Grad-CAM maps of the latest model on a sample of labelled hold-out images, through the course's
``xai``. Every figure has a title and labelled axes; nothing here looks at the hold-out a second time.
"""
from __future__ import annotations

import csv
import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..active.labels import label_bits
from ..runtime import CourseError

__all__ = ["write_report"]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.close(fig)
    return path


def _rounds(folder: Path) -> list[dict[str, str]]:
    path = folder / "rounds.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _labels_curve(rows: list[dict[str, str]], path: Path, tag: str = "") -> Path | None:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    metric = next((m for m in ("val_auc", "val_accuracy", "val_loss") if rows and rows[0].get(m)), None)
    if metric is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    n = [int(r["n_labels"]) for r in rows]
    v = [float(r[metric]) for r in rows]
    ax.plot(n, v, "o")                  # no line: each round validates on its own, larger split
    for r, x, y in zip(rows, n, v):
        ax.annotate(f"round {r['round']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    name = {"val_auc": "validation ROC-AUC", "val_accuracy": "validation accuracy", "val_loss": "validation loss"}
    ax.set_xlabel("labelled images used for training")
    ax.set_ylabel(f"{name[metric]} (kept epoch)")
    ax.set_title(f"{name[metric]} per round{tag}, each on its own validation split\n(a larger split each round: "
                 "not a like-for-like comparison)", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _holdout_curves(store: Any, data: Any, path: Path, tag: str = "") -> Path:
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve  # noqa: PLC0415

    y, probs = np.asarray(data["labels"]), np.asarray(data["probs"])
    if store.label_names is not None:                      # multi-label: one curve per yes/no label
        k = len(store.label_names)
        truth = label_bits(y, k)
        curves = {name: (truth[:, j], probs[:, j]) for j, name in enumerate(store.label_names)}
    else:                                                  # one class per image: each class against the rest
        curves = {name: ((y == c).astype(int), probs[:, c]) for c, name in enumerate(store.class_names)}
        if len(curves) == 2:
            curves = {store.class_names[1]: curves[store.class_names[1]]}
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(9, 3.8))
    for name, (t, s) in curves.items():
        if t.min() == t.max():
            continue                                       # one class only: no curve to draw
        fpr, tpr, _ = roc_curve(t, s)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(t, s):.2f}; {int(t.sum())} yes of {len(t)})")
        prec, rec, _ = precision_recall_curve(t, s)
        pr_ax.plot(rec, prec, label=f"{name} (AP {average_precision_score(t, s):.2f}; base rate {t.mean():.2f})")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"hold-out ROC{tag}")
    pr_ax.set(xlabel="recall", ylabel="precision", title="hold-out precision-recall")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


MIN_CAM_SIDE = 8   # a Grad-CAM map coarser than 8 x 8 cannot show where a model looks (06 measured it)


def _gradcam(store: Any, result: Any, path: Path, n: int, tag: str = "") -> Path | str | None:
    """The Grad-CAM figure, or a sentence saying why it was left out (a map too coarse to judge)."""
    from ..data import augment  # noqa: PLC0415
    from ..data.loaders import read_image  # noqa: PLC0415
    from ..teaching import plots  # noqa: PLC0415
    from ..xai import methods as xai  # noqa: PLC0415
    from .cycle import file_path  # noqa: PLC0415

    labels = store.labels("holdout")
    gone = set(store.unreadable())
    ids = [i for i in sorted(labels) if i not in gone][:n]
    if not ids or result.info is None or not result.info.cam_layer:
        return None
    raw = np.stack([read_image(file_path(store, r), size=result.image_size) for r in store.refs(ids)])
    tf = augment.eval_transform(result.image_size)
    x = np.stack([tf(im).numpy() for im in raw])
    target = None if result.task != "multi-label" else 0
    h, w = _cam_map_size(result, x[:1])
    if min(h, w) < MIN_CAM_SIDE:                     # quadrants, not places: nothing a reader could judge
        return f"Grad-CAM left out: at --image-size {result.image_size} the model's last feature map is {h} x {w}, " \
               f"too coarse to say where it looks (train at a size that gives {MIN_CAM_SIDE} x {MIN_CAM_SIDE} or more)."
    maps = xai.grad_cam(result.model, x, target, layer=result.info.cam_layer)
    titles = [f"id {i}: {store.class_names[labels[i]]}" for i in ids]
    fig = plots.heatmap_overlay(raw, maps, titles=titles, n=len(ids), ncols=min(4, len(ids)),
                                title=f"Grad-CAM of round {result.round} on labelled hold-out images{tag}"
                                + (f" (label '{store.label_names[0]}')" if target == 0 else " (predicted class)")
                                + f", from a {h} x {w} map")
    return _save(fig, path)


def _cam_map_size(result: Any, x: np.ndarray) -> tuple[int, int]:
    """The Grad-CAM layer's own map size (before it is scaled up to the image): what the map can resolve."""
    import torch  # noqa: PLC0415

    from ..models.torch_models import cam_layer  # noqa: PLC0415

    seen: list = []
    hook = cam_layer(result.model, result.info).register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            dev = next(result.model.parameters()).device
            result.model.eval()(torch.as_tensor(x).to(dev))
    finally:
        hook.remove()
    return int(seen[0][-2]), int(seen[0][-1])


def write_report(store: Any, *, output_dir: str | os.PathLike | None = None, gradcam_images: int = 8,
                 source: str | None = None) -> Path:
    """Write the report's figures and ``index.html`` into ``<project>/.course/report/``; returns the page.
    ``source="stand-in"`` marks every figure and the page as stand-in results (a demo folder)."""
    from ..teaching import plots  # noqa: PLC0415
    from . import cycle  # noqa: PLC0415

    folder = Path(output_dir) if output_dir is not None else cycle.project_dir(store)
    out = folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = _rounds(folder)
    if not rows:
        raise CourseError(f"no trained round in {folder} yet: train one first (course-project train ...), then "
                          "ask for the report.")
    figures: list[tuple[str, Path]] = []
    histories = {f"round {r['round']}": folder / f"history_round{r['round']}.csv" for r in rows
                 if (folder / f"history_round{r['round']}.csv").exists()}
    if histories:
        header = next(iter(histories.values())).read_text().splitlines()[0].split(",")
        metrics = ["loss"] + [m for m in ("auc", "accuracy") if f"val_{m}" in header][:1]
        figures.append(("Training curves", _save(plots.training_curves(histories, metrics=metrics,
                                                                       title="Training curves per round",
                                                                       source=source),
                                                 out / "training_curves.png")))
    tag = plots.source_suffix(source)
    labels_png = _labels_curve(rows, out / "labels_vs_score.png", tag)
    if labels_png:
        figures.append(("Validation score against labels", labels_png))
    latest = max(int(r["round"]) for r in rows)
    held = folder / f"holdout_round{latest}.npz"
    if held.exists():
        with np.load(held) as data:
            figures.append(("Hold-out ROC and precision-recall", _holdout_curves(store, data, out / "holdout_curves.png",
                                                                                  tag)))
    result = cycle.load_round(store, latest, output_dir=output_dir)
    cam = _gradcam(store, result, out / "gradcam.png", gradcam_images, tag)
    notes = []
    if isinstance(cam, Path):
        figures.append(("Grad-CAM on hold-out images", cam))
    elif cam:
        notes.append(cam)
        (out / "gradcam.png").unlink(missing_ok=True)      # an older, coarser figure must not linger
    c = store.counts()
    summary = (f"{store.mode} project, classes {', '.join(store.class_names)}. {c['labelled']} of {c['pool']} pool "
               f"images labelled, {len(store.labels('holdout'))} of {c['holdout']} hold-out images labelled; "
               f"{len(rows)} round(s); hold-out evaluated {store.holdout_evaluations()} time(s)"
               + ("" if held.exists() else " (not yet for the latest round: no hold-out curves)") + ".")
    body = "".join(f"<h2>{html.escape(t)}</h2><img src='{html.escape(p.name)}' style='max-width:100%'>"
                   for t, p in figures)
    page = out / "index.html"
    body += "".join(f"<p><i>{html.escape(n)}</i></p>" for n in notes)
    if source == "stand-in":
        summary = ("STAND-IN DATA: generated images, so every number here shows that the code works, not how well "
                   "the method does. " + summary)
    page.write_text(f"<!doctype html><meta charset='utf-8'><title>Project report</title><h1>Project report</h1>"
                    f"<p>{html.escape(summary)}</p>{body}\n", encoding="utf-8")
    return page
