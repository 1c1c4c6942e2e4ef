"""course_utils.standins: the renderers draw plausible, learnable images of medmnist's shapes, with the real
data sets' class balance, and not too easy (a tiny CNN must stay well below the AUC 0.99+ that version v1
gave); nonsense difficulty knobs are refused. (Files, cache and metadata: test_standin_cache.py.)"""
import numpy as np
import pytest

from course_utils import CourseError
from course_utils.data import loaders as D
from course_utils.data import pipelines as P
from course_utils import runtime as cu_runtime
from course_utils.data import standin_cache as C
from course_utils.data import standins as S
from course_utils.data import _drawing as draw


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


# --------------------------------------------------------------------------- stand-ins
@pytest.mark.slow
def test_malaria_stand_in_is_learnable(tmp_path):
    images, labels = C.make_malaria_stand_in(600, image_size=32, seed=3, cache_dir=tmp_path)
    train, _, test = D.stratified_split(images, labels, (0.7, 0.0, 0.3), seed=0)
    acc, _ = TinyCNN.fit_score(train.images, train.labels, test.images, test.labels, epochs=6)
    assert acc >= 0.75, f"stand-in not learnable enough: test accuracy {acc:.3f} on a balanced split"


@pytest.mark.slow
def test_breastmnist_stand_in_is_learnable():
    ds = D.load_medmnist("breastmnist", source="stand-in")
    _, bal = TinyCNN.fit_score(ds.train.images, ds.train.labels, ds.test.images, ds.test.labels, epochs=6)
    assert bal >= 0.75, f"balanced accuracy {bal:.3f}"


@pytest.mark.parametrize("flag", S.MEDMNIST_FLAGS)
def test_every_stand_in_renderer_gives_medmnist_shaped_images(flag):
    meta = C.medmnist_meta(flag)
    render, priors = S.STAND_INS[flag]
    rng = np.random.default_rng(0)
    n_classes = len(meta["class_names"])
    labels = (rng.random((16, 14)) < 0.3).astype(np.uint8) if priors is None else np.arange(16) % n_classes
    for size in (28, 64):
        images = render(labels, size, np.random.default_rng(1))
        assert images.shape == (16, size, size, meta["n_channels"]) and images.dtype == np.uint8
        assert images.std() > 5  # not blank
        np.testing.assert_array_equal(images, render(labels, size, np.random.default_rng(1)))  # deterministic


# --------------------------------------------------------------------------- class balance of the real sets
# Counts of the real data sets (independent of the priors in standins.py): HAM10000 (DermaMNIST), NCT-CRC-HE-
# 100K (PathMNIST train/val) and CRC-VAL-HE-7K (PathMNIST test), BUSI (BreastMNIST: 210 malignant of 780),
# Kermany pediatric X-rays (PneumoniaMNIST: train folder 1,341 normal / 3,875 pneumonia, test 234 / 390),
# Acevedo et al. blood smears (BloodMNIST), NIH malaria (13,779 per class).
_REAL_COUNTS = {
    "breastmnist": {"all": [210, 570]},
    "dermamnist": {"all": [327, 514, 1099, 115, 1113, 6705, 142]},
    "pathmnist": {"train": [10407, 10566, 11512, 11557, 8896, 13536, 8763, 10446, 14317],
                  "test": [1338, 847, 339, 634, 1035, 592, 741, 421, 1233]},
    "pneumoniamnist": {"train": [1341, 3875], "test": [234, 390]},
    "bloodmnist": {"all": [1218, 3117, 1551, 2895, 1214, 1420, 3329, 2348]},
}
# NIH ChestX-ray14: images with each finding, of 112,120
_CHEST_COUNTS = [11559, 2776, 13317, 19894, 5782, 6331, 1431, 5302, 4667, 2303, 2516, 1686, 3385, 227]


@pytest.mark.parametrize("flag", sorted(_REAL_COUNTS))
def test_class_balance_matches_the_real_data_set(flag):
    n_samples = C.medmnist_meta(flag)["n_samples"]
    for split, n in n_samples.items():
        real = _REAL_COUNTS[flag]
        counts = np.asarray(real.get(split, real.get("all", real.get("train"))), float)
        labels = S.draw_labels(flag, split, n, S.stand_in_rng("medmnist", flag, split, 28))  # as the file does
        got = np.bincount(labels, minlength=len(counts)) / n
        np.testing.assert_allclose(got, counts / counts.sum(), atol=0.005, err_msg=f"{flag} {split}")


