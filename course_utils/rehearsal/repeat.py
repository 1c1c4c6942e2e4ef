"""The one way a rehearsal shortens a loop over batches: run the first ``k``, then repeat their outputs.

Full mode's arrays keep their full length (every label is still read and checked), but the model runs on a few
batches only. Used for torch and Keras models, the active-learning outputs and the explanations alike.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np

__all__ = ["repeat_rows", "FirstOutputs", "FirstBatches"]


def _cat(parts: list) -> Any:
    """Concatenate torch tensors with torch, anything else with numpy (imports no framework)."""
    if hasattr(parts[0], "detach"):
        import torch  # noqa: PLC0415

        return torch.cat(parts)
    return np.concatenate([np.asarray(p) for p in parts])


def repeat_rows(first: Any, n: int) -> Any:
    """``n`` rows made of ``first``'s rows, cycled (``first[i % len(first)]``): full-size output from a few rows."""
    if hasattr(first, "detach"):
        import torch  # noqa: PLC0415

        return first[torch.arange(n) % len(first)]
    first = np.asarray(first)
    return first[np.arange(n) % len(first)]


class FirstOutputs:
    """A model call that runs for the first ``batches`` calls; later calls return rows of those outputs, cycled to
    the batch's length, without running the model."""

    def __init__(self, batches: int):
        self.batches, self.done = int(batches), []

    def __call__(self, run: Callable[[], Any], n: int) -> Any:
        if len(self.done) < self.batches:
            out = run()
            self.done.append(out)
            return out
        return repeat_rows(_cat(self.done), n)


class FirstBatches:
    """The first ``k`` batches of ``loader`` (``len`` says so too); ``on_first(batch)`` sees the first one."""

    def __init__(self, loader: Iterable, k: int, on_first: Callable[[Any], None] | None = None):
        self.loader, self.k, self.on_first = loader, int(k), on_first
        self.dataset = getattr(loader, "dataset", None)
        self.batch_size = getattr(loader, "batch_size", None)

    def __len__(self) -> int:
        return min(self.k, len(self.loader))

    def __iter__(self) -> Iterator:
        for i, batch in enumerate(self.loader):
            if i >= self.k:
                break
            if i == 0 and self.on_first is not None:
                self.on_first(batch)
            yield batch
