"""course_utils.standins: the stand-ins are deterministic, cached, in medmnist's own format, plausible and
learnable; metadata matches medmnist.INFO; too large or unwritable caches are handled up front."""
import numpy as np
import pytest

from course_utils import CourseError
from course_utils import data as D
from course_utils import pipelines as P
from course_utils import runtime as cu_runtime
from course_utils import standins as S


# --------------------------------------------------------------------------- helpers
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
        loader = P.to_torch_loader(train_x, train_y, batch_size=32, shuffle=True, seed=seed)
        for _ in range(epochs):
            for x, y in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y, weight=weight).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            test_loader = P.to_torch_loader(test_x, test_y, batch_size=256)
            pred = np.concatenate([model(x).argmax(1).numpy() for x, _ in test_loader])
        return float((pred == test_y).mean()), float(balanced_accuracy_score(test_y, pred))


# --------------------------------------------------------------------------- real code paths


# --------------------------------------------------------------------------- stand-ins
def test_malaria_stand_in_is_deterministic_and_cached(tmp_path):
    a = S.make_malaria_stand_in(40, image_size=32, seed=1, cache=False)
    b = S.make_malaria_stand_in(40, image_size=32, seed=1, cache=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], S.make_malaria_stand_in(40, image_size=32, seed=2, cache=False)[0])
    first = S.make_malaria_stand_in(40, image_size=32, seed=1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("malaria*.npz"))) == 1
    second = S.make_malaria_stand_in(40, image_size=32, seed=1, cache_dir=tmp_path)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[0], a[0])
    assert a[0].dtype == np.uint8 and a[0].shape == (40, 32, 32, 3)
    assert np.bincount(a[1]).tolist() == [20, 20]
    # plausible: dark background corners, bright pinkish cell centre (red > green)
    corner = a[0][:, :3, :3].mean()
    centre = a[0][:, 12:20, 12:20].reshape(-1, 3).mean(axis=0)
    assert corner < 30 and centre[0] > 150 and centre[0] > centre[1]


@pytest.mark.slow
def test_malaria_stand_in_is_learnable(tmp_path):
    images, labels = S.make_malaria_stand_in(600, image_size=32, seed=3, cache_dir=tmp_path)
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
    path = S.make_medmnist_stand_in("breastmnist", size=28, root=tmp_path)
    assert path.name == "breastmnist.npz"
    with np.load(path) as z:
        assert sorted(z.files) == sorted(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels"))
    for split, n in medmnist.INFO["breastmnist"]["n_samples"].items():
        ds = medmnist.BreastMNIST(split=split, root=str(tmp_path), download=False)
        assert len(ds) == n  # medmnist's own split-size assertion passes
    labels = medmnist.BreastMNIST(split="train", root=str(tmp_path)).labels.ravel()
    assert abs((labels == 0).mean() - 0.27) < 0.01  # 0 = malignant, about 27 %
    mtime = path.stat().st_mtime_ns
    assert S.make_medmnist_stand_in("breastmnist", size=28, root=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert S.make_medmnist_stand_in("breastmnist", size=64, root=tmp_path).name == "breastmnist_64.npz"


def test_stand_in_metadata_matches_medmnist():
    medmnist = pytest.importorskip("medmnist")
    for flag, (task, ch, n_samples, names) in S._MEDMNIST_META.items():
        info = medmnist.INFO[flag]
        assert info["task"] == task and info["n_channels"] == ch and info["n_samples"] == n_samples
        assert [info["label"][k] for k in sorted(info["label"], key=int)] == names


@pytest.mark.parametrize("flag,channels,n_classes", [("dermamnist", 3, 7), ("pneumoniamnist", 1, 2)])
def test_other_medmnist_stand_ins(flag, channels, n_classes):
    ds = D.load_medmnist(flag, source="stand-in", max_per_split=70)
    assert ds.train.images.shape[1:] == (28, 28, channels) and ds.info.n_classes == n_classes
    assert ds.train.labels.dtype == np.int64 and ds.train.labels.max() < n_classes


@pytest.mark.parametrize("flag", S.MEDMNIST_FLAGS)
def test_every_stand_in_renderer_gives_medmnist_shaped_images(flag):
    meta = S.medmnist_meta(flag)
    render, priors = S._STAND_INS[flag]
    rng = np.random.default_rng(0)
    labels = (rng.random((16, 14)) < 0.3).astype(np.uint8) if priors is None else np.arange(16) % len(priors)
    for size in (28, 64):
        images = render(labels, size, np.random.default_rng(1))
        assert images.shape == (16, size, size, meta["n_channels"]) and images.dtype == np.uint8
        assert images.std() > 5  # not blank
        np.testing.assert_array_equal(images, render(labels, size, np.random.default_rng(1)))  # deterministic


# --------------------------------------------------------------------------- bad input
def test_too_large_stand_in_is_refused_up_front(tmp_path):
    with pytest.raises(CourseError, match=r"GiB.*28, 64") as err:
        S.make_medmnist_stand_in("pathmnist", size=224, root=tmp_path)
    assert "16" in str(err.value) or "15" in str(err.value)  # ~15 GiB for 107,180 RGB images at 224 px
    assert not list(tmp_path.iterdir())


def test_unwritable_cache_falls_back_to_temp(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, so nothing can be created below it")
    with pytest.warns(UserWarning, match="not writable"):
        images, labels = S.make_malaria_stand_in(10, image_size=16, seed=0, cache_dir=blocker / "cache")
    assert images.shape == (10, 16, 16, 3)
    with pytest.warns(UserWarning, match="not writable"):
        path = S.make_medmnist_stand_in("breastmnist", root=blocker / "medmnist")
    assert path.exists() and blocker not in path.parents