def test_chestmnist_finding_prevalences_match_chestxray14():
    labels = S.draw_labels("chestmnist", "train", 78468, S.stand_in_rng("medmnist", "chestmnist", "train", 28))
    np.testing.assert_allclose(labels.mean(axis=0), np.asarray(_CHEST_COUNTS) / 112120, atol=0.004)


def test_malaria_stand_in_is_balanced():
    _, labels = C.make_malaria_stand_in(101, image_size=8, seed=0, cache=False)
    assert abs(np.bincount(labels).tolist()[0] - 50.5) <= 0.5


# --------------------------------------------------------------------------- difficulty
def _tiny_cnn_auc(train, test, *, epochs: int, seed: int = 0, with_accuracy: bool = False):
    """AUC of a tiny CNN (2 conv layers, one thread) trained for a few epochs on ``train``: binary AUC,
    macro one-vs-rest AUC, or for multi-label the mean AUC of the findings with >= 5 positives in ``test``
    (and the accuracy at argmax, with ``with_accuracy``)."""
    import torch
    from sklearn.metrics import roc_auc_score

    (tr_x, tr_y), (te_x, te_y) = train, test
    multi = tr_y.ndim == 2
    k = tr_y.shape[1] if multi else int(tr_y.max()) + 1
    nn = torch.nn
    with cu_runtime.torch_threads(1):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(tr_x.shape[-1], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                              nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, k))
        tensor = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)  # noqa: E731
        x, y = tensor(tr_x), torch.from_numpy(tr_y.astype(np.float32 if multi else np.int64))
        loss_fn = nn.functional.binary_cross_entropy_with_logits if multi else nn.functional.cross_entropy
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(32):
                opt.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            out = model(tensor(te_x))
            p = (torch.sigmoid(out) if multi else torch.softmax(out, 1)).numpy()
    if multi:
        return float(np.mean([roc_auc_score(te_y[:, j], p[:, j]) for j in range(k) if te_y[:, j].sum() >= 5]))
    auc = float(roc_auc_score(te_y, p[:, 1]) if k == 2 else roc_auc_score(te_y, p, multi_class="ovr"))
    return (auc, float((p.argmax(1) == te_y).mean())) if with_accuracy else auc


def _sample(flag, n, seed, difficulty=None):
    return C.stand_in_sample(flag, n, size=32 if flag == "malaria" else 28, seed=seed, difficulty=difficulty)


# flag: (train images, epochs, lowest AUC = "learns something", highest AUC = "not too easy", highest accuracy).
# Measured with this tiny CNN (seeds 0-2): stand-in v1 reached AUC breast 0.994-0.998, path 0.988-0.993
# (accuracy 0.86-0.91), derma 0.983-0.990, chest 0.73-0.81; v2 gives breast 0.87-0.93, path 0.963-0.978
# (accuracy 0.76-0.81), derma 0.80-0.87, chest 0.59-0.64. Real-data ResNet-18 (MedMNIST v2): 0.901, 0.983
# (0.907), 0.917, 0.768. (Malaria: AUC ~0.99 is realistic there, see the tests below.)
_PROBE = {
    "breastmnist": (546, 6, 0.75, 0.97, None),
    "pathmnist": (600, 4, 0.85, 0.99, 0.85),
    "dermamnist": (600, 4, 0.65, 0.95, None),
    "chestmnist": (1000, 4, 0.54, 0.72, None),
}


@pytest.mark.parametrize("flag", sorted(_PROBE))
def test_stand_in_is_learnable_but_not_too_easy(flag):
    n_train, epochs, low, high, max_acc = _PROBE[flag]
    test = _sample(flag, 400 if flag != "chestmnist" else 600, 1)
    if max_acc is None:
        auc = _tiny_cnn_auc(_sample(flag, n_train, 0), test, epochs=epochs)
    else:
        auc, acc = _tiny_cnn_auc(_sample(flag, n_train, 0), test, epochs=epochs, with_accuracy=True)
        assert acc < max_acc, f"{flag}: tiny-CNN accuracy {acc:.3f} >= {max_acc}: the stand-in got too easy"
    assert low < auc < high, f"{flag}: tiny-CNN AUC {auc:.3f}, expected between {low} and {high}"


@pytest.mark.parametrize("flag", ["malaria", "chestmnist", "pneumoniamnist"])
def test_full_difficulty_leaves_nothing_to_learn(flag):
    """At difficulty 1 every cell is ambiguous / every finding occult: the classes look alike, so the calibrated
    difficulty d caps accuracy at ~1 - d/2 (malaria) whatever the model."""
    train, test = _sample(flag, 600, 0, difficulty=1.0), _sample(flag, 400, 1, difficulty=1.0)
    auc = _tiny_cnn_auc(train, test, epochs=3)
    assert auc < 0.62, f"{flag} at difficulty 1: AUC {auc:.3f}, the classes should be indistinguishable"


