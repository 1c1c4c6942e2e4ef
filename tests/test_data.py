"""course_utils.data: real loader code paths (tfds under mock_data, medmnist on a local npz, a NIH-style
folder), loading a stand-in, splits, resizing, the banner, and bad input. (The stand-ins themselves:
test_standins.py; the input pipelines: test_pipelines.py.)"""
from pathlib import Path

import warnings
import numpy as np
import pytest
from PIL import Image

from course_utils import CourseError
from course_utils.data import loaders as D
from course_utils.data import pipelines as P
from course_utils import runtime as cu_runtime
from course_utils.data import tfds_malaria


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
    return cu_runtime.can_reach("zenodo.org", *tfds_malaria.MALARIA_HOSTS, timeout=2)


offline_only = pytest.mark.skipif(_online(), reason="checks the offline failure; this machine is online")


# --------------------------------------------------------------------------- real code paths
def test_malaria_through_tfds_mock_data(tmp_path, monkeypatch):
    # the tfds path itself, with mock data (no network): the README's COURSE_OFFLINE=1 would skip that path
    monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    tfds = tfds_malaria.import_tfds()
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


def test_a_stand_in_npz_copied_into_root_is_still_reported_as_a_stand_in(tmp_path):
    """Issue 23: the npz route (root=) took any file in MedMNIST's layout for MedMNIST, so a course stand-in copied
    there was labelled real data. Stand-ins now carry a marker; source='real' refuses them with what to do."""
    from course_utils.data.standin_cache import is_stand_in_npz, make_medmnist_stand_in

    path = make_medmnist_stand_in("breastmnist", size=28, root=tmp_path)
    assert is_stand_in_npz(path)
    ds = D.load_medmnist("breastmnist", root=tmp_path, max_per_split=20)
    assert ds.info.source == "stand-in" and ds.info.is_stand_in and "generated stand-ins" in ds.info.notes
    with pytest.raises(CourseError, match="generated stand-ins"):
        D.load_medmnist("breastmnist", source="real", root=tmp_path)
    (tmp_path / "real").mkdir()
    real_like = _write_breastmnist_npz(tmp_path / "real")                  # the same layout, no marker
    assert not is_stand_in_npz(real_like)
    old = tmp_path / "old"                                                 # a stand-in cached before the marker:
    old.mkdir()                                                            # marked in place, silently, kept
    with np.load(path) as z:
        np.savez(old / path.name, **{k: z[k] for k in z.files if k != "course_stand_in"})
    assert make_medmnist_stand_in("breastmnist", size=28, root=old) == old / path.name and is_stand_in_npz(old / path.name)
    assert D.load_medmnist("breastmnist", source="real", root=tmp_path / "real").info.source == "medmnist"


@pytest.mark.parametrize("fault", ["size", "label"])
def test_medmnist_arrays_at_another_size_or_with_a_foreign_label_are_refused(tmp_path, fault):
    """Issue 20: MedMNIST arrays at the wrong size, or with an out-of-range label, were accepted."""
    path = _write_breastmnist_npz(tmp_path)
    with np.load(path) as z:
        arrays = dict(z)
    if fault == "size":
        arrays["val_images"] = arrays["val_images"][:, :20, :20]
    else:
        arrays["test_labels"][3] = 5
    np.savez(path, **arrays)
    match = r"val images are \(20, 20\) pixels, not 28 x 28" if fault == "size" else r"test labels range from 0 to 5"
    with pytest.raises(CourseError, match=match):
        D.load_medmnist("breastmnist", source="real", root=tmp_path)


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


def test_load_malaria_stand_in(tmp_path, monkeypatch):
    report = tmp_path / "report.jsonl"
    monkeypatch.setenv("COURSE_REPORT", str(report))  # as the main job sets it
    ds = D.load_malaria(source="stand-in", image_size=32, max_images=200, cache_dir=tmp_path)
    assert ds.info.source == "stand-in" and ds.info.is_stand_in
    assert (len(ds.train), len(ds.val), len(ds.test)) == (140, 30, 30)
    # the course summary learns which source the loader used
    assert '"name": "malaria", "source": "stand-in"' in report.read_text()


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


