"""course_utils.models_torch: the offline ImageNet weights are real, heads and freezing behave."""
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils import CourseError
from course_utils.models import torch_models as mt
from course_utils.models.info import ModelInfo


def _imagenet_batch(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(mt.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(mt.IMAGENET_STD)[:, None, None]
    return (x - mean) / std


@pytest.mark.slow
def test_offline_lite0_is_a_real_imagenet_model():
    skimage_data = pytest.importorskip("skimage.data")
    model, info = mt.efficientnet_lite0(None, verbose=False)
    model.eval()
    assert info.weights == "imagenet"
    with torch.no_grad():
        cat = model(_imagenet_batch(skimage_data.chelsea())).argmax(1).item()
        coffee = model(_imagenet_batch(skimage_data.coffee())).argmax(1).item()
    assert 281 <= cat <= 285, f"chelsea classified as ImageNet class {cat}, not a cat"
    assert coffee == 967, f"coffee classified as ImageNet class {coffee}, not espresso"


def test_efficientnet_b0_offline_falls_back_fast_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(mt, "can_reach", lambda *a, **k: False)  # offline, whatever this machine is
    t0 = time.perf_counter()
    model, info = mt.efficientnet_b0(2, verbose=False)
    assert time.perf_counter() - t0 < 30
    assert info.weights == "imagenet" and info.arch == "efficientnet_lite0"
    assert "offline" in info.weights_source and "instead" in info.note
    assert not any(tmp_path.rglob("*.pth*")), "no partial download may stay in the hub cache"
    head = model.classifier
    assert isinstance(head[0], torch.nn.Dropout) and head[0].p == 0.4 and head[1].out_features == 2
    assert "efficientnet_lite0" in mt.describe(model, info) and "imagenet" in mt.describe(model, info)


def test_efficientnet_b0_without_pretraining_is_torchvision_b0_and_grey_input_works():
    model, info = mt.efficientnet_b0(3, pretrained=False, in_chans=1, verbose=False)
    model.eval()
    assert info.arch == "efficientnet_b0" and info.weights == "random"
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 3)
    assert isinstance(mt.cam_layer(model, info), torch.nn.Module)


def test_grey_stem_keeps_the_rgb_response_of_a_grey_image():
    rgb = mt.efficientnet_lite0(2, verbose=False)[0].eval()
    grey = mt.efficientnet_lite0(2, in_chans=1, verbose=False)[0].eval()
    grey.classifier.load_state_dict(rgb.classifier.state_dict())
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_small_cnn_shapes_and_info():
    model, info = mt.small_cnn(5, in_chans=1)
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 5)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5)
    assert info.arch == "small_cnn"
    assert isinstance(mt.cam_layer(model, info), torch.nn.ReLU)
    with pytest.raises(CourseError, match="n_classes"):
        mt.small_cnn(0)
    with pytest.raises(CourseError, match="dropout"):
        mt.small_cnn(2, dropout=1.5)


def test_freeze_backbone_leaves_only_the_head_trainable():
    model, info = mt.small_cnn(2)
    mt.freeze_backbone(model, info)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.1.weight", "classifier.1.bias"}
    counts = mt.count_params(model)
    assert counts["trainable"] == 64 * 2 + 2 < counts["total"]
    assert counts["frozen"] == counts["total"] - counts["trainable"]
    mt.unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())


def test_head_module_error_names_the_fix():
    with pytest.raises(CourseError, match="classifier"):
        mt.head_module(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_a_failing_download_falls_back_with_a_warning(monkeypatch, tmp_path):
    """Reachable host, broken download (e.g. a proxy that refuses): warn, fall back, leave no file."""
    from torchvision.models import EfficientNet_B0_Weights

    def broken(self, *a, **k):
        raise OSError("connection reset by peer")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(mt, "can_reach", lambda *a, **k: True)
    monkeypatch.setattr(type(EfficientNet_B0_Weights.IMAGENET1K_V1), "get_state_dict", broken)
    with pytest.warns(UserWarning, match="could not download"):
        model, info = mt.efficientnet_b0(1, verbose=False)
    assert info.arch == "efficientnet_lite0" and info.weights == "imagenet"
    assert not any(tmp_path.rglob("*.pth*"))


def test_builders_return_an_explicit_info_and_attach_nothing_to_the_model():
    for model, info in (mt.small_cnn(3, in_chans=1, width=4), mt.efficientnet_b0(2, pretrained=False, verbose=False)):
        assert isinstance(info, ModelInfo) and info.framework == "torch"
        assert not hasattr(model, "course_info"), "model metadata belongs in the returned info, not on the module"
        assert info.mean == mt.IMAGENET_MEAN and info.std == mt.IMAGENET_STD
        assert mt.head_module(model, info) is model.classifier
        assert info.to_dict()["arch"] == info.arch
    small, small_info = mt.small_cnn(3, in_chans=1, width=4)
    assert small_info.n_classes == 3 and small_info.in_chans == 1 and not small_info.pretrained
    with pytest.raises(CourseError, match="cam_layer"):
        mt.cam_layer(small, None)
    with pytest.raises(Exception):  # frozen: the record cannot be changed in passing
        small_info.n_classes = 4


def test_head_module_without_info_finds_the_classifier_by_structure():
    model, info = mt.small_cnn(2, width=4)
    assert mt.head_module(model) is mt.head_module(model, info) is model.classifier
    mt.freeze_backbone(model)  # no info: the head is found by name
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.1.weight", "classifier.1.bias"}
