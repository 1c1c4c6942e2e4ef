"""course_utils.pipelines: the one uint8 NHWC -> float32 NCHW rule, tf.data and torch pipelines (shapes,
order, seeded shuffling, multi-label), the tf.data cache limit, and a TFRecords round trip."""
import numpy as np
import pytest

from course_utils import CourseError
from course_utils.data import loaders as D
from course_utils.data import pipelines as P


# --------------------------------------------------------------------------- the layout rule
def test_nchw_float_is_the_one_layout_rule():
    images = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    x = P.nchw_float(images)
    assert x.shape == (2, 3, 3, 4) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(x, images.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255))
    assert float(P.nchw_float(np.full((1, 2, 2, 1), 255, np.uint8)).max()) == pytest.approx(1.0)
    grey = P.nchw_float(np.zeros((5, 6, 7), np.uint8))  # N x H x W: one channel added
    assert grey.shape == (5, 1, 6, 7)
    nchw = np.random.default_rng(0).random((2, 3, 4, 4))  # float64 NCHW: taken as it is, made float32
    out = P.nchw_float(nchw)
    assert out.shape == nchw.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, nchw, rtol=1e-6)
    with pytest.raises(CourseError, match="int64"):
        P.nchw_float(np.zeros((4, 4), np.int64))
    with pytest.raises(CourseError, match=r"N x H x W x C.*images\[None\]"):
        P.nchw_float(np.zeros((4, 4), np.uint8))


def test_torch_loader_matches_nchw_float():
    images = np.random.default_rng(1).integers(0, 256, (10, 5, 6, 3), dtype=np.uint8)
    loader = P.to_torch_loader(images, np.arange(10) % 2, batch_size=10)
    x, _ = next(iter(loader))
    np.testing.assert_array_equal(x.numpy(), P.nchw_float(images))  # batches: the same rule, bit for bit
    single, _ = loader.dataset[3]
    np.testing.assert_array_equal(single.numpy(), P.nchw_float(images[3:4])[0])  # and one item at a time


# --------------------------------------------------------------------------- pipelines
def test_tf_pipeline_shapes_and_order():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(70) % 2
    batches = list(P.to_tf_dataset(images, labels, batch_size=32))
    assert [int(b[0].shape[0]) for b in batches] == [32, 32, 6]  # never drops the remainder
    x, y = batches[0]
    assert x.dtype.name == "float32" and y.dtype.name == "int64"
    np.testing.assert_allclose(x.numpy(), images[:32] / 255.0, atol=1e-6)  # no shuffle when not training
    xs, ys = next(iter(P.to_tf_dataset(images, labels, batch_size=70, training=True, augment="flip",
                                       image_size=8, one_hot=True)))
    assert tuple(xs.shape) == (70, 8, 8, 3) and tuple(ys.shape) == (70, 2) and ys.dtype.name == "float32"
    assert ys.numpy().sum(axis=0).tolist() == [35, 35]  # shuffled, nothing lost
    assert float(xs.numpy().min()) >= 0 and float(xs.numpy().max()) <= 1


