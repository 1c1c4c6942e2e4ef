"""Explainable AI for torch and Keras image classifiers: heat maps, and tools that test them.

Heat maps (each takes N images and returns N maps, ``[N, H, W]`` floats in ``[0, 1]`` at image size):

- :func:`grad_cam` / :func:`grad_cam_plus_plus`: gradients of the class score at a convolution layer
  (default: the last one) -> one weight per channel -> weighted sum of the feature maps -> ReLU.
  :func:`hires_cam` skips the averaging: each feature map times its own gradient, cell by cell.
- :func:`saliency`: ``|d score / d pixel|`` (Simonyan et al. 2014).
- :func:`integrated_gradients`: path integral of the gradients from a baseline (Sundararajan et al. 2017);
  ``reduce=False`` returns the raw attributions, which sum to ``score(x) - score(baseline)``.
- :func:`occlusion`: how much the score drops when a patch is greyed out (Zeiler & Fergus 2014).
- :func:`cam_layer_at_least`: the deepest layer whose Grad-CAM map is fine enough (``cam_sides``: every layer's).

Checks that a heat map means something:

- :func:`randomization_check`: re-initialise the layers from the top down and watch the maps' rank
  correlation with the original fall (Adebayo et al. 2018). A map that survives is not explaining the model;
  :func:`edge_maps` is the image-only reference (how much of a map an edge detector, which knows no model, shares).
- :func:`class_sensitivity`: does the map for class A differ from the map for class B?
- :func:`course_utils.xai_faithfulness.deletion_insertion`: remove (or reveal) the most relevant pixels
  first and follow the class probability (Petsiuk et al. 2018), compared with a random map on the same
  images (its own module: the faithfulness metrics).
- :func:`paired_interval`: mean of paired differences with a t-interval (also for comparing two methods);
  it is :func:`course_utils.stats.paired_t_interval`, kept here under this name.
- :func:`heatmap_box`: weak localisation, a box from a heat map without any box labels.

Conventions. ``images`` are what the model eats, as a batch: torch ``N x C x H x W`` (a numpy ``N x H x W x C``
batch is transposed for you) and Keras ``N x H x W x C``; ``uint8`` images are scaled to ``[0, 1]`` unless you
pass ``preprocess=``. Models return logits (Keras models ending in a softmax/sigmoid are handled: the score is
the logit before it). The *score* of class ``c`` is its logit; for a single-logit binary model class 1 scores
``+logit`` and class 0 ``-logit``. ``target=None`` explains the predicted class. Torch models run in eval
mode and every module gets its own train/eval flag back afterwards. Framework code lives in ``xai_torch``
and ``xai_keras`` and is imported only when a model of that framework arrives; every call wraps the model
in a fresh adapter, or pass one you hold (:func:`adapter`) instead of the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..metrics import probabilities
from .. import runtime
from ..runtime import CourseError, framework_of
from ..stats import PairedInterval, paired_t_interval as paired_interval  # kept here: the notebooks' names

__all__ = [
    "METHODS", "grad_cam", "grad_cam_plus_plus", "hires_cam", "saliency", "integrated_gradients", "occlusion",
    "explain", "cam_from_gradients", "cam_plus_plus_from_gradients", "hires_cam_from_gradients", "normalize_maps", "resize_maps",
    "adapter", "conv_layers", "cam_sides", "cam_layer_at_least", "keras_view", "predict_logits", "predict_proba", "target_classes", "target_probs",
    "randomization_check", "randomization_checks", "RandomizationResult", "rank_correlations",
    "image_only_reference", "randomization_verdict", "class_sensitivity", "ClassSensitivity",
    "PairedInterval", "paired_interval",
    "spearman", "heatmap_box", "heatmap_boxes", "box_iou", "peak_location", "center_of_mass", "edge_maps",
]

EPS = 1e-8


# =========================================================================== the core, in numpy
def cam_from_gradients(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM from a layer's activations and the class score's gradients, both ``N x C x h x w``."""
    weights = gradients.mean(axis=(2, 3))                         # global-average the gradients: one weight per channel
    cam = np.einsum("nc,nchw->nhw", weights, activations)         # weighted sum of the feature maps
    return np.maximum(cam, 0.0)                                   # ReLU: keep only evidence *for* the class


