"""course_utils.data: real loader code paths (tfds under mock_data, medmnist on a local npz, a NIH-style
folder), stand-ins (deterministic, cached, learnable), splits, both input pipelines, and bad input."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from course_utils import CourseError
from course_utils import data as D
from course_utils import runtime as cu_runtime


# --------------------------------------------------------------------------- helpers
def _write_breastmnist_npz(root: Path, *, short: bool = False) -> Path:
    """A local breastmnist.npz in medmnist's format, with INFO's exact split sizes (or one short)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 546, "val": 78, "test": 156}.items():
        n = n - 1 if short and split == "train" else n
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.random((n, 1)) < 0.73).astype(np.uint8)
    path = root / "breastmnist.npz"
    np.savez(path, **arrays)
    return path


def _write_nih_folder(root: Path, n_per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    base = root / "cell_images"
    for k, name in enumerate(D.MALARIA_CLASSES):
        d = base / name
        d.mkdir(parents=True)
        for i in range(n_per_class):
            h, w = rng.integers(40, 90, 2)  # NIH crops vary in size
            img = np.full((h, w, 3), (200, 150, 170) if k else (120, 40, 130), np.uint8)
            Image.fromarray(img).save(d / f"cell_{i}.png")
        (d / "Thumbs.db").write_bytes(b"\x00\x01windows thumbnail cache")  # shipped in the NIH zip
    return base


def _online() -> bool:
    return cu_runtime.can_reach("zenodo.org", *D.MALARIA_HOSTS, timeout=2)


offline_only = pytest.mark.skipif(_online(), reason="checks the offline failure; this machine is online")


class TinyCNN:
    """A small torch CNN trained for a few epochs; returns test accuracy (and balanced accuracy)."""

    @staticmethod
    def fit_score(train_x, train_y, test_x, test_y, epochs=6, seed=0):
        import torch

        torch.manual_seed(seed)
        with cu_runtime.torch_threads(1):  # on a busy 2-core machine one thread is much faster for a model this small
            return TinyCNN._fit_score(torch, train_x, train_y, test_x, test_y, epochs, seed)

    @staticmethod
    def _fit_score(torch, train_x, train_y, test_x, test_y, epochs, seed):
        from sklearn.metrics import balanced_accuracy_score

        c = train_x.shape[-1]
        n_classes = int(train_y.max()) + 1
        model = torch.nn.Sequential(
            torch.nn.Conv2d(c, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.AdaptiveMaxPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(32, n_classes))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        counts = np.bincount(train_y, minlength=n_classes)
        weight = torch.tensor(len(train_y) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
        loader = D.to_torch_loader(train_x, train_y, batch_size=32, shuffle=True, seed=seed)
        for _ in range(epochs):
            for x, y in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y, weight=weight).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            test_loader = D.to_torch_loader(test_x, test_y, batch_size=256)
            pred = np.concatenate([model(x).argmax(1).numpy() for x, _ in test_loader])
        return float((pred == test_y).mean()), float(balanced_accuracy_score(test_y, pred))


# --------------------------------------------------------------------------- real code paths
def test_malaria_through_tfds_mock_data(tmp_path):
    tfds = D._import_tfds()
    with tfds.testing.mock_data(num_examples=60):
        ds = D.load_malaria(source="real", image_size=32, max_images=40, cache_dir=tmp_path)
    assert ds.info.source == "tfds" and not ds.info.is_stand_in
    assert ds.info.class_names == ["Parasitized", "Uninfected"] and ds.info.task == "binary"
    assert len(ds.train) + len(ds.val) + len(ds.test) == 40
    assert ds.train.images.shape[1:] == (32, 32, 3) and ds.train.images.dtype == np.uint8
    assert ds.train.labels.dtype == np.int64 and set(np.unique(ds.train.labels)) <= {0, 1}
    assert "patient" in ds.info.notes  # the leakage caveat travels with the data
    assert not list(tmp_path.iterdir())  # real data is never written into the stand-in cache


def test_medmnist_real_path_reads_local_npz(tmp_path):
    _write_breastmnist_npz(tmp_path)
    ds = D.load_medmnist("breastmnist", source="real", root=tmp_path)
    assert ds.info.source == "medmnist"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (546, 78, 156)
    assert ds.train.images.shape == (546, 28, 28, 1) and ds.train.images.dtype == np.uint8
    assert ds.train.labels.shape == (546,) and ds.train.labels.dtype == np.int64
    assert ds.info.class_names == ["malignant", "normal, benign"] and ds.info.task == "binary"
    sub = D.load_medmnist("breastmnist", source="real", root=tmp_path, max_per_split=50)
    assert len(sub.train) == 50 and len(sub.test) == 50


def test_medmnist_wrong_split_size_is_a_clear_error(tmp_path):
    _write_breastmnist_npz(tmp_path, short=True)  # medmnist asserts INFO's n_samples
    with pytest.raises(CourseError, match="breastmnist"):
        D.load_medmnist("breastmnist", source="real", root=tmp_path)


def test_folder_loader(tmp_path):
    base = _write_nih_folder(tmp_path)
    ds = D.load_malaria_folder(tmp_path, image_size=24, fractions=(0.5, 0.25, 0.25))  # parent of cell_images
    assert ds.info.source == "folder"
    total = len(ds.train) + len(ds.val) + len(ds.test)
    assert total == 12 and ds.train.images.shape[1:] == (24, 24, 3)
    assert D.class_counts(ds.train.labels, ds.info.class_names) == {"Parasitized": 3, "Uninfected": 3}
    # colours survive: parasitized crops are the purple ones
    purple = ds.train.images[ds.train.labels == 0].mean(axis=(0, 1, 2))
    assert purple[2] > purple[1]
    assert len(D.load_malaria_folder(base, image_size=24, max_images=8).train) >= 4


# --------------------------------------------------------------------------- stand-ins
def test_malaria_stand_in_is_deterministic_and_cached(tmp_path):
    a = D.make_malaria_stand_in(40, image_size=32, seed=1, cache=False)
    b = D.make_malaria_stand_in(40, image_size=32, seed=1, cache=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], D.make_malaria_stand_in(40, image_size=32, seed=2, cache=False)[0])
    first = D.make_malaria_stand_in(40, image_size=32, seed=1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("malaria*.npz"))) == 1
    second = D.make_malaria_stand_in(40, image_size=32, seed=1, cache_dir=tmp_path)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[0], a[0])
    assert a[0].dtype == np.uint8 and a[0].shape == (40, 32, 32, 3)
    assert np.bincount(a[1]).tolist() == [20, 20]
    # plausible: dark background corners, bright pinkish cell centre (red > green)
    corner = a[0][:, :3, :3].mean()
    centre = a[0][:, 12:20, 12:20].reshape(-1, 3).mean(axis=0)
    assert corner < 30 and centre[0] > 150 and centre[0] > centre[1]