def test_resize_images():
    images = np.random.default_rng(0).integers(0, 256, (5, 20, 30, 1), dtype=np.uint8)
    out = D.resize_images(images, 8)
    assert out.shape == (5, 8, 8, 1) and out.dtype == np.uint8
    flat = np.full((2, 20, 20, 3), 77, np.uint8)
    assert (D.resize_images(flat, 7) == 77).all()
    ragged = [np.zeros((10, 14, 3), np.uint8), np.zeros((30, 22, 3), np.uint8)]
    assert D.resize_images(ragged, 16).shape == (2, 16, 16, 3)


# --------------------------------------------------------------------------- banner and re-exports
def test_banner_marks_stand_in(capsys):
    D.banner(D.DataInfo("malaria", list(D.MALARIA_CLASSES), "binary", "stand-in", 32, 3))
    assert "STAND-IN DATA" in capsys.readouterr().out
    D.banner(D.DataInfo("malaria", list(D.MALARIA_CLASSES), "binary", "tfds", 32, 3))
    assert "STAND-IN" not in capsys.readouterr().out


def test_banner_shows_each_notice_once_per_load(capsys, tmp_path):
    info = D.DataInfo("malaria", list(D.MALARIA_CLASSES), "binary", "tfds", 32, 3)
    assert not info.banner_shown
    D.banner(info)
    D.banner(info)
    assert capsys.readouterr().out.count("data: malaria from tfds") == 1 and info.banner_shown
    D.banner(info, force=True)
    assert "data: malaria from tfds" in capsys.readouterr().out
    ds = D.load_malaria(source="stand-in", image_size=16, max_images=20, cache_dir=tmp_path)
    D.banner(ds.info)  # as notebooks 04 and 05 do after loading: the loader already showed it
    assert capsys.readouterr().out.count("STAND-IN DATA") == 1
    D.load_malaria(source="stand-in", image_size=16, max_images=20, cache_dir=tmp_path)
    assert capsys.readouterr().out.count("STAND-IN DATA") == 1  # a new load shows it again


def test_data_re_exports_the_pipelines():
    assert D.to_tf_dataset is P.to_tf_dataset and D.to_torch_loader is P.to_torch_loader  # cu.data.to_* in notebooks


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

    monkeypatch.setattr(tfds_malaria, "import_tfds", no_tfds)
    with pytest.warns(UserWarning, match="STAND-IN"):
        ds = D.load_malaria(image_size=16, max_images=20, cache_dir=tmp_path)
    assert ds.info.source == "stand-in" and "TensorFlow is not installed" in ds.info.notes
    with pytest.raises(CourseError, match="source='auto'"):
        D.load_malaria(source="real", image_size=16, max_images=20)


