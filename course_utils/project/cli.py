"""The command line for a labelling project on a folder of images (``course-project``, or
``python -m course_utils.project``). Runs in Colab as ``!course-project ...``.

    course-project init  my_images/ --classes benign malignant       # or --labels "tool visible" magnified
    course-project add   my_images/                                  # new images only
    course-project status my_images/
    course-project duplicates my_images/                             # near-copies, and those across the split
    course-project next  my_images/                                  # what the next session shows first
    course-project train my_images/ --epochs 6 --batch-size 16       # then predicts the unlabelled images
    course-project predict my_images/                                # predict again (after --no-predict, a crash)
    course-project evaluate my_images/                               # the hold-out, once
    course-project report my_images/                                 # figures and a page in .course/report/
    course-project heatmap my_images/ slide.tif                      # a round's model over one large image
    course-project label my_images/ [--holdout]                      # the keyboard labeller, in JupyterLab

Why JupyterLab for `label`, not a page of our own: it is the keyboard labeller of notebook 05, the one the
browser tests drive (keys, undo, skip, 33 ms from key to image), with no second front end to keep in step.

Exit codes: 0 done, 2 a usage error (argparse), 3 bad input or a state that needs a person (the message says
what to do), 130 interrupted (Ctrl-C; labels and finished rounds are kept).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..runtime import CourseError

__all__ = ["main", "parser"]

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 3, 130


def parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per step (each with --help)."""
    p = argparse.ArgumentParser(prog="course-project", description="A labelling-training loop on a folder of "
                                "your own images: label with the keys, train, let the model pick the next batch, "
                                "evaluate the hold-out once.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("folder", type=Path, help="the folder of images (searched recursively)")
        c.add_argument("--db", type=Path, default=None, help="the label store (default: FOLDER/.course/labels.db)")
        return c

    init = command("init", "make a project on a folder (or add its new images): one class per image "
                           "(--classes) or up to 3 yes/no labels (--labels)")
    mode = init.add_mutually_exclusive_group(required=True)
    mode.add_argument("--classes", nargs="+", metavar="NAME", help="class names, one class per image")
    mode.add_argument("--labels", nargs="+", metavar="NAME", help="yes/no label names (multi-label, at most 3)")
    command("add", "add the folder's new images to its project (copies and known images are skipped)")
    status = command("status", "how many images, labels, rounds and hold-out evaluations the project has")
    status.add_argument("--output-dir", type=Path, default=None, help="where rounds are kept (default: beside --db)")
    dup = command("duplicates", "list pairs of images that are probably the same picture (re-saved, resized, "
                                "turned), and which of them sit on both sides of the pool / hold-out split")
    dup.add_argument("--max-rms", type=float, default=3.0, help="largest grey-level difference of the 16 x 16 "
                                                                "thumbnails that still counts as a copy [3.0]")
    nxt = command("next", "list the images the next labelling session would show first, with their scores")
    nxt.add_argument("--strategy", default=None, help="entropy (default once there are predictions), confident, "
                                                        "random, margin, least_confidence, coreset, badge")
    nxt.add_argument("--batch-size", type=int, default=8, help="how many [8]")
    nxt.add_argument("--output-dir", type=Path, default=None, help="where rounds (and coreset's and badge's "
                                                                   "embeddings) are kept (default: beside --db)")
    train = command("train", "train a new round on the labels so far, then predict the unlabelled images")
    train.add_argument("--model", choices=["lite0", "b0", "small_cnn"], default="lite0",
                       help="EfficientNet-Lite0 with ImageNet weights that ship with the course (default), "
                            "EfficientNet-B0 (torchvision's weights, downloaded; offline: Lite0, and it says so), "
                            "or a small CNN (quick, CPU)")
    train.add_argument("--epochs", type=int, default=6, help="epochs in all (lite0: a third on the head) [6]")
    train.add_argument("--batch-size", type=int, default=16, help="images per batch [16]")
    train.add_argument("--image-size", type=int, default=128, help="pixels per side the images are read at [128]")
    train.add_argument("--output-dir", type=Path, default=None, help="where rounds are kept (default: beside --db)")
    train.add_argument("--seed", type=int, default=0, help="the validation split's and training's seed [0]")
    train.add_argument("--no-predict", action="store_true", help="skip predicting the unlabelled images")
    train.add_argument("--no-zoom", action="store_true", help="no random zoom (resized crop) in training: for "
                                                              "labels about scale, e.g. 'magnified?'")
    train.add_argument("--no-colour", action="store_true", help="no brightness/contrast jitter: for labels about "
                                                                "colour or staining")
    train.add_argument("--evaluate-holdout", action="store_true", help="then evaluate the hold-out (once)")
    train.add_argument("--again", action="store_true", help="allow a second look at the hold-out")
    pred = command("predict", "predict the unlabelled images with a round's model: after `train --no-predict`, "
                              "or to finish a prediction pass that was interrupted")
    pred.add_argument("--round", type=int, default=None, help="the round whose model to use (default: the latest)")
    pred.add_argument("--batch-size", type=int, default=16, help="images per batch [16]")
    pred.add_argument("--output-dir", type=Path, default=None, help="where rounds are kept (default: beside --db)")
    ev = command("evaluate", "evaluate a round's model on the labelled hold-out images, once")
    ev.add_argument("--round", type=int, default=None, help="the round to use (default: the latest)")
    ev.add_argument("--output-dir", type=Path, default=None, help="where rounds are kept (default: beside --db)")
    ev.add_argument("--again", action="store_true", help="allow a second look at the hold-out")
    lab = command("label", "label with the keys in JupyterLab: writes a labelling notebook beside the store and "
                           "opens it (the same keyboard labeller as notebook 05; 1-9 label, u undo, n skip)")
    lab.add_argument("--holdout", action="store_true", help="a blind hold-out session: random order, no model shown")
    lab.add_argument("--strategy", default=None, help="the queue: entropy (default once there are predictions), "
                                                        "confident (check the surest), random, margin, coreset, "
                                                        "badge (these two from the round's embeddings), ...")
    lab.add_argument("--batch-size", type=int, default=8, help="images per queue [8]")
    lab.add_argument("--no-launch", action="store_true", help="only write the notebook and say how to open it")
    lab.add_argument("--port", type=int, default=None, help="JupyterLab's port (default: its own choice)")
    heat = command("heatmap", "slide a round's model over one large image (a slide, a scan) and save its "
                              "probability map over the image as a PNG")
    heat.add_argument("image", type=Path, help="the large image file")
    heat.add_argument("--round", type=int, default=None, help="the round whose model to use (default: the latest)")
    heat.add_argument("--target", default=None, help="the class (one class per image) or yes/no label to map "
                                                      "(default: the second class, or the first label)")
    heat.add_argument("--stride", type=int, default=None, help="pixels between windows (default: half a window)")
    heat.add_argument("--max-side", type=int, default=4096, help="shrink a larger image to this many pixels on "
                                                                 "its longer side first [4096]")
    heat.add_argument("--out", type=Path, default=None, help="the PNG to write (default: beside the rounds, "
                                                             "heatmap_<image>.png)")
    heat.add_argument("--output-dir", type=Path, default=None, help="where rounds are kept (default: beside --db)")
    rep = command("report", "write the project's figures and an HTML page (curves, labels per round, hold-out "
                            "ROC/PR once evaluated, Grad-CAM on hold-out images)")
    rep.add_argument("--output-dir", type=Path, default=None, help="where rounds are kept (default: beside --db)")
    return p


def _store(args: argparse.Namespace):
    from ..active.labels import LabelStore  # noqa: PLC0415
    from .folder import STORE_NAME  # noqa: PLC0415

    path = args.db or args.folder / ".course" / STORE_NAME
    if not path.exists():
        raise CourseError(f"no project at {path}: make one with `course-project init {args.folder} --classes ...`.")
    return LabelStore(path)


def _print_report(report: dict) -> None:
    print(f"hold-out: {report['n']} labelled image(s), round {report['round']}, evaluation number "
          f"{report['evaluations']}" + (" (looked at more than once: optimistic)" if report["evaluations"] > 1 else ""))
    if "per_label" in report:
        for name, r in report["per_label"].items():
            print(f"  {name}: accuracy {r['accuracy']:.3f}, ROC-AUC {r['auc']:.3f} ({r['positives']} yes); "
                  f"confusion [[no-no, no-yes], [yes-no, yes-yes]] (true, said): {report['confusion_matrix'][name]}")
        print(report["classification_report"])
    else:
        print(f"  accuracy {report['accuracy']:.3f}, ROC-AUC {report['auc']:.3f}")
        print(f"  confusion matrix (rows true, columns predicted): {json.dumps(report['confusion_matrix'])}")
        print(report["classification_report"])


def label_notebook(store, *, blind: bool = False, strategy: str | None = None, batch_size: int = 8) -> Path:
    """Write ``label.ipynb`` beside the store: one cell that opens it (by a path relative to the notebook, so
    the project can move) and shows the keyboard labeller. Returns its path."""
    import nbformat  # noqa: PLC0415

    if strategy is None:
        strategy = "entropy" if store.counts()["predicted"] else "random"
    what = "the hold-out, blind (random order, no model shown)" if blind else f"the pool, {strategy} first"
    intro = (f"# Label {what}\n\nClick the labeller once, then: **1-{store.n_classes}** label "
             f"({', '.join(f'{i + 1} = {n}' for i, n in enumerate(store.class_names))}), **u** undoes your last "
             "label, **n** skips. Every key is saved at once; close the tab whenever you like.")
    code = ("import course_utils as cu\n"
            "from course_utils.active.labels import LabelStore\n\n"
            f"store = LabelStore({Path(store.path).name!r})\n"
            f"labeller = cu.labeller.Labeller(store, strategy={strategy!r}, batch_size={int(batch_size)}"
            + (", blind=True" if blind else "")
            + (", embeddings=cu.project.load_embeddings(store)" if strategy in ("coreset", "badge") else "")
            + ")\nlabeller.display()")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(intro),
                                         nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = Path(store.path).parent / "label.ipynb"
    nbformat.write(nb, path)
    return path


def _heatmap(store, args: argparse.Namespace) -> None:
    """The ``heatmap`` subcommand: whole-image inference with a round's patch classifier, saved as a PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from ..data.loaders import read_image  # noqa: PLC0415
    from . import cycle, wholeimage  # noqa: PLC0415

    result = cycle.load_round(store, args.round, output_dir=args.output_dir)
    names = store.label_names or store.class_names
    target = args.target or (names[0] if store.label_names else names[min(1, len(names) - 1)])
    if target not in names:
        raise CourseError(f"--target must be one of {names}, not {target!r}.")
    image = read_image(args.image, max_side=args.max_side)
    heat = wholeimage.sliding_heatmap(result.model, image, patch=result.image_size, stride=args.stride,
                                      target=names.index(target), multilabel=result.task == "multi-label",
                                      progress=True)
    out = args.out or (args.output_dir or cycle.project_dir(store)) / f"heatmap_{args.image.stem}.png"
    fig, ax = plt.subplots(figsize=(8, 8 * image.shape[0] / image.shape[1] + 0.5))
    wholeimage.overlay(image, heat, ax=ax, label=f"P({target}), round {result.round}",
                       title=f"{args.image.name}: P({target}) from round {result.round}'s model, "
                             f"{result.image_size} px windows")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"heat map: {out} (P({target}) from {heat.min():.2f} to {heat.max():.2f}; windows of "
          f"{result.image_size} px over {image.shape[1]} x {image.shape[0]} px)")


def run(args: argparse.Namespace) -> int:
    from . import cycle, folder  # noqa: PLC0415

    if args.command == "init":
        store = folder.open_project(args.folder, args.classes, label_names=args.labels, db=args.db)
    elif args.command == "add":
        existing = _store(args)
        names = dict(label_names=existing.label_names) if existing.label_names else dict(class_names=existing.class_names)
        existing.close()
        store = folder.open_project(args.folder, db=args.db, **names)
    else:
        store = _store(args)
    try:
        if args.command == "status":
            c = store.counts()
            print(f"{store.path}: {store.mode}, classes {store.class_names}; {c['labelled']} of {c['pool']} pool "
                  f"image(s) labelled, {len(store.labels('holdout'))} of {c['holdout']} hold-out image(s) labelled; "
                  f"{cycle.next_round(store, args.output_dir) - 1} round(s) trained; hold-out evaluated "
                  f"{store.holdout_evaluations()} time(s)")
        elif args.command == "duplicates":
            pairs = folder.near_duplicates(store, max_rms=args.max_rms)
            leaks = [p for p in pairs if p["straddles"]]
            print(f"{len(pairs)} pair(s) of near-copies, {len(leaks)} of them across the pool / hold-out split"
                  + (": remove one file of each (the hold-out is not independent of training otherwise)"
                     if leaks else ""))
            for p in pairs:
                print(f"  {p['a']}\t{p['b']}\trms {p['rms']}" + ("\tACROSS THE SPLIT" if p["straddles"] else ""))
        elif args.command == "next":
            strategy = args.strategy or ("entropy" if store.counts()["predicted"] else "random")
            extra = ({"embeddings": cycle.load_embeddings(store, output_dir=args.output_dir)}
                     if strategy in ("coreset", "badge") else {})
            picked = store.next_batch(strategy, args.batch_size, random_state=0, return_scores=True, claim=False,
                                      **extra)
            print(f"next {len(picked)} image(s) by {strategy} (id, score, file):")
            for i, score in picked:
                print(f"  {i}\t{score:.4f}\t{store.refs([i])[0]}")
        elif args.command == "train":
            options = {**({"crop_scale": None} if args.no_zoom else {}), **({"jitter": 0} if args.no_colour else {})}
            result = cycle.train_round(store, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                                       image_size=args.image_size, seed=args.seed, output_dir=args.output_dir,
                                       augment_options=options or None)
            print(f"round {result.round}: trained on {result.n_labels} labels; model {result.model_path}, history "
                  f"{result.history_path}")
            if not args.no_predict:
                n = cycle.predict_pool(store, result, batch_size=args.batch_size, output_dir=args.output_dir)
                print(f"predicted {n} unlabelled image(s): the next labelling session shows the least sure first")
            if args.evaluate_holdout:
                _print_report(cycle.evaluate_holdout(store, result, again=args.again, output_dir=args.output_dir))
        elif args.command == "predict":
            result = cycle.load_round(store, args.round, output_dir=args.output_dir)
            n = cycle.predict_pool(store, result, batch_size=args.batch_size, output_dir=args.output_dir)
            print(f"predicted {n} unlabelled image(s) with round {result.round}: the next labelling session shows "
                  "the least sure first")
        elif args.command == "evaluate":
            result = cycle.load_round(store, args.round, output_dir=args.output_dir)
            _print_report(cycle.evaluate_holdout(store, result, again=args.again, output_dir=args.output_dir))
        elif args.command == "label":
            path = label_notebook(store, blind=args.holdout, strategy=args.strategy, batch_size=args.batch_size)
            command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={path.parent}", path.name,
                       *([f"--port={args.port}"] if args.port else [])]
            if args.no_launch:
                print(f"labelling notebook: {path}\nopen it with: {' '.join(command)}")
                return 0
            import subprocess  # noqa: PLC0415

            print(f"opening {path} in JupyterLab (Ctrl-C here stops it; every label is already saved)")
            return subprocess.call(command)
        elif args.command == "heatmap":
            _heatmap(store, args)
        elif args.command == "report":
            from .report import write_report  # noqa: PLC0415

            print(f"report: {write_report(store, output_dir=args.output_dir)}")
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (a CourseError prints its message, not a traceback)."""
    args = parser().parse_args(argv)
    try:
        return run(args)
    except CourseError as exc:
        print(f"course-project {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"course-project {args.command}: interrupted; labels and finished rounds are kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
