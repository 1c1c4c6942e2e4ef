"""Tests for course_utils.xai: reference implementations, hand-computed values, torch <-> Keras agreement,
completeness of integrated gradients, a model trained on evidence at a known spot, and bad input."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import course_utils as cu
from course_utils import CourseError
from course_utils.xai import methods as xai
from course_utils.xai import faithfulness as xai_faithfulness
from course_utils.runtime import import_tensorflow


# --------------------------------------------------------------------------- tiny models
def torch_cnn(in_ch: int = 3, n_out: int = 3, pool: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(in_ch, 4, 3, padding=1), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, n_out)]
    return nn.Sequential(*layers).eval()


def _targets(model, x):
    return model(torch.as_tensor(x)).argmax(1).numpy()


# --------------------------------------------------------------------------- basic numerics
def test_normalize_all_zero_map_gives_zeros_not_nan():
    out = xai.normalize_maps(np.zeros((2, 5, 5)))
    assert not np.isnan(out).any() and np.all(out == 0)
    m = xai.normalize_maps(np.arange(8.0).reshape(2, 2, 2))
    assert np.allclose(m.min(axis=(1, 2)), 0) and np.allclose(m.max(axis=(1, 2)), 1, atol=1e-6)


@pytest.mark.parametrize("src,dst", [((4, 4), (16, 16)), ((3, 5), (7, 12)), ((6, 6), (6, 6))])
def test_resize_matches_torch_bilinear(src, dst):
    maps = np.random.default_rng(0).random((3, *src))
    ref = torch.nn.functional.interpolate(torch.as_tensor(maps)[:, None], size=dst, mode="bilinear",
                                          align_corners=False)[:, 0].numpy()
    assert np.abs(xai.resize_maps(maps, dst) - ref).max() < 1e-10


# --------------------------------------------------------------------------- against reference libraries
def test_grad_cam_matches_pytorch_grad_cam_and_captum():
    from captum.attr import LayerAttribution, LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = torch_cnn()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = _targets(model, x)
    ours = xai.grad_cam(model, x)                                  # default layer: the last Conv2d = model[3]
    assert ours.shape == (6, 32, 32)
    # pytorch-grad-cam: normalises at 16 x 16, resizes with OpenCV (bilinear, half-pixel), normalises again
    with GradCAM(model=model, target_layers=[model[3]]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(k)) for k in t])
    assert np.abs(xai.normalize_maps(ref) - ours).max() <= 1e-4
    # captum: raw layer attributions at 16 x 16 -> torch bilinear up-sampling -> min-max
    lgc = LayerGradCam(model, model[3])
    attr = lgc.attribute(x, target=torch.as_tensor(t), relu_attributions=True)
    attr = LayerAttribution.interpolate(attr, (32, 32), "bilinear")[:, 0].detach().numpy()
    assert np.abs(xai.normalize_maps(attr) - ours).max() <= 1e-4
    # and for a class that is not the predicted one
    other = (t + 1) % 3
    ours_other = xai.grad_cam(model, x, other)
    attr = LayerAttribution.interpolate(lgc.attribute(x, target=torch.as_tensor(other), relu_attributions=True),
                                        (32, 32), "bilinear")[:, 0].detach().numpy()
    assert np.abs(xai.normalize_maps(attr) - ours_other).max() <= 1e-4


def test_grad_cam_plus_plus_matches_pytorch_grad_cam():
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = torch_cnn(seed=3)
    x = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    t = _targets(model, x)
    with GradCAMPlusPlus(model=model, target_layers=[model[3]]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(k)) for k in t])
    assert np.abs(xai.normalize_maps(ref) - xai.grad_cam_plus_plus(model, x)).max() <= 1e-4


# --------------------------------------------------------------------------- golden values by hand
def test_grad_cam_golden_values_by_hand():
    # conv (1 -> 2 channels, 3x3, padding 1) whose kernels only have a centre tap:
    #   A0 = x            (centre +1, bias 0)
    #   A1 = 0.5 - x      (centre -1, bias 0.5)
    # then ReLU -> global average pool (16 pixels) -> linear with W = [[-1, 0.5], [1, 2]], b = 0.
    # d score_c / d A_k[i,j] = W[c,k] / 16 * [A_k[i,j] > 0], so the channel weight (mean over 16 pixels) is
    #   alpha_k = W[c,k] * (#pixels with A_k > 0) / 256.
    # All 16 x > 0; exactly 6 are < 0.5 (0.05, 0.3, 0.2, 0.1, 0.4, 0.45), so #(A0 > 0) = 16, #(A1 > 0) = 6.
    #   class 1: alpha = (16/256, 12/256)  -> cam = x/16 + (3/64)(0.5 - x) = x/64 + 3/128   (all positive)
    #   class 0: alpha = (-16/256, 3/256)  -> cam = relu(3/512 - 19x/256): non-zero only where x < 3/38
    x = np.array([[0.05, 0.90, 0.60, 0.30],
                  [0.70, 0.20, 0.80, 0.55],
                  [0.95, 0.65, 0.10, 0.75],
                  [0.40, 0.85, 0.60, 0.45]], dtype=np.float32)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
        conv.weight[1, 0, 1, 1] = -1.0
        conv.bias.copy_(torch.tensor([0.0, 0.5]))
        lin.weight.copy_(torch.tensor([[-1.0, 0.5], [1.0, 2.0]]))
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin).eval()
    batch = x[None, None]
    cam1 = xai.grad_cam(model, batch, target=1, normalize=False)[0]
    assert np.allclose(cam1, x / 64 + 3 / 128, atol=1e-7)
    cam0 = xai.grad_cam(model, batch, target=0, normalize=False)[0]
    expected0 = np.zeros((4, 4))
    expected0[0, 0] = 3 / 512 - 19 * 0.05 / 256                   # 0.0021484375: the only pixel below 3/38
    assert np.allclose(cam0, expected0, atol=1e-7)
    # normalised: a linear map of x is min-max scaled to (x - min) / (max - min)
    assert np.allclose(xai.grad_cam(model, batch, target=1)[0], (x - 0.05) / 0.90, atol=1e-6)
    assert np.allclose(xai.grad_cam(model, batch, target=0)[0], expected0 / expected0.max(), atol=1e-5)


# --------------------------------------------------------------------------- Keras == torch
def _keras_twins(torch_model: nn.Module, in_shape, softmax_head: bool):
    """The torch_cnn() architecture in Keras, functional and Sequential, with the torch weights."""
    import_tensorflow()
    import keras

    def layers():
        return [keras.layers.Conv2D(4, 3, padding="same", name="conv_a"), keras.layers.ReLU(),
                keras.layers.MaxPooling2D(2), keras.layers.Conv2D(6, 3, padding="same", name="conv_b"),
                keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3, activation="softmax" if softmax_head else None, name="head")]

    seq = keras.Sequential([keras.Input(in_shape), *layers()])
    inp = keras.Input(in_shape)
    h = inp
    for layer in layers():
        h = layer(h)
    func = keras.Model(inp, h)
    c1, c2, lin = torch_model[0], torch_model[3], torch_model[7]
    for km in (seq, func):
        km.get_layer("conv_a").set_weights([c1.weight.detach().numpy().transpose(2, 3, 1, 0),   # OIHW -> HWIO
                                            c1.bias.detach().numpy()])
        km.get_layer("conv_b").set_weights([c2.weight.detach().numpy().transpose(2, 3, 1, 0),
                                            c2.bias.detach().numpy()])
        km.get_layer("head").set_weights([lin.weight.detach().numpy().T, lin.bias.detach().numpy()])
    return seq, func


@pytest.mark.slow
def test_keras_grad_cam_equals_torch_grad_cam_sequential_and_functional():
    model = torch_cnn(seed=5)
    x_nchw = np.random.default_rng(4).random((5, 3, 12, 12)).astype(np.float32)
    x_nhwc = x_nchw.transpose(0, 2, 3, 1).copy()
    ref = xai.grad_cam(model, x_nchw)
    ref_logits = xai.predict_logits(model, x_nchw)
    for softmax_head in (False, True):
        seq, func = _keras_twins(model, (12, 12, 3), softmax_head)
        for km in (seq, func):
            assert np.abs(xai.predict_logits(km, x_nhwc) - ref_logits).max() < 1e-4   # logits, softmax peeled off
            assert xai.conv_layers(km) == ["conv_a", "conv_b"]
            maps = xai.grad_cam(km, x_nhwc)
            assert np.abs(maps - ref).max() <= 1e-4, (type(km).__name__, softmax_head)
            assert np.array_equal(xai.grad_cam(xai.adapter(km), x_nhwc), maps)   # held by the caller: the same
            assert np.abs(xai.grad_cam(km, x_nhwc, target=2, layer="conv_a")
                          - xai.grad_cam(model, x_nchw, target=2, layer="0")).max() <= 1e-4
    # a numpy NHWC batch given to the torch model is transposed for it
    assert np.abs(xai.grad_cam(model, x_nhwc) - ref).max() < 1e-9
    # saliency and integrated gradients agree across frameworks too, and IG is complete in Keras
    assert np.abs(xai.saliency(seq, x_nhwc) - xai.saliency(model, x_nchw)).max() <= 1e-4
    attr = xai.integrated_gradients(func, x_nhwc, target=1, steps=64, reduce=False)
    gap = xai.predict_logits(func, x_nhwc)[:, 1] - xai.predict_logits(func, np.zeros_like(x_nhwc))[:, 1]
    assert np.allclose(attr.reshape(5, -1).sum(1), gap, rtol=0.01, atol=1e-6)
    # the randomisation check runs on a Keras copy and leaves the trained model alone
    before = [w.copy() for w in func.get_weights()]
    res = xai.randomization_check(func, x_nhwc, max_steps=2)
    assert res.per_image.shape == (3, 5) and np.allclose(res.correlation[0], 1.0)
    assert all(np.array_equal(a, b) for a, b in zip(before, func.get_weights()))
    # deletion / insertion handle the channels-last layout: the same scores as the torch twin
    maps = xai.grad_cam(func, x_nhwc)
    for baseline in ("blur", "mean"):
        kw = dict(steps=4, baseline=baseline, blur_sigma=1.5)
        dk = xai_faithfulness.deletion_insertion(func, x_nhwc, maps, **kw)
        dt = xai_faithfulness.deletion_insertion(model, x_nchw, maps, **kw)
        assert np.allclose(dk.deletion, dt.deletion, atol=1e-4) and np.allclose(dk.insertion, dt.insertion, atol=1e-4)


# --------------------------------------------------------------------------- the model's mode is left alone
def test_a_model_in_train_mode_stays_in_train_mode_module_by_module():
    """The explainers run the model in eval mode and give every module its own train/eval flag back,
    including a mixed state (a frozen batch norm inside a model that is training)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model.train()
    model[1].eval()                                                    # frozen statistics in the first block
    modes = {name: m.training for name, m in model.named_modules()}
    stats = model[5].running_mean.clone()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = xai.grad_cam(model, x, target=1)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert model.training and not model[1].training and model[5].training
    for fn in (xai.saliency, xai.predict_proba, xai.occlusion):
        fn(model, x, 1)
        assert {name: m.training for name, m in model.named_modules()} == modes, fn.__name__
    xai.randomization_check(model, x, target=1, max_steps=2)
    assert {name: m.training for name, m in model.named_modules()} == modes
    held = xai.adapter(model)                                          # an adapter the caller holds: same maps
    assert np.array_equal(xai.grad_cam(held, x, target=1), maps)
    with pytest.raises(CourseError, match="its own preprocess"):
        xai.grad_cam(held, x, target=1, preprocess=lambda im: im)
    assert torch.equal(model[5].running_mean, stats)                   # no batch statistics were updated
    ref = xai.grad_cam(copy.deepcopy(model).eval(), x, target=1)       # the maps themselves are eval-mode maps
    assert np.abs(maps - ref).max() < 1e-9