def _half_red_half_blue(w: int = 40, h: int = 20) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)     # left half red
    a[:, w // 2:] = (0, 0, 255)      # right half blue
    return Image.fromarray(a)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
def test_an_image_stored_sideways_is_read_upright_as_every_viewer_shows_it(fmt):
    """Issue 20, BAD 4: EXIF Orientation=6 (a phone photo stored sideways) was read sideways."""
    import io

    exif = Image.Exif()
    exif[0x0112] = 6                           # rotate 90 degrees clockwise to display: the left half goes on top
    buf = io.BytesIO()
    _half_red_half_blue().save(buf, format=fmt, exif=exif.tobytes())
    img = D._decode(buf.getvalue(), 32).astype(int)
    top, bottom = img[:12].mean(axis=(0, 1)), img[-12:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60, (top, bottom)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_a_cmyk_image_is_read_in_the_colours_a_viewer_shows(fmt, tmp_path):
    """Issue 21, bad input: a print-shop CMYK file (JPEG or TIFF) is read as RGB with its colours, not its inks."""
    path = tmp_path / f"cmyk.{fmt.lower()}"
    _half_red_half_blue().convert("CMYK").save(path, format=fmt)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    img = D.read_image(path).astype(int)
    left, right = img[:, :15].mean(axis=(0, 1)), img[:, -15:].mean(axis=(0, 1))
    assert img.shape == (20, 40, 3)
    assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60, (left, right)


def test_transparent_pixels_are_read_as_the_white_a_viewer_shows():
    """Issue 20: RGBA and palette images gave the colours hidden under transparency."""
    import io

    a = np.zeros((8, 8, 4), np.uint8)
    a[..., :3] = (200, 0, 0)                   # red, hidden: fully transparent
    buf = io.BytesIO()
    Image.fromarray(a, mode="RGBA").save(buf, format="PNG")
    assert (D._decode(buf.getvalue(), 8) == 255).all()
    buf = io.BytesIO()
    Image.fromarray(a, mode="RGBA").convert("P").save(buf, format="PNG", transparency=0)
    assert (D._decode(buf.getvalue(), 8) == 255).all()


def test_a_class_too_small_for_every_split_is_named_in_a_warning():
    """Issue 20: a class folder with a single image gave validation and test none of that class, silently."""
    labels = np.array([0] * 20 + [1])
    with pytest.warns(UserWarning, match=r"class 1 has only 1 item\(s\): the val and test split\(s\) get none"):
        train, val, test = D.stratified_split(np.zeros((21, 2, 2, 3), np.uint8), labels)
    assert 1 in train.labels and 1 not in val.labels and 1 not in test.labels


# ---------------------------------------------------------------- issue 20: splits, value by value
def test_strata_of_class_labels_columns_and_multi_label_rows():
    from course_utils.data import splits as SP

    assert SP.strata(np.array([2, 0, 1])).dtype == np.int64
    col = SP.strata(np.array([[3], [1]]))                      # a column of class indices: the column itself
    assert col.tolist() == [3, 1] and col.dtype == np.int64
    # label 2 is rarest (1 positive), then 0 (2), then 1 (3): each row's key is its rarest positive, -1 for none
    multi = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]])
    key = SP.strata(multi)
    assert key.tolist() == [0, 2, 0, -1] and key.dtype == np.int64
    two = np.array([[1, 0], [0, 1], [0, 1], [1, 1]])             # two labels (not a one-hot column pair)
    assert SP.strata(two).tolist() == [0, 1, 1, 0]


def test_stratified_subset_edges_and_seeds():
    from course_utils.data import splits as SP

    x, y = np.arange(10), np.array([0] * 6 + [1] * 4)
    assert SP.stratified_subset(x, y, 10)[0] is x and SP.stratified_subset(x, y, None)[0] is x
    sub_x, sub_y = SP.stratified_subset(x, y, 9)                 # one less than all: a real subset
    assert len(sub_x) == 9 and np.bincount(sub_y).tolist() in ([5, 4], [6, 3])
    assert len(SP.stratified_subset(x, y, 1)[0]) == 1
    with pytest.raises(CourseError, match="at least one item"):
        SP.stratified_subset(x, y, 0)
    a = SP.stratified_subset(np.arange(100), np.arange(100) % 2, 10)[0]
    b = SP.stratified_subset(np.arange(100), np.arange(100) % 2, 10, seed=0)[0]
    c = SP.stratified_subset(np.arange(100), np.arange(100) % 2, 10, seed=1)[0]
    assert a.tolist() == b.tolist() != c.tolist()                # seed 0 by default, and the seed matters
    d = SP.stratified_indices(np.arange(100) % 2, 10)
    assert d.tolist() == SP.stratified_indices(np.arange(100) % 2, 10, seed=0).tolist()
    assert d.tolist() != SP.stratified_indices(np.arange(100) % 2, 10, seed=1).tolist()


