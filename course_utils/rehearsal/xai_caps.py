"""The rehearsal's wrappers of the XAI methods and deletion/insertion (installed by :func:`.caps.install`).

Each counts the passes its model makes through a counting adapter (:class:`CountedAdapter`), runs a capped
number of steps or images, and scales the count to what full mode would do.
"""
from __future__ import annotations

import contextlib
from collections import Counter

import numpy as np

from .core import CAPS, TALLIES, best_effort, model_name, record_work
from .flops import keras_flops_per_image, torch_flops_per_image
from .repeat import repeat_rows

__all__ = ["CountedAdapter", "counted_adapter", "first_images", "capped_ig", "capped_deletion",
           "capped_randomisation"]


class CountedAdapter:
    """An XAI adapter whose forward (``logits``) and gradient passes are recorded as work as they run."""

    _PASSES = {"logits": "forward", "layer_activations_and_grads": "train", "input_grads": "train"}

    def __init__(self, ad):
        self._ad, self._flops = ad, None

    def __getattr__(self, name):
        method = getattr(self._ad, name)
        if name not in self._PASSES:
            return method

        def counted(x, *args, **kwargs):
            self.note(self._PASSES[name], len(x), x)
            return method(x, *args, **kwargs)
        return counted

    def note(self, kind: str, images: int, x=None) -> None:
        """Record ``images`` passes of ``kind`` through the adapter's model (also what a capped loop skipped)."""
        ad = self._ad
        if self._flops is None and x is not None:
            self._flops = best_effort(lambda: _adapter_flops(ad, x))
        record_work(kind, images=int(images), steps=-(-int(images) // max(1, int(getattr(ad, "batch_size", 32)))),
                    flops_per_image=self._flops, what=model_name(ad.model),
                    framework="torch" if ad.channel_axis == 1 else "keras")

    def copy(self, *args, **kwargs):
        return CountedAdapter(self._ad.copy(*args, **kwargs))


def _adapter_flops(ad, x) -> float | None:
    if ad.channel_axis == 1:                     # torch, N x C x H x W
        import torch  # noqa: PLC0415

        return torch_flops_per_image(ad.model, torch.as_tensor(np.asarray(x[:1]), dtype=torch.float32))
    return keras_flops_per_image(ad.model)


def counted_adapter(original):
    def adapter(model, *args, **kwargs):
        if isinstance(model, CountedAdapter):
            return model
        return CountedAdapter(original(model, *args, **kwargs))
    return adapter


@contextlib.contextmanager
def _scaled(ad: CountedAdapter, factor: float, x):
    """Record the passes counted inside the block ``factor - 1`` more times: what full mode adds to a capped loop."""
    tally = Counter()
    TALLIES.append(tally)
    try:
        yield
    finally:
        TALLIES.remove(tally)
    for kind, n in list(tally.items()):
        ad.note(kind, round(n * (factor - 1)), x)


def first_images(original):
    """Explain or predict the first ``CAPS.eval_batches`` batches of images; the rest repeat their rows."""
    def capped(model, images, *args, **kwargs):
        from ..xai.methods import adapter  # noqa: PLC0415  (the patched one: its passes are counted)

        n = len(images)
        keep = min(n, CAPS.eval_batches * getattr(adapter(model), "batch_size", 32))
        if keep >= n:
            return original(model, images, *args, **kwargs)
        target = args[1] if len(args) > 1 else kwargs.get("target")
        if np.ndim(target) and len(target) == n:
            if len(args) > 1:
                args = (args[0], target[:keep], *args[2:])
            else:
                kwargs["target"] = target[:keep]
        return repeat_rows(original(model, images[:keep], *args, **kwargs), n)
    return capped


def capped_ig(original):
    def integrated_gradients(model, images, *args, steps: int = 64, preprocess=None, **kwargs):
        from ..xai.methods import adapter  # noqa: PLC0415

        run = min(steps, CAPS.ig_steps)
        ad = adapter(model, preprocess)
        with _scaled(ad, steps / run, images):
            return original(ad, images, *args, steps=run, **kwargs)
    return integrated_gradients


def capped_deletion(original):
    def deletion_insertion(model, images, maps, *args, steps: int = 20, preprocess=None, batch_size: int = 128,
                           **kwargs):
        from ..xai.faithfulness import adapter  # noqa: PLC0415

        run = min(steps, CAPS.deletion_steps)
        ad = adapter(model, preprocess, batch_size=batch_size)
        with _scaled(ad, (steps + 1) / (run + 1), images):    # each curve has steps + 1 points
            return original(ad, images, maps, *args, steps=run, batch_size=batch_size, **kwargs)
    return deletion_insertion


def capped_randomisation(original):
    def randomization_check(model, images, *args, max_steps: int | None = 8, preprocess=None, **kwargs):
        from ..xai.methods import adapter  # noqa: PLC0415

        ad = adapter(model, preprocess)
        layers = len(ad.param_layer_names())
        full = layers if not max_steps else min(max_steps, layers)
        run = min(full, CAPS.randomisation_steps)
        with _scaled(ad, (full + 1) / (run + 1), images):     # the trained model's maps, then one set per group
            return original(ad, images, *args, max_steps=run, **kwargs)
    return randomization_check
