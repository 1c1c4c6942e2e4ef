"""Figures the notebooks share. Every function returns the matplotlib ``Figure`` and gives it a
title and labelled axes, so a figure shown on a projector or saved to ``build/`` explains itself.
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np


def _plt():
    """matplotlib.pyplot, imported on first use (headless machines get the Agg backend by default)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def source_suffix(source: str | None) -> str:
    """Suffix that marks a figure made from stand-in data."""
    return " [stand-in data]" if source == "stand-in" else ""


def image_grid(images: np.ndarray, labels: Sequence | np.ndarray | None = None, *,
               class_names: Sequence[str] | None = None, n: int = 16, ncols: int = 8,
               title: str = "Sample images", source: str | None = None, seed: int | None = 0,
               xlabel: str = "images (random sample)"):
    """Show up to ``n`` images (uint8 or float, NHWC or NHW) with their class names as captions.

    Multi-label rows are captioned with the names of the positive labels.
    """
    plt = _plt()
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be N x H x W (x C); got shape {images.shape}")
    count = min(n, len(images))
    if count == 0:
        raise ValueError("image_grid got no images to show")
    idx = np.arange(len(images))
    if seed is not None and len(images) > count:
        idx = np.random.default_rng(seed).choice(len(images), size=count, replace=False)
    idx = idx[:count]
    ncols = max(1, min(ncols, count))
    nrows = int(np.ceil(count / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 2.3 * nrows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx):
        img = images[i]
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        if labels is not None:
            # wrap long class names (PathMNIST's) so neighbouring captions do not run into each other
            ax.set_title(textwrap.fill(_caption(np.asarray(labels)[i], class_names), 20), fontsize=7)
    fig.suptitle(title + source_suffix(source))
    fig.supxlabel(xlabel, fontsize=8)
    fig.tight_layout()
    return fig


def _caption(label, class_names: Sequence[str] | None) -> str:
    label = np.asarray(label)
    if label.ndim == 0 or label.size == 1:
        k = int(label.reshape(-1)[0])
        return class_names[k] if class_names is not None and k < len(class_names) else str(k)
    on = np.flatnonzero(label)
    if class_names is not None:
        names = [class_names[k] for k in on]
    else:
        names = [str(k) for k in on]
    return ", ".join(names)[:28] or "none"


def class_balance(counts: dict[str, int] | Sequence[int], *, title: str = "Class balance",
                  source: str | None = None, ax=None):
    """Bar chart of images per class, with each bar's count and share written on it."""
    plt = _plt()
    if not isinstance(counts, dict):
        counts = {str(i): int(c) for i, c in enumerate(counts)}
    names, values = list(counts), np.array(list(counts.values()), dtype=float)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.2))
    else:
        fig = ax.figure
    bars = ax.bar(range(len(names)), values, color="tab:blue")
    total = values.sum() or 1.0
    for bar, v in zip(bars, values):
        ax.annotate(f"{int(v)}\n{v / total:.0%}", (bar.get_x() + bar.get_width() / 2, v),
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.set_ylim(0, values.max() * 1.25 if len(values) else 1)
    ax.set_title(title + source_suffix(source))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- training curves, confusion, ROC
# --------------------------------------------------------------------------- heat maps (course_utils.xai)
def _display_image(img) -> np.ndarray:
    """One image as matplotlib shows it: H x W (grey) or H x W x 3, floats scaled into [0, 1]."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)                                  # C x H x W -> H x W x C
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.dtype == np.uint8:
        return img
    img = img.astype(np.float64)
    lo, hi = img.min(), img.max()
    return img if lo >= 0 and hi <= 1 else (img - lo) / (hi - lo + 1e-8)


def heatmap_overlay(images, maps, *, titles: Sequence[str] | None = None, boxes=None, alpha: float = 0.45,
                    cmap: str = "jet", n: int = 12, ncols: int = 6, title: str = "Heat maps",
                    source: str | None = None):
    """Each image with its heat map (``[N, H, W]``, 0 = cold, 1 = hot) laid over it.

    ``boxes``: optional ``(x0, y0, x1, y1)`` per image (``None`` to skip one), drawn in white.
    """
    plt = _plt()
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    images, maps = np.asarray(images), np.asarray(maps)
    if maps.ndim != 3 or len(maps) != len(images):
        raise ValueError(f"maps must be [N, H, W] with one map per image; got {maps.shape} for {len(images)} images")
    count = min(n, len(images))
    if count == 0:
        raise ValueError("heatmap_overlay got no images to show")
    ncols = max(1, min(ncols, count))
    nrows = int(np.ceil(count / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols + 0.8, 2.0 * nrows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    shown = None
    for i, ax in zip(range(count), axes.ravel()):
        img = _display_image(images[i])
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        shown = ax.imshow(maps[i], cmap=cmap, alpha=alpha, vmin=0, vmax=1,
                          extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
        if boxes is not None and boxes[i] is not None:
            x0, y0, x1, y1 = boxes[i]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.5, ec="white"))
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=7)
    fig.suptitle(title + source_suffix(source))
    fig.supxlabel("image pixels (x); heat map: relevance for the explained class", fontsize=8)
    fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label="relevance (0-1)")
    return fig


def attribution_grid(images, maps_by_method: dict, *, row_titles: Sequence[str] | None = None,
                     alpha: float = 0.5, cmap: str = "jet", n: int = 4, title: str = "Attribution methods side by side",
                     source: str | None = None, signed: bool = False):
    """Rows: images; columns: the image, then one overlay per method (``{"Grad-CAM": maps, ...}``).

    ``signed=True`` for attributions that can be negative (integrated gradients with ``reduce=False``, summed over
    channels): each map is divided by its largest ``|value|`` and drawn red (raises the score) to blue (lowers it)."""
    plt = _plt()
    images = np.asarray(images)
    count = min(n, len(images))
    if count == 0 or not maps_by_method:
        raise ValueError("attribution_grid needs at least one image and one method")
    for name, m in maps_by_method.items():
        if np.asarray(m).ndim != 3 or len(m) < count:
            raise ValueError(f"maps for {name!r} must be [N, H, W] with one map per image; got {np.shape(m)}")
    cols = 1 + len(maps_by_method)
    fig, axes = plt.subplots(count, cols, figsize=(2.0 * cols, 2.0 * count + 0.5), squeeze=False)
    overlay = None
    for r in range(count):
        img = _display_image(images[r])
        axes[r, 0].imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[r, 0].set_ylabel(row_titles[r] if row_titles is not None else f"image {r}", fontsize=8)
        for c, (name, m) in enumerate(maps_by_method.items(), start=1):
            axes[r, c].imshow(img, cmap="gray" if img.ndim == 2 else None)
            shown = np.asarray(m, dtype=float)[r]
            if signed:
                shown = shown / max(float(np.abs(shown).max()), 1e-12)
            overlay = axes[r, c].imshow(shown, cmap="RdBu_r" if signed else cmap, alpha=alpha,
                                        vmin=-1 if signed else 0, vmax=1,
                                        extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title + source_suffix(source))
    fig.supxlabel("columns: attribution method" + (" (red raises the explained class's score, blue lowers it)"
                                                    if signed else " (hot = relevant to the explained class)"),
                  fontsize=8)
    fig.tight_layout()
    fig.colorbar(overlay, ax=axes[:, 1:].ravel().tolist(), shrink=0.8,
                 label="attribution / its largest |value|" if signed else "relevance (each map scaled to 0-1)")
    return fig


def deletion_insertion_curves(result, *, title: str = "Deletion and insertion", source: str | None = None):
    """The mean class-probability curves of :func:`course_utils.xai_faithfulness.deletion_insertion`, map vs
    random map."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, mode, better in ((axes[0], "deletion", "lower"), (axes[1], "insertion", "higher")):
        for which, style in (("", "-"), ("_random", "--")):
            curve = getattr(result, f"{mode}_curve{which}")
            auc = float(np.mean(getattr(result, f"{mode}{which}")))
            label = ("heat map" if not which else "random map") + f" (AUC {auc:.3f})"
            ax.plot(result.fractions, curve, style, label=label)
        ax.set_xlabel(f"fraction of pixels {'removed' if mode == 'deletion' else 'revealed'} (most relevant first)")
        ax.set_ylabel("probability of the explained class")
        ax.set_title(f"{mode} ({better} AUC is better)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title + source_suffix(source))
    fig.tight_layout()
    return fig


def randomization_curve(result, *, title: str = "Model-randomisation sanity check", source: str | None = None,
                        ax=None, reference: float | None = None, reference_label: str = "image-only reference",
                        ylabel: str = "Spearman rank correlation\nwith the trained model's maps"):
    """Mean (and min-max band of) Spearman correlation with the trained model's maps, per randomisation step;
    ``reference`` draws a dotted line (e.g. how much an edge map of the image shares with the trained maps)."""
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(result.steps) + 2), 3.4))
    else:
        fig = ax.figure
    steps = np.arange(len(result.steps))
    ax.plot(steps, result.correlation, "o-", label="mean over images")
    ax.fill_between(steps, result.per_image.min(axis=1), result.per_image.max(axis=1), alpha=0.2,
                    label="range over the images")
    ax.axhline(0, color="grey", lw=0.8)
    if reference is not None:
        ax.axhline(reference, color="tab:red", ls=":", label=f"{reference_label} ({reference:+.2f})")
    ax.set_xticks(steps)
    ax.set_xticklabels(result.steps, rotation=30, ha="right", fontsize=7)
    ax.set_xlabel("layers re-initialised, from the output down (cumulative)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.05 if np.nanmin(result.per_image) >= 0 else -1.05, 1.05)   # |rho| needs no negative half
    ax.set_title(title + source_suffix(source))
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)      # the curve starts top left, at 1
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def learning_curves(table, metric: str = "accuracy", *, x: str = "n_labelled", hue: str = "strategy",
                    seed_col: str = "seed", title: str = "Active learning: learning curves",
                    reference: float | None = None, source: str | None = None, ax=None):
    """Mean ``metric`` against ``x`` per ``hue`` (one line per strategy), with a min-max band over seeds.

    ``table`` is a tidy DataFrame (one row per strategy x seed x round, as ``active.simulate`` returns);
    ``reference`` draws a dashed line, e.g. the full-data accuracy.
    """
    plt = _plt()
    for col in (metric, x, hue):
        if col not in table.columns:
            raise ValueError(f"learning_curves: the table has no column {col!r}; it has {', '.join(table.columns)}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
    else:
        fig = ax.figure
    n_seeds = table[seed_col].nunique() if seed_col in table.columns else 1
    for name, g in table.groupby(hue, sort=False):
        stats = g.groupby(x)[metric].agg(["mean", "min", "max"]).sort_index()
        line, = ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=str(name))
        if n_seeds > 1:
            ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.15)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"all labels ({reference:.3f})")
    ax.set_xlabel("labelled images" if x == "n_labelled" else x)
    ax.set_ylabel(f"test {metric}")
    band = f"\nmean over {n_seeds} seeds, band: min-max" if n_seeds > 1 else ""
    ax.set_title(title + source_suffix(source) + band, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _as_histories(histories) -> dict:
    """Normalise the many ways of naming runs into ``{name: History}``."""
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from ..train.history import History  # noqa: PLC0415
    from ..runtime import CourseError  # noqa: PLC0415

    def one(item, name):
        if isinstance(item, History):
            return item
        if isinstance(item, (str, os.PathLike)):
            return History.from_csv(item)
        if hasattr(item, "history") and isinstance(item.history, dict):  # keras.callbacks.History
            return History.from_keras(item)
        raise CourseError(f"training_curves: run {name!r} is a {type(item).__name__}; pass a History, "
                          "a Keras History, or the path of a history CSV")

    if isinstance(histories, dict):
        return {str(k): one(v, k) for k, v in histories.items()}
    if isinstance(histories, (list, tuple)):
        out = {}
        for i, item in enumerate(histories, 1):
            name = Path(item).parent.name or Path(item).stem if isinstance(item, (str, os.PathLike)) else f"run {i}"
            out[name if name not in out else f"{name} ({i})"] = one(item, name)
        return out
    name = Path(histories).parent.name or "run" if isinstance(histories, (str, os.PathLike)) else "run"
    return {name: one(histories, name)}


def training_curves(histories, metrics: Sequence[str] = ("loss", "accuracy"), *,
                    title: str = "Training curves", source: str | None = None):
    """Per-epoch curves of one or several runs: training solid, validation dashed, one colour per run.

    ``histories`` is a History, a Keras History, a history CSV path, a list of those, or a dict
    ``{run name: history}``. One panel per metric; a single legend names the runs and line styles.
    """
    plt = _plt()
    from matplotlib.lines import Line2D  # noqa: PLC0415

    from ..runtime import CourseError  # noqa: PLC0415

    runs = _as_histories(histories)
    if not runs:
        raise CourseError("training_curves got no runs to plot")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    shown = [m for m in metrics if any(m in h or f"val_{m}" in h for h in runs.values())]
    if not shown:
        have = sorted({k for h in runs.values() for k in h.metrics})
        raise CourseError(f"none of the metrics {metrics} is in these histories; they have: {', '.join(have)}")
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown) + 1.8, 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = set()                                                  # which line styles appear: only those in the legend
    for ax, metric in zip(axes[0], shown):
        for i, (name, hist) in enumerate(runs.items()):
            colour = colours[i % len(colours)]
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                if key in hist:
                    ax.plot(hist.epochs, hist[key], style, color=colour, marker="o", ms=3)
                    drawn.add(style)
        ax.xaxis.get_major_locator().set_params(integer=True)      # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[i % len(colours)], lw=2, label=name) for i, name in enumerate(runs)]
    if len(runs) == 1:
        handles = []                          # one run: no colour to name (it used to read "run")
    handles += [Line2D([], [], color="k", ls=style, label=label)
                for style, label in (("-", "training"), ("--", "validation")) if style in drawn]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title + source_suffix(source))
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    return fig


