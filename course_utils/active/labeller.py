"""The keyboard-first labeller: label the images a strategy picks, one at a time, from the keyboard.

    labeller = cu.labeller.Labeller(store, images, class_names, strategy="entropy", batch_size=8)
    labeller = cu.labeller.Labeller(store)      # a store whose refs are image files: read from disk
    labeller.display()              # keys 1-9 label and advance, u / Backspace undoes, n skips
    labeller.label_with_oracle(16)  # simulations and CI: the same path a key press takes

One image is shown large with the model's confidences and why it was picked; every key press is one
committed write to a :class:`course_utils.labels.LabelStore`. The page is an ``anywidget`` front end,
``labeller.js`` (shipped as package data), which sends key events and draws :meth:`Labeller.state`;
without anywidget the labeller still works from code (``handle``) and says how to get the keys.
Messages may arrive on another thread (JupyterLab 4.6 subshells): one lock serialises them, and every
error is shown in the widget in red instead of vanishing into the kernel log.
"""
from __future__ import annotations

import base64
import contextlib
import io
import threading
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..runtime import CourseError, in_colab

__all__ = ["Labeller"]


def _png_data_url(image: np.ndarray, size: int) -> str:
    """An image as a PNG data URL, scaled up by a whole factor (nearest) to about ``size`` pixels."""
    from PIL import Image  # noqa: PLC0415

    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    img = Image.fromarray(a)
    scale = max(1, size // max(img.size))
    img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _labeller_view():
    """The anywidget front end (key events), or ``None`` where anywidget is not installed."""
    try:
        import anywidget  # noqa: PLC0415
        import traitlets  # noqa: PLC0415
    except ImportError:
        return None

    class LabellerView(anywidget.AnyWidget):
        _esm = Path(__file__).with_name("labeller.js")
        state = traitlets.Dict().tag(sync=True)
        js_latency_ms = traitlets.Float(0.0).tag(sync=True)   # key press -> next image drawn, set by the page
        js_ignored = traitlets.Int(0).tag(sync=True)          # keys ignored while a write was in flight

        def __repr__(self) -> str:   # what a page without the widget's state shows (an executed notebook on GitHub)
            return "[the keyboard labeller: it appears here when the notebook runs in Jupyter or Colab]"

    return LabellerView


class Labeller:
    """Label the images a strategy picks, one at a time, from the keyboard; every key is one committed write.

    One image is shown large, with the model's confidences, why it was picked (strategy and score) and
    the next few as thumbnails. Keys ``1``-``9`` label it and advance, ``u`` or Backspace undoes your
    last label, ``n`` skips; the class buttons do the same with the mouse. The page ignores keys while
    a write is in flight, and a label for an image that is no longer shown is refused, so a fast
    double press never labels twice. Errors (a read-only or deleted file, a bad key) are shown in the
    widget in red. ``oracle`` (true labels, indexed like ``images``) lets :meth:`label_with_oracle`
    label for simulations and CI through the same path a key press takes.

    ``images`` is the array the store's refs index (refs ``"0"``, ``"1"``, ...); for a store whose refs are
    image files (a learner's own folder) leave it out, and each image is read from its file when shown.
    """

    def __init__(self, store: Any, images: np.ndarray | None = None, class_names: Sequence[str] | None = None, *,
                 strategy: str = "entropy", batch_size: int = 8, oracle: Sequence[int] | None = None,
                 random_state: Any = 0, image_px: int = 256, n_thumbs: int = 4, blind: bool = False,
                 embeddings: tuple[Any, Any] | None = None) -> None:
        self.store, self.images = store, None if images is None else np.asarray(images)
        self._check_refs()
        self.class_names = [str(c) for c in class_names] if class_names is not None else list(store.class_names)
        if len(self.class_names) != store.n_classes:
            raise CourseError(f"{len(self.class_names)} class names given, the store has {store.n_classes}.")
        if store.n_classes > 9:
            raise CourseError(f"the keyboard labeller has keys 1-9, but the store has {store.n_classes} classes.")
        self.blind = bool(blind)       # a blind hold-out session: hold-out images, random order, no model shown
        self.strategy, self.batch_size = ("random" if self.blind else strategy), int(batch_size)
        self.image_px, self.n_thumbs = int(image_px), int(n_thumbs)
        self.oracle = None if oracle is None else np.asarray(oracle).reshape(-1)
        self.embeddings = embeddings                   # (ids, vectors): lets Coreset and BADGE order the queue
        self._seeds = np.random.default_rng(random_state)
        self._lock = threading.RLock()                 # widget messages may arrive on a subshell thread
        self.queue: list[int] = []                     # ids still to show, in order; queue[0] is on screen
        self.scores: dict[int, float] = {}
        self.labelled_this_session: set[int] = set()
        self.skipped: set[int] = set()
        self.message = ""
        self.error: BaseException | None = None
        self.seq = 0
        view = _labeller_view()
        self.view = view() if view is not None else None
        if self.view is not None:
            self.view.on_msg(lambda _w, content, _b: self.handle(content))
        self._fill_queue()
        try:
            self._publish()
        except Exception as exc:  # noqa: BLE001 - e.g. an image file that cannot be read: shown, not raised
            self.error = exc
            self._publish_error()

    # ---------------------------------------------------------------- actions (keys, buttons, the oracle)
    @property
    def current(self) -> int | None:
        """The id of the image on screen (``None`` when nothing is left to label)."""
        return self.queue[0] if self.queue else None

    def _check_refs(self) -> None:
        """Every ref must point at an image: an index into ``images``, or (without ``images``) a file."""
        refs = self.store.refs(self.store.ids(None))
        if self.images is None:
            if all(r.isdigit() for r in refs):
                raise CourseError("this store's refs are array indices (0, 1, ...): pass the images array, "
                                  "Labeller(store, images).")
            return
        bad = [r for r in refs if not r.isdigit() or int(r) >= len(self.images)]
        if bad:
            raise CourseError(f"{len(bad)} of the store's {len(refs)} refs do not index the {len(self.images)} images "
                              f"given (e.g. {bad[0]!r}): pass the image array the store was made for "
                              "(or leave images out when its refs are file paths).")

    def _image(self, ref: str) -> np.ndarray:
        if self.images is not None:
            return self.images[int(ref)]
        from ..data.loaders import read_image  # noqa: PLC0415 - only for stores of image files

        root = getattr(self.store, "root", None)
        return read_image(Path(root) / ref if root is not None and not Path(ref).is_absolute() else ref,
                          max_side=2 * self.image_px)                 # a 40-megapixel scan is shown, never held

    def handle(self, msg: Mapping[str, Any]) -> None:
        """Do what one key press or click asks (``{"action": "label"|"undo"|"skip", ...}``) and redraw.

        Nothing escapes: an error (also one while drawing the page) is shown in the widget, in red."""
        with self._lock:
            self.error = None
            try:
                self._act(msg)
            except Exception as exc:  # noqa: BLE001 - shown in red in the widget, never lost
                self.error = exc
            try:
                self._publish()
            except Exception as exc:  # noqa: BLE001 - e.g. the store was closed: the page still says why
                self.error = exc
                self._publish_error()

    def _act(self, msg: Mapping[str, Any]) -> None:
        action = msg.get("action")
        shown = msg.get("item", self.current)
        if action == "label":
            label = msg.get("label")
            if not isinstance(label, int) or not 0 <= label < len(self.class_names):
                raise CourseError(f"key {msg.get('key', label)!r} is not a class: press 1-{len(self.class_names)} "
                                  f"({', '.join(self.class_names)}).")
            if shown is None or shown != self.current:
                self.message = "that key arrived after the image changed: ignored (nothing labelled twice)"
                return
            self.store.label(shown, label, **({"holdout": True} if self.blind else {}))   # one committed write
            self.labelled_this_session.add(int(shown))
            self.message = f"image {shown}: {self.class_names[label]}"
            self._advance()
        elif action == "undo":
            item = self.store.undo()
            if item is None:
                self.message = f"nothing of yours ({self.store.labeller}) to undo in this file"
                return
            if item not in self.store.labels(None):
                self.labelled_this_session.discard(item)
            if item in self.queue:
                self.queue.remove(item)
            self.queue.insert(0, item)
            self.message = f"undone: image {item} is back"
        elif action == "skip":
            if shown is not None and shown == self.current:
                self.skipped.add(int(shown))
                self.message = f"skipped image {shown}"
                self._advance()
        else:
            raise CourseError(f"unknown labeller action {action!r}")

    def _advance(self) -> None:
        self.queue.pop(0)
        if not self.queue:
            self._fill_queue()

    def _fill_queue(self) -> None:
        """Ask the store for the next batch (skipped images are asked again only when nothing else is left)."""
        seed = int(self._seeds.integers(2**31 - 1))
        try:
            extra = {"split": "holdout"} if self.blind else ({"embeddings": self.embeddings} if self.embeddings
                                                             is not None else {})
            picked = self.store.next_batch(self.strategy, self.batch_size + len(self.skipped), random_state=seed,
                                           return_scores=True, **extra)
        except CourseError as exc:
            self.queue, self.message = [], str(exc)
            return
        fresh = [(i, s) for i, s in picked if i not in self.skipped] or picked
        self.queue = [i for i, _ in fresh[:self.batch_size]]
        self.scores = dict(fresh)

    def refresh(self, strategy: str | None = None, *, embeddings: tuple[Any, Any] | None = None) -> None:
        """A new queue from the store, e.g. after a round wrote new predictions (the queue in hand was picked by
        the old ones), optionally with another strategy (``"confident"``: check what the model is surest of;
        ``"coreset"`` / ``"badge"`` with the round's ``embeddings``)."""
        with self._lock:
            if embeddings is not None:
                self.embeddings = embeddings
            if strategy is not None:
                if self.blind and strategy != "random":
                    raise CourseError("a blind hold-out session labels in random order only.")
                self.strategy = strategy
            self.skipped.clear()
            self._fill_queue()
            self._publish()

    def label_with_oracle(self, n: int = 8) -> int:
        """Label ``n`` images from the ground truth through the key path; returns how many were written."""
        if self.oracle is None:
            raise CourseError("this labeller has no oracle: pass oracle=true_labels to simulate an expert.")
        done = 0
        for _ in range(n):
            item = self.current
            if item is None:
                break
            ref = self.store.refs([item])[0]
            index = int(ref) if ref.isdigit() else item   # file refs: the oracle is indexed by item id
            self.handle({"action": "label", "label": int(self.oracle[index]), "item": item})
            if self.error is not None:
                raise self.error
            done += 1
        return done

    # ---------------------------------------------------------------- what the page shows
    def _shown_images(self) -> list[np.ndarray]:
        """The images of the queue's first few items. A file that cannot be read (corrupt, deleted) is marked in
        the store, so no queue offers it again, taken off this queue and named in the message: never a crash."""
        while True:
            ids = self.queue[:1 + self.n_thumbs]
            shown = []
            for i, ref in zip(ids, self.store.refs(ids)):
                try:
                    shown.append(self._image(ref))
                except CourseError as exc:
                    if self.images is not None:
                        raise
                    with contextlib.suppress(CourseError):        # a read-only store: skipped all the same
                        self.store.mark_unreadable({int(i): f"unreadable: {exc}"})
                    self.queue.remove(i)
                    note = f"image {i} ({ref}) cannot be read, so it is skipped: {exc}"
                    self.message = note
                    if not self.queue:
                        self._fill_queue()
                        if self.message != note:                  # e.g. nothing left: say both
                            self.message = f"{note}. {self.message}"
                    break
            else:
                return shown

    def state(self) -> dict[str, Any]:
        """Everything the page draws, as plain JSON (also what the tests read)."""
        shown = self._shown_images()
        item = self.current
        c = self.store.counts()
        if self.blind:
            done = len(self.store.labels("holdout"))
            counter = (f"hold-out labelled: {done} of {c['holdout']} · remaining: {c['holdout'] - done} · this "
                       f"session: {len(self.labelled_this_session)}")
        else:
            counter = (f"labelled: {c['labelled']} of {c['pool']} pool images · remaining: "
                       f"{c['pool'] - c['labelled']} · this session: {len(self.labelled_this_session)}")
        state: dict[str, Any] = {
            "seq": self.seq, "item": item, "class_names": self.class_names, "message": self.message,
            "counter": counter,
            "error": f"{type(self.error).__name__}: {self.error}" if self.error else "",
            "error_detail": "".join(traceback.format_exception(type(self.error), self.error,
                                                               self.error.__traceback__)) if self.error else "",
            "image": None, "thumbs": [], "confidences": [], "label_confidences": [], "reason": "",
        }
        if item is not None:
            state["image"] = _png_data_url(shown[0], self.image_px)
            state["thumbs"] = [_png_data_url(im, 48) for im in shown[1:]]
            state["confidences"] = [] if self.blind else (self.store.confidences([item]).get(item) or [])
            names = getattr(self.store, "label_names", None)
            if names and state["confidences"]:             # multi-label: each yes/no label's own probability
                from .labels import label_probs  # noqa: PLC0415

                per = label_probs([state["confidences"]], len(names))[0]
                state["label_confidences"] = [[n, round(float(v), 4)] for n, v in zip(names, per)]
            score = self.scores.get(item)
            made_by = self.store.prediction_rounds([item]).get(item) if hasattr(self.store, "prediction_rounds") \
                else None
            state["reason"] = (f"picked by {self.strategy}" + (f" (score {score:.3g})" if score is not None else "")
                               + (f" from round {made_by}'s predictions" if made_by is not None else ""))
            if self.blind:
                state["reason"] = "blind hold-out session: random order, no model shown"
        return state

    def _publish(self) -> None:
        self.seq += 1
        if self.view is not None:
            self.view.state = self.state()

    def _publish_error(self) -> None:
        """The page when even drawing failed: no image, the error in red (so the page never stays busy)."""
        err = self.error
        state = {"seq": self.seq, "item": None, "class_names": self.class_names, "message": "",
                 "counter": "", "image": None, "thumbs": [], "confidences": [], "label_confidences": [], "reason": "",
                 "error": f"{type(err).__name__}: {err}",
                 "error_detail": "".join(traceback.format_exception(type(err), err, err.__traceback__))}
        if self.view is not None:
            self.view.state = state

    def display(self) -> None:
        """Show the labeller (in Colab this first enables third-party widgets, which anywidget needs)."""
        from IPython.display import HTML, display  # noqa: PLC0415

        if self.view is None:
            display(HTML('<b style="color:#b00020">The keyboard labeller needs the package anywidget '
                         "(pip install anywidget); label from code with labeller.handle(...) meanwhile.</b>"))
            return
        if in_colab():
            from google.colab import output  # noqa: PLC0415

            output.enable_custom_widget_manager()
        display(self.view)

    def _ipython_display_(self) -> None:
        self.display()