def test_stratified_split_sizes_per_class_and_fraction_checks():
    from course_utils.data import splits as SP

    y = np.array([0] * 20 + [1] * 10)
    tr, va, te = SP.stratified_split(np.arange(30), y, (0.5, 0.3, 0.2))
    assert [np.bincount(s.labels, minlength=2).tolist() for s in (tr, va, te)] == [[10, 5], [6, 3], [4, 2]]
    assert sorted(np.concatenate([tr.images, va.images, te.images]).tolist()) == list(range(30))
    assert tr.images.dtype == np.int64
    tr0, va0, te0 = SP.stratified_split(np.arange(30), y, (0.5, 0.5, 0.0))    # a zero fraction is allowed
    assert len(te0) == 0 and te0.images.dtype == np.arange(1).dtype and len(va0) == 15
    same = SP.stratified_split(np.arange(30), y)
    assert [s.images.tolist() for s in same] == [s.images.tolist() for s in SP.stratified_split(np.arange(30), y,
                                                                                                 seed=0)]
    for bad in [(0.5, 0.5), (0.7, 0.2, 0.2), (1.1, -0.1, 0.0)]:
        with pytest.raises(CourseError, match="fractions"):
            SP.stratified_split(np.arange(30), y, bad)
    SP.stratified_split(np.arange(30), y, (0.7, 0.15, 0.15 + 5e-7))       # rounding slack is accepted
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        SP.stratified_split(np.arange(22), np.array([0] * 20 + [1] * 2), (0.5, 0.25, 0.25))
    text = " ".join(str(m.message) for m in w)
    assert "class 1 has only 2 item(s): the val split(s) get none" in text, text
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        SP.stratified_split(np.arange(22), np.array([[1, 0]] * 20 + [[0, 1]] * 2), (0.5, 0.25, 0.25))
    assert "the stratum of label 1 has only 2" in " ".join(str(m.message) for m in w)


def test_class_counts_for_classes_columns_and_labels():
    from course_utils.data import splits as SP

    assert SP.class_counts(np.array([0, 2, 2]), ["a", "b", "c"]) == {"a": 1, "b": 0, "c": 2}
    assert SP.class_counts(np.array([[1], [1], [0]]), ["a", "b"]) == {"a": 1, "b": 2}   # a column of indices
    assert SP.class_counts(np.array([[1, 1], [0, 1]]), ["x", "y"]) == {"x": 1, "y": 2}  # two yes/no labels
    assert SP.class_counts(np.array([0, 0]), ["a", "b", "c"]) == {"a": 2, "b": 0, "c": 0}  # absent classes: 0


def test_allocate_splits_n_by_largest_remainders_at_least_one_each_never_more_than_a_group_has():
    from course_utils.data.splits import allocate

    cases = [(([10, 10], 5), [3, 2]),            # tie on the remainder: the first group, stably
             (([1, 99], 10), [1, 9]),            # the rare group gets its one
             (([1, 1, 98], 2), [0, 0, 2]),       # no room for one each: largest remainder
             (([1, 1, 98], 3), [1, 1, 1]),       # room for one each
             (([1, 1, 1, 97], 3), [0, 0, 0, 3]),
             (([1, 1, 1, 1, 10], 5), [1, 1, 1, 1, 1]),   # "one each" overshot: trimmed from the largest
             (([3, 0], 2), [2, 0]), (([0, 5], 3), [0, 3]),
             (([1, 2, 2], 4), [1, 2, 1]),        # a full group is skipped when the remainders are handed out
             (([4, 4, 4], 12), [4, 4, 4]), (([5, 3, 2], 0), [0, 0, 0])]
    for (counts, n), want in cases:
        got = allocate(np.array(counts), n)
        assert got.tolist() == want, (counts, n, got)
        assert got.dtype == np.int64 and got.sum() == n and (got <= np.array(counts)).all()
    assert allocate([2.0, 2.0], 2).tolist() == [1, 1]                   # float counts are whole numbers too