def cam_plus_plus_from_gradients(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19): pixel-wise weights favour every region that helps."""
    g2, g3 = gradients ** 2, gradients ** 3
    sum_a = activations.sum(axis=(2, 3), keepdims=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    alpha = np.where(gradients != 0, alpha, 0.0)
    weights = (np.maximum(gradients, 0.0) * alpha).sum(axis=(2, 3))
    return np.maximum(np.einsum("nc,nchw->nhw", weights, activations), 0.0)


def hires_cam_from_gradients(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """HiResCAM (Draelos & Carin 2020) from ``N x C x h x w`` activations and gradients: each feature map times its
    own gradient, cell by cell, summed over channels, positive part. No averaging, so a cell lights up only if it
    raised the score; equal to Grad-CAM (up to scale) when the model ends in global average pooling."""
    return np.maximum((activations * gradients).sum(axis=1), 0.0)


def normalize_maps(maps: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Min-max scale each map to ``[0, 1]``; an all-constant map becomes all zeros (never NaN)."""
    maps = np.asarray(maps, dtype=np.float64)
    lo = maps.min(axis=(-2, -1), keepdims=True)
    hi = maps.max(axis=(-2, -1), keepdims=True)
    return (maps - lo) / (hi - lo + eps)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[N, h, w]`` maps to ``size = (H, W)`` with half-pixel centres.

    The same sampling as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``,
    ``tf.image.resize(method="bilinear")`` and OpenCV's ``resize``, so maps from torch and Keras match.
    """
    maps = np.asarray(maps, dtype=np.float64)
    h, w = maps.shape[-2:]
    H, W = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return maps.copy()

    def axis(n_in: int, n_out: int):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, fr = axis(h, H)
    c0, c1, fc = axis(w, W)
    top = maps[..., r0, :] * (1 - fr)[:, None] + maps[..., r1, :] * fr[:, None]
    return top[..., c0] * (1 - fc) + top[..., c1] * fc


# =========================================================================== model adapters
def _framework(model: Any) -> str:
    found = framework_of(model)
    if found is not None:
        return found
    raise CourseError(f"expected a torch nn.Module or a Keras Model, got {type(model).__name__}. "
                      "Pass the trained model itself (not a History or a loader).")


def adapter(model: Any, preprocess: Callable | None = None, batch_size: int = 32):
    """The object every function here builds around ``model`` (a ``TorchAdapter`` or ``KerasAdapter``).

    Each call builds a fresh one and nothing is cached between calls. Hold one yourself and pass it in
    place of the model to skip rebuilding (a Keras functional view costs about 20 ms) in a long loop::

        ad = xai.adapter(keras_model)
        maps = [xai.grad_cam(ad, batch) for batch in batches]
    """
    if hasattr(model, "layer_activations_and_grads"):   # already an adapter: the caller's own
        if preprocess is not None and preprocess is not model.preprocess:
            raise CourseError("this adapter has its own preprocess: pass preprocess= to xai.adapter(...), "
                              "not with the adapter")
        return model
    if _framework(model) == "torch":
        from .torch_adapter import TorchAdapter  # noqa: PLC0415

        return TorchAdapter(model, preprocess=preprocess, batch_size=batch_size)
    from .keras_adapter import KerasAdapter  # noqa: PLC0415

    return KerasAdapter(model, preprocess=preprocess, batch_size=batch_size)


def conv_layers(model: Any) -> list[str]:
    """Names of the model's convolution layers, in order (the last one is Grad-CAM's default)."""
    return adapter(model).conv_layer_names()


def cam_sides(model: Any, image: Any, *, preprocess: Callable | None = None) -> dict[str, int]:
    """Cells across each convolution layer's feature map for an image of this size, first layer to last: how fine
    a Grad-CAM map taken at that layer can be."""
    ad = adapter(model, preprocess)
    x = ad.prepare(np.asarray(image)[None] if np.ndim(image) in (2, 3) else np.asarray(image)[:1])
    t = np.zeros(1, np.int64)
    return {name: int(ad.layer_activations_and_grads(x, t, name)[0].shape[2]) for name in ad.conv_layer_names()}


def cam_layer_at_least(model: Any, image: Any, min_side: int, *, preprocess: Callable | None = None,
                       sides: dict[str, int] | None = None) -> str:
    """The deepest convolution layer whose map has at least ``min_side`` cells across for this image size: deep
    enough to be class-specific, fine enough to tell a lesion from its surroundings. ``sides``: what
    :func:`cam_sides` already returned for this model and size (it costs a pass per layer)."""
    sides = cam_sides(model, image, preprocess=preprocess) if sides is None else sides
    fine = [name for name, side in sides.items() if side >= min_side]
    if not fine:
        raise CourseError(f"no convolution layer of this model has a map of {min_side} x {min_side} or more at this "
                          f"image size ({', '.join(f'{k}: {v}' for k, v in sides.items())}): use larger images")
    return fine[-1]


def target_classes(ad, x: np.ndarray, target: Any) -> np.ndarray:
    """One class index per image: ``None`` = predicted class, an int for all, or one per image."""
    n = len(x)
    k = ad.n_outputs(x)
    n_classes = 2 if k == 1 else k
    if target is None:
        logits = ad.logits(x)
        return (logits[:, 0] > 0).astype(np.int64) if k == 1 else logits.argmax(axis=1).astype(np.int64)
    t = np.asarray(target)
    if t.dtype.kind not in "iu" and not (t.dtype.kind == "f" and np.all(t == np.round(t))):
        raise CourseError(f"target must be a class index (int) or one per image, got {target!r}")
    t = np.broadcast_to(t.astype(np.int64), (n,)) if t.ndim == 0 else t.astype(np.int64).reshape(-1)
    if len(t) != n:
        raise CourseError(f"got {len(t)} targets for {n} images: pass one class index, or one per image")
    bad = t[(t < 0) | (t >= n_classes)]
    if len(bad):
        raise CourseError(f"class index {int(bad[0])} is out of range: this model has {n_classes} classes "
                          f"(valid indices 0..{n_classes - 1}"
                          + ("; a single-logit binary model: 1 = positive, 0 = negative" if k == 1 else "") + ").")
    return np.array(t, dtype=np.int64, copy=True)


def _class_scores(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The class score the maps explain: the target's logit (``+/-logit`` for a single-logit model)."""
    if logits.shape[1] == 1:
        return np.where(targets == 1, logits[:, 0], -logits[:, 0])
    return logits[np.arange(len(logits)), targets]