def test_uint8_images_in_either_layout_are_scaled_to_unit_range_for_torch():
    model = torch_cnn(seed=2)
    u8 = np.random.default_rng(5).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)     # N x H x W x C
    ref = xai.predict_logits(model, u8.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert np.abs(xai.predict_logits(model, u8) - ref).max() < 1e-5
    assert np.abs(xai.predict_logits(model, u8.transpose(0, 3, 1, 2)) - ref).max() < 1e-5  # uint8 N x C x H x W


# --------------------------------------------------------------------------- evidence at a known spot
# (the blob model, shared with test_xai_faithfulness.py, is in conftest.py)
def test_grad_cam_peak_falls_on_the_evidence(blob_model):
    model, x, boxes = blob_model
    maps = xai.grad_cam(model, x, target=1)
    peaks = xai.peak_location(maps)
    half = x.shape[-1] // 2                                         # the top-left quadrant
    in_quadrant = (peaks[:, 0] < half) & (peaks[:, 1] < half)
    assert in_quadrant.mean() >= 0.9
    in_blob = [b[1] - 1 <= r <= b[3] and b[0] - 1 <= c <= b[2] for (r, c), b in zip(peaks, boxes)]
    assert np.mean(in_blob) >= 0.8
    # weak localisation without box labels recovers the blob's box
    ious = [xai.box_iou(xai.heatmap_box(m, 0.5), b) for m, b in zip(maps, boxes)]
    assert np.mean(ious) > 0.3


def test_paired_interval_equals_scipys_paired_t_interval():
    from scipy import stats

    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 0.1, 20), rng.normal(0.35, 0.1, 20)
    iv = xai.paired_interval(a, b, confidence=0.9)
    ref = stats.ttest_rel(a, b).confidence_interval(0.9)
    assert iv.mean == pytest.approx(np.mean(a - b)) and iv.n == 20
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high))
    assert xai.paired_interval(a, a).sign == 0 and xai.paired_interval(a + 1, a).sign == 1
    assert xai.paired_interval([1.0], [0.0]).sign == 0                 # one pair: no interval, no verdict
    assert "interval" in str(iv)
    with pytest.raises(CourseError, match="finite"):
        xai.paired_interval([np.nan, 1.0], [0.0, 0.0])


