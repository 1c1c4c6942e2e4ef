"""One round of a labelling project: train on the store's labels, then predict every unlabelled image.

    result = cu.project.train_round(store)          # the course's recipe from 04, on the labels so far
    cu.project.predict_pool(store, result)          # confidences (and embeddings) for the next session

Training uses the recipe of notebooks 04 and 04b: EfficientNet-Lite0 (ImageNet weights, offline) trained in two phases
(head, then everything), focal loss (softmax focal for one class per image, sigmoid focal per label for
multi-label; no alpha: 04 showed alpha 0.25 costs the rare class its recall), AdamW, a cosine schedule, gradient
clipping and 04's augmentations, on a seeded stratified validation split of the labelled pool (the hold-out is
never touched). Images are read from their files in every batch, so memory does not grow with the folder.
Each round's model, history (CSV) and embeddings are kept in the project folder (``.course/``).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..active.labels import label_bits
from ..runtime import CourseError, import_torch, seed_everything

__all__ = ["MIN_PER_CLASS", "FileImages", "RoundResult", "training_targets", "train_round", "predict_pool",
           "evaluate_holdout", "readable", "stream_probabilities", "load_embeddings", "predict_files",
           "load_round", "project_dir", "next_round", "file_path"]

MIN_PER_CLASS = 4   # labels a class (or each side of a yes/no label) needs before a round can train on it


def project_dir(store: Any) -> Path:
    """Where the project's models, histories and embeddings live: beside its label store."""
    return Path(store.path).resolve().parent


def next_round(store: Any, output_dir: str | os.PathLike | None = None) -> int:
    """1 + the last round whose model is in the project folder (or ``output_dir``)."""
    folder = Path(output_dir) if output_dir is not None else project_dir(store)
    found = [int(m.group(1)) for p in (folder / "models").glob("round*.pt")
             if (m := re.fullmatch(r"round(\d+)\.pt", p.name))]
    return max(found, default=0) + 1


def file_path(store: Any, ref: str) -> Path:
    """Where the image file of ``ref`` is: relative refs start at the store's root."""
    root = getattr(store, "root", None)
    return Path(root) / ref if root is not None and not Path(ref).is_absolute() else Path(ref)


class FileImages:
    """A torch Dataset of image files, read (upright, 8-bit, ``size`` x ``size``) when a batch asks for them.

    Without targets each item is ``(image, ok)``: a file that cannot be read gives a black image and
    ``ok=False``, so one broken file never stops a pass over 20,000 (the caller marks it)."""

    def __init__(self, paths: Sequence[Path], targets: Any = None, *, size: int, transform: Any = None):
        self.paths, self.size, self.transform = list(paths), int(size), transform
        self.targets = None if targets is None else np.asarray(targets)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from ..data.loaders import read_image  # noqa: PLC0415

        if self.targets is not None:
            x = read_image(self.paths[i], size=self.size)
            return (self.transform(x) if self.transform is not None else x), self.targets[i]
        try:
            x, ok = read_image(self.paths[i], size=self.size), True
        except CourseError:
            x, ok = np.zeros((self.size, self.size, 3), np.uint8), False
        return (self.transform(x) if self.transform is not None else x), ok


def readable(store: Any, ids: Sequence[int]) -> tuple[list[int], dict[int, str]]:
    """(the ids whose file can be read, ``{id: why not}`` for the others): read once, before a round trains."""
    from ..data.loaders import read_image  # noqa: PLC0415

    good, bad = [], {}
    for i, ref in zip([int(i) for i in ids], store.refs(ids)):
        path = file_path(store, ref)
        try:
            read_image(path, size=8)
            good.append(i)
        except CourseError as exc:      # named by its path in the project (the folder can move; no machine paths)
            bad[i] = f"unreadable: {str(exc).replace(str(path), str(ref))}"
    return good, bad