def test_load_malaria_stand_in(tmp_path, monkeypatch):
    report = tmp_path / "report.jsonl"
    monkeypatch.setenv("COURSE_REPORT", str(report))  # as the main job sets it
    ds = D.load_malaria(source="stand-in", image_size=32, max_images=200, cache_dir=tmp_path)
    assert ds.info.source == "stand-in" and ds.info.is_stand_in
    assert (len(ds.train), len(ds.val), len(ds.test)) == (140, 30, 30)
    # the course summary learns which source the loader used
    assert '"name": "malaria", "source": "stand-in"' in report.read_text()


@pytest.mark.slow
def test_malaria_stand_in_is_learnable(tmp_path):
    images, labels = D.make_malaria_stand_in(600, image_size=32, seed=3, cache_dir=tmp_path)
    train, _, test = D.stratified_split(images, labels, (0.7, 0.0, 0.3), seed=0)
    acc, _ = TinyCNN.fit_score(train.images, train.labels, test.images, test.labels, epochs=6)
    assert acc >= 0.75, f"stand-in not learnable enough: test accuracy {acc:.3f} on a balanced split"


@pytest.mark.slow
def test_breastmnist_stand_in_is_learnable():
    ds = D.load_medmnist("breastmnist", source="stand-in")
    _, bal = TinyCNN.fit_score(ds.train.images, ds.train.labels, ds.test.images, ds.test.labels, epochs=6)
    assert bal >= 0.75, f"balanced accuracy {bal:.3f}"