def test_randomisation_drives_the_correlation_down(blob_model, capsys):
    model, x, _ = blob_model
    res = xai.randomization_check(model, x[:12], target=1)
    assert capsys.readouterr().err == ""                              # no progress bar unless asked for
    assert res.per_image.shape == (1 + len(xai.adapter(model).param_layer_names()), 12)
    assert res.correlation[0] == pytest.approx(1.0)
    assert res.correlation[-1] < 0.5 and res.correlation.min() < 0.3
    assert res.layers_reset[1] == ["6"]                               # the output layer goes first
    # the trained model is untouched
    assert xai.grad_cam(model, x[:12], target=1) == pytest.approx(res.maps[0])


def test_class_sensitivity_and_integrated_gradients_completeness(blob_model):
    model, x, _ = blob_model
    cs = xai.class_sensitivity(model, x[:8], 0, 1)
    assert cs.rank_correlation.mean() < 0.5 and cs.difference.mean() > 0.1
    logits = xai.predict_logits(model, x[:8])
    base = xai.predict_logits(model, np.zeros_like(x[:8]))
    for target in (0, 1):
        attr = xai.integrated_gradients(model, x[:8], target=target, steps=128, reduce=False)
        gap = logits[:, target] - base[:, target]
        assert np.abs(gap).min() > 0.5                               # a difference worth checking
        assert np.allclose(attr.reshape(8, -1).sum(1), gap, rtol=0.01)
    for method in xai.METHODS:                                       # every method: N maps in [0, 1], no NaN
        m = xai.explain(model, x[:3], method)
        assert m.shape == (3, *x.shape[-2:]) and np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1