def test_malaria_has_enough_ambiguous_cells():
    # accuracy ceiling 1 - d/2 <= 0.985: no model reads every cell right (real cell-level: ~0.95-0.97)
    assert 0.03 <= S.DIFFICULTY["malaria"] <= 0.14
    auc = _tiny_cnn_auc(_sample("malaria", 600, 0), _sample("malaria", 400, 1), epochs=4)
    assert 0.9 < auc < 0.9995


@pytest.mark.parametrize("flag,value", [("malaria", -0.1), ("pathmnist", 1.5), ("breastmnist", float("nan")),
                                        ("dermamnist", "hard")])
def test_nonsense_difficulty_is_refused(flag, value):
    with pytest.raises((CourseError, ValueError), match="difficulty|could not convert"):
        C.stand_in_sample(flag, 8, difficulty=value)


# --------------------------------------------------------------------------- issue 20: hand-written bugs
def test_difficulty_zero_is_a_real_setting_not_the_default():
    """Bugs caught: `v <= 0` refusing difficulty 0 (the easiest stand-in), and `float(value) if value else
    DIFFICULTY[name]`, which silently drew difficulty 0 with the calibrated default."""
    for name in S.DIFFICULTY:
        assert S._knob(name, 0) == 0.0 and S._knob(name, None) == S.DIFFICULTY[name]
    labels = np.arange(32) % 2
    easy = S._render_ultrasound(labels, 28, np.random.default_rng(0), 0.0)
    calibrated = S._render_ultrasound(labels, 28, np.random.default_rng(0))
    assert not np.array_equal(easy, calibrated)
    images, _ = C.stand_in_sample("malaria", 8, size=16, difficulty=0)
    assert images.shape == (8, 16, 16, 3)


def test_labels_drawn_from_priors_are_shuffled():
    """Bug caught: the permutation dropped: exact counts, but every class in one block (a split cut from the
    front of the file would hold one class only)."""
    labels = S.labels_from_priors(100, [0.5, 0.5], np.random.default_rng(0))
    assert np.bincount(labels).tolist() == [50, 50]
    assert (np.diff(labels) != 0).sum() > 20
    derma = S.draw_labels("dermamnist", "train", 700, S.stand_in_rng("t"))
    assert not np.all(np.diff(derma) >= 0)


def test_every_class_is_confused_with_each_of_its_partners():
    """Bug caught: `int(u * (len(partners) - 1))`: the last partner of each class was never drawn (and a class
    with one partner always got its first)."""
    for table in (S._PATH_PARTNERS, S._DERMA_PARTNERS, S._BLOOD_PARTNERS):
        labels = np.repeat(np.arange(len(table)), 60)
        got = S._partners(labels, table, np.random.default_rng(0))
        for c, partners in enumerate(table):
            assert set(got[labels == c].tolist()) == set(partners), (c, partners)


@pytest.mark.parametrize("flag", S.MEDMNIST_FLAGS)
def test_renderers_never_change_the_labels_they_are_given(flag):
    """Bug caught: `labels.copy()` dropped in the blood renderer: the atypical cells' drawn look overwrote their
    labels in the caller's array (the labels saved with the images became the looks)."""
    render, priors = S.STAND_INS[flag]
    rng = np.random.default_rng(0)
    labels = (rng.random((24, 14)) < 0.3).astype(np.uint8) if priors is None else np.arange(24) % len(
        priors["train"] if isinstance(priors, dict) else priors)
    before = labels.copy()
    hardest = None if flag == "breastmnist" else 1.0
    render(labels, 16, np.random.default_rng(1), hardest)
    np.testing.assert_array_equal(labels, before)


def test_malaria_parasites_are_drawn_in_the_parasitized_class_0():
    """Bug caught: `parasitized = labels == 1`: the classes swapped (a model still learns them, so no AUC test
    notices; Grad-CAM and the lesson's "parasitized" images would show healthy cells)."""
    labels = np.arange(200) % 2
    im = S.render_malaria(labels, 32, np.random.default_rng(0), 0.0).astype(float)
    ring = ((im[..., 1] < 80) & (im[..., 2] > 100)).any(axis=(1, 2))   # dark purple: a ring form's stain
    assert ring[labels == 0].mean() > 0.6 and ring[labels == 1].mean() < 0.2


def test_breastmnist_malignant_class_0_has_the_darker_lesions():
    """Bug caught: `malignant = labels == 1`: BreastMNIST's class order swapped (0 is malignant)."""
    labels = np.arange(200) % 2
    im = S._render_ultrasound(labels, 28, np.random.default_rng(0)).astype(float)
    centre = im[:, 8:20, 6:22].mean(axis=(1, 2, 3))
    assert centre[labels == 0].mean() < centre[labels == 1].mean() - 10