def confusion_matrix(y_true, y_pred, class_names: Sequence[str], *, normalize: str | None = None,
                     title: str = "Confusion matrix", source: str | None = None, ax=None):
    """Confusion matrix (``sklearn.metrics.confusion_matrix``) with counts or rates in each cell.

    ``normalize`` is sklearn's: ``None`` (counts), ``"true"`` (rows sum to 1: recall on the
    diagonal), ``"pred"`` (columns: precision) or ``"all"``.
    """
    plt = _plt()
    from sklearn.metrics import ConfusionMatrixDisplay  # noqa: PLC0415
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix  # noqa: PLC0415

    from ..runtime import CourseError  # noqa: PLC0415

    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if len(y_true) != len(y_pred):
        raise CourseError(f"confusion_matrix: {len(y_true)} labels but {len(y_pred)} predictions; "
                          "predict on every test image (do not drop the last batch)")
    if normalize not in (None, "true", "pred", "all"):
        raise CourseError(f"normalize must be None, 'true', 'pred' or 'all', not {normalize!r}")
    cm = sk_confusion_matrix(y_true, y_pred, labels=list(range(len(class_names))), normalize=normalize)
    if ax is None:
        size = max(3.6, 0.7 * len(class_names) + 2.4)
        fig, ax = plt.subplots(figsize=(size, size * 0.85))
    else:
        fig = ax.figure
    ConfusionMatrixDisplay(cm, display_labels=list(class_names)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=".2f" if normalize else "d",
        xticks_rotation=45 if len(class_names) > 4 else "horizontal")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    suffix = {None: "", "true": " (rows: recall)", "pred": " (columns: precision)", "all": " (share of all)"}
    ax.set_title(title + suffix[normalize] + source_suffix(source))
    fig.tight_layout()
    return fig


