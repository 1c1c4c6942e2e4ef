"""Exercises whose answers live here, not in the notebook (Kaggle Learn style): check, hint, solution.

    ex = cu.exercises.get("02.1")     # prints the task in one line
    ex.check(answer)                  # a value, your function (run on cases you did not see), or a prediction
    ex.hint()                         # a nudge
    ex.solution()                     # the answer and why (allowed before trying, and says so)

Three kinds: ``value`` (a number, tuple, ...; the expected value may depend on the notebook's data, passed as
keyword arguments), ``function`` (write the line that carries the idea; it runs on hidden cases and is
compared with a reference), ``prediction`` (predict, then run: the check compares your prediction with what
the run gave, passed as ``observed=``). A wrong type or shape gets a sentence saying what was expected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from .checks import close_enough
from ..runtime import CourseError

__all__ = ["Exercise", "get", "all_exercises"]


@dataclass
class Exercise:
    """One exercise: what it asks, how it is checked, the hint and the solution (explained)."""

    key: str
    task: str
    kind: str                                   # "value" | "function" | "prediction"
    hint_text: str
    solution_text: str
    expected: Callable[..., Any] | None = None  # value: expected(**context); prediction: expected(observed)
    reference: Callable[..., Any] | None = None  # function: the reference implementation
    cases: tuple = ()                           # function: argument tuples the student never sees
    accepts: str = ""                           # what an answer looks like, for friendly messages
    rtol: float = 1e-3
    tries: int = field(default=0)               # checks made on this copy (see solution())

    def __repr__(self) -> str:
        return f"Exercise {self.key} ({self.kind}): {self.task}"

    # ---------------------------------------------------------------- the student's side
    def check(self, answer: Any, **context: Any) -> bool | None:
        """Print a verdict; ``True``/``False``, or ``None`` while the answer is still ``None``."""
        if answer is None or answer is Ellipsis:
            print(f"[{self.key}] not answered yet: replace None with your answer (ex.hint() helps).")
            return None
        self.tries += 1
        try:
            ok, detail = self._judge(answer, context)
        except CourseError:                        # the notebook passed the wrong context: a bug, not the student's
            raise
        except Exception as exc:  # noqa: BLE001 - a student's answer must never give a checker traceback
            ok, detail = False, (f"your answer could not be used ({type(exc).__name__}: {exc}). "
                                 f"Expected {self.accepts}.")
        print(f"[{self.key}] {'correct!' if ok else 'not quite.'} {detail}".rstrip())
        return ok

    def hint(self) -> None:
        print(f"[{self.key}] hint: {self.hint_text}")

    def solution(self) -> None:
        before = "" if self.tries else " (shown before any try: have a go first next time, it sticks better)"
        sep = "\n" if "\n" in self.solution_text else " "
        print(f"[{self.key}] solution{before}:{sep}{self.solution_text}")

    # ---------------------------------------------------------------- judging
    def _judge(self, answer: Any, context: dict[str, Any]) -> tuple[bool, str]:
        if self.kind == "function":
            return self._judge_function(answer)
        if self.kind == "prediction":
            if "observed" not in context:
                raise CourseError(f"exercise {self.key} compares your prediction with the run: pass observed=...")
            want = self.expected(context["observed"])
            shape_ok, why = _same_kind(answer, want, self.accepts)
            if not shape_ok:
                return False, why
            ok = close_enough(answer, want, rtol=self.rtol, atol=1e-9)
            return ok, (f"The run gave {_fmt(context['observed'])}, so the answer is {want!r}."
                        + ("" if ok else " What made you expect otherwise? Check the hint."))
        want = self.expected(**context)
        shape_ok, why = _same_kind(answer, want, self.accepts)
        if not shape_ok:
            return False, why
        ok = close_enough(answer, want, rtol=self.rtol, atol=1e-9)
        return ok, "" if ok else "Try ex.hint()."

    def _judge_function(self, fn: Any) -> tuple[bool, str]:
        if not callable(fn):
            return False, f"expected a function ({self.accepts}), got {type(fn).__name__}."
        for args in self.cases:
            want = self.reference(*args)
            try:
                got = fn(*_copy(args))
            except Exception as exc:  # noqa: BLE001 - reported to the student in a sentence
                return False, f"your function raised {type(exc).__name__}: {exc} for arguments {_fmt(args)}."
            shape_ok, why = _same_kind(got, want, self.accepts)
            if not shape_ok or not close_enough(got, want, rtol=self.rtol, atol=1e-9):
                return False, (f"for arguments {_fmt(args)} it returned {_fmt(got)}, expected {_fmt(want)}."
                               if shape_ok else why)
        return True, f"it agrees with the reference on {len(self.cases)} cases you did not see."


def _copy(args: tuple) -> tuple:
    return tuple(np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, np.ndarray):
        return np.array2string(v, precision=4, threshold=12)
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return repr(v)


def _same_kind(answer: Any, want: Any, accepts: str) -> tuple[bool, str]:
    """Is the answer the kind of thing expected (number / text / tuple of that length / array of that shape)?"""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))

    if isinstance(want, (bool, np.bool_)):
        ok = isinstance(answer, (bool, np.bool_))
    elif isinstance(want, str):
        ok = isinstance(answer, str)
    elif number(want):
        ok = number(answer) or (isinstance(answer, np.ndarray) and answer.size == 1)
    elif isinstance(want, tuple):
        ok = isinstance(answer, (tuple, list)) and len(answer) == len(want)
    else:
        a, w = np.asarray(answer), np.asarray(want)
        ok = a.shape == w.shape and a.dtype.kind in "biuf"
        if not ok:
            return False, f"expected {accepts} of shape {w.shape}, got {type(answer).__name__} of shape {a.shape}."
    return ok, "" if ok else f"expected {accepts}, got {type(answer).__name__} {_fmt(answer)}."


# =========================================================================== the references
def _receptive_field(kernels, strides) -> int:
    r, jump = 1, 1
    for k, s in zip(kernels, strides):
        r += (k - 1) * jump
        jump *= s
    return r


def _focal(p: np.ndarray, y: np.ndarray, gamma: float = 2.0, alpha: float = 0.75) -> np.ndarray:
    p_t = np.where(y == 1, p, 1 - p)
    a_t = np.where(y == 1, alpha, 1 - alpha)
    return -a_t * (1 - p_t) ** gamma * np.log(p_t)


def _entropy(p: np.ndarray) -> np.ndarray:
    from scipy.special import xlogy  # noqa: PLC0415

    return -xlogy(p, p).sum(axis=1)


def _variation_ratio(mc: np.ndarray) -> np.ndarray:
    votes = mc.argmax(axis=2)                                   # T x N: each pass's class
    counts = np.stack([(votes == c).sum(axis=0) for c in range(mc.shape[2])], axis=1)
    return 1.0 - counts.max(axis=1) / mc.shape[0]


def _answers(index, k):
    return [(index >> i) & 1 for i in range(k)]


def _hires_cam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.maximum((a * g).sum(axis=0), 0.0)         # each cell's gradient, not the channel's mean (HiResCAM)


def _nchw(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


_RNG = np.random.default_rng(2024)
_PROBS = [_RNG.dirichlet(np.ones(c), size=5) for c in (2, 3, 9)]
_PROBS.append(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]))     # zeros: p log p must not be NaN

EXERCISES: dict[str, Exercise] = {e.key: e for e in [
    # ------------------------------------------------------------------ 01 data loading
    Exercise("01.1", "write malignant_share(labels): the fraction of images labelled malignant (label 0) in a "
             "BreastMNIST label array (N or N x 1), a number in [0, 1].", "function",
             "malignant is label 0: the share of 0s. The mean of a True/False array is the share of True.",
             "def malignant_share(labels):\n    return float(np.mean(np.asarray(labels).reshape(-1) == 0))",
             reference=lambda labels: float(np.mean(np.asarray(labels).reshape(-1) == 0)),
             accepts="a function returning a number between 0 and 1",
             cases=((np.array([0, 1, 1, 0, 1, 1, 1, 1]),), (np.array([[1], [0], [0]]),), (np.ones(5, int),))),
    Exercise("01.2", "write to_nchw(images): uint8 N x H x W x C -> float32 N x C x H x W in [0, 1].", "function",
             "two steps: move the channel axis from last to second (transpose), then scale 0-255 to 0-1.",
             "def to_nchw(images):\n    return images.transpose(0, 3, 1, 2).astype(np.float32) / 255",
             reference=_nchw, accepts="a function returning a float array",
             cases=tuple((_RNG.integers(0, 256, size=s, dtype=np.uint8),) for s in [(2, 4, 5, 3), (1, 7, 7, 1),
                                                                                   (3, 2, 6, 3)])),
    Exercise("01.3", "predict, then run: how many batches does a to_torch_loader over the BreastMNIST training "
             "images yield with batch_size=16? Predict a number, then run len(loader).", "prediction",
             "every batch holds 16 images except perhaps the last one, which holds what is left.",
             "ceil(n / 16): the last, smaller batch counts too (a loader drops it only with drop_last=True).",
             expected=lambda observed: int(observed), accepts="a whole number"),
    # ------------------------------------------------------------------ 02 CNN basics
    Exercise("02.1", "write receptive_field(kernels, strides): the side of the input region that one output pixel of "
             "a stack of layers sees (kernel sizes and strides listed from the input on; a 2x2 max pool is kernel 2, "
             "stride 2).", "function",
             "each layer widens the region by (k - 1) input steps of ITS input; one step of a layer's input is the "
             "product of all earlier strides input pixels.",
             "def receptive_field(kernels, strides):\n    r, jump = 1, 1\n    for k, s in zip(kernels, strides):\n"
             "        r += (k - 1) * jump\n        jump *= s\n    return r",
             reference=_receptive_field, accepts="a function returning an int",
             cases=(((3,), (1,)), ((3, 3, 3), (1, 1, 1)), ((3, 2, 3, 2, 3, 2), (1, 2, 1, 2, 1, 2)), ((7, 3), (2, 2)),
                    ((5, 2, 5), (1, 2, 1)))),
    Exercise("02.2", "how many parameters has a SeparableConv2D(32, kernel_size=5) layer on an RGB input: one "
             "5 x 5 filter per input channel (no bias), then a 1 x 1 convolution into 32 outputs with a bias each?",
             "value", "two parts: the depthwise filters (one 5 x 5 grid per input channel) and the 1 x 1 mixing "
             "(every output sees each of the 3 channels once, plus its bias).",
             "5 * 5 * 3 + (3 * 32 + 32) = 75 + 128 = 203, against 2,432 for a plain Conv2D(32, 5): about 12 times "
             "fewer. That saving is why EfficientNet and MobileNet are built from such layers.",
             expected=lambda: 5 * 5 * 3 + 3 * 32 + 32, accepts="a whole number"),
    Exercise("02.3", "predict, then run: train the small CNN for FAST_EPOCHS epochs with ten times the learning "
             "rate. Will its validation loss then be 'lower' or 'higher' than the main run's after as many epochs?",
             "prediction",
             "a larger step can go further per step, or overshoot: which happened depends on the loss surface; "
             "look at both curves.",
             "compare the two validation losses the run printed: 'lower' if the faster run ended below the main "
             "run at the same epoch, else 'higher'. Large rates often make the loss jump around or get stuck.",
             expected=lambda observed: "lower" if observed[1] < observed[0] else "higher",
             accepts="'lower' or 'higher'"),
    # ------------------------------------------------------------------ 03 transfer learning
    Exercise("03.1", "how many trainable parameters has the GAP head (one Dense layer on the 1280 pooled features) "
             "for a three-class problem?", "value", "one weight per feature and class, plus one bias per class.",
             "1280 * 3 + 3 = 3843.", expected=lambda: 1280 * 3 + 3, accepts="a whole number"),
    Exercise("03.2", "predict, then run: section 4's 'mistake' copy was fine-tuned for one epoch with lr 1e-2, 100 times "
             "LR_FINE. Will its validation accuracy be 'higher' or 'lower' than the model fine-tuned with LR_FINE?",
             "prediction", "how far does one Adam step move a weight, compared with the size of a pre-trained weight?",
             "usually lower: with lr 1e-2 a few steps overwrite the pre-trained top layers (their weights changed by "
             "tens of percent per epoch, against a fraction of a percent with LR_FINE), and the head was trained on "
             "the old features; the run decides.",
             expected=lambda observed: "higher" if observed[1] > observed[0] else "lower",
             accepts="'higher' or 'lower'"),
    Exercise("03.3", "with batch(100, drop_remainder=True), how many of this notebook's test images would never be "
             "evaluated?", "value", "the last incomplete batch is dropped: how many images are left over?",
             "len(data.test) % 100.", expected=lambda n_test: int(n_test) % 100, accepts="a whole number"),
    Exercise("03.4", "choose, and justify: which run on the board would you take to the test split? Give its run "
             "number, and say to yourself why its lead is, or is not, more than noise.", "value",
             "compare the validation AUC column only (the test split is not on the board). How far apart must two "
             "AUCs on a few hundred validation images be before the difference is more than luck?",
             "the run with the highest validation AUC. Its lead counts only if it is clearly larger than the noise of "
             "an AUC on these validation images (roughly 1/sqrt(n) of them, a few hundredths here); if it is not, "
             "take the cheaper setting (pre-trained, fewer images or epochs) and say that the board could not tell "
             "them apart. Either way, you choose on validation and look at test once, for the chosen run.",
             expected=lambda val_auc: int(np.nanargmax(np.asarray(val_auc, dtype=float))) + 1,
             accepts="a run number (a whole number)"),
    # ------------------------------------------------------------------ 04 focal loss
    Exercise("04.1", "write focal_loss_np(p, y, gamma=2.0, alpha=0.75): the binary focal loss per image, from the "
             "probability p of class 1 and the label y (arrays).", "function",
             "p_t is p where y = 1 and 1 - p where y = 0; alpha_t likewise (alpha for y = 1); then "
             "-alpha_t (1 - p_t)^gamma log(p_t).",
             "def focal_loss_np(p, y, gamma=2.0, alpha=0.75):\n    p_t = np.where(y == 1, p, 1 - p)\n"
             "    a_t = np.where(y == 1, alpha, 1 - alpha)\n    return -a_t * (1 - p_t) ** gamma * np.log(p_t)",
             reference=_focal, accepts="a function returning an array (one loss per image)",
             cases=((np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0])),
                    (np.array([0.99, 0.01, 0.5, 0.3]), np.array([1, 1, 0, 1]), 0.0, 0.5),
                    (np.array([0.7, 0.4]), np.array([0, 1]), 5.0, 0.75))),
    Exercise("04.2", "predict, then run: focal loss with alpha 0.75 as in section 4, but gamma = 5 instead of 2 (same "
             "seeds, same data). Will the malignant recall at the 0.5 threshold go 'up', 'down', or show 'no clear "
             "change' (judged by the paired interval over the seeds)?", "prediction",
             "gamma sets how much the examples the model already gets right are turned down; most of those are "
             "benign. What does that leave the loss to push on, and in which direction does it push P(malignant)?",
             "with gamma 5 the confidently right (mostly benign) images weigh almost nothing, so the loss is carried by "
             "the hard ones, many of them malignant images scored low; that tends to lift P(malignant) and recall at "
             "0.5, at the cost of more false alarms. With three seeds and a few dozen malignant images the interval "
             "is wide, and 'no clear change' is a common, honest outcome: the run decides.",
             expected=lambda observed: str(observed),
             accepts="'up', 'down' or 'no clear change'"),
    Exercise("04.3", "a finding occurs in 2 % of the images, and its output's bias starts at the prior, so the untrained "
             "model says 2 % for every image. What is that model's mean binary cross-entropy (natural log) on the "
             "training images? (With a bias of 0 it says 50 % and scores log 2 = 0.693.)", "value",
             "2 % of the images have y = 1 and get -log(0.02); the other 98 % get -log(0.98). Average them.",
             "-(0.02 log 0.02 + 0.98 log 0.98) = 0.098, the entropy of the prior: seven times less than log 2 = "
             "0.693. A bias of 0 starts every rare finding with a large loss that the first steps spend on learning "
             "'this is rare' (pushing every output down), before anything about the images; starting at the prior "
             "skips that.",
             expected=lambda: -(0.02 * math.log(0.02) + 0.98 * math.log(0.98)), accepts="a number"),
    Exercise("04.4", "choose, and justify: a screening tool must miss as few cancers as it can without recalling "
             "everyone. Which loss of section 4's table would you take, judged on a measure that 'always malignant' "
             "cannot win? Give its name as in the table.", "value",
             "recall alone crowns 'always malignant'; which column weighs found cancers against healthy women "
             "recalled? And is the lead of the top row clear of the seed-to-seed spread?",
             "the loss at the top of the balanced-accuracy column. Say also whether its lead over the next row is "
             "larger than the spread (the +- numbers): if not, either is defensible, and the threshold chosen on "
             "validation (section 6) matters more than the loss.",
             expected=lambda table: str(table.drop(index="always malignant (no model)", errors="ignore")
                                        ["balanced"].idxmax()),
             accepts="a loss name as in the table, e.g. 'cross-entropy'"),
    # ------------------------------------------------------------------ 04b the training recipe
    Exercise("04b.1", "with a zero gradient, one AdamW step multiplies a weight by (1 - lr * wd). At a constant lr of "
             "3e-3 and wd 0.01, what share of a weight is left after 1,000 such steps?", "value",
             "one step keeps 1 - 3e-3 * 0.01 of it; the steps multiply.",
             "(1 - 3e-5) ** 1000 = 0.9704: about 3 % of each weight is gone after 1,000 steps, if nothing pushed back. "
             "With wd 1e-4 it would be 0.9997: weight decay in name only. The gradients push back, so the measured "
             "norms shrink less (section 1).",
             expected=lambda: (1 - 3e-3 * 0.01) ** 1000, accepts="a number between 0 and 1"),
    Exercise("04b.2", "predict, then run: clip the gradient norm at 0.1 instead of 1.0 (same seeds, same data). Will "
             "the validation AUC, against the defaults, go 'up', 'down', or show 'no clear change' (judged by the "
             "paired interval over the seeds)?", "prediction",
             "clipping rescales the whole gradient. What does AdamW divide each step by, and what happens to a "
             "gradient that is always scaled down by about the same factor?",
             "AdamW divides each coordinate's step by the running size of its own gradient, so a gradient that is "
             "always shortened by a similar factor gives almost the same steps: 'no clear change' is the usual "
             "outcome. Clipping harder bites when the norms vary a lot from batch to batch (the scale is then "
             "uneven across steps), and it does nothing useful as a fix for a learning rate that is too high. The "
             "run decides, by its interval.",
             expected=lambda observed: str(observed), accepts="'up', 'down' or 'no clear change'"),
    Exercise("04b.3", "choose, and justify: your project has about 300 labelled images and a T4 for an hour. From "
             "section 3's verdict (phase 2 minus the head trained as long, with its interval), would you run the second phase: "
             "'fine-tune', 'head only', or 'either' when this run cannot tell them apart?", "value",
             "read the interval of section 3, not the two numbers: does it exclude 0, and on which side?",
             "follow the interval: 'fine-tune' if phase 2 was clearly better, 'head only' if it was clearly worse, "
             "'either' if the interval covers 0 (then the head-only model is cheaper and as good as this run can "
             "tell). Both numbers kept their best epoch on the same validation images and come from one seed, so "
             "more validation images, or a few seeds, would change your mind.",
             expected=lambda verdict: str(verdict), accepts="'fine-tune', 'head only' or 'either'"),
    # ------------------------------------------------------------------ 05 active learning
    Exercise("05.1", "write variation_ratio(mc): from T MC-dropout passes mc (T x N x C probabilities), the share of "
             "passes that do NOT vote for the most-voted class, per image (Gal et al. 2017's variation ratios).",
             "function", "each pass votes for its argmax class; count the votes per class; 1 - (largest count) / T.",
             "def variation_ratio(mc):\n    votes = mc.argmax(axis=2)                       # T x N\n"
             "    counts = np.stack([(votes == c).sum(axis=0) for c in range(mc.shape[2])], axis=1)\n"
             "    return 1 - counts.max(axis=1) / mc.shape[0]", reference=_variation_ratio,
             accepts="a function returning one number per image",
             cases=tuple((_RNG.dirichlet(np.ones(c), size=(t, n)),) for t, n, c in [(5, 4, 3), (10, 6, 2), (7, 3, 9)])
             + ((np.array([[[0.9, 0.1]], [[0.2, 0.8]], [[0.6, 0.4]], [[0.3, 0.7]]]),),)),   # a 2-2 tie: 0.5
    Exercise("05.2", "two MC-dropout passes on one image give [1, 0] and [0, 1]. What is its BALD score "
             "(mutual information, in nats)?", "value", "entropy of the mean minus the mean entropy of the passes.",
             "the mean is [0.5, 0.5] (entropy log 2 = 0.693); each pass is certain (entropy 0): BALD = log 2.",
             expected=lambda: math.log(2), accepts="a number"),
    Exercise("05.3", "predict, then run: labelled images at 0 and 10 on a line, unlabelled at 2, 6 and 9. Which "
             "position does Coreset (k-center greedy) pick first?", "prediction",
             "distance to the NEAREST labelled point, then pick the farthest.",
             "2 -> 2, 6 -> 4, 9 -> 1: the farthest from its nearest labelled point is 6.",
             expected=lambda observed: int(observed), accepts="2, 6 or 9"),
    # ------------------------------------------------------------------ 06 explainable AI
    Exercise("05.4", "choose, and justify: would you tell your team that some strategy beats random labelling on this "
             "data? 'yes' or 'no', judged by the paired intervals of the table above (not by the curves' order).",
             "value", "a strategy counts only if its interval lies wholly above 0; and what size of difference could "
             "these seeds detect at all?",
             "'yes' only if at least one strategy's interval lies wholly above 0. With a few seeds the detectable "
             "difference is large (printed above), so 'no' here means 'not shown', not 'no effect'; say both.",
             expected=lambda verdicts: "yes" if any(str(v).startswith("better") for v in verdicts) else "no",
             accepts="'yes' or 'no'"),
    Exercise("06.1", "write hires_cam(A, G): the HiResCAM map (h x w, before up-sampling) from a layer's feature maps A "
             "and the class score's gradients G, each C x h x w.",
             "function", "no mean over the map this time: A * G is already C x h x w; sum over axis 0, then ReLU.",
             "def hires_cam(A, G):\n    return np.maximum((A * G).sum(axis=0), 0)\n"
             "# Grad-CAM would first replace G by its mean over each map; where the gradient is the same everywhere "
             "(global average pooling, then one linear layer) the two agree.",
             reference=_hires_cam, accepts="a function returning an h x w array",
             cases=tuple((_RNG.normal(size=(c, h, h)), _RNG.normal(size=(c, h, h))) for c, h in [(2, 2), (5, 4), (8, 7)])),
    Exercise("06.2", "predict, then run: judged by the deletion check with its 95 % interval (as in section 6), is "
             "saliency 'better' than a random map on these cells, 'worse', or is the result 'inconclusive'?",
             "prediction",
             "deletion removes the pixels a map ranks first; sharp, noisy pixel gradients rank single pixels, and "
             "the blurred baseline removes small dots but not single pixels' neighbourhoods.",
             "the run decides, and 'inconclusive' is a real answer: the verdict is 'better' or 'worse' only when the "
             "interval of the per-image difference from the random map excludes 0.",
             expected=lambda observed: str(observed).split(" than")[0], accepts="'better', 'worse' or 'inconclusive'"),
    # ------------------------------------------------------------------ 07 your own images
    Exercise("06.3", "choose, and justify: would you show this notebook's Grad-CAM maps of the malaria model to a "
             "pathologist as 'where the model looks'? 'yes' or 'no', judged by section 6's two checks of that model: "
             "deletion and insertion against a random map, and randomisation.", "value",
             "the map must beat a random map of the same resolution on both curves, with its interval, AND depend on "
             "the weights: once every layer was re-initialised, did less of it survive than an edge detector, which "
             "knows no model, shares with it?",
             "'yes' only if deletion and insertion both say 'better than random' and the randomised model's maps keep "
             "no more of the trained ones than the image-only reference shares with them (the interval of the "
             "difference does not lie above 0: 'the maps depend on the weights'). Otherwise the map is not shown to follow the model: "
             "show it, if at all, as an illustration with that caveat. Even with 'yes', it is one small model on "
             "stand-in cells: a pathologist would also want maps of real cases, errors included.",
             expected=lambda faithful, randomised: ("yes" if faithful == "better than random" and randomised <= 0
                                                    else "no"),      # randomised: the interval's sign (+1: fails)
             accepts="'yes' or 'no'"),
    Exercise("07.1", "write answers(index, k): the k yes/no answers (a list of 0s and 1s) that a multi-label class "
             "index stands for, question i being bit i of the index.", "function",
             "shift the index right by i and keep the lowest bit: (index >> i) & 1.",
             "def answers(index, k):\n    return [(index >> i) & 1 for i in range(k)]",
             reference=_answers, accepts="a function returning a list of k zeros and ones",
             cases=tuple((i, k) for k in (1, 2, 3) for i in range(2 ** k))),
    Exercise("07.2", "predict, then run: a 200 px wide image, 64 px patches, a stride of 32 px. How many windows "
             "fit in one row?", "prediction",
             "starts at 0, 32, 64, ... while a window still fits; then one more window that ends exactly at the edge, "
             "if the last start did not already end there.",
             "0, 32, 64, 96, 128 fit (128 + 64 = 192); 192 < 200, so one more window starts at 136: 6 windows.",
             expected=lambda observed: int(observed), accepts="a whole number"),
    Exercise("07.3", "predict, then run: you label an image, then rename its file and move it into another "
             "subfolder, and open the project again. How many new images does the project add?", "prediction",
             "what does the project use to recognise an image: its name, its folder, or its content?",
             "0: an image is known by its content hash, so the renamed file is the same image. The project points "
             "it at its new path and keeps its label, split and predictions. (Re-saving it as a JPEG would be "
             "another matter: new bytes, a new image; section 2's near_duplicates finds such copies.)",
             expected=lambda observed: int(observed), accepts="a whole number"),
    Exercise("07.4", "choose, and justify: your project buys 100 more labels next week. What does section 5's control "
             "let you conclude: 'model' (let the model choose), 'random', or 'cannot tell' from one run?", "value",
             "what does the interval of section 5 cover, and what does it leave out? Look at the control's own first "
             "and last rounds.",
             "'cannot tell': each project was trained once, so the interval covers which fresh images were scored, "
             "not training noise, and the control's own rounds show that noise can be as large as the effect. Until "
             "a comparison over seeds (notebook 05's kind, e.g. `course-al simulate` on similar data) shows the "
             "model's choice winning at your budget, random is the cheap default: it cannot be fooled by a cold "
             "start, and it leaves an unbiased sample of your folder.",
             expected=lambda verdict: "cannot tell", accepts="'model', 'random' or 'cannot tell'"),
]}


def get(key: str) -> Exercise:
    """The exercise ``"NN.k"`` (notebook NN, exercise k); prints its task."""
    if key not in EXERCISES:
        raise CourseError(f"no exercise {key!r}; there are {', '.join(EXERCISES)}")
    ex = replace(EXERCISES[key], tries=0)         # a fresh copy: the registry itself never changes
    print(f"Exercise {ex.key}: {ex.task}")
    return ex


def all_exercises() -> list[Exercise]:
    """Every exercise, for CI's check of the stored solutions."""
    return list(EXERCISES.values())