# --------------------------------------------------------------------------- bad input
def test_unknown_layer_lists_the_convolutions():
    model = torch_cnn()
    with pytest.raises(CourseError, match=r"no layer named 'conv9'.*convolution layers are: 0, 3"):
        xai.grad_cam(model, torch.rand(1, 3, 8, 8), layer="conv9")


def test_model_without_convolution():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(CourseError, match="no Conv2d layer"):
        xai.grad_cam(model, torch.rand(2, 3, 8, 8))
    assert xai.saliency(model, torch.rand(2, 3, 8, 8)).shape == (2, 8, 8)   # gradient methods still work


def test_class_index_out_of_range():
    with pytest.raises(CourseError, match=r"class index 3 is out of range.*3 classes"):
        xai.grad_cam(torch_cnn(), torch.rand(2, 3, 8, 8), target=3)
    single = torch_cnn(n_out=1)
    with pytest.raises(CourseError, match="single-logit"):
        xai.grad_cam(single, torch.rand(2, 3, 8, 8), target=2)
    assert xai.grad_cam(single, torch.rand(2, 3, 8, 8), target=0).shape == (2, 8, 8)
    with pytest.raises(CourseError, match="got 3 targets for 2 images"):
        xai.grad_cam(torch_cnn(), torch.rand(2, 3, 8, 8), target=[0, 1, 2])


def test_wrong_image_size_or_channels_torch():
    with pytest.raises(CourseError, match="3-channel images"):
        xai.grad_cam(torch_cnn(), torch.rand(2, 1, 8, 8))
    fixed = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 8 * 8, 2))
    with pytest.raises(CourseError, match="could not process images of shape"):
        xai.grad_cam(fixed, torch.rand(2, 3, 10, 10))
    with pytest.raises(CourseError, match="batch of images"):
        xai.grad_cam(torch_cnn(), torch.rand(3, 8, 8))


def test_nan_or_inf_pixels_are_refused_naming_the_images_torch():
    """Issue 20, BAD 5: NaN pixels gave finite, normalised maps and a made-up randomisation correlation of 0.0."""
    x = torch.rand(5, 3, 8, 8)
    x[1, 0, 2, 2], x[3, 2, 0, 0] = float("nan"), float("inf")
    for method in ("grad_cam", "saliency", "integrated_gradients", "occlusion"):
        with pytest.raises(CourseError, match=r"2 of 5 images have NaN or inf pixels \(index 1, 3\)"):
            xai.explain(torch_cnn(), x, method)
    with pytest.raises(CourseError, match="NaN or inf"):
        xai.randomization_check(torch_cnn(), x, "grad_cam", max_steps=1)
    with pytest.raises(CourseError, match="NaN or inf"):
        xai_faithfulness.deletion_insertion(torch_cnn(), x, np.ones((5, 8, 8)), steps=2)
    assert np.isnan(xai.spearman(np.array([1.0, np.nan, 2.0]), np.arange(3.0)))      # not 0.0


@pytest.mark.slow
def test_bad_input_keras():
    import_tensorflow()
    import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="c1"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    with pytest.raises(CourseError, match=r"no layer named 'nope'.*convolution layers are: c1"):
        xai.grad_cam(model, x, layer="nope")
    with pytest.raises(CourseError, match=r"expects images of shape \(8, 8, 3\)"):
        xai.grad_cam(model, x[:, :6, :6])
    with pytest.raises(CourseError, match=r"expects images of shape \(8, 8, 3\)"):
        xai.grad_cam(model, x[..., :1])
    with pytest.raises(CourseError, match="out of range"):
        xai.grad_cam(model, x, target=2)
    dense = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(CourseError, match="no convolution layer"):
        xai.grad_cam(dense, x)
    with pytest.raises(CourseError, match="torch nn.Module or a Keras Model"):
        xai.grad_cam("model.keras", x)
    x[0, 1, 1, 1] = np.nan                                       # issue 20: refused, not explained
    with pytest.raises(CourseError, match=r"1 of 2 images have NaN or inf pixels \(index 0\)"):
        xai.grad_cam(model, x, layer="c1")


@pytest.mark.slow
def test_keras_nested_backbone_functional_and_sequential():
    """A layer inside a nested backbone (the transfer-learning layout ``x = base(x)``) is reachable, and
    Grad-CAM at the backbone's last layer equals Grad-CAM at the backbone's output seen from outside."""
    import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    bi = keras.Input((10, 10, 3))
    bh = keras.layers.ReLU(name="b_relu")(keras.layers.Conv2D(5, 3, padding="same", name="b_conv")(bi))
    base = keras.Model(bi, bh, name="base")
    inp = keras.Input((10, 10, 3))
    h = base(keras.layers.Rescaling(2.0)(inp), training=False)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    func = keras.Model(inp, out)
    seq = keras.Sequential([keras.Input((10, 10, 3)), keras.layers.Rescaling(2.0), base,
                            keras.layers.GlobalAveragePooling2D(), func.layers[-1]])
    x = np.random.default_rng(0).random((3, 10, 10, 3)).astype(np.float32)
    for model in (func, seq):
        inner = xai.grad_cam(model, x, target=0, layer="b_relu")
        outer = xai.grad_cam(model, x, target=0, layer="base")
        assert inner.max() > 0 and np.abs(inner - outer).max() < 1e-6
        assert xai.conv_layers(model) == ["b_conv"]
        assert xai.grad_cam(model, x).shape == (3, 10, 10)            # default: the nested b_conv
    assert np.abs(xai.grad_cam(func, x, 1) - xai.grad_cam(seq, x, 1)).max() < 1e-6