def roc_curve(y_true, scores, *, name: str = "model", pos_label: int = 1,
              title: str = "ROC curve", source: str | None = None, ax=None):
    """ROC curve(s) with the AUC in the legend (``sklearn.metrics.roc_curve`` / ``roc_auc_score``).

    ``scores`` is the score of the positive class per sample, an ``N x 2`` probability array
    (column ``pos_label`` is used), or a dict ``{name: scores}`` to overlay several models.
    """
    plt = _plt()
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415
    from sklearn.metrics import roc_curve as sk_roc_curve  # noqa: PLC0415

    from ..runtime import CourseError  # noqa: PLC0415

    y_true = np.asarray(y_true).ravel()
    positive = (y_true == pos_label).astype(int)
    if positive.min() == positive.max():
        raise CourseError("roc_curve needs both classes in y_true (the AUC is undefined with one class); "
                          "use a larger or stratified test set")
    curves = scores if isinstance(scores, dict) else {name: scores}
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.8, 4.4))
    else:
        fig = ax.figure
    for label, s in curves.items():
        s = np.asarray(s, dtype=float)
        if s.ndim == 2:
            s = s[:, pos_label]
        if len(s) != len(y_true):
            raise CourseError(f"roc_curve: {len(y_true)} labels but {len(s)} scores for {label!r}")
        fpr, tpr, _ = sk_roc_curve(positive, s)
        ax.plot(fpr, tpr, lw=2, label=f"{label} (AUC = {roc_auc_score(positive, s):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance (AUC = 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title + source_suffix(source))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