def test_torch_loader_shapes_and_seeded_shuffle():
    import torch

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 16, 16, 1), dtype=np.uint8)
    labels = np.arange(70) % 3
    loader = P.to_torch_loader(images, labels, batch_size=32)
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [32, 32, 6] and loader.num_workers <= 2
    x, y = batches[0]
    assert x.shape == (32, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_allclose(x.numpy(), images[:32].transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
    a = next(iter(P.to_torch_loader(images, labels, batch_size=70, shuffle=True, seed=5)))[1]
    b = next(iter(P.to_torch_loader(images, labels, batch_size=70, shuffle=True, seed=5)))[1]
    assert torch.equal(a, b) and not torch.equal(a, torch.as_tensor(labels))
    flip = P.to_torch_loader(images, labels, batch_size=4, transform=lambda t: t.flip(-1).float())
    xf, _ = next(iter(flip))
    np.testing.assert_array_equal(xf[0, 0].numpy(), images[0, :, ::-1, 0])


@pytest.mark.slow
def test_chestmnist_multi_label_through_both_pipelines():
    ds = D.load_medmnist("chestmnist", source="stand-in", max_per_split=64)
    assert ds.info.task == "multi-label" and ds.info.n_classes == 14
    assert ds.train.labels.shape == (64, 14) and ds.train.labels.dtype == np.uint8
    assert set(np.unique(ds.train.labels)) <= {0, 1}
    x, y = next(iter(P.to_tf_dataset(ds.train.images, ds.train.labels, batch_size=16)))
    assert tuple(x.shape) == (16, 28, 28, 1) and y.dtype.name == "float32" and tuple(y.shape) == (16, 14)
    xt, yt = next(iter(P.to_torch_loader(ds.train.images, ds.train.labels, batch_size=16)))
    assert tuple(xt.shape) == (16, 1, 28, 28) and str(yt.dtype) == "torch.float32" and tuple(yt.shape) == (16, 14)


def test_tf_pipeline_skips_a_cache_that_would_not_fit(monkeypatch):
    monkeypatch.setattr(P, "TF_CACHE_MAX_BYTES", 1000)
    images = np.zeros((20, 8, 8, 3), np.uint8)
    with pytest.warns(UserWarning, match="GiB"):
        ds = P.to_tf_dataset(images, np.arange(20) % 2, batch_size=8, training=True)
    assert sum(int(x.shape[0]) for x, _ in ds) == 20


def test_tfrecords_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(9) % 2
    path = P.write_tfrecords(images, labels, tmp_path / "x.tfrecord")
    back = list(P.read_tfrecords(path, image_size=12, channels=3).as_numpy_iterator())
    assert len(back) == 9
    np.testing.assert_array_equal(np.stack([b[0] for b in back]), images)  # PNG is lossless
    assert [int(b[1]) for b in back] == labels.tolist()


def test_tensor_loader_yields_whole_seeded_batches_of_every_tensor():
    import torch

    x, y, t = torch.arange(10.0).view(10, 1), torch.arange(10), torch.arange(10.0) * 2
    batches = list(P.tensor_loader(x, y, t, batch_size=4, seed=3))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    for bx, by, bt in batches:                       # rows stay aligned across the tensors
        assert torch.equal(bx[:, 0].long(), by) and torch.equal(bt, by * 2.0)
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))   # shuffled, complete
    again = torch.cat([b[1] for b in P.tensor_loader(x, y, t, batch_size=4, seed=3)])
    assert torch.equal(seen, again)                  # the seed fixes the order
    assert len(list(P.tensor_loader(x, y, batch_size=3, drop_last=True))) == 3
    with pytest.raises(CourseError, match="same length"):
        P.tensor_loader(x, y[:5])


@pytest.mark.parametrize("cache", [True, False])
def test_tf_training_pipeline_shuffles_every_epoch_and_flips(cache):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (64, 6, 6, 3), dtype=np.uint8)
    ids = np.arange(64)                                            # the label names the image
    ds = P.to_tf_dataset(images, ids, batch_size=64, training=True, cache=cache, seed=4)
    (x1, y1), (x2, y2) = (next(iter(ds)) for _ in range(2))
    y1, y2 = y1.numpy(), y2.numpy()
    assert sorted(y1.tolist()) == list(range(64)) and y1.tolist() != list(range(64))   # shuffled, complete
    assert y2.tolist() != y1.tolist()                                                   # again each epoch
    np.testing.assert_allclose(x1.numpy(), images[y1] / 255.0, atol=1e-6)               # images follow labels
    again = next(iter(P.to_tf_dataset(images, ids, batch_size=64, training=True, cache=cache, seed=4)))[1]
    assert again.numpy().tolist() == y1.tolist()                                        # seeded
    xf, yf = next(iter(P.to_tf_dataset(images, ids, batch_size=64, training=True, cache=cache, seed=4,
                                       augment="flip")))
    kinds = []
    for img, i in zip(xf.numpy(), yf.numpy()):
        ref = images[i] / 255.0
        views = [ref, ref[:, ::-1], ref[::-1], ref[::-1, ::-1]]        # as is, left-right, up-down, both
        match = [k for k, v in enumerate(views) if np.abs(img - v).max() < 1e-6]
        assert match, i                                                  # a flipped copy of its own image
        kinds.append(match[0])
    assert set(kinds) == {0, 1, 2, 3}                                    # every flip happens
    plain = next(iter(P.to_tf_dataset(images, ids, batch_size=64, augment="flip")))[0]   # not training: no flip
    np.testing.assert_allclose(plain.numpy(), images / 255.0, atol=1e-6)