def test_plots_for_heat_maps(blob_model):
    import matplotlib

    matplotlib.use("Agg")
    from course_utils.teaching import plots

    model, x, boxes = blob_model
    maps = xai.grad_cam(model, x[:4], target=1)
    fig = plots.heatmap_overlay(x[:4], maps, boxes=xai.heatmap_boxes(maps), source="stand-in")
    assert "[stand-in data]" in fig._suptitle.get_text()
    fig = plots.attribution_grid(x[:2], {"Grad-CAM": maps, "saliency": xai.saliency(model, x[:4], 1)})
    assert fig.axes[1].get_title() == "Grad-CAM"
    assert fig.axes[-1].get_ylabel().startswith("relevance")                   # issue 22: a colour bar
    res = xai_faithfulness.deletion_insertion(model, x[:4], maps, target=1, steps=4)
    assert plots.deletion_insertion_curves(res).axes[0].get_xlabel().startswith("fraction of pixels")
    rc = plots.randomization_curve(xai.randomization_check(model, x[:4], target=1))
    assert rc.axes[0].get_ylabel().startswith("Spearman")
    with pytest.raises(ValueError, match="one map per image"):
        plots.heatmap_overlay(x[:4], maps[:2])


def test_in_place_relu_after_the_target_layer_does_not_change_the_map():
    """The hook hands a clone downstream, so an in-place ReLU cannot overwrite the captured activations."""
    def build(inplace: bool):
        torch.manual_seed(7)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=inplace), nn.Conv2d(4, 5, 3, padding=1),
                             nn.ReLU(inplace=inplace), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2)).eval()

    x = torch.rand(3, 3, 10, 10, generator=torch.Generator().manual_seed(0)) - 0.5
    for layer in ("2", "3"):                      # the conv, and the in-place ReLU itself
        a = xai.grad_cam(build(False), x, target=1, layer=layer, normalize=False)
        b = xai.grad_cam(build(True), x, target=1, layer=layer, normalize=False)
        assert a.max() > 0 and np.allclose(a, b, atol=1e-7)


# --------------------------------------------------------------------------- localisation and occlusion by hand
def test_center_of_mass_and_peak_by_hand():
    maps = np.zeros((3, 4, 6))
    maps[0, 1, 4] = 3.0                       # one point: row 1, col 4
    maps[1, 0, 0], maps[1, 3, 2] = 1.0, 3.0   # rows (0*1 + 3*3)/4 = 2.25, cols (0*1 + 2*3)/4 = 1.5
    com = xai.center_of_mass(maps)            # maps[2] is all zero: the image centre
    np.testing.assert_allclose(com, [[1.0, 4.0], [2.25, 1.5], [1.5, 2.5]])
    np.testing.assert_array_equal(xai.peak_location(maps[:2]), [[1, 4], [3, 2]])
    rng = np.random.default_rng(0)
    m = rng.random((2, 5, 7))
    brute = [[max(((r, c) for r in range(5) for c in range(7)), key=lambda rc: mi[rc])] for mi in m]
    np.testing.assert_array_equal(xai.peak_location(m), np.array(brute)[:, 0])
    brute_com = [[sum(mi[r, c] * r for r in range(5) for c in range(7)) / mi.sum(),
                  sum(mi[r, c] * c for r in range(5) for c in range(7)) / mi.sum()] for mi in m]
    np.testing.assert_allclose(xai.center_of_mass(m), brute_com)


def test_heatmap_box_and_iou_by_hand():
    m = np.zeros((6, 8))
    m[1:3, 5:8] = 1.0          # 6 cells: rows 1-2, cols 5-7  -> box (x0=5, y0=1, x1=8, y1=3)
    m[4, 0:2] = 2.0            # the maximum, but only 2 cells
    assert xai.heatmap_box(m, 0.5) == (5, 1, 8, 3)                 # the largest region, not the peak's
    assert xai.heatmap_box(m, 0.6) == (0, 4, 2, 5)                 # above 0.6 x 2 only the small one is left
    assert xai.heatmap_box(np.zeros((4, 4))) is None
    assert xai.box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)        # 1 / (4 + 4 - 1)
    assert xai.box_iou((0, 0, 4, 2), (2, 0, 6, 3)) == pytest.approx(4 / (8 + 12 - 4))
    assert xai.box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0 and xai.box_iou(None, (0, 0, 1, 1)) == 0.0
    assert xai.box_iou((1, 1, 3, 4), (1, 1, 3, 4)) == 1.0 and xai.box_iou((1, 1, 1, 1), (1, 1, 1, 1)) == 0.0


def test_spearman_equals_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    a, b = rng.random((4, 5)), rng.random((4, 5))
    b[0, :2] = b[1, 2]                                              # ties
    assert xai.spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0])
    assert xai.spearman(a, -a) == pytest.approx(-1.0) and xai.spearman(a, np.ones((4, 5))) == 0.0