def test_pneumoniamnist_pneumonia_class_1_has_the_haze():
    """Bug caught: `sick = labels == 0`: PneumoniaMNIST's class order swapped (1 is pneumonia)."""
    labels = np.arange(200) % 2
    im = S._xray_pneumonia(labels, 28, np.random.default_rng(0), 0.0).astype(float)
    brightness = im.mean(axis=(1, 2, 3))
    assert brightness[labels == 1].mean() > brightness[labels == 0].mean() + 3


def test_cardiomegaly_and_emphysema_are_drawn_from_their_own_columns():
    """Bugs caught: the heart size read from column 2 (effusion) and the lung size from column 11 (fibrosis):
    cardiomegaly and emphysema never showed, whatever the label."""
    none = np.zeros((16, 14), np.uint8)
    cardio, emph = none.copy(), none.copy()
    cardio[:, 1] = 1
    emph[:, 10] = 1
    render = lambda f: S._render_xray(f, 28, np.random.default_rng(0), 0.0).astype(float)  # noqa: E731
    base = render(none).mean()
    assert render(cardio).mean() > base + 1    # a larger, bright heart shadow
    assert render(emph).mean() < base - 4      # larger, darker lungs


def test_grid_gives_symmetric_pixel_centres_rows_first():
    """Bugs caught: the +0.5 dropped (coordinates from -1 to 1 - 2/s: every shape off centre) and
    indexing="xy" (yy and xx swapped: fluid at the side of the chest instead of its base)."""
    yy, xx = draw.grid(4)
    np.testing.assert_allclose(yy[:, 0], [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(xx[0], [-0.75, -0.25, 0.25, 0.75])
    assert np.all(yy == yy[:, :1]) and np.all(xx == xx[:1])


def test_blur_smooths_each_image_along_the_axes_it_is_given():
    """Bugs caught: sigma=(sy, sx, 0) (blurring across the images of a batch) and sy, sx swapped (an
    anisotropic blur along the wrong axis: fibres and nuclei drawn crosswise)."""
    x = np.zeros((2, 9, 9), np.float32)
    x[1, 4, 4] = 1.0
    out = draw.blur(x, (2.0, 0.0))
    assert np.all(out[0] == 0)                                      # nothing leaks into the other image
    assert out[1, 2, 4] > 0.05 and np.allclose(np.delete(out[1, 4], 4), 0)   # along rows (axis 1) only
    np.testing.assert_allclose(out[1].sum(), 1.0, rtol=1e-5)


def test_smooth_noise_is_zero_mean_and_unit_spread_per_image():
    """Bug caught: the mean removed over the whole batch, not per image (each field kept its own offset)."""
    f = draw.smooth_noise(np.random.default_rng(0), 4, 16, 4.0)
    np.testing.assert_allclose(f.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(f.std(axis=(1, 2)), 1, atol=1e-4)


def test_sigmoid_ellipse_paint_and_to_uint8_primitives():
    """Bugs caught: sigmoid's sign (every mask inverted), the ellipse's radii swapped (tall lesions drawn wide),
    paint's blend reversed or its alpha not clipped (alpha 1.4 over-painted), to_uint8 without clipping
    (300 wrapped to 44) or without rounding (0.6 became 0)."""
    np.testing.assert_allclose(draw.sigmoid(np.array([-100.0, 0.0, 2.0, 100.0])), [0, 0.5, 0.8807971, 1], atol=1e-6)
    assert draw.ellipse(0.4, 0.0, 0.0, 0.0, 0.5, 0.25) == pytest.approx(0.8)   # ry = 0.5: inside along y
    assert draw.ellipse(0.0, 0.4, 0.0, 0.0, 0.5, 0.25) == pytest.approx(1.6)   # rx = 0.25: outside along x
    assert draw.ellipse(0.0, 0.4, 0.0, 0.0, 0.5, 0.25, theta=np.pi / 2) == pytest.approx(0.8)
    img = np.full((1, 2, 2, 3), 100.0, np.float32)
    color = np.full((1, 1, 1, 3), 200.0, np.float32)
    painted = draw.paint(img, np.array([[[0.0, 0.25], [1.0, 1.4]]]), color)
    np.testing.assert_allclose(painted[0, :, :, 0], [[100, 125], [200, 200]])
    np.testing.assert_array_equal(draw.to_uint8(np.array([-5.0, 0.6, 127.4, 254.6, 300.0])), [0, 1, 127, 255, 255])
