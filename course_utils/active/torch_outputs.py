"""Active-learning adapters for torch models: the arrays :mod:`course_utils.strategies` reads.

Class probabilities ``[N, C]`` and penultimate embeddings ``[N, D]`` come from one pass in eval mode;
MC-dropout samples ``[T, N, C]`` from passes with only the Dropout modules in train mode (batch-norm
keeps its running statistics); BADGE gradient embeddings ``[N, C * D]`` take C from the model's final
``nn.Linear``, never from the labels seen so far. Every adapter restores the model's train/eval state.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .strategies import head_gradient_embedding
from ..metrics import probabilities_torch
from ..data.pipelines import nchw_float, require_finite
from ..runtime import CourseError, import_torch

__all__ = ["torch_outputs", "torch_probs", "torch_mc_samples", "torch_embeddings", "torch_gradient_embeddings"]


def _to_tensor_images(x):
    """uint8 NHWC (or float NCHW) images -> a float32 NCHW tensor in [0, 1] (:func:`pipelines.nchw_float`)."""
    torch = import_torch()
    if isinstance(x, torch.Tensor):
        return require_finite(x, "the pool's model outputs").float()
    return torch.from_numpy(require_finite(nchw_float(x), "the pool's model outputs"))


def _last_linear(model):
    torch = import_torch()
    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            last = m
    if last is None:
        raise CourseError(f"{type(model).__name__} has no nn.Linear layer: the adapters read the penultimate "
                          "features at the input of the final Linear (the classifier).")
    return last


def _torch_batches(model, x, batch_size: int, device: str | None):
    torch = import_torch()
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    xt = _to_tensor_images(x)
    for s in range(0, len(xt), batch_size):
        yield xt[s:s + batch_size].to(device)


def torch_outputs(model, x: np.ndarray, *, needs: Iterable[str] = ("probs", "embeddings"), mc_passes: int = 10,
                  batch_size: int = 256, device: str | None = None, seed: int | None = 0) -> dict[str, np.ndarray]:
    """Everything the strategies may need, in as few passes as possible.

    ``needs`` may hold ``probs``, ``mc_samples``, ``embeddings`` (the input of the final Linear, read
    with a forward hook) and ``grad_embeddings``. Probabilities and embeddings come from one pass in
    eval mode; MC samples from ``mc_passes`` passes with only the Dropout modules in train mode, so
    batch-norm keeps its running statistics. The model's own train/eval state is restored afterwards.
    """
    torch = import_torch()
    needs = set(needs)
    unknown = needs - {"probs", "mc_samples", "embeddings", "grad_embeddings"}
    if unknown:
        raise CourseError(f"unknown output(s) {sorted(unknown)}; choose from probs, mc_samples, embeddings, "
                          "grad_embeddings.")
    was_training = {m: m.training for m in model.modules()}
    out: dict[str, np.ndarray] = {}
    head = _last_linear(model)
    try:
        model.eval()
        if needs & {"probs", "embeddings", "grad_embeddings"}:
            feats: list = []
            hook = head.register_forward_hook(lambda _m, inp, _o: feats.append(inp[0].detach().flatten(1).cpu()))
            probs = []
            try:
                with torch.no_grad():
                    for xb in _torch_batches(model, x, batch_size, device):
                        probs.append(probabilities_torch(model(xb)).cpu())
            finally:
                hook.remove()
            p = torch.cat(probs).double().numpy()
            h = torch.cat(feats).numpy()
            out["probs"], out["embeddings"] = p, h
            if "grad_embeddings" in needs:
                out["grad_embeddings"] = head_gradient_embedding(p, h, head.out_features)
        if "mc_samples" in needs:
            dropouts = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
            if not dropouts:
                raise CourseError(f"{type(model).__name__} has no Dropout layer, so MC-dropout samples would all be "
                                  "identical. Add nn.Dropout before the classifier (small_cnn(dropout=0.2) has one).")
            for m in dropouts:
                m.train()
            gen_state = torch.random.get_rng_state()
            if seed is not None:
                torch.manual_seed(seed)
            samples = []
            try:
                with torch.no_grad():
                    for _ in range(mc_passes):
                        samples.append(torch.cat([probabilities_torch(model(xb)).cpu()
                                                  for xb in _torch_batches(model, x, batch_size, device)]))
            finally:
                torch.random.set_rng_state(gen_state)
            out["mc_samples"] = torch.stack(samples).double().numpy()
    finally:
        for m, flag in was_training.items():
            m.train(flag)
    return {k: v for k, v in out.items() if k in needs}


def torch_probs(model, x, **kw) -> np.ndarray:
    """Class probabilities ``[N, C]`` (softmax; a 1-output sigmoid head gives ``[1 - p, p]``), eval mode."""
    return torch_outputs(model, x, needs=("probs",), **kw)["probs"]


def torch_mc_samples(model, x, mc_passes: int = 10, **kw) -> np.ndarray:
    """``[T, N, C]`` probabilities from ``mc_passes`` passes with dropout on and batch-norm in eval mode."""
    return torch_outputs(model, x, needs=("mc_samples",), mc_passes=mc_passes, **kw)["mc_samples"]


def torch_embeddings(model, x, **kw) -> np.ndarray:
    """Penultimate features ``[N, D]``: the input of the model's final ``nn.Linear`` (forward hook)."""
    return torch_outputs(model, x, needs=("embeddings",), **kw)["embeddings"]


def torch_gradient_embeddings(model, x, **kw) -> np.ndarray:
    """BADGE embeddings ``[N, C * D]``, C from the final Linear's ``out_features`` (2 for a 1-output head)."""
    return torch_outputs(model, x, needs=("grad_embeddings",), **kw)["grad_embeddings"]