def test_cam_formulas_by_hand():
    act = np.zeros((1, 2, 2, 2))
    act[0, 0] = [[1, 2], [3, 4]]
    act[0, 1] = [[4, 0], [0, 1]]
    grad = np.zeros((1, 2, 2, 2))
    grad[0, 0] = 0.5                    # channel weights 0.5 and -1
    grad[0, 1] = -1.0
    np.testing.assert_allclose(xai.cam_from_gradients(act, grad)[0], np.maximum([[0.5 - 4, 1], [1.5, 2 - 1]], 0))
    # Grad-CAM++ with one positive channel: alpha = g^2 / (2 g^2 + sum(A) g^3), weight = sum(relu(g) * alpha)
    g = 0.5
    alpha = g ** 2 / (2 * g ** 2 + 10 * g ** 3 + 1e-6)
    np.testing.assert_allclose(xai.cam_plus_plus_from_gradients(act, grad)[0], 4 * g * alpha * act[0, 0])
    np.testing.assert_allclose(xai.normalize_maps(np.array([[[2.0, 4.0], [3.0, 6.0]]]))[0],
                               [[0, 0.5], [0.25, 1]], atol=1e-6)


def test_occlusion_is_the_score_drop_of_each_window_by_brute_force():
    H = W = 6
    w = np.zeros((2, 1, H, W), dtype=np.float32)
    w[1, 0, :3, :3] = 1.0                # class 1's score: the top-left quarter's sum ...
    w[1, 0, 3:, 3:] = -1.0               # ... minus the bottom-right quarter's
    w[0, 0] = 0.1
    model = nn.Sequential(nn.Flatten(), nn.Linear(H * W, 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.as_tensor(w.reshape(2, -1)))
    x = np.random.default_rng(2).uniform(0.5, 1.0, (1, 1, H, W)).astype(np.float32)
    patch, stride = 2, 2
    got = xai.occlusion(model, x, target=1, patch=patch, stride=stride, normalize=False)
    ref = np.zeros((H, W))
    for r in range(0, H, stride):                                  # non-overlapping windows: each pixel once
        for c in range(0, W, stride):
            occluded = x[0, 0].copy()
            occluded[r:r + patch, c:c + patch] = 0.0
            drop = (w[1, 0] * x[0, 0]).sum() - (w[1, 0] * occluded).sum()
            ref[r:r + patch, c:c + patch] = max(drop, 0.0)         # only drops count as evidence
    np.testing.assert_allclose(got[0], ref, rtol=1e-5, atol=1e-6)
    assert got[0, :2, :2].min() > 0 and got[0, 4:, 4:].max() == 0   # evidence for, never against
    got3 = xai.occlusion(model, x, target=1, patch=3, stride=2, normalize=False)   # overlaps: the mean drop
    sums, hits = np.zeros((H, W)), np.zeros((H, W))
    for r in (0, 2, 3):                                            # the last window is moved flush to the edge
        for c in (0, 2, 3):
            occluded = x[0, 0].copy()
            occluded[r:r + 3, c:c + 3] = 0.0
            sums[r:r + 3, c:c + 3] += (w[1, 0] * (x[0, 0] - occluded)).sum()
            hits[r:r + 3, c:c + 3] += 1
    np.testing.assert_allclose(got3[0], np.maximum(sums / hits, 0), rtol=1e-5, atol=1e-6)


def test_box_iou_equals_counting_cells_and_center_of_mass_of_a_light_map():
    rng = np.random.default_rng(4)

    def cells(b):
        return {(x, y) for x in range(b[0], b[2]) for y in range(b[1], b[3])}

    for _ in range(40):
        a = sorted(rng.choice(9, 2, replace=False)), sorted(rng.choice(9, 2, replace=False))
        b = sorted(rng.choice(9, 2, replace=False)), sorted(rng.choice(9, 2, replace=False))
        a = (int(a[0][0]), int(a[1][0]), int(a[0][1]), int(a[1][1]))           # (x0, y0, x1, y1)
        b = (int(b[0][0]), int(b[1][0]), int(b[0][1]), int(b[1][1]))
        ca, cb = cells(a), cells(b)
        assert xai.box_iou(a, b) == pytest.approx(len(ca & cb) / len(ca | cb)), (a, b)
    assert xai.box_iou((0, 0, 1, 2), (2, 0, 3, 2)) == 0.0                       # apart along x only
    assert xai.box_iou((0, 0, 2, 1), (0, 2, 2, 3)) == 0.0                       # apart along y only
    assert xai.box_iou((0, 0, 0.5, 1), (0, 0, 0.5, 1)) == 1.0                   # a union under 1 still counts
    m = np.zeros((1, 3, 5))
    m[0, 2, 1], m[0, 0, 3] = 0.3, 0.1                                           # total mass 0.4 < 1
    np.testing.assert_allclose(xai.center_of_mass(m), [[1.5, 1.5]])             # not the centre (1, 2)


def test_occlusion_defaults_single_logit_and_a_patch_as_large_as_the_image():
    H = 16                                     # default patch max(2, 16 // 8) = 2, stride max(1, 2 // 2) = 1
    rng = np.random.default_rng(5)
    w = rng.normal(size=(1, H * H)).astype(np.float32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(H * H, 1, bias=False)).eval()   # one logit
    with torch.no_grad():
        model[1].weight.copy_(torch.as_tensor(w))
    x = rng.uniform(0.2, 1.0, (2, 1, H, H)).astype(np.float32)
    wm = w.reshape(H, H)
    for target, sign in ((1, 1.0), (0, -1.0)):          # the score is +logit for class 1, -logit for class 0
        got = xai.occlusion(model, x, target=target, normalize=False)
        for i in range(2):
            sums, hits = np.zeros((H, H)), np.zeros((H, H))
            for r in range(H - 1):
                for c in range(H - 1):
                    sums[r:r + 2, c:c + 2] += sign * (wm[r:r + 2, c:c + 2] * x[i, 0, r:r + 2, c:c + 2]).sum()
                    hits[r:r + 2, c:c + 2] += 1
            np.testing.assert_allclose(got[i], np.maximum(sums / hits, 0), rtol=1e-4, atol=1e-5)
    whole = xai.occlusion(model, x, target=1, patch=H, normalize=False)            # one window: the whole image
    drop = (wm * x[:, 0]).sum(axis=(1, 2))
    np.testing.assert_allclose(whole[:, 0, 0], np.maximum(drop, 0), rtol=1e-4, atol=1e-5)
    assert np.all(whole == whole[:, :1, :1])


def test_heatmap_box_prefers_the_largest_region_wherever_it_is_and_cam_pp_at_a_unit_gradient():
    m = np.zeros((6, 8))
    m[0, 0:2] = 2.0            # the peak, first in raster order, 2 cells
    m[3:5, 2:6] = 1.5          # 8 cells
    m[5, 7] = 1.2              # 1 cell
    assert xai.heatmap_box(m, 0.5) == (2, 3, 6, 5)
    assert xai.heatmap_box(m.astype(int), 0.5) == (2, 3, 6, 5)
    act = np.ones((1, 1, 2, 2))
    act[0, 0, 0, 0] = 3.0
    grad = np.ones((1, 1, 2, 2))                                  # gradient exactly 1: alpha = 1 / (2 + 6)
    np.testing.assert_allclose(xai.cam_plus_plus_from_gradients(act, grad)[0], 4 * (1 / 8) * act[0, 0], rtol=1e-5)


def test_occlusion_default_patch_on_a_larger_image_and_heatmap_box_threshold_range():
    H = 32                                     # default patch max(2, 32 // 8) = 4, stride 4 // 2 = 2
    rng = np.random.default_rng(6)
    w = rng.normal(size=(2, H * H)).astype(np.float32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(H * H, 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.as_tensor(w))
    x = rng.uniform(0.2, 1.0, (1, 1, H, H)).astype(np.float32)
    got = xai.occlusion(model, x, target=0, normalize=False)
    wx = w[0].reshape(H, H) * x[0, 0]
    sums, hits = np.zeros((H, H)), np.zeros((H, H))
    for r in range(0, H - 3, 2):
        for c in range(0, H - 3, 2):
            sums[r:r + 4, c:c + 4] += wx[r:r + 4, c:c + 4].sum()
            hits[r:r + 4, c:c + 4] += 1
    np.testing.assert_allclose(got[0], np.maximum(sums / hits, 0), rtol=1e-4, atol=1e-5)
    m = np.zeros((4, 4))
    m[1, 1], m[2, 3] = 1.0, 0.999
    assert xai.heatmap_box(m, 1.0) == (1, 1, 2, 2)                       # threshold 1: the maximum only
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(CourseError, match="fraction"):
            xai.heatmap_box(m, bad)
    assert xai.spearman(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == pytest.approx(1.0)   # tiny maps too


@pytest.mark.slow
def test_cam_layer_at_least_picks_the_deepest_fine_enough_layer_in_torch_and_keras():
    model = torch_cnn(seed=5)                                  # conv at 16 x 16, pool, conv at 8 x 8
    seq, func = _keras_twins(model, (16, 16, 3), softmax_head=False)
    image = np.zeros((16, 16, 3), np.float32)
    assert list(xai.cam_sides(model, image).values()) == [16, 8]
    assert xai.cam_sides(func, image) == {"conv_a": 16, "conv_b": 8}
    assert xai.cam_layer_at_least(model, image, 8) == xai.conv_layers(model)[-1]
    assert xai.cam_layer_at_least(model, image, 9) == xai.conv_layers(model)[0]
    assert xai.cam_layer_at_least(seq, image, 9) == "conv_a"
    with pytest.raises(CourseError, match="use larger images"):
        xai.cam_layer_at_least(model, image, 17)


def test_exercise_hires_cam_reference_matches_pytorch_grad_cam_and_equals_grad_cam_under_global_pooling():
    from pytorch_grad_cam import HiResCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from course_utils.teaching import exercises

    hires = exercises.EXERCISES["06.1"].reference
    model = torch_cnn()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    t = _targets(model, x)
    A, G = xai.adapter(model).layer_activations_and_grads(x.numpy(), t, model[3])
    ours = xai.normalize_maps(xai.resize_maps(np.stack([hires(a, g) for a, g in zip(A, G)]), (32, 32)))
    with HiResCAM(model=model, target_layers=[model[3]]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(k)) for k in t])
    assert np.abs(xai.normalize_maps(ref) - ours).max() <= 1e-4
    package = xai.hires_cam(model, x.numpy(), t, layer=model[3])            # the package's own, end to end
    assert np.abs(package - ours).max() <= 1e-5
    assert np.allclose(xai.hires_cam_from_gradients(A, G), np.stack([hires(a, g) for a, g in zip(A, G)]))
    # at the ReLU before global average pooling every cell's gradient is its channel's mean: the two maps agree
    A, G = xai.adapter(model).layer_activations_and_grads(x.numpy(), t, model[4])
    for a, g in zip(A, G):
        assert np.allclose(xai.normalize_maps(hires(a, g)[None]), xai.normalize_maps(xai.cam_from_gradients(a[None], g[None])))


def test_edge_maps_are_sobel_magnitudes_of_the_grey_image_and_refuse_other_shapes():
    from scipy import ndimage

    img = np.zeros((2, 8, 8, 3))
    img[:, :, 4:] = 90.0                                  # a vertical step: edges at columns 3 and 4 only
    e = xai.edge_maps(img)
    assert e.shape == (2, 8, 8) and set(np.flatnonzero(e[0].sum(axis=0))) == {3, 4}
    grey = np.random.default_rng(0).random((1, 6, 6))
    assert np.allclose(xai.edge_maps(grey)[0], np.hypot(ndimage.sobel(grey[0], 0), ndimage.sobel(grey[0], 1)))
    with pytest.raises(CourseError, match="N x H x W"):
        xai.edge_maps(np.zeros((8, 8)))


def test_rank_correlations_take_a_mask_and_an_absolute_value():
    rng = np.random.default_rng(0)
    a = rng.random((3, 6, 6))
    b = -a.copy()
    b[:, :3] = rng.random((3, 3, 6))                     # the top half differs, the bottom half is a flipped a
    mask = np.zeros((3, 6, 6), bool)
    mask[:, 3:] = True
    assert np.allclose(xai.rank_correlations(a, b, mask=mask), -1.0)
    assert np.allclose(xai.rank_correlations(a, b, mask=mask, absolute=True), 1.0)
    whole = xai.rank_correlations(a, b)
    assert np.allclose(whole, [xai.spearman(x, y) for x, y in zip(a, b)]) and (np.abs(whole) < 1).all()
    with pytest.raises(CourseError, match="mask"):
        xai.rank_correlations(a, b, mask=mask[:1])


def test_the_image_only_reference_is_the_larger_of_the_edge_share_and_a_random_map_at_the_maps_resolution():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (30, 16, 16, 3)).astype(np.uint8)
    tied = xai.edge_maps(images) + rng.random((30, 16, 16)) * 50           # a map tied to the image's edges
    assert np.allclose(xai.image_only_reference(tied, images), xai.rank_correlations(tied, xai.edge_maps(images),
                                                                                      absolute=True))
    smooth = xai.resize_maps(rng.random((30, 4, 4)), (16, 16))             # a coarse map unrelated to the image
    ref = xai.image_only_reference(smooth, images, map_size=(4, 4))
    edge = xai.rank_correlations(smooth, xai.edge_maps(images), absolute=True)
    assert (ref >= edge).all() and ref.mean() > edge.mean() + 0.05        # two smooth maps share more by chance
    # a randomised model whose maps are the trained ones again fails; fresh noise at that resolution passes
    stays = cu.stats.paired_t_interval(np.ones(30), ref)
    fresh = xai.rank_correlations(smooth, xai.resize_maps(rng.random((30, 4, 4)), (16, 16)), absolute=True)
    assert stays.low > 0 and cu.stats.paired_t_interval(fresh, ref).low <= 0