def target_probs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Probability of the target class (the course's one rule: sigmoid for one logit, softmax otherwise)."""
    return probabilities(logits)[np.arange(len(logits)), targets]


def keras_view(model: Any, layer: str | None = None) -> Callable:
    """For a Keras model: a function ``images -> (feature maps of layer, logits)`` (tensors, for a GradientTape).

    The plumbing behind the Keras Grad-CAM (works for functional and ``Sequential`` models, nested
    backbones, and peels a final softmax/sigmoid off), exposed so a notebook can write Grad-CAM itself.
    """
    if _framework(model) != "keras":
        raise CourseError("keras_view takes a Keras model; for torch use a forward hook (see xai_torch)")
    return adapter(model).gradcam_view(layer)


def predict_logits(model: Any, images: Any, *, preprocess: Callable | None = None) -> np.ndarray:
    """The model's logits for a batch of images, as numpy ``[N, K]``."""
    ad = adapter(model, preprocess)
    return ad.logits(ad.prepare(images))


def predict_proba(model: Any, images: Any, target: Any = None, *,
                  preprocess: Callable | None = None) -> np.ndarray:
    """Probability of the ``target`` class (default: the predicted one) for each image."""
    ad = adapter(model, preprocess)
    x = ad.prepare(images)
    return target_probs(ad.logits(x), target_classes(ad, x, target))


# =========================================================================== heat maps
def _grad_cam_raw(ad, x, targets, *, layer=None, plus_plus: bool = False, hires: bool = False, **_):
    acts, grads = ad.layer_activations_and_grads(x, targets, layer)
    core = hires_cam_from_gradients if hires else cam_plus_plus_from_gradients if plus_plus else cam_from_gradients
    return resize_maps(core(acts, grads), ad.image_size(x))


def _saliency_raw(ad, x, targets, **_):
    grads = ad.input_grads(x, targets)
    return np.abs(grads).max(axis=ad.channel_axis)


def _ig_attributions(ad, x, targets, *, baseline=None, steps: int = 64):
    if steps < 1:
        raise CourseError(f"steps must be at least 1, got {steps}")
    base = np.zeros_like(x) if baseline is None else np.broadcast_to(
        np.asarray(baseline, dtype=x.dtype), x.shape).copy()
    total = np.zeros(x.shape, dtype=np.float64)
    for alpha in (np.arange(steps) + 0.5) / steps:               # midpoint rule on the straight path
        total += ad.input_grads((base + alpha * (x - base)).astype(x.dtype), targets)
    return (x - base) * total / steps                             # (x - x') * average gradient


def _ig_raw(ad, x, targets, *, baseline=None, steps: int = 64, **_):
    attr = _ig_attributions(ad, x, targets, baseline=baseline, steps=steps)
    return np.abs(attr).sum(axis=ad.channel_axis)


def _occlusion_raw(ad, x, targets, *, patch: int | None = None, stride: int | None = None,
                   baseline: float = 0.0, **_):
    H, W = ad.image_size(x)
    patch = patch or max(2, min(H, W) // 8)
    stride = stride or max(1, patch // 2)
    if patch > min(H, W):
        raise CourseError(f"occlusion patch {patch} is larger than the image ({H} x {W})")
    base = _class_scores(ad.logits(x), targets)
    rows = list(range(0, H - patch + 1, stride))
    cols = list(range(0, W - patch + 1, stride))
    if rows[-1] != H - patch:
        rows.append(H - patch)
    if cols[-1] != W - patch:
        cols.append(W - patch)
    windows = [(r, c) for r in rows for c in cols]
    out = np.zeros((len(x), H, W))
    hits = np.zeros((H, W))
    for r, c in windows:
        hits[r:r + patch, c:c + patch] += 1
    for i in range(len(x)):
        batch = np.repeat(x[i:i + 1], len(windows), axis=0)
        for j, (r, c) in enumerate(windows):
            ad.set_region(batch, j, r, c, patch, baseline)
        drop = base[i] - _class_scores(ad.logits(batch), np.full(len(windows), targets[i]))
        for d, (r, c) in zip(drop, windows):
            out[i, r:r + patch, c:c + patch] += d
    return np.maximum(out / np.maximum(hits, 1), 0.0)


METHODS: dict[str, Callable] = {
    "grad_cam": _grad_cam_raw,
    "grad_cam_plus_plus": lambda ad, x, t, **kw: _grad_cam_raw(ad, x, t, plus_plus=True, **kw),
    "hires_cam": lambda ad, x, t, **kw: _grad_cam_raw(ad, x, t, hires=True, **kw),
    "saliency": _saliency_raw,
    "integrated_gradients": _ig_raw,
    "occlusion": _occlusion_raw,
}


def explain(model: Any, images: Any, method: str = "grad_cam", target: Any = None, *,
            normalize: bool = True, preprocess: Callable | None = None, **kwargs: Any) -> np.ndarray:
    """Heat maps ``[N, H, W]`` by ``method`` (one of :data:`METHODS`); extra keywords go to the method."""
    if method not in METHODS:
        raise CourseError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    ad = adapter(model, preprocess)
    x = ad.prepare(images)
    maps = METHODS[method](ad, x, target_classes(ad, x, target), **kwargs)
    return normalize_maps(maps) if normalize else maps


def grad_cam(model: Any, images: Any, target: Any = None, *, layer: str | None = None,
             normalize: bool = True, preprocess: Callable | None = None) -> np.ndarray:
    """Grad-CAM maps ``[N, H, W]`` at ``layer`` (default: the last convolution), up-sampled to the image."""
    return explain(model, images, "grad_cam", target, layer=layer, normalize=normalize, preprocess=preprocess)


def grad_cam_plus_plus(model: Any, images: Any, target: Any = None, *, layer: str | None = None,
                       normalize: bool = True, preprocess: Callable | None = None) -> np.ndarray:
    """Grad-CAM++ maps ``[N, H, W]`` (sharper when a class appears in several places)."""
    return explain(model, images, "grad_cam_plus_plus", target, layer=layer, normalize=normalize,
                   preprocess=preprocess)


def hires_cam(model: Any, images: Any, target: Any = None, *, layer: str | None = None,
              normalize: bool = True, preprocess: Callable | None = None) -> np.ndarray:
    """HiResCAM maps ``[N, H, W]`` (:func:`hires_cam_from_gradients`) at ``layer``, up-sampled to the image."""
    return explain(model, images, "hires_cam", target, layer=layer, normalize=normalize, preprocess=preprocess)


def saliency(model: Any, images: Any, target: Any = None, *, normalize: bool = True,
             preprocess: Callable | None = None) -> np.ndarray:
    """Vanilla gradient saliency ``max_channel |d score / d pixel|``, ``[N, H, W]``."""
    return explain(model, images, "saliency", target, normalize=normalize, preprocess=preprocess)


def integrated_gradients(model: Any, images: Any, target: Any = None, *, baseline: Any = None,
                         steps: int = 64, reduce: bool = True, normalize: bool = True,
                         preprocess: Callable | None = None) -> np.ndarray:
    """Integrated gradients from ``baseline`` (default: black) in ``steps`` steps.

    ``reduce=True`` gives maps ``[N, H, W]`` (sum of ``|attribution|`` over channels); ``reduce=False``
    gives the raw attributions in the model's input layout, which sum to ``score(x) - score(baseline)``.
    """
    ad = adapter(model, preprocess)
    x = ad.prepare(images)
    t = target_classes(ad, x, target)
    if not reduce:
        return _ig_attributions(ad, x, t, baseline=baseline, steps=steps)
    maps = _ig_raw(ad, x, t, baseline=baseline, steps=steps)
    return normalize_maps(maps) if normalize else maps


def occlusion(model: Any, images: Any, target: Any = None, *, patch: int | None = None,
              stride: int | None = None, baseline: float = 0.0, normalize: bool = True,
              preprocess: Callable | None = None) -> np.ndarray:
    """Occlusion maps: the score drop when a ``patch x patch`` square is set to ``baseline`` (ReLU'd)."""
    return explain(model, images, "occlusion", target, patch=patch, stride=stride, baseline=baseline,
                   normalize=normalize, preprocess=preprocess)


# =========================================================================== verification
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps; 0.0 when either is constant (no ranking to compare), NaN when either
    holds NaN or inf (a made-up 0.0 would read as "the map changed completely")."""
    from scipy.stats import rankdata  # noqa: PLC0415

    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    ra, rb = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


@dataclass
class RandomizationResult:
    """Cascading model-randomisation check: step 0 is the trained model, step k has the top k groups reset."""

    steps: list[str]
    layers_reset: list[list[str]]
    per_image: np.ndarray            # [steps, N] Spearman correlation with the step-0 maps
    maps: list[np.ndarray] = field(repr=False)

    @property
    def correlation(self) -> np.ndarray:
        """Mean rank correlation with the original maps, one value per step."""
        return self.per_image.mean(axis=1)

    def table(self):
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame({"step": self.steps, "layers reset": [len(g) for g in self.layers_reset],
                             "mean Spearman": self.correlation,
                             "min": self.per_image.min(axis=1), "max": self.per_image.max(axis=1)})


def randomization_check(model: Any, images: Any, method: str = "grad_cam", target: Any = None, *,
                        max_steps: int | None = 8, seed: int = 0, preprocess: Callable | None = None,
                        progress: bool = False, mask: np.ndarray | None = None, absolute: bool = False,
                        **kwargs: Any) -> RandomizationResult:
    """Adebayo et al.'s sanity check, cascading from the output layer down.

    The layers with weights are re-initialised from the top (output) towards the input, cumulatively,
    in at most ``max_steps`` groups; at each step the maps for the *same* target classes are compared
    with the original maps by Spearman rank correlation. Explanations that depend on what the model
    learned should decorrelate quickly. The trained model is not touched (a copy is randomised; for a
    Keras model the copy is drawn with ``keras.utils.set_random_seed(seed)``, which reseeds the session).
    ``progress=True`` shows a progress bar over the steps. ``mask`` and ``absolute``: how each step's maps are
    compared with the original ones (:func:`rank_correlations`).
    """
    if method not in METHODS:
        raise CourseError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    ad = adapter(model, preprocess)
    x = ad.prepare(images)
    t = target_classes(ad, x, target)
    original = normalize_maps(METHODS[method](ad, x, t, **kwargs))
    layers = ad.param_layer_names()[::-1]                          # top (output) first
    if not layers:
        raise CourseError("this model has no layers with weights to randomise")
    n_groups = len(layers) if not max_steps else min(max_steps, len(layers))   # None or 0: one group per layer
    groups = [list(g) for g in np.array_split(np.array(layers, dtype=object), n_groups)]
    work = ad.copy(seed=seed)
    steps, reset, per_image, maps = ["trained model"], [[]], [np.ones(len(x))], [original]
    done: list[str] = []
    if progress:
        groups = runtime.progress(groups, desc="randomising layers (top down)")
    for i, g in enumerate(groups):
        work.reset_layers(g)
        done = done + g
        m = normalize_maps(METHODS[method](work, x, t, **kwargs))
        steps.append(f"reset down to {g[-1]}")
        reset.append(list(done))
        per_image.append(rank_correlations(original, m, mask=mask, absolute=absolute))
        maps.append(m)
    return RandomizationResult(steps, reset, np.stack(per_image), maps)


def randomization_checks(model: Any, images: Any, method: str = "grad_cam", target: Any = None, *,
                         seeds: Sequence[int] = (0, 1, 2), mask: np.ndarray | None = None, absolute: bool = False,
                         **kwargs: Any) -> tuple[RandomizationResult, list[np.ndarray]]:
    """:func:`randomization_check` once per re-initialisation seed. Returns one result whose per-image
    correlations are the mean over the seeds (one draw of random weights is one sample; its table, curve and
    verdict should not hang on it), each measured by :func:`rank_correlations` (``mask``, ``absolute``), and each
    seed's maps of the fully randomised model."""
    if len(seeds) == 0:
        raise CourseError("seeds must name at least one re-initialisation")
    runs = [randomization_check(model, images, method, target, seed=int(s), mask=mask, absolute=absolute, **kwargs)
            for s in seeds]
    return (RandomizationResult(runs[0].steps, runs[0].layers_reset, np.mean([r.per_image for r in runs], axis=0),
                                runs[0].maps), [r.maps[-1] for r in runs])


def rank_correlations(a: np.ndarray, b: np.ndarray, *, mask: np.ndarray | None = None,
                      absolute: bool = False) -> np.ndarray:
    """Per image: the Spearman rank correlation of maps ``a[i]`` and ``b[i]`` (``[N, H, W]`` each), only over the
    pixels where ``mask[i]`` is true when given (e.g. the cell, not its black background, which every map shares),
    as ``|rho|`` when ``absolute`` (Adebayo et al.: a map flipped in sign is still the same map)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise CourseError(f"rank_correlations needs two [N, H, W] stacks of maps, got {a.shape} and {b.shape}")
    if mask is not None and np.shape(mask) != a.shape:
        raise CourseError(f"mask must be [N, H, W] = {a.shape}, got {np.shape(mask)}")
    rho = np.array([spearman(x[m], y[m]) if mask is not None else spearman(x, y)
                    for x, y, m in zip(a, b, mask if mask is not None else [None] * len(a))])
    return np.abs(rho) if absolute else rho


def image_only_reference(trained: np.ndarray, images: Any, *, mask: np.ndarray | None = None,
                         map_size: tuple[int, int] | None = None, draws: int = 8, seed: int = 0) -> np.ndarray:
    """Per image, the ``|rho|`` with the trained map that needs no trained weights: the larger of what the image's
    edge map shares with it (:func:`edge_maps`) and what a random map drawn at the heat map's resolution
    (``map_size``, up-sampled the same way; mean of ``draws``) shares with it by chance. A randomised model's maps
    that keep more than this are not explained by the image or by smoothness alone (Adebayo et al. 2018)."""
    trained = np.asarray(trained, dtype=np.float64)
    edges = rank_correlations(trained, edge_maps(images), mask=mask, absolute=True)
    if map_size is None:
        return edges
    rng = np.random.default_rng(seed)
    chance = np.mean([rank_correlations(trained, resize_maps(rng.random((len(trained), *map_size)), trained.shape[1:]),
                                        mask=mask, absolute=True) for _ in range(draws)], axis=0)
    return np.maximum(edges, chance)


def randomization_verdict(interval: PairedInterval, margin: float = 0.05) -> str:
    """Words for "surviving minus the image-only reference" (:func:`image_only_reference`), per image: above 0,
    part of the map does not depend on the weights; below, it does; within ``±margin`` as a whole, about the same."""
    return interval.verdict(above="more survives than the image-only reference: part of the map does not depend on "
                                  "the weights", below="less survives than the image-only reference: the maps depend "
                                  "on the weights", neither="inconclusive",
                            same=f"about the image-only reference (within {margin:g})", margin=margin)


@dataclass
class ClassSensitivity:
    """How different the maps for two classes are, per image."""

    class_a: int
    class_b: int
    rank_correlation: np.ndarray     # [N] Spearman between the two maps (1 = same ranking)
    difference: np.ndarray           # [N] mean |map_a - map_b| of the [0, 1] maps
    maps_a: np.ndarray = field(repr=False)
    maps_b: np.ndarray = field(repr=False)

    @property
    def empty(self) -> np.ndarray:
        """[N] True where either map is all zero: nothing to rank, so its correlation (0) says nothing."""
        return (self.maps_a.reshape(len(self.maps_a), -1).max(axis=1) <= EPS) | \
               (self.maps_b.reshape(len(self.maps_b), -1).max(axis=1) <= EPS)


def class_sensitivity(model: Any, images: Any, class_a: int = 0, class_b: int = 1, *,
                      method: str = "grad_cam", preprocess: Callable | None = None,
                      **kwargs: Any) -> ClassSensitivity:
    """Maps for ``class_a`` and ``class_b`` on the same images, and how much they differ.

    A method that draws (nearly) the same map whatever class you ask about is showing the image's edges
    or the network's habits, not the evidence for a class.
    """
    a = explain(model, images, method, class_a, preprocess=preprocess, **kwargs)
    b = explain(model, images, method, class_b, preprocess=preprocess, **kwargs)
    return ClassSensitivity(class_a, class_b, rank_correlations(a, b), np.abs(a - b).mean(axis=(1, 2)), a, b)


# =========================================================================== localisation
def heatmap_box(heatmap: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """Weak localisation: the box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) around the largest connected
    region where the map reaches ``threshold`` x its maximum. ``None`` for an all-zero map.
    """
    from scipy import ndimage  # noqa: PLC0415

    m = np.asarray(heatmap, dtype=np.float64)
    if m.ndim != 2:
        raise CourseError(f"heatmap_box takes one H x W map, got shape {m.shape}; use heatmap_boxes for a batch")
    if not 0 < threshold <= 1:
        raise CourseError(f"threshold is a fraction of the map's maximum, in (0, 1]; got {threshold}")
    if m.max() <= 0:
        return None
    labels, n = ndimage.label(m >= threshold * m.max())
    sizes = ndimage.sum(np.ones_like(m), labels, index=np.arange(1, n + 1))
    rows, cols = ndimage.find_objects(labels)[int(np.argmax(sizes))]
    return cols.start, rows.start, cols.stop, rows.stop


def heatmap_boxes(maps: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int, int, int] | None]:
    """:func:`heatmap_box` for each map of a batch."""
    return [heatmap_box(m, threshold) for m in np.asarray(maps)]


def box_iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0.0 if either is missing)."""
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def peak_location(maps: np.ndarray) -> np.ndarray:
    """``[N, 2]`` (row, col) of each map's maximum."""
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, maps.shape[1:]), axis=1)