def training_targets(store: Any, labels: dict[int, int]) -> tuple[np.ndarray, np.ndarray, str]:
    """(ids, targets, task): class indices for one class per image, 0/1 per label for a multi-label store.

    Too few labels is a CourseError that says which class (or label) needs how many more."""
    ids = np.array(sorted(labels), dtype=np.int64)
    y = np.array([labels[i] for i in ids], dtype=np.int64)
    if store.label_names is not None:
        k = len(store.label_names)
        bits = label_bits(y, k).astype(np.float32)
        short = []
        for name, yes in zip(store.label_names, bits.sum(0).astype(int).tolist()):
            need = [f"{MIN_PER_CLASS - have} more labelled {side}" for side, have in (("yes", yes), ("no", len(y) - yes))
                    if have < MIN_PER_CLASS]
            if need:
                short.append(f"'{name}' needs {' and '.join(need)}")
        if short:
            raise CourseError(f"too few labels to train: {'; '.join(short)} (each label needs at least "
                              f"{MIN_PER_CLASS} yes and {MIN_PER_CLASS} no). Label more, then train again.")
        return ids, bits, "multi-label"
    counts = np.bincount(y, minlength=store.n_classes)
    short = [f"'{n}' has {c}, needs {MIN_PER_CLASS - c} more" for n, c in zip(store.class_names, counts)
             if c < MIN_PER_CLASS]
    if short:
        raise CourseError(f"too few labels to train: {'; '.join(short)} (at least {MIN_PER_CLASS} per class). "
                          "Label more, then train again.")
    return ids, y, "binary" if store.n_classes == 2 else "multi-class"


@dataclass
class RoundResult:
    """What a round made: its number, the model (and info), its History, and where each file went."""

    round: int
    model: Any
    info: Any
    history: Any
    task: str
    image_size: int
    n_labels: int
    model_path: Path
    history_path: Path
    scores: dict = field(default_factory=dict)      # validation scores of the kept epoch


def _build(model_name: str, n_out: int, pretrained: bool):
    from ..models import torch_models  # noqa: PLC0415

    if model_name == "lite0":
        return torch_models.efficientnet_lite0(n_out, pretrained=pretrained, verbose=False)
    if model_name == "b0":                   # torchvision's weights online; offline it says so and uses Lite0
        return torch_models.efficientnet_b0(n_out, pretrained=pretrained, verbose=True)
    if model_name == "small_cnn":
        return torch_models.small_cnn(n_out, width=16, depth=3)
    raise CourseError(f"model must be 'lite0' (EfficientNet-Lite0, ImageNet weights offline), 'b0' "
                      f"(EfficientNet-B0, ImageNet weights downloaded) or 'small_cnn', not {model_name!r}.")