def test_randomization_checks_average_the_seeds(blob_model):
    model, x, _ = blob_model
    mean, last = xai.randomization_checks(model, x[:4], "grad_cam", 1, seeds=(0, 1), max_steps=2)
    one = [xai.randomization_check(model, x[:4], "grad_cam", 1, seed=s, max_steps=2) for s in (0, 1)]
    assert np.allclose(mean.per_image, (one[0].per_image + one[1].per_image) / 2)
    inside = np.zeros((4, 16, 16), bool)
    inside[:, :8, :8] = True
    masked, _ = xai.randomization_checks(model, x[:4], "grad_cam", 1, seeds=(0,), max_steps=2, mask=inside,
                                         absolute=True)
    assert np.allclose(masked.per_image[-1], xai.rank_correlations(one[0].maps[0], one[0].maps[-1], mask=inside,
                                                                   absolute=True))
    assert len(last) == 2 and np.allclose(last[1], one[1].maps[-1]) and mean.steps == one[0].steps
    with pytest.raises(CourseError, match="at least one"):
        xai.randomization_checks(model, x[:4], seeds=())


def test_randomization_verdict_reads_the_three_cases_and_equivalence():
    iv = lambda lo, hi: cu.stats.PairedInterval((lo + hi) / 2, lo, hi, 40, 0.95)      # noqa: E731
    assert xai.randomization_verdict(iv(0.02, 0.08)).startswith("more survives")
    assert xai.randomization_verdict(iv(-0.2, -0.1)).startswith("less survives")
    assert xai.randomization_verdict(iv(-0.03, 0.04)) == "about the image-only reference (within 0.05)"
    assert xai.randomization_verdict(iv(-0.03, 0.09)) == "inconclusive"