def edge_maps(images: Any) -> np.ndarray:
    """``[N, H, W]`` Sobel edge strength of each image's grey level (channels averaged): a "heat map" that knows
    nothing of any model, the image-only reference of the randomisation check (Adebayo et al. 2018).
    ``images``: ``N x H x W`` or ``N x H x W x C``."""
    from scipy import ndimage  # noqa: PLC0415

    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 4:
        x = x.mean(axis=-1)
    if x.ndim != 3:
        raise CourseError(f"edge_maps needs N x H x W or N x H x W x C images, got shape {np.shape(images)}")
    # one image at a time: sobel on the whole stack would also smooth across neighbouring images (its axis 0)
    return np.stack([np.hypot(ndimage.sobel(im, axis=0), ndimage.sobel(im, axis=1)) for im in x])


def center_of_mass(maps: np.ndarray) -> np.ndarray:
    """``[N, 2]`` (row, col) centre of mass of each map (the image centre for an all-zero map)."""
    maps = np.asarray(maps, dtype=np.float64)
    H, W = maps.shape[-2:]
    rr, cc = np.mgrid[0:H, 0:W]
    tot = maps.sum(axis=(-2, -1))
    safe = np.where(tot > 0, tot, 1.0)
    r = np.where(tot > 0, (maps * rr).sum(axis=(-2, -1)) / safe, (H - 1) / 2)
    c = np.where(tot > 0, (maps * cc).sum(axis=(-2, -1)) / safe, (W - 1) / 2)
    return np.stack([r, c], axis=-1)