def train_round(store: Any, *, model: str = "lite0", epochs: int = 6, head_epochs: int | None = None,
                image_size: int = 128, batch_size: int = 16, lr: float = 1e-3, gamma: float = 2.0,
                val_fraction: float = 0.2, seed: int = 0, pretrained: bool = True, progress: bool = True,
                output_dir: str | os.PathLike | None = None, augment_options: dict | None = None) -> RoundResult:
    """Train a model on every labelled pool image of ``store`` (a new round) and save it in the project folder.

    ``epochs`` in all: with ``model="lite0"`` the first ``head_epochs`` (default a third) train the head on the
    frozen backbone, the rest fine-tune everything at a tenth of ``lr``. The best validation epoch is kept.
    ``augment_options`` change 04's augmentations (``augment.train_transform``'s keywords): a label that is about
    scale, colour or orientation must not be augmented away, e.g. ``{"crop_scale": None}`` for "magnified?".
    """
    torch = import_torch()
    from torch.utils.data import DataLoader  # noqa: PLC0415

    from ..data import augment  # noqa: PLC0415
    from ..data.splits import stratified_split  # noqa: PLC0415
    from ..models import final  # noqa: PLC0415
    from ..train import losses, torch_engine, two_phase  # noqa: PLC0415

    labelled = store.labels("pool")
    good, bad = readable(store, sorted(labelled))
    if bad:                                                          # marked, skipped, counted: never a crash
        store.mark_unreadable(bad)
        print(f"{len(bad)} labelled image(s) cannot be read and are left out of this round (e.g. "
              f"{next(iter(bad.values()))})")
    ids, targets, task = training_targets(store, {i: labelled[i] for i in good})
    tr, va, _ = stratified_split(ids, targets, (1 - val_fraction, val_fraction, 0.0), seed=seed)
    paths = dict(zip(ids.tolist(), (file_path(store, r) for r in store.refs(ids))))
    train_tf = augment.train_transform(image_size, **(augment_options or {}))
    eval_tf = augment.eval_transform(image_size)
    g = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(FileImages([paths[i] for i in tr.images], tr.labels, size=image_size,
                                         transform=train_tf), batch_size=batch_size, shuffle=True, generator=g)
    val_loader = DataLoader(FileImages([paths[i] for i in va.images], va.labels, size=image_size,
                                       transform=eval_tf), batch_size=batch_size)
    n_out = len(store.label_names) if task == "multi-label" else store.n_classes
    seed_everything(seed)                            # the new head's first weights too: same labels, same model
    net, info = _build(model, n_out, pretrained)
    if task == "multi-label":
        loss_fn = lambda logits, y: losses.sigmoid_focal_loss(logits, y.float(), alpha=None, gamma=gamma)  # noqa: E731
    else:
        loss_fn = lambda logits, y: losses.softmax_focal_loss(logits, y.long(), gamma=gamma)  # noqa: E731
    rnd = next_round(store, output_dir)
    out = Path(output_dir) if output_dir is not None else project_dir(store)
    common = dict(task=task, loss_fn=loss_fn, info=info, progress=progress, seed=seed)
    if model in ("lite0", "b0"):
        head = head_epochs if head_epochs is not None else max(1, epochs // 3)
        history = two_phase.fit_two_phase(net, train_loader, val_loader, head_epochs=head,
                                          finetune_epochs=max(0, epochs - head), head_lr=lr, finetune_lr=lr / 10,
                                          **common)
    else:
        history = torch_engine.fit(net, train_loader, val_loader, epochs=epochs, lr=lr, **common)
    history_path = history.to_csv(out / f"history_round{rnd}.csv")
    kept = int(history.meta.get("best_epoch") or history.n_epochs)       # the epoch whose weights were kept
    scores = {k: float(history[k][kept - 1]) for k in history.summary() if k.startswith("val_")}
    model_path = final.save(net, info, f"round{rnd}", folder=out / "models", verbose=False, round=rnd, task=task,
                            image_size=image_size, n_labels=int(len(ids)), labels=store.class_names,
                            kept_epoch=kept, augment_options=json.dumps(augment_options or {}),
                            **{k: round(v, 6) for k, v in scores.items()})
    if progress:
        print(f"round {rnd}: kept epoch {kept} of {history.n_epochs} ("
              + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + f"); model saved as "
              f"{model_path.relative_to(out).as_posix()} in {out.name}/")
    _append_round(out / "rounds.csv", {"round": rnd, "n_labels": int(len(ids)), "model": model, "kept_epoch": kept,
                                       "epochs": history.n_epochs, **scores})
    return RoundResult(rnd, net, info, history, task, image_size, int(len(ids)), model_path, history_path, scores)


def _append_round(path: Path, row: dict) -> None:
    """One line per round in ``rounds.csv`` (labels used, validation scores): the report's labels-vs-score curve."""
    import csv  # noqa: PLC0415

    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


def _workers(n_images: int, batch_size: int) -> int:
    """Processes that decode files while the model runs: none for a few batches (starting them costs more)."""
    return 0 if n_images < 4 * batch_size else min(4, max(1, (os.cpu_count() or 2) - 1))


def stream_probabilities(store: Any, result: RoundResult, ids: np.ndarray, *, batch_size: int,
                         features: bool = False, progress: bool = False, desc: str = "", workers: int | None = None):
    """Yield ``(ids, probabilities, readable, features)`` batch by batch for ``ids``, read from their files
    (decoded in worker processes while the model runs, on whatever device the model is on). Probabilities are a
    softmax, or a sigmoid per label; ``features`` (the head's input) only when asked for."""
    torch = import_torch()
    from torch.utils.data import DataLoader  # noqa: PLC0415

    from ..data import augment  # noqa: PLC0415
    from ..models.torch_models import head_module  # noqa: PLC0415
    from ..runtime import progress as bar  # noqa: PLC0415

    net = result.model.eval()
    dev = next(net.parameters()).device
    workers = _workers(len(ids), batch_size) if workers is None else int(workers)
    loader = DataLoader(FileImages([file_path(store, r) for r in store.refs(ids)], None, size=result.image_size,
                                   transform=augment.eval_transform(result.image_size)), batch_size=batch_size,
                        num_workers=workers, pin_memory=dev.type == "cuda")
    seen: list = []
    hook = head_module(net, result.info).register_forward_hook(
        lambda _m, inp, _o: seen.append(inp[0].detach().flatten(1).float().cpu().numpy())) if features else None
    done = 0
    try:
        with torch.no_grad():
            for xb, ok in bar(loader, total=len(loader), desc=desc, disable=not progress):
                logits = net(xb.to(dev, non_blocking=True)).float().cpu()
                probs = torch.sigmoid(logits) if result.task == "multi-label" else torch.softmax(logits, dim=1)
                yield (ids[done:done + len(xb)], probs.numpy(), ok.numpy().astype(bool),
                       seen.pop() if features else None)
                done += len(xb)
    finally:
        if hook is not None:
            hook.remove()


def predict_files(result: RoundResult, paths: Sequence[str | os.PathLike], *, batch_size: int = 32) -> np.ndarray:
    """A round's probabilities (softmax, or sigmoid per label) for image files outside the project, e.g. a fresh
    test set. A file that cannot be read is a CourseError naming it."""
    torch = import_torch()
    from torch.utils.data import DataLoader  # noqa: PLC0415

    from ..data import augment  # noqa: PLC0415

    paths = [Path(p) for p in paths]
    net = result.model.eval()
    dev = next(net.parameters()).device
    loader = DataLoader(FileImages(paths, np.zeros(len(paths)), size=result.image_size,
                                   transform=augment.eval_transform(result.image_size)), batch_size=batch_size)
    out = []
    with torch.no_grad():
        for xb, _ in loader:
            logits = net(xb.to(dev)).float().cpu()
            out.append((torch.sigmoid(logits) if result.task == "multi-label" else torch.softmax(logits, 1)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def predict_pool(store: Any, result: RoundResult, *, batch_size: int = 32, embeddings: bool = True,
                 progress: bool = True, output_dir: str | os.PathLike | None = None,
                 workers: int | None = None) -> int:
    """Confidences for every unlabelled pool image, written back in one transaction per batch (the strategies
    read them next session); the head's input features are kept as ``embeddings_round<n>.npz`` for Coreset and
    BADGE. Images are streamed from their files. Returns how many images were predicted."""
    gone = set(store.unreadable())
    ids = np.array([i for i in store.ids("pool", labelled=False).tolist() if i not in gone], dtype=np.int64)
    if len(ids) == 0:
        return 0
    kept_ids, kept_feats, broken = [], [], {}
    start = time.perf_counter()
    for batch_ids, probs, ok, feats in stream_probabilities(store, result, ids, batch_size=batch_size,
                                                            features=embeddings, progress=progress,
                                                            desc=f"predicting round {result.round}", workers=workers):
        store.write_predictions(batch_ids[ok], probs[ok], model_round=result.round)   # one transaction a batch
        broken.update({int(i): "unreadable: the file cannot be read as an image" for i in batch_ids[~ok]})
        kept_ids.append(batch_ids[ok])
        if feats is not None:
            kept_feats.append(feats[ok])
    n = int(sum(len(k) for k in kept_ids))
    if progress:
        seconds = time.perf_counter() - start
        print(f"round {result.round}: predicted {n} unlabelled image(s) in {seconds:.1f} s "
              f"({n / max(seconds, 1e-9):.0f} images/s), written to {Path(store.path).name}")
    if broken:
        store.mark_unreadable(broken)
        print(f"{len(broken)} image(s) could not be read and were skipped (see store.unreadable())")
    if embeddings and kept_feats:                  # the labelled pool's too: Coreset measures distance to them
        labelled = np.array([i for i in store.ids("pool", labelled=True).tolist() if i not in gone], dtype=np.int64)
        for batch_ids, _p, ok, feats in stream_probabilities(store, result, labelled, batch_size=batch_size,
                                                             features=True, workers=workers):
            kept_ids.append(batch_ids[ok])
            kept_feats.append(feats[ok])
        out = Path(output_dir) if output_dir is not None else project_dir(store)
        _save_npz_atomically(out / f"embeddings_round{result.round}.npz",
                             {"ids": np.concatenate(kept_ids), "embeddings": np.concatenate(kept_feats)},
                             "the predictions are saved in the store, the embeddings (for coreset and badge) are "
                             "not. Free some space, then run `course-project predict` again.")
    return n


def _save_npz_atomically(path: Path, arrays: dict[str, np.ndarray], lost: str) -> None:
    """Write an ``.npz`` beside ``path`` and move it into place, so a kill or a full disk never leaves half a
    file where the strategies or the report would read it; a failed write is a CourseError ending in ``lost``
    (what was kept, what was not, what to do)."""
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CourseError(f"could not write {path.name} ({exc.strerror or exc}): {lost}") from exc


def load_embeddings(store: Any, round_: int | None = None, *,
                    output_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors)``: the backbone features a round's prediction pass kept for the pool's images, for
    ``LabelStore.next_batch("coreset" | "badge", embeddings=...)`` and ``Labeller(..., embeddings=...)``."""
    folder = Path(output_dir) if output_dir is not None else project_dir(store)
    rnd = round_ if round_ is not None else next_round(store, output_dir) - 1
    path = folder / f"embeddings_round{rnd}.npz"
    if not path.exists():
        raise CourseError(f"no embeddings for round {rnd} in {folder}: predict with that round first "
                          "(predict_pool, or `course-project train` without --no-predict).")
    with np.load(path) as data:
        return data["ids"].astype(np.int64), data["embeddings"].astype(np.float32)


def _predict_files(store: Any, result: RoundResult, ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Probabilities (softmax, or sigmoid per label) for ``ids``, read from their files in batches."""
    out = [probs for _i, probs, _ok, _f in stream_probabilities(store, result, ids, batch_size=batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0))


def evaluate_holdout(store: Any, result: RoundResult, *, again: bool = False, batch_size: int = 32,
                     output_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Score the round's model on the labelled hold-out images, once: the store counts every evaluation and the
    round it used, and a second one is refused unless ``again=True`` (the report then says how many looks there
    have been: each one makes the hold-out's verdict more optimistic).

    Returns accuracy and ROC-AUC (per label for multi-label), sklearn's classification report and the confusion
    matrix (one class per image), the number of images, and ``evaluations``."""
    from sklearn.metrics import classification_report, multilabel_confusion_matrix  # noqa: PLC0415

    from .. import metrics  # noqa: PLC0415

    before = store.holdout_evaluations()
    if before and not again:
        raise CourseError(f"the hold-out of {store.path} has already been evaluated {before} time(s). Evaluating it "
                          "again to choose between models makes its verdict optimistic; if you mean to, pass "
                          "again=True (command line: --again).")
    labels = store.labels("holdout")
    if not labels:
        raise CourseError("no hold-out image has a label yet: label them in a blind session first "
                          "(Labeller(store, blind=True); command line: label --holdout).")
    ids = np.array(sorted(labels), dtype=np.int64)
    y = np.array([labels[i] for i in ids], dtype=np.int64)
    probs = _predict_files(store, result, ids, batch_size)
    n = store.record_holdout_evaluation(f"round {result.round}")
    out = Path(output_dir) if output_dir is not None else project_dir(store)
    _save_npz_atomically(out / f"holdout_round{result.round}.npz", {"ids": ids, "labels": y, "probs": probs},
                         "this look is counted in the store, but the report's hold-out curves need this file. "
                         "Free some space, then evaluate again with again=True (command line: --again).")
    report: dict[str, Any] = {"n": int(len(ids)), "evaluations": n, "round": result.round}
    if result.task == "multi-label":
        k = len(store.label_names)
        truth = label_bits(y, k)
        report["per_label"] = {}
        for j, name in enumerate(store.label_names):
            two = np.stack([1 - probs[:, j], probs[:, j]], axis=1)
            auc = metrics.roc_auc(truth[:, j], two) if len(set(truth[:, j])) == 2 else float("nan")
            report["per_label"][name] = {"accuracy": metrics.accuracy(truth[:, j], two), "auc": auc,
                                         "positives": int(truth[:, j].sum())}
        report["accuracy"] = float(np.mean([v["accuracy"] for v in report["per_label"].values()]))
        said = (probs >= 0.5).astype(int)                                # yes at 0.5, per label
        report["confusion_matrix"] = {name: m.tolist() for name, m in
                                      zip(store.label_names, multilabel_confusion_matrix(truth, said))}
        report["classification_report"] = classification_report(truth, said, target_names=store.label_names,
                                                                 zero_division=0)
    else:
        task = "binary" if store.n_classes == 2 else "multi-class"
        pred = probs.argmax(1)
        report["accuracy"] = metrics.accuracy(y, probs, task)
        report["auc"] = metrics.roc_auc(y, probs, task) if len(set(y.tolist())) > 1 else float("nan")
        report["confusion_matrix"] = metrics.confusion_matrix(y, pred, store.n_classes).tolist()
        report["classification_report"] = classification_report(
            y, pred, labels=list(range(store.n_classes)), target_names=store.class_names, zero_division=0)
    return report


def load_round(store: Any, round_: int | None = None, *, output_dir: str | os.PathLike | None = None) -> RoundResult:
    """A saved round of this project (default: the latest), ready for :func:`predict_pool` or
    :func:`evaluate_holdout`; a model saved for other labels (another project) is refused."""
    from ..models import final  # noqa: PLC0415

    out = Path(output_dir) if output_dir is not None else project_dir(store)
    rnd = round_ if round_ is not None else next_round(store, output_dir) - 1
    if rnd < 1:
        raise CourseError(f"no trained round in {out / 'models'} yet: train one first (train_round, or the "
                          "command line's `train`).")
    saved = final.load(f"round{rnd}", folder=out / "models", verbose=False)
    if saved is None:
        raise CourseError(f"round {rnd} has no readable model in {out / 'models'}: train again.")
    if saved.meta.get("labels") != store.class_names:
        raise CourseError(f"the model of round {rnd} was trained for the classes {saved.meta.get('labels')}, not this "
                          f"project's {store.class_names}: a model from another project cannot be used here.")
    return RoundResult(rnd, saved.model, saved.info, None, str(saved.meta["task"]), int(saved.meta["image_size"]),
                       int(saved.meta["n_labels"]), saved.path, out / f"history_round{rnd}.csv",
                       {k: float(v) for k, v in saved.meta.items() if k.startswith("val_")})
