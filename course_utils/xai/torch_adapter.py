"""PyTorch side of :mod:`course_utils.xai`: forward passes, layer hooks and gradients for an ``nn.Module``.

Only :mod:`course_utils.xai` uses this; it imports it when a torch model arrives.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..data.pipelines import nchw_float, require_finite
from ..runtime import CourseError

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (dropout off, batch-norm running statistics), then give every
    module back the train/eval flag it had: a model in the middle of training stays in training."""
    training = [m for m in model.modules() if m.training]
    if not training:                                     # already all in eval mode: nothing to switch
        yield
        return
    model.eval()
    try:
        yield
    finally:
        for m in training:
            m.training = True


class TorchAdapter:
    """What the XAI methods need from a torch classifier that returns logits ``[N, K]``."""

    channel_axis = 1

    def __init__(self, model: nn.Module, preprocess: Callable | None = None, batch_size: int = 32, *,
                 seed: int = 0):
        self.model = model
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.seed = seed                   # seeds reset_layers (the randomisation check's fresh weights)
        self._k: int | None = None
        try:
            self.device = next(model.parameters()).device
        except StopIteration:
            self.device = torch.device("cpu")

    # ---------------------------------------------------------------- layers
    def conv_layer_names(self) -> list[str]:
        return [name for name, m in self.model.named_modules() if isinstance(m, nn.Conv2d)]

    def _layer(self, layer: str | nn.Module | None) -> nn.Module:
        convs = self.conv_layer_names()
        if isinstance(layer, nn.Module):
            return layer
        if layer is None:
            if not convs:
                raise CourseError(f"{type(self.model).__name__} has no Conv2d layer, so Grad-CAM has no feature "
                                  "maps to weight. Use saliency, integrated_gradients or occlusion instead, "
                                  "or pass layer= a module whose output is N x C x H x W.")
            return dict(self.model.named_modules())[convs[-1]]
        modules = dict(self.model.named_modules())
        if layer not in modules:
            shown = ", ".join(convs) if convs else "(none: the model has no Conv2d layer)"
            raise CourseError(f"the model has no layer named {layer!r}. Its convolution layers are: {shown}")
        return modules[layer]

    def param_layer_names(self) -> list[str]:
        """Modules that own weights directly, in registration order (input side first)."""
        return [name for name, m in self.model.named_modules()
                if name and any(True for _ in m.parameters(recurse=False))]

    # ---------------------------------------------------------------- data
    def prepare(self, images: Any) -> np.ndarray:
        """A float32 N x C x H x W batch, checked against the first convolution's channel count."""
        if self.preprocess is not None:
            images = self.preprocess(images)
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if x.ndim != 4:
            raise CourseError(f"expected a batch of images N x C x H x W (or N x H x W x C), got shape {x.shape}. "
                              "For one image use images[None].")
        first = next((m for m in self.model.modules() if isinstance(m, _CONV)), None)
        want = first.in_channels if isinstance(first, nn.Conv2d) else None
        nhwc = False
        if want is not None and x.shape[1] != want:
            if x.shape[-1] != want:
                raise CourseError(f"the model expects {want}-channel images but got shape {x.shape} "
                                  f"(neither axis 1 nor the last axis is {want}). Convert the images "
                                  "(e.g. grey -> RGB with np.repeat) or use a model built for them.")
            nhwc = True                                          # N x H x W x C: transpose to N x C x H x W
        if x.dtype == np.uint8:                                  # the course's one uint8 NHWC -> float NCHW rule
            x = nchw_float(x if nhwc else x.transpose(0, 2, 3, 1))
        elif nhwc:
            x = x.transpose(0, 3, 1, 2)
        x = require_finite(np.ascontiguousarray(x, dtype=np.float32), "explaining")
        with torch.no_grad():
            self._forward(torch.from_numpy(x[:1]))                # a clear error now beats a cryptic one later
        return x

    def image_size(self, x: np.ndarray) -> tuple[int, int]:
        return int(x.shape[2]), int(x.shape[3])

    @staticmethod
    def set_region(batch: np.ndarray, j: int, r: int, c: int, size: int, value: float) -> None:
        batch[j, :, r:r + size, c:c + size] = value

    # ---------------------------------------------------------------- passes
    def _forward(self, xb: torch.Tensor) -> torch.Tensor:
        try:
            with _eval_mode(self.model):
                out = self.model(xb.to(self.device))
        except RuntimeError as exc:
            raise CourseError(f"the model could not process images of shape {tuple(xb.shape)[1:]} "
                              f"(C x H x W): {str(exc).splitlines()[0]}. Give it images of the size and channel count "
                              "it was trained on.") from exc
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim != 2:
            raise CourseError(f"the model should return logits of shape [N, classes], got {tuple(out.shape)}")
        return out

    def _chunks(self, n: int):
        for s in range(0, n, self.batch_size):
            yield slice(s, min(n, s + self.batch_size))

    def n_outputs(self, x: np.ndarray) -> int:
        if self._k is None:
            with torch.no_grad():
                self._k = int(self._forward(torch.from_numpy(x[:1])).shape[1])
        return self._k

    def logits(self, x: np.ndarray) -> np.ndarray:
        outs = []
        with torch.no_grad():
            for sl in self._chunks(len(x)):
                outs.append(self._forward(torch.from_numpy(np.ascontiguousarray(x[sl]))).double().cpu().numpy())
        return np.concatenate(outs)

    @staticmethod
    def _class_scores(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The explained score per image: the target's logit (``+/-logit`` for a single-logit model)."""
        if logits.shape[1] == 1:
            return torch.where(t == 1, logits[:, 0], -logits[:, 0])
        return logits.gather(1, t[:, None])[:, 0]

    def layer_activations_and_grads(self, x: np.ndarray, targets: np.ndarray, layer=None):
        """Activations of ``layer`` and d(score)/d(activations), both numpy N x C x h x w (float64)."""
        module = self._layer(layer)
        acts, grads = [], []
        captured: list[torch.Tensor] = []

        def hook(_m, _inp, out):
            captured.append(out)
            return out.clone()   # later in-place ops (ReLU(inplace=True)) change the clone, not `out`

        handle = module.register_forward_hook(hook)
        try:
            for sl in self._chunks(len(x)):
                captured.clear()
                with torch.enable_grad():
                    logits = self._forward(torch.from_numpy(np.ascontiguousarray(x[sl])))
                    if not captured:
                        raise CourseError("the chosen layer was not used in the forward pass")
                    a = captured[0]
                    if a.ndim != 4:
                        raise CourseError(f"Grad-CAM needs a layer with N x C x H x W output; this one gives "
                                          f"{tuple(a.shape)}. Its convolution layers are: "
                                          f"{', '.join(self.conv_layer_names())}")
                    t = torch.as_tensor(targets[sl], device=logits.device)
                    score = self._class_scores(logits, t).sum()         # images are independent: sum = per-image grads
                    (g,) = torch.autograd.grad(score, a)
                acts.append(a.detach().double().cpu().numpy())
                grads.append(g.detach().double().cpu().numpy())
        finally:
            handle.remove()
        return np.concatenate(acts), np.concatenate(grads)

    def input_grads(self, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
        out = []
        for sl in self._chunks(len(x)):
            xb = torch.from_numpy(np.ascontiguousarray(x[sl])).to(self.device).requires_grad_(True)
            with torch.enable_grad():
                logits = self._forward(xb)
                t = torch.as_tensor(targets[sl], device=logits.device)
                (g,) = torch.autograd.grad(self._class_scores(logits, t).sum(), xb)
            out.append(g.detach().double().cpu().numpy())
        return np.concatenate(out)

    # ---------------------------------------------------------------- randomisation
    def copy(self, seed: int = 0) -> "TorchAdapter":
        return TorchAdapter(copy.deepcopy(self.model), self.preprocess, self.batch_size, seed=seed)

    def reset_layers(self, names: list[str]) -> None:
        """Re-initialise these modules' own weights (their ``reset_parameters``, else a fresh normal init)."""
        modules = dict(self.model.named_modules())
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed + len(names))
        try:
            with torch.no_grad():
                for name in names:
                    m = modules[name]
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
                    else:
                        for p in m.parameters(recurse=False):
                            if p.ndim > 1:
                                nn.init.kaiming_uniform_(p)
                            else:
                                nn.init.normal_(p, std=0.1)
        finally:
            torch.random.set_rng_state(gen_state)
