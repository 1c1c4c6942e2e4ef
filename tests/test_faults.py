"""Faults as users meet them (issue 14): damaged cache files and checkpoints, odd image files, bad labels
after the first batch, a full disk, an interrupted run. Each case must end in a recovery or a clear
CourseError, never in a silent wrong result or a crash that repeats on every later call."""
import errno
import warnings

import numpy as np
import pytest

from course_utils import CourseError
from course_utils import data as D
from course_utils import standins as S


# --------------------------------------------------------------------------- helpers
def _damage(path, how: str) -> None:
    """Damage a file the way a full disk, a killed writer or a bad sector does."""
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "flipped":  # one byte in the middle of the file: inside the (uncompressed) image data
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
    else:
        raise ValueError(how)


DAMAGES = ["truncated", "emptied", "flipped"]


# --------------------------------------------------------------------------- stand-in caches
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_malaria_cache_is_reported_deleted_and_rebuilt(tmp_path, how):
    images, labels = S.make_malaria_stand_in(40, image_size=16, seed=0, cache_dir=tmp_path)
    (path,) = tmp_path.glob("malaria*.npz")
    _damage(path, how)
    with pytest.warns(UserWarning, match="damaged") as rec:
        again, again_labels = S.make_malaria_stand_in(40, image_size=16, seed=0, cache_dir=tmp_path)
    msg = next(str(w.message) for w in rec if "damaged" in str(w.message))
    assert str(path) in msg and "\n" not in msg  # one line, naming the file
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(again_labels, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next load is clean and silent
        third, _ = S.make_malaria_stand_in(40, image_size=16, seed=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(third, images)


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_medmnist_stand_in_is_reported_deleted_and_rebuilt(tmp_path, how, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    first = D.load_medmnist("breastmnist", source="stand-in")
    (path,) = tmp_path.rglob("breastmnist.npz")
    _damage(path, how)
    with pytest.warns(UserWarning, match="damaged"):
        second = D.load_medmnist("breastmnist", source="stand-in")
    for a, b in zip(first.splits().values(), second.splits().values()):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.load_medmnist("breastmnist", source="stand-in")


# --------------------------------------------------------------------------- NIH-style folders
def _nih_folder(root, parasitized, uninfected=None):
    """cell_images/{Parasitized,Uninfected}/: the given PIL images (file name -> image) in each class."""
    from PIL import Image

    base = root / "cell_images"
    fill = {f"u{i}.png": Image.fromarray(np.full((24, 24, 3), 200, np.uint8)) for i in range(4)}
    for name, files in (("Parasitized", parasitized), ("Uninfected", uninfected or fill)):
        (base / name).mkdir(parents=True)
        for fname, img in files.items():
            img.save(base / name / fname)
    return base


def _gradient16(size=24):
    return (np.arange(size * size, dtype=np.float64).reshape(size, size) / (size * size - 1) * 65535).astype(np.uint16)


def _all_images(ds):
    splits = ds.splits().values()
    return np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits])


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    """PIL's convert("RGB") clips I;16 to 255 (99.6 % white): 16-bit pixels must scale to 0-255."""
    from PIL import Image

    grey16 = _gradient16()
    img = Image.fromarray(grey16)
    assert img.mode.startswith("I;16")  # what PIL writes and reads for a 16-bit grey PNG
    base = _nih_folder(tmp_path, {f"p{i}.png": img for i in range(4)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = D.load_malaria_folder(base, image_size=24, fractions=(0.5, 0.25, 0.25))
    images, labels = _all_images(ds)
    got = images[labels == 0]
    expected = np.round(grey16 / 257.0)
    assert np.abs(got[..., 0].astype(int) - expected).max() <= 1  # the whole range, not clipped
    assert (got[..., 0] == got[..., 2]).all() and (got == 255).mean() < 0.01
    assert got.mean() == pytest.approx(127.5, abs=2)


def test_float_and_16_bit_tiffs_are_scaled_and_odd_ranges_refused(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 1, 24 * 24, dtype=np.float32).reshape(24, 24)
    files = {"f0.tif": Image.fromarray(ramp), "f1.tif": Image.fromarray(ramp),
             "g0.tif": Image.fromarray(_gradient16()), "g1.tif": Image.fromarray(_gradient16())}
    base = _nih_folder(tmp_path, files)
    ds = D.load_malaria_folder(base, image_size=24, fractions=(0.5, 0.25, 0.25))
    images, labels = _all_images(ds)
    got = images[labels == 0][..., 0].astype(int)
    assert got.shape[0] == 4
    for g in got:  # each is one of the two ramps, scaled to the full 0-255 range
        assert g.min() <= 1 and g.max() >= 254
        assert min(np.abs(g - np.round(ramp * 255)).max(), np.abs(g - np.round(_gradient16() / 257.0)).max()) <= 1
    # values with no standard 8-bit scaling: a clear error naming the file and the range
    (base / "Parasitized" / "odd.tif").unlink(missing_ok=True)
    Image.fromarray(np.full((24, 24), -3.5, np.float32)).save(base / "Parasitized" / "odd.tif")
    with pytest.raises(CourseError, match=r"odd\.tif.*-3\.5"):
        D.load_malaria_folder(base, image_size=24)
    with pytest.warns(UserWarning, match="skipped 1"):
        D.load_malaria_folder(base, image_size=24, on_error="skip")


def test_images_in_subfolders_of_a_class_folder_are_counted_and_reported(tmp_path):
    from PIL import Image

    cells = {f"p{i}.png": Image.fromarray(np.full((24, 24, 3), 90, np.uint8)) for i in range(4)}
    base = _nih_folder(tmp_path, cells)
    extra = base / "Parasitized" / "more"
    extra.mkdir()
    for i in range(3):
        cells["p0.png"].save(extra / f"x{i}.png")
    (extra / "readme.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"3 image file\(s\) in subfolders.*more") as rec:
        ds = D.load_malaria_folder(base, image_size=16, fractions=(0.5, 0.25, 0.25))
    assert sum(len(s) for s in ds.splits().values()) == 8  # the subfolder's images are not used
    assert "subfolders" in ds.info.notes
    assert len([w for w in rec if "subfolders" in str(w.message)]) == 1


# --------------------------------------------------------------------------- MedMNIST files and tfds
def test_medmnist_split_size_mismatch_names_the_expected_sizes(tmp_path):
    pytest.importorskip("medmnist")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 545, "val": 78, "test": 156}.items():  # train is one short of INFO's 546
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.random((n, 1)) < 0.73).astype(np.uint8)
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(CourseError) as err:
        D.load_medmnist("breastmnist", source="real", root=tmp_path)
    msg = str(err.value)
    assert "545" in msg and "546" in msg and "78" in msg and "156" in msg and "train" in msg, msg
    assert "AssertionError: )" not in msg and "AssertionError ()" not in msg


@pytest.mark.parametrize("offline", [True, False])
def test_a_failed_tfds_attempt_leaves_no_temporary_folder(tmp_path, monkeypatch, offline):
    """tfds makes a tmp*tfds folder for its metadata on every attempt and never removes it.
    COURSE_OFFLINE=1 must not even try the download; a download that fails (simulated: no network
    needed, the same on any runner) must not leave the folder either."""
    import tempfile

    from tensorflow_datasets.core import dataset_builder

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    calls = []

    def failing_download(self, *a, **k):
        calls.append(self.name)
        raise ConnectionError("simulated: no route to host")

    monkeypatch.setattr(dataset_builder.DatasetBuilder, "download_and_prepare", failing_download)
    monkeypatch.setattr(D.runtime, "can_reach", lambda *hosts, **k: False)
    if offline:
        monkeypatch.setenv("COURSE_OFFLINE", "1")
    else:
        monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    (tmp / "tmpkeepmetfds").mkdir()  # someone else's: must stay
    with pytest.raises(CourseError, match="source='auto'") as err:
        D.load_malaria(source="real", data_dir=tmp_path / "tfds", image_size=16, max_images=10)
    assert sorted(p.name for p in tmp.iterdir()) == ["tmpkeepmetfds"]
    if offline:
        assert calls == [] and "COURSE_OFFLINE" in str(err.value)
    else:
        assert calls == ["malaria"] and "no route to host" in str(err.value)


def test_a_damaged_downloaded_medmnist_file_is_named_not_read(tmp_path, monkeypatch):
    pytest.importorskip("medmnist")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in {"train": 546, "val": 78, "test": 156}.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.random((n, 1)) < 0.73).astype(np.uint8)
    path = tmp_path / "breastmnist.npz"
    np.savez(path, **arrays)
    _damage(path, "flipped")
    monkeypatch.setenv("COURSE_OFFLINE", "1")  # the same on any runner: no download
    with pytest.raises(CourseError, match=r"breastmnist\.npz is damaged \(Bad CRC-32.*delete it"):
        D.load_medmnist("breastmnist", source="real", root=tmp_path)
    with pytest.warns(UserWarning, match="STAND-IN"):
        ds = D.load_medmnist("breastmnist", source="auto", root=tmp_path, max_per_split=10)
    assert ds.info.source == "stand-in" and "damaged" in ds.info.notes


# --------------------------------------------------------------------------- pipelines
@pytest.mark.parametrize("bad, match", [(0.5, r"0\.5.*index 3"), (float("nan"), r"nan.*index 3"), (-1, r"-1.*index 3")])
def test_pipelines_refuse_labels_that_are_not_class_indices(bad, match):
    """A label of 0.5 became class 0 in to_torch_loader (astype(int64)); -1 and NaN went through too."""
    from course_utils import pipelines as P

    images = np.zeros((8, 4, 4, 3), np.uint8)
    labels = np.array([0, 1, 0, bad, 1, 0, 1, 0], dtype=np.float64)
    with pytest.raises(CourseError, match=match):
        P.to_torch_loader(images, labels)
    with pytest.raises(CourseError, match=match):
        P.to_tf_dataset(images, labels)
    ok = P.to_torch_loader(images, np.array([0, 1, 0, 1, 1, 0, 1, 0], dtype=np.float64), batch_size=8)
    assert next(iter(ok))[1].tolist() == [0, 1, 0, 1, 1, 0, 1, 0]  # whole numbers stored as float are fine
    soft = np.full((8, 3), 0.5, np.float32)  # multi-label rows may be soft targets: kept as they are
    assert next(iter(P.to_torch_loader(images, soft, batch_size=8)))[1].eq(0.5).all()