def test_a_huge_image_is_shrunk_on_read_and_one_past_the_safety_limit_is_a_clear_error(tmp_path, monkeypatch):
    from PIL import Image

    from course_utils.data.loaders import read_image

    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, 2000:] = 200                                             # right half bright
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(big).save(tmp_path / "big.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(big).copy()).save(tmp_path / "turned.jpg", exif=exif)
    for name in ("big.jpg", "big.png", "turned.jpg"):
        small = read_image(tmp_path / name, max_side=512)
        assert small.shape == (384, 512, 3), (name, small.shape)   # aspect kept, upright
        assert small[:, :200].mean() < 20 and small[:, 312:].mean() > 180, name
    assert read_image(tmp_path / "big.jpg", size=64).shape == (64, 64, 3)
    sixteen = (np.arange(600 * 800, dtype=np.uint16).reshape(600, 800) % 4096)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png", max_side=100).shape == (75, 100, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)       # 12 megapixels is now past twice the limit
    with pytest.raises(CourseError, match="too large to open safely.*tiles"):
        read_image(tmp_path / "big.png")


def test_a_failed_download_is_named_in_words_not_as_urllib3_reprs():
    """Issue 22: the stand-in notice said `ConnectionError: HTTPSConnectionPool(host=...) ... NameResolutionError(...)`."""
    from course_utils.data.loaders import plain_reason

    class NameResolutionError(Exception):
        pass

    try:
        try:
            raise NameResolutionError("HTTPSConnection(host='data.lhncbc.nlm.nih.gov', port=443): Failed to resolve")
        except NameResolutionError as inner:
            raise OSError("HTTPSConnectionPool(host='data.lhncbc.nlm.nih.gov', port=443): Max retries exceeded") from inner
    except OSError as exc:
        assert plain_reason(exc) == "no network connection to data.lhncbc.nlm.nih.gov"
    assert plain_reason(ConnectionError("simulated: no route to host")) == "ConnectionError: simulated: no route to host"
    assert plain_reason(OSError("Max retries exceeded with url: /x")) == "no network connection to the download server"
    assert plain_reason(ValueError("bad zip file\nmore")) == "ValueError: bad zip file"


def test_any_class_per_folder_layout_loads_with_classes_in_sorted_order_and_one_reader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(["tumour", "normal", "stroma"]):          # three classes, folders in any order
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "notes").mkdir()                                         # no images: not a class
    (tmp_path / "notes" / "readme.txt").write_text("x")
    ds = D.load_image_folder(tmp_path, image_size=16, fractions=(0.6, 0.2, 0.2))
    assert ds.info.class_names == ["normal", "stroma", "tumour"] and ds.info.task == "multi-class"
    assert ds.info.source == "folder" and ds.info.name == tmp_path.name
    assert len(ds.train) + len(ds.val) + len(ds.test) == 30 and ds.train.images.shape[1:] == (16, 16, 3)
    assert set(np.bincount(ds.train.labels)) == {6}                     # stratified
    one = sorted((tmp_path / "normal").iterdir())[0]                    # the capstone's reader gives the same pixels
    assert any(np.array_equal(im, D.read_image(one, size=16)) for im in np.concatenate(
        [ds.train.images, ds.val.images, ds.test.images]))
    named = D.load_image_folder(tmp_path, class_names=["Tumour", "normal"], image_size=16)   # chosen, in this order
    assert named.info.class_names == ["Tumour", "normal"] and named.info.task == "binary"
    with pytest.raises(CourseError, match="no lymph folder"):
        D.load_image_folder(tmp_path, class_names=["lymph", "normal"])
    with pytest.raises(CourseError, match="at least two class folders"):
        D.load_image_folder(tmp_path / "normal")
    with pytest.raises(CourseError, match="not a folder"):
        D.load_image_folder(tmp_path / "missing")