def test_torch_loader_settings_follow_the_documented_rule(monkeypatch):
    """The loader's settings, read without iterating (no worker process is started)."""
    import os

    import torch

    from course_utils import runtime

    images = np.zeros((40, 4, 4, 3), np.uint8)
    labels = np.arange(40) % 2
    flip = lambda t: t  # noqa: E731  (any transform)
    loader = P.to_torch_loader(images, labels)
    assert loader.batch_size == 32 and loader.drop_last is False and loader.num_workers == 0
    assert loader.pin_memory == torch.cuda.is_available() and loader.persistent_workers is False
    for mode, cpus, transform, want in [("smoke", 8, flip, 0), ("lite", 2, flip, 0), ("lite", 8, None, 0),
                                        ("lite", 8, flip, 2), ("full", 3, flip, 2), ("full", None, flip, 0)]:
        monkeypatch.setattr(runtime, "get_mode", lambda mode=mode: mode)
        monkeypatch.setattr(os, "cpu_count", lambda cpus=cpus: cpus)
        got = P.to_torch_loader(images, labels, transform=transform)
        assert got.num_workers == want, (mode, cpus, transform)
        assert got.persistent_workers is (want > 0)
    assert P.to_torch_loader(images, labels, num_workers=7).num_workers == 2          # at most 2
    assert P.to_torch_loader(images, labels, num_workers=-3).num_workers == 0
    one = P.to_torch_loader(images, labels, num_workers=1)
    assert one.num_workers == 1 and one.persistent_workers is True
    default = [int(v) for v in next(iter(P.to_torch_loader(images, labels, batch_size=40, shuffle=True)))[1]]
    seeded = [int(v) for v in next(iter(P.to_torch_loader(images, labels, batch_size=40, shuffle=True, seed=0)))[1]]
    assert default == seeded                                                           # the default seed is 0
    other = [int(v) for v in next(iter(P.to_torch_loader(images, labels, batch_size=40, shuffle=True, seed=1)))[1]]
    assert other != default


def test_require_finite_names_every_bad_image_across_chunks_for_numpy_and_torch():
    import torch

    from course_utils import CourseError

    x = np.zeros((30, 2, 2, 1), np.float32)
    assert P.require_finite(x) is x and P.require_finite(x.astype(np.uint8)) is not None
    x[[0, 9, 10, 29]] = np.nan
    for images in (x, torch.from_numpy(x)):
        with pytest.raises(CourseError, match=r"pool: 4 of 30 images have NaN or inf pixels \(index 0, 9, 10, 29\)"):
            P.require_finite(images, "pool", chunk=10)
    many = np.full((12, 1), np.inf)
    with pytest.raises(CourseError, match=r"index 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\)"):
        P.require_finite(many)


@pytest.mark.slow
def test_tfrecord_dataset_streams_the_same_images_and_augments_only_training(tmp_path):
    from course_utils.data import pipelines as PL

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (10, 12, 12, 3), dtype=np.uint8)
    y = np.arange(10) % 2
    path = PL.write_tfrecords(x, y, tmp_path / "t.tfrecord")
    plain = [(a, b) for a, b in PL.tfrecord_dataset(path, image_size=12, channels=3, batch_size=4).as_numpy_iterator()]
    ref = [(a, b) for a, b in PL.to_tf_dataset(x, y, batch_size=4).as_numpy_iterator()]
    assert [len(b) for _, b in plain] == [4, 4, 2]                      # the last, smaller batch is kept
    assert int(PL.tfrecord_dataset(path, image_size=12, channels=3, batch_size=4).cardinality()) == 3   # known
    for (a, b), (c, d) in zip(plain, ref):
        np.testing.assert_allclose(a, c, atol=1e-6)
        np.testing.assert_array_equal(b, d)
    train = PL.tfrecord_dataset(path, image_size=12, channels=3, batch_size=4, training=True, augment="standard")
    seen, changed = [], 0.0
    for a, b in train.as_numpy_iterator():
        assert a.shape[1:] == (12, 12, 3) and a.dtype == np.float32
        seen += b.tolist()
        changed += float(np.abs(a).sum())
    assert sorted(seen) == sorted(y.tolist())                           # every image once per epoch
    epoch = np.concatenate([a for a, _ in train.as_numpy_iterator()])
    originals = x.astype(np.float32) / 255
    assert not any(np.allclose(e, o, atol=1e-3) for e in epoch for o in originals)   # augmented, all of them
    aug = PL.augmentation(seed=1)
    assert [type(layer).__name__ for layer in aug.layers] == ["RandomFlip", "RandomRotation", "RandomZoom",
                                                              "RandomContrast"]
    with pytest.raises(CourseError, match="standard"):
        PL.to_tf_dataset(x, y, training=True, augment="sideways")