def test_medmnist_stand_in_in_medmnist_format(tmp_path):
    medmnist = pytest.importorskip("medmnist")
    path = D.make_medmnist_stand_in("breastmnist", size=28, root=tmp_path)
    assert path.name == "breastmnist.npz"
    with np.load(path) as z:
        assert sorted(z.files) == sorted(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels"))
    for split, n in medmnist.INFO["breastmnist"]["n_samples"].items():
        ds = medmnist.BreastMNIST(split=split, root=str(tmp_path), download=False)
        assert len(ds) == n  # medmnist's own split-size assertion passes
    labels = medmnist.BreastMNIST(split="train", root=str(tmp_path)).labels.ravel()
    assert abs((labels == 0).mean() - 0.27) < 0.01  # 0 = malignant, about 27 %
    mtime = path.stat().st_mtime_ns
    assert D.make_medmnist_stand_in("breastmnist", size=28, root=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert D.make_medmnist_stand_in("breastmnist", size=64, root=tmp_path).name == "breastmnist_64.npz"


def test_stand_in_metadata_matches_medmnist():
    medmnist = pytest.importorskip("medmnist")
    for flag, (task, ch, n_samples, names) in D._MEDMNIST_META.items():
        info = medmnist.INFO[flag]
        assert info["task"] == task and info["n_channels"] == ch and info["n_samples"] == n_samples
        assert [info["label"][k] for k in sorted(info["label"], key=int)] == names


@pytest.mark.parametrize("flag,channels,n_classes", [("dermamnist", 3, 7), ("pneumoniamnist", 1, 2)])
def test_other_medmnist_stand_ins(flag, channels, n_classes):
    ds = D.load_medmnist(flag, source="stand-in", max_per_split=70)
    assert ds.train.images.shape[1:] == (28, 28, channels) and ds.info.n_classes == n_classes
    assert ds.train.labels.dtype == np.int64 and ds.train.labels.max() < n_classes


@pytest.mark.parametrize("flag", D.MEDMNIST_FLAGS)
def test_every_stand_in_renderer_gives_medmnist_shaped_images(flag):
    meta = D._medmnist_meta(flag)
    render, priors = D._STAND_INS[flag]
    rng = np.random.default_rng(0)
    labels = (rng.random((16, 14)) < 0.3).astype(np.uint8) if priors is None else np.arange(16) % len(priors)
    for size in (28, 64):
        images = render(labels, size, np.random.default_rng(1))
        assert images.shape == (16, size, size, meta["n_channels"]) and images.dtype == np.uint8
        assert images.std() > 5  # not blank
        np.testing.assert_array_equal(images, render(labels, size, np.random.default_rng(1)))  # deterministic


@pytest.mark.slow
def test_chestmnist_multi_label_through_both_pipelines():
    ds = D.load_medmnist("chestmnist", source="stand-in", max_per_split=64)
    assert ds.info.task == "multi-label" and ds.info.n_classes == 14
    assert ds.train.labels.shape == (64, 14) and ds.train.labels.dtype == np.uint8
    assert set(np.unique(ds.train.labels)) <= {0, 1}
    x, y = next(iter(D.to_tf_dataset(ds.train.images, ds.train.labels, batch_size=16)))
    assert tuple(x.shape) == (16, 28, 28, 1) and y.dtype.name == "float32" and tuple(y.shape) == (16, 14)
    xt, yt = next(iter(D.to_torch_loader(ds.train.images, ds.train.labels, batch_size=16)))
    assert tuple(xt.shape) == (16, 1, 28, 28) and str(yt.dtype) == "torch.float32" and tuple(yt.shape) == (16, 14)


# --------------------------------------------------------------------------- splits
def test_stratified_split_keeps_class_ratios():
    labels = np.repeat([0, 1, 2], [700, 200, 100])
    images = np.arange(1000)[:, None]
    tr, va, te = D.stratified_split(images, labels, (0.7, 0.15, 0.15), seed=0)
    assert len(tr) + len(va) + len(te) == 1000
    assert np.bincount(tr.labels).tolist() == [490, 140, 70]
    assert np.bincount(te.labels).tolist() == [105, 30, 15]
    assert len(np.intersect1d(tr.images, te.images)) == 0  # disjoint
    again = D.stratified_split(images, labels, seed=0)[0]
    np.testing.assert_array_equal(tr.images, again.images)
    with pytest.raises(CourseError, match="sum to 1"):
        D.stratified_split(images, labels, (0.7, 0.2, 0.2))


def test_stratified_subset_keeps_ratios_and_multi_label():
    labels = np.repeat([0, 1], [270, 730])
    x, y = D.stratified_subset(np.arange(1000), labels, 100, seed=1)
    assert np.bincount(y).tolist() == [27, 73] and len(set(x.tolist())) == 100
    ml = (np.random.default_rng(0).random((500, 14)) < 0.1).astype(np.uint8)
    _, yml = D.stratified_subset(np.arange(500), ml, 50)
    assert yml.shape == (50, 14)
    assert D.class_counts(ml, [str(i) for i in range(14)])["0"] == int(ml[:, 0].sum())


# --------------------------------------------------------------------------- pipelines
def test_tf_pipeline_shapes_and_order():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(70) % 2
    batches = list(D.to_tf_dataset(images, labels, batch_size=32))
    assert [int(b[0].shape[0]) for b in batches] == [32, 32, 6]  # never drops the remainder
    x, y = batches[0]
    assert x.dtype.name == "float32" and y.dtype.name == "int64"
    np.testing.assert_allclose(x.numpy(), images[:32] / 255.0, atol=1e-6)  # no shuffle when not training
    xs, ys = next(iter(D.to_tf_dataset(images, labels, batch_size=70, training=True, augment="flip",
                                       image_size=8, one_hot=True)))
    assert tuple(xs.shape) == (70, 8, 8, 3) and tuple(ys.shape) == (70, 2) and ys.dtype.name == "float32"
    assert ys.numpy().sum(axis=0).tolist() == [35, 35]  # shuffled, nothing lost
    assert float(xs.numpy().min()) >= 0 and float(xs.numpy().max()) <= 1


def test_torch_loader_shapes_and_seeded_shuffle():
    import torch

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 16, 16, 1), dtype=np.uint8)
    labels = np.arange(70) % 3
    loader = D.to_torch_loader(images, labels, batch_size=32)
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [32, 32, 6] and loader.num_workers <= 2
    x, y = batches[0]
    assert x.shape == (32, 1, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_allclose(x.numpy(), images[:32].transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
    a = next(iter(D.to_torch_loader(images, labels, batch_size=70, shuffle=True, seed=5)))[1]
    b = next(iter(D.to_torch_loader(images, labels, batch_size=70, shuffle=True, seed=5)))[1]
    assert torch.equal(a, b) and not torch.equal(a, torch.as_tensor(labels))
    flip = D.to_torch_loader(images, labels, batch_size=4, transform=lambda t: t.flip(-1).float())
    xf, _ = next(iter(flip))
    np.testing.assert_array_equal(xf[0, 0].numpy(), images[0, :, ::-1, 0])


def test_tf_pipeline_skips_a_cache_that_would_not_fit(monkeypatch):
    monkeypatch.setattr(D, "TF_CACHE_MAX_BYTES", 1000)
    images = np.zeros((20, 8, 8, 3), np.uint8)
    with pytest.warns(UserWarning, match="GiB"):
        ds = D.to_tf_dataset(images, np.arange(20) % 2, batch_size=8, training=True)
    assert sum(int(x.shape[0]) for x, _ in ds) == 20


def test_tfrecords_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (9, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(9) % 2
    path = D.write_tfrecords(images, labels, tmp_path / "x.tfrecord")
    back = list(D.read_tfrecords(path, image_size=12, channels=3).as_numpy_iterator())
    assert len(back) == 9
    np.testing.assert_array_equal(np.stack([b[0] for b in back]), images)  # PNG is lossless
    assert [int(b[1]) for b in back] == labels.tolist()


def test_resize_images():
    images = np.random.default_rng(0).integers(0, 256, (5, 20, 30, 1), dtype=np.uint8)
    out = D.resize_images(images, 8)
    assert out.shape == (5, 8, 8, 1) and out.dtype == np.uint8
    flat = np.full((2, 20, 20, 3), 77, np.uint8)
    assert (D.resize_images(flat, 7) == 77).all()
    ragged = [np.zeros((10, 14, 3), np.uint8), np.zeros((30, 22, 3), np.uint8)]
    assert D.resize_images(ragged, 16).shape == (2, 16, 16, 3)


def test_banner_marks_stand_in(capsys):
    D.banner(D.DataInfo("malaria", list(D.MALARIA_CLASSES), "binary", "stand-in", 32, 3))
    assert "STAND-IN DATA" in capsys.readouterr().out
    D.banner(D.DataInfo("malaria", list(D.MALARIA_CLASSES), "binary", "tfds", 32, 3))
    assert "STAND-IN" not in capsys.readouterr().out


# --------------------------------------------------------------------------- bad input
def test_folder_with_non_image_file(tmp_path):
    base = _write_nih_folder(tmp_path)
    (base / "Uninfected" / "notes.txt").write_text("not an image")
    with pytest.raises(CourseError, match="notes.txt"):
        D.load_malaria_folder(base, image_size=16)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = D.load_malaria_folder(base, image_size=16, on_error="skip")
    assert "skipped 1" in ds.info.notes and len(ds.train) + len(ds.val) + len(ds.test) == 12


def test_folder_with_unreadable_image(tmp_path):
    base = _write_nih_folder(tmp_path)
    (base / "Parasitized" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(CourseError, match="broken.png"):
        D.load_malaria_folder(base, image_size=16)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = D.load_malaria_folder(base, image_size=16, on_error="skip")
    assert len(ds.train) + len(ds.val) + len(ds.test) == 12


def test_folder_missing_class_directory(tmp_path):
    (tmp_path / "Parasitized").mkdir()
    with pytest.raises(CourseError, match="expected layout") as err:
        D.load_malaria_folder(tmp_path)
    assert "Uninfected" in str(err.value)


def test_unknown_medmnist_flag_or_size():
    with pytest.raises(CourseError, match="breastmnist") as err:
        D.load_medmnist("breastmnst")
    assert "chestmnist" in str(err.value)
    with pytest.raises(CourseError, match="28, 64, 128, 224"):
        D.load_medmnist("breastmnist", size=32)
    with pytest.raises(CourseError, match="source"):
        D.load_medmnist("breastmnist", source="internet")


def test_too_large_stand_in_is_refused_up_front(tmp_path):
    with pytest.raises(CourseError, match=r"GiB.*28, 64") as err:
        D.make_medmnist_stand_in("pathmnist", size=224, root=tmp_path)
    assert "16" in str(err.value) or "15" in str(err.value)  # ~15 GiB for 107,180 RGB images at 224 px
    assert not list(tmp_path.iterdir())


def test_unwritable_cache_falls_back_to_temp(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, so nothing can be created below it")
    with pytest.warns(UserWarning, match="not writable"):
        images, labels = D.make_malaria_stand_in(10, image_size=16, seed=0, cache_dir=blocker / "cache")
    assert images.shape == (10, 16, 16, 3)
    with pytest.warns(UserWarning, match="not writable"):
        path = D.make_medmnist_stand_in("breastmnist", root=blocker / "medmnist")
    assert path.exists() and blocker not in path.parents


@offline_only
def test_real_source_offline_is_a_clear_fast_error(tmp_path):
    import time

    start = time.perf_counter()
    with pytest.raises(CourseError) as err:
        D.load_medmnist("breastmnist", source="real", root=tmp_path)  # empty root: must download
    msg = str(err.value)
    assert "download" in msg and "internet" in msg and "source='auto'" in msg
    with pytest.warns(UserWarning, match="STAND-IN"):
        ds = D.load_medmnist("breastmnist", source="auto", root=tmp_path, max_per_split=20)
    assert ds.info.source == "stand-in" and "STAND-IN" in ds.info.notes
    assert time.perf_counter() - start < 30


@offline_only
def test_malaria_real_offline_fails_fast(tmp_path):
    import time

    start = time.perf_counter()
    with pytest.raises(CourseError, match="source='auto'"):
        D.load_malaria(source="real", data_dir=tmp_path / "tfds", image_size=16, max_images=10)
    assert time.perf_counter() - start < 30  # tfds alone would retry for minutes


def test_auto_falls_back_when_the_real_path_cannot_even_start(monkeypatch, tmp_path):
    def no_tfds():
        raise CourseError("TensorFlow is not installed. Run `make setup`.")

    monkeypatch.setattr(D, "_import_tfds", no_tfds)
    with pytest.warns(UserWarning, match="STAND-IN"):
        ds = D.load_malaria(image_size=16, max_images=20, cache_dir=tmp_path)
    assert ds.info.source == "stand-in" and "TensorFlow is not installed" in ds.info.notes
    with pytest.raises(CourseError, match="source='auto'"):
        D.load_malaria(source="real", image_size=16, max_images=20)
