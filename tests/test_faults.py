"""Faults as users meet them (issue 14): damaged cache files and checkpoints, odd image files, bad labels
after the first batch, a full disk, an interrupted run. Each case must end in a recovery or a clear
CourseError, never in a silent wrong result or a crash that repeats on every later call."""
import errno
import warnings
from pathlib import Path

import numpy as np
import pytest

from course_utils import CourseError
from course_utils.data import loaders as D
from course_utils.data import standin_cache as S


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



def test_a_full_disk_while_writing_a_stand_in_cache(tmp_path, monkeypatch):
    """No half-written file is left; the malaria stand-in is still returned (and written next time), the
    MedMNIST one (medmnist must read it from disk) is a CourseError that says the disk is full."""
    import os

    real_savez = np.savez

    def disk_full(file, *a, **k):
        with open(file, "wb") as half:
            half.write(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.warns(UserWarning, match="No space left on device"):
        images, _ = S.make_malaria_stand_in(20, image_size=8, seed=0, cache_dir=tmp_path)
    assert images.shape == (20, 8, 8, 3) and not list(tmp_path.iterdir())
    with pytest.raises(CourseError, match="No space left on device"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        S.make_medmnist_stand_in("breastmnist", root=tmp_path / "medmnist")
    assert not list((tmp_path / "medmnist").iterdir())
    monkeypatch.setattr(np, "savez", real_savez)
    S.make_malaria_stand_in(20, image_size=8, seed=0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("malaria*.npz"))) == 1

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
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)  # as tfds does before it downloads
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
    assert not (tmp_path / "tfds" / "malaria").exists(), "an empty data set folder was left behind"
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
    from course_utils.data import pipelines as P

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


# --------------------------------------------------------------------------- the torch engine
def _torch_data(n=64, n_classes=2, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.5
    y = torch.randint(0, n_classes, (n,), generator=g)
    x[:, 1] += (y.float() - (n_classes - 1) / 2)[:, None, None] * 1.5
    return x, y


def _torch_loader(x, y, batch_size=16, shuffle=False):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


@pytest.mark.parametrize("task, n_out, bad, match", [
    ("binary", 1, 2, r"batch 3\b.*label 2\b.*0 or 1"),          # BCE accepts a target of 2: trained silently
    ("binary", 2, 2, r"batch 3\b.*label 2\b.*0 or 1"),
    ("multi-class", 3, 5, r"batch 3\b.*label 5\b.*0\.\.2"),     # a raw IndexError from cross-entropy before
    ("multi-class", 3, -1, r"batch 3\b.*label -1\b"),
    ("multi-class", 3, 1.5, r"batch 3\b.*label 1\.5\b"),
])
def test_labels_are_checked_on_every_batch_not_only_the_first(task, n_out, bad, match):
    import torch

    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt
    from course_utils.train._batches import default_loss

    x, y = _torch_data(n=64)
    y = y.double() if isinstance(bad, float) else y
    y[40] = bad  # in the third batch of 16
    model = mt.small_cnn(n_out, width=4)[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CourseError, match=match):
        tt.fit(model, _torch_loader(x, y), epochs=1, task=task, progress=False, seed=0)
    # and in a later epoch (train_one_epoch with the first-batch checks off), before any step on it
    model.load_state_dict(before)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bad_first = _torch_loader(torch.cat([x[40:48], x]), torch.cat([y[40:48], y]), batch_size=8)
    with pytest.raises(CourseError, match=match.replace("batch 3", "batch 1")):
        tt.train_one_epoch(model, bad_first, default_loss(task, n_out), opt, task=task, check=False)
    params = dict(model.named_parameters())
    assert all(torch.equal(before[k], p) for k, p in params.items())  # no optimizer step on bad labels


def test_multi_label_values_are_checked_on_every_batch():
    import torch

    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    x, _ = _torch_data(n=48)
    y = (torch.rand(48, 3, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    y[35, 1] = 2.0
    with pytest.raises(CourseError, match=r"batch 3\b.*label 2\b.*0 or 1"):
        tt.fit(mt.small_cnn(3, width=4)[0], _torch_loader(x, y), epochs=1, task="multi-label", progress=False)


def test_bad_labels_in_the_validation_loader_are_named():
    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    x, y = _torch_data(n=48)
    yv = y.clone()
    yv[20] = 2
    with pytest.raises(CourseError, match=r"batch 2\b.*label 2\b.*0 or 1"):
        tt.evaluate(mt.small_cnn(1, width=4)[0], _torch_loader(x, yv), "binary")


class _EpochLoader:
    """A loader that changes on a given epoch (1-based): ``fault(epoch, i, batch)`` returns the batch to
    yield, or raises; like data that turns bad half-way through a run."""

    def __init__(self, loader, fault):
        self.loader, self.fault, self.epoch = loader, fault, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.epoch += 1
        for i, batch in enumerate(self.loader):
            yield self.fault(self.epoch, i, batch)


def _fit_kwargs(**k):
    return dict(epochs=3, task="binary", progress=False, seed=0, **k)


def test_nan_in_the_validation_loader_mid_run_keeps_the_finished_epochs(tmp_path):
    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    x, y = _torch_data()

    def nan_in_epoch_2(epoch, i, batch):
        return (batch[0] * float("nan"), batch[1]) if epoch == 2 else batch

    ckpt = tmp_path / "run.pt"
    val = _EpochLoader(_torch_loader(x, y), nan_in_epoch_2)
    with pytest.raises(CourseError) as err:
        tt.fit(mt.small_cnn(1, width=4)[0], _torch_loader(x, y), val, checkpoint_path=ckpt, **_fit_kwargs())
    msg = str(err.value)
    assert "NaN" in msg and "epoch 2/3" in msg, msg
    assert err.value.history.n_epochs == 1 and len(err.value.history["val_auc"]) == 1  # epoch 1 is kept
    assert str(ckpt) in msg and "after epoch 1" in msg and "resume=True" in msg


def test_a_bad_label_mid_run_keeps_the_finished_epochs(tmp_path):
    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    x, y = _torch_data()

    def label_2_in_epoch_3(epoch, i, batch):
        return (batch[0], batch[1].clone().fill_(2)) if epoch == 3 and i == 1 else batch

    with pytest.raises(CourseError, match=r"epoch 3/3, batch 2.*label 2") as err:
        tt.fit(mt.small_cnn(1, width=4)[0], _EpochLoader(_torch_loader(x, y), label_2_in_epoch_3),
               **_fit_kwargs())
    assert err.value.history.n_epochs == 2
    assert "exc.history" in str(err.value) and "no checkpoint" in str(err.value)


def test_a_full_disk_while_checkpointing_is_a_clear_error_and_the_last_checkpoint_survives(tmp_path, monkeypatch):
    import os

    import torch

    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    x, y = _torch_data()
    ckpt = tmp_path / "run.pt"
    real_save = torch.save
    files_written = []

    def disk_fills_up(obj, f, *a, **k):
        if isinstance(f, (str, os.PathLike)):
            files_written.append(str(f))
            if len(files_written) == 3:  # the checkpoint after epoch 2 (after the initial one and epoch 1's)
                with open(f, "wb") as half:
                    half.write(b"PK\x03\x04 half a file")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", disk_fills_up)
    with pytest.raises(CourseError, match="No space left on device") as err:
        tt.fit(mt.small_cnn(1, width=4)[0], _torch_loader(x, y), checkpoint_path=ckpt, **_fit_kwargs())
    msg = str(err.value)
    assert err.value.history.n_epochs == 2 and "after epoch 1" in msg and str(ckpt) in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt", "run.pt.lock"]  # no half-written file left
    monkeypatch.setattr(torch, "save", real_save)
    hist = tt.fit(mt.small_cnn(1, width=4)[0], _torch_loader(x, y), checkpoint_path=ckpt, resume=True,
                  **_fit_kwargs())
    assert hist.meta["resumed_from_epoch"] == 1 and hist.n_epochs == 3


def test_ctrl_c_in_epoch_1_then_resume_tells_the_truth_and_matches_an_uninterrupted_run(tmp_path, capsys):
    import torch

    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    x, y = _torch_data()
    torch.manual_seed(0)
    reference = mt.small_cnn(1, width=4)[0]
    tt.fit(reference, _torch_loader(x, y, shuffle=True), restore_best=False, **_fit_kwargs())

    def ctrl_c(epoch, i, batch):
        if epoch == 1 and i == 2:
            raise KeyboardInterrupt
        return batch

    ckpt = tmp_path / "run.pt"
    torch.manual_seed(0)
    model = mt.small_cnn(1, width=4)[0]
    with pytest.raises(KeyboardInterrupt) as err:
        tt.fit(model, _EpochLoader(_torch_loader(x, y, shuffle=True), ctrl_c), checkpoint_path=ckpt,
               restore_best=False, **_fit_kwargs())
    assert err.value.history.n_epochs == 0
    capsys.readouterr()
    # the same model object, now half-trained by two steps of epoch 1, resumed as a student would
    hist = tt.fit(model, _torch_loader(x, y, shuffle=True), checkpoint_path=ckpt, resume=True, restore_best=False,
                  epochs=3, task="binary", progress=True)
    out = capsys.readouterr().out
    assert "from scratch" not in out and "initial" in out, out
    assert hist.meta["resumed_from_epoch"] == 0 and hist.n_epochs == 3
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0, msg=f"{k} differs")


# --------------------------------------------------------------------------- checkpoints
def _checkpoint(tmp_path):
    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    x, y = _torch_data(n=32)
    ckpt = tmp_path / "run.pt"
    tt.fit(mt.small_cnn(1, width=4)[0], _torch_loader(x, y), checkpoint_path=ckpt, epochs=1, progress=False, seed=0)
    return ckpt, (x, y)


@pytest.mark.parametrize("how", DAMAGES + ["flipped near the start", "a digit of the stored digest changed"])
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, how):
    """Before: a flipped byte in the optimizer state loaded silently (torch does not check the zip's CRCs)."""
    import re

    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    ckpt, (x, y) = _checkpoint(tmp_path)
    raw = bytearray(ckpt.read_bytes())
    if how == "flipped near the start":
        raw[200] ^= 0x01
        ckpt.write_bytes(bytes(raw))
    elif how.startswith("a digit"):
        at = re.search(rb"[0-9a-f]{64}", bytes(raw)).start() + 10  # the SHA-256, stored in hex
        raw[at] = ord("0") if raw[at] != ord("0") else ord("1")
        ckpt.write_bytes(bytes(raw))
    else:
        _damage(ckpt, how)
    with pytest.raises(CourseError, match=r"damaged|not a course_utils checkpoint") as err:
        tt.fit(mt.small_cnn(1, width=4)[0], _torch_loader(x, y), checkpoint_path=ckpt, resume=True, epochs=2,
               progress=False)
    assert str(ckpt) in str(err.value) and "delete it" in str(err.value).lower()


class _RunsCode:
    def __reduce__(self):
        return (exec, ("import builtins; builtins.course_checkpoint_ran_code = True",))


@pytest.mark.parametrize("content", ["code", "plain state dict"])
def test_a_foreign_checkpoint_is_refused_and_never_runs_code(tmp_path, content, monkeypatch):
    import builtins

    import torch

    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    monkeypatch.setattr(builtins, "course_checkpoint_ran_code", False, raising=False)
    x, y = _torch_data(n=32)
    model = mt.small_cnn(1, width=4)[0]
    ckpt = tmp_path / "from_someone.pt"
    torch.save({"model": model.state_dict(), "note": _RunsCode()} if content == "code" else model.state_dict(), ckpt)
    loads = []
    real_load = torch.load

    def spy(*a, **k):
        loads.append(k.get("weights_only"))
        return real_load(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(CourseError, match="not a course_utils checkpoint") as err:
        tt.fit(model, _torch_loader(x, y), checkpoint_path=ckpt, resume=True, epochs=1, progress=False)
    assert not getattr(builtins, "course_checkpoint_ran_code", False)
    assert loads and all(w is True for w in loads)
    assert str(ckpt) in str(err.value)


def test_the_progress_bar_does_not_change_training():
    """tqdm.auto's bar calls iter() on the loader when it is made: one extra pass started per epoch, one
    extra random draw, so progress=True shuffled differently (and resume with it was not exact)."""
    import torch

    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    x, y = _torch_data()
    weights = []
    for progress in (False, True):
        torch.manual_seed(0)
        model = mt.small_cnn(1, width=4)[0]
        tt.fit(model, _torch_loader(x, y, shuffle=True), epochs=2, task="binary", progress=progress, seed=0)
        weights.append(model.state_dict())
    for k, v in weights[0].items():
        torch.testing.assert_close(weights[1][k], v, rtol=0, atol=0, msg=f"{k} differs")


# --------------------------------------------------------------------------- Keras evaluate
@pytest.mark.filterwarnings("ignore:CUDA initialization")
def test_keras_evaluate_counts_the_images_it_was_given_not_the_batches():
    """70 images batched by 64 with drop_remainder=True reported n=64: the labels came from the same
    truncated dataset, so the length check always passed."""
    from course_utils.models import keras_models as mk
    from course_utils.data import pipelines as P
    from course_utils import runtime
    from course_utils.train import keras_fit as tk

    tf = runtime.import_tensorflow()
    rng = np.random.default_rng(0)
    x = rng.random((70, 16, 16, 3), dtype=np.float32)
    y = np.arange(70) % 2
    model, _ = mk.small_cnn((16, 16, 3), 2, filters=(4,))
    dropping = tf.data.Dataset.from_tensor_slices((x, y)).batch(64, drop_remainder=True)
    with pytest.raises(CourseError, match=r"drop_remainder=True.*64 of the 70 images.*6 dropped"):
        tk.evaluate(model, dropping)
    mapped = dropping.map(lambda a, b: (a * 1.0, b)).prefetch(2)  # the batching sits deeper in the pipeline
    with pytest.raises(CourseError, match=r"64 of the 70 images"):
        tk.evaluate(model, mapped)
    unknown = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(16, drop_remainder=True)
    with pytest.raises(CourseError, match="cannot check"):
        tk.evaluate(model, unknown)  # fixed batch size, count unknown: refused unless the labels are passed
    whole = tf.data.Dataset.from_tensor_slices((x, y)).batch(64, drop_remainder=True)
    exact = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(64, drop_remainder=True)
    assert tk.evaluate(model, exact)["n"] == 64  # nothing to drop: fine
    assert tk.evaluate(model, P.to_tf_dataset((x * 255).astype(np.uint8), y, batch_size=64))["n"] == 70
    with pytest.raises(CourseError, match="dropped"):
        tk.evaluate(model, whole, y)  # labels passed separately: counted against them, as before


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_12_bit_data_in_a_16_bit_png_keeps_its_grey_levels_and_says_so(tmp_path, bits):
    """Issue 20: 12-bit pixels in a 16-bit PNG became 13 grey levels (scaled by 255/65535), without a warning."""
    from PIL import Image

    grey = (_gradient16() / 65535 * (2 ** bits - 1)).round().astype(np.uint16)
    path = tmp_path / "x.png"
    Image.fromarray(grey).save(path)
    with pytest.warns(UserWarning, match=f"read as {bits}-bit data"):
        got = D.read_image(path, channels=1)[..., 0]
    assert len(np.unique(got)) > 200 and got.max() == 255 and got.min() == 0
    assert np.abs(got - np.round(grey.astype(float) * 255 / (2 ** bits - 1))).max() <= 1


def test_read_image_names_a_file_that_is_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(CourseError, match="cannot read the image .*notes.png"):
        D.read_image(bad)


# ---------------------------------------------------------------- issue 20: the image readers, value by value
def test_bit_depth_is_the_smallest_usual_range_that_holds_the_brightest_value():
    assert [D._bit_depth(v) for v in (0, 255, 256, 1023, 1024, 4095, 4096, 16383, 16384, 65535, 65536, 1e6)] == \
        [8, 8, 10, 10, 12, 12, 14, 14, 16, 16, 16, 16]


def test_to_8_bit_scales_each_pixel_type_and_refuses_the_rest():
    from PIL import Image

    f01 = D._to_8_bit(Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.2]], dtype=np.float32), mode="F"))
    assert f01.mode == "L" and np.asarray(f01).tolist() == [[0, 128], [255, 51]]
    f255 = D._to_8_bit(Image.fromarray(np.array([[0.0, 1.5], [255.0, 2.0]], dtype=np.float32), mode="F"))
    assert np.asarray(f255).tolist() == [[0, 2], [255, 2]]                   # already 0-255: as it is, rounded
    for bad in ([[-0.5, 0.5]], [[0.0, 255.5]]):
        with pytest.raises(CourseError, match="float pixels"):
            D._to_8_bit(Image.fromarray(np.array(bad, dtype=np.float32), mode="F"))
    with pytest.raises(CourseError, match="NaN or inf"):
        D._to_8_bit(Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32), mode="F"))
    full = D._to_8_bit(Image.fromarray(np.array([[0, 65535], [257, 32768]], dtype=np.uint16)))
    assert np.asarray(full).tolist() == [[0, 255], [1, 128]]
    as_i = D._to_8_bit(Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I"))   # 16-bit data in mode I
    assert np.asarray(as_i).tolist() == [[0, 255]]
    for bad in ([[-1, 5]], [[0, 70000]]):
        with pytest.raises(CourseError, match="32-bit integer pixels"):
            D._to_8_bit(Image.fromarray(np.array(bad, dtype=np.int32), mode="I"))
    rgb = Image.new("RGB", (2, 2))
    assert D._to_8_bit(rgb) is rgb
    one = Image.fromarray(np.array([[0.25]], dtype=np.float32), mode="F")
    assert np.asarray(D._to_8_bit(one)).tolist() == [[64]]                      # one pixel is still scaled


@pytest.mark.parametrize("mode", ["LA", "P"])   # PIL cannot write PA as PNG: the decoder handles it like LA
def test_transparent_pixels_of_every_mode_are_white_and_opaque_ones_keep_their_colour(mode):
    import io

    from PIL import Image

    base = Image.new("RGBA", (2, 1), (10, 200, 30, 255))
    base.putpixel((1, 0), (90, 90, 90, 0))                                       # transparent
    if mode == "LA":
        im = base.convert("LA")
    elif mode == "PA":
        im = base.convert("PA")
    else:
        im = base.convert("P")
        im.info["transparency"] = im.getpixel((1, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    got = D._decode(buf.getvalue(), None)
    assert got.shape == (1, 2, 3) and got.dtype == np.uint8
    assert got[0, 1].tolist() == [255, 255, 255], got
    assert got[0, 0].tolist() != [255, 255, 255]


def test_read_image_keeps_the_size_unless_asked_and_resizes_bilinear(tmp_path):
    from PIL import Image

    a = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    assert np.array_equal(D.read_image(tmp_path / "a.png"), a)                 # 3 channels, its own size
    small = D.read_image(tmp_path / "a.png", size=4)
    assert np.array_equal(small, np.asarray(Image.fromarray(a).resize((4, 4), Image.BILINEAR)))
    grey = D.read_image(tmp_path / "a.png", size=4, channels=1)
    assert grey.shape == (4, 4, 1)


def test_resize_images_arrays_lists_grey_and_sizes():
    from PIL import Image

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    assert D.resize_images(a, 6) is a                                            # already that size: untouched
    tall = rng.integers(0, 256, (1, 6, 4, 3), dtype=np.uint8)
    assert D.resize_images(tall, 6).shape == (1, 6, 6, 3)                        # H matches, W does not: resized
    wide = rng.integers(0, 256, (1, 4, 6, 3), dtype=np.uint8)
    assert D.resize_images(wide, 6).shape == (1, 6, 6, 3)
    out = D.resize_images(a, 3)
    assert np.array_equal(out[1], np.asarray(Image.fromarray(a[1]).resize((3, 3), Image.BILINEAR)))
    grey = rng.integers(0, 256, (2, 5, 5, 1), dtype=np.uint8)
    g = D.resize_images(grey, 1 + 1)
    assert g.shape == (2, 2, 2, 1)
    assert np.array_equal(g[0, ..., 0], np.asarray(Image.fromarray(grey[0, ..., 0]).resize((2, 2), Image.BILINEAR)))
    mixed = [rng.integers(0, 256, (5, 7, 1), dtype=np.uint8), rng.integers(0, 256, (3, 3, 1), dtype=np.uint8)]
    m = D.resize_images(mixed, 4)
    assert m.shape == (2, 4, 4, 1) and m.dtype == np.uint8
    assert D.resize_images([], 4).shape == (0, 4, 4, 3)
    assert D.resize_images(a, 1).shape == (2, 1, 1, 3)                           # one pixel is a size
    for bad in (0, 2.5, "4"):
        with pytest.raises(CourseError, match="positive whole number"):
            D.resize_images(a, bad)


def _png(path, value, size=(6, 6)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def test_the_folder_loader_reads_every_image_and_records_what_it_is(tmp_path):
    root = tmp_path / "cell_images"
    for i in range(6):
        _png(root / "Parasitized" / f"p{i}.png", 200)
        _png(root / "Uninfected" / f"u{i}.png", 20)
    (root / "Parasitized" / ".DS_Store").write_text("junk")                  # skipped quietly, and reading goes on
    (root / "Parasitized" / "Thumbs.db").write_text("junk")
    ds = D.load_malaria_folder(tmp_path, image_size=8, fractions=(0.5, 0.25, 0.25))   # the folder above cell_images
    images, labels = _all_images(ds)
    assert len(labels) == 12 and labels.dtype == np.int64 and images.dtype == np.uint8
    assert images.shape[1:] == (8, 8, 3) and set(images[labels == 0].ravel()) == {200}
    info = ds.info
    assert (info.name, info.task, info.source, info.image_size, info.n_channels) == ("malaria", "binary", "folder", 8, 3)
    a = D.load_malaria_folder(root, image_size=8)
    b = D.load_malaria_folder(root, image_size=8, seed=0)
    c = D.load_malaria_folder(root, image_size=8, seed=1)
    assert np.array_equal(a.train.labels, b.train.labels) and len(a.train) == len(c.train)
    order = lambda d: _all_images(d)[0][:, 0, 0, 0].tolist()  # noqa: E731
    assert D.load_malaria_folder(root, image_size=8).info.image_size == 8
    assert len(_all_images(D.load_malaria_folder(root, image_size=8, max_images=12))[1]) == 12
    assert len(_all_images(D.load_malaria_folder(root, image_size=8, max_images=11))[1]) == 11
    assert order(a) == order(b)
    assert D.load_malaria_folder(root).info.image_size == 64                    # the default size


def test_the_folder_loader_names_what_it_skipped(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        _png(root / "Parasitized" / f"p{i}.png", 200)
        _png(root / "Uninfected" / f"u{i}.png", 20)
    for k in range(5):                                                         # nested images in 5 folders
        _png(root / ("Parasitized" if k % 2 else "Uninfected") / f"sub{k}" / "x.png", 100)
    (root / "Uninfected" / "notes.txt").write_text("not an image")
    (root / "Uninfected" / "broken.png").write_bytes(b"\x89PNG broken")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = D.load_malaria_folder(root, image_size=8, on_error="skip")
    text = [str(m.message) for m in w]
    assert any(t.startswith("skipped 2 unreadable or non-image file(s), e.g. ") for t in text), text
    nested = next(t for t in text if "subfolders" in t)
    assert nested.startswith("skipped 5 image file(s) in subfolders") and ", " in nested and " ...)" in nested
    assert "skipped 2 unreadable" in ds.info.notes and "skipped 5 image file(s)" in ds.info.notes
    assert ". " in ds.info.notes and len(_all_images(ds)[1]) == 8
    with pytest.raises(CourseError, match="notes.txt is not an image file"):
        D.load_malaria_folder(root, image_size=8, on_error="raise")
    (root / "Uninfected" / "notes.txt").unlink()
    with pytest.raises(CourseError, match="cannot read image .*broken.png \\(UnidentifiedImageError"):
        D.load_malaria_folder(root, image_size=8, on_error="raise")


# ---- issue 20: hand-written bugs in train/_batches
def _one_batch_checker(batches, task):
    import torch

    from course_utils.train import _batches as TB

    return TB.CheckedBatches(batches, task, torch.device("cpu"), torch.contiguous_format)


def test_a_label_equal_to_the_output_count_is_out_of_range():
    """Bugs caught: `top = n_out` in check_labels and `top > k` in check_outputs: label 3 passed for a
    3-output model (classes 0..2) and met cross-entropy as a raw IndexError, or on the GPU a device assert."""
    import torch

    from course_utils.train import _batches as TB

    bad, good = torch.tensor([0, 1, 3]), torch.tensor([0, 1, 2])
    with pytest.raises(CourseError, match=r"val, batch 4: label 3 is not allowed.*0\.\.2"):
        TB.check_labels(bad, "multi-class", "val, batch 4", n_out=3)
    TB.check_labels(good, "multi-class", "val, batch 4", n_out=3)
    with pytest.raises(CourseError, match="labels go up to 3 but the model has only 3 outputs"):
        TB.check_outputs(torch.zeros(3, 3), bad, "multi-class")
    TB.check_outputs(torch.zeros(3, 3), good, "multi-class")


def test_a_later_batch_with_fewer_labels_than_images_is_named():
    """Bug caught: CheckedBatches not passing the image count to check_labels: only the first batch was
    compared, and batch 2's missing label surfaced as a shape error inside the loss."""
    import torch

    batches = [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])), (torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0]))]
    checked = _one_batch_checker(batches, "binary")
    it = iter(checked)
    x, y, extra = next(it)
    checked.loss(torch.nn.BCEWithLogitsLoss(), torch.zeros(4, 1), y, extra)
    with pytest.raises(CourseError, match="train, batch 2: 4 images but 3 labels"):
        next(it)


def test_the_first_batch_of_a_two_output_binary_model_gets_the_class_index_checks():
    """Bug caught: the check_labels call that follows the first forward pass (once the output count is known)
    dropped: a label 0.5 for a 2-output binary model became class 0 (`.long()`) without a word."""
    import torch

    checked = _one_batch_checker([(torch.randn(3, 3, 8, 8), torch.tensor([0.0, 0.5, 1.0]))], "binary")
    x, y, extra = next(iter(checked))
    with pytest.raises(CourseError, match=r"train, batch 1: label 0\.5 is not allowed.*2 outputs"):
        checked.loss(torch.nn.CrossEntropyLoss(), torch.zeros(3, 2), y, extra)
    assert checked.n_out == 2


def test_a_fractional_binary_label_is_refused_for_two_outputs_but_is_a_soft_target_for_one():
    """Bug caught: the whole-number rule applied to multi-class only (`if task == "multi-class"`), not to binary
    labels that index a 2-output model."""
    import torch

    from course_utils.train import _batches as TB

    y = torch.tensor([0.0, 0.5, 1.0])
    with pytest.raises(CourseError, match=r"label 0\.5 is not allowed: binary labels must be 0 or 1"):
        TB.check_labels(y, "binary", "train, batch 7", n_out=2)
    TB.check_labels(y, "binary", "train, batch 7", n_out=1)   # one logit: BCE takes soft targets
    TB.check_labels(y, "binary", "train, batch 7")             # output count not known yet


def test_multi_label_batches_must_keep_the_models_column_count():
    """Bug caught: the column count dropped from check_labels: a later batch with 4 columns for a 3-output model
    reached BCE as a raw shape error."""
    import torch

    from course_utils.train import _batches as TB

    with pytest.raises(CourseError, match=r"train, batch 3: multi-label labels must be \[batch, 3\]"):
        TB.check_labels(torch.zeros(4, 4), "multi-label", "train, batch 3", n_out=3)
    TB.check_labels(torch.zeros(4, 3), "multi-label", "train, batch 3", n_out=3)
    TB.check_labels(torch.zeros(4, 4), "multi-label", "train, batch 1")   # before the first forward pass


def test_run_settings_at_the_edges_of_their_ranges():
    """Bugs caught: `epochs < 1` (0 epochs, e.g. evaluating a resumed run, refused) and `min_lr_ratio < 1.0`
    (a cosine schedule with a floor of 1, i.e. constant, refused)."""
    import torch

    from course_utils.train import _batches as TB

    loader = [(torch.zeros(2, 3, 4, 4), torch.zeros(2))]
    TB.check_args("binary", 0, "cosine", 1.0, loader, None)
    TB.check_args("multi-class", 3, "constant", 0.0, loader, loader)
    for args, match in (((-1, "cosine", 0.0), "epochs"), ((2.0, "cosine", 0.0), "epochs"),
                        ((1, "cosine", 1.5), "min_lr_ratio"), ((1, "cosine", -0.1), "min_lr_ratio"),
                        ((1, "linear", 0.0), "schedule")):
        with pytest.raises(CourseError, match=match):
            TB.check_args("binary", *args, loader, None)


def test_the_loss_device_is_read_from_its_buffers_too():
    """Bug caught: loss_params without the buffers: BCEWithLogitsLoss(pos_weight=...) keeps pos_weight as a buffer,
    so the engine could not see where the loss lives and left the targets on another device."""
    import torch

    from course_utils.train import _batches as TB

    pos_weight = torch.tensor([3.0])
    assert any(t is pos_weight for t in TB.loss_params(torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)))
    with_param = torch.nn.Linear(1, 1)
    assert len(TB.loss_params(with_param)) == 2
    assert TB.loss_params(torch.nn.functional.cross_entropy) == []


def test_the_output_count_without_info_is_the_last_linear_layers():
    """Bug caught: `linears[0]`: a model with a hidden Linear layer reported the hidden width as its outputs
    (and got the wrong default loss)."""
    import torch

    from course_utils.models.info import ModelInfo
    from course_utils.train import _batches as TB

    nn = torch.nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 1))
    assert TB.n_outputs(model, None) == 1
    assert isinstance(TB.default_loss("binary", TB.n_outputs(model, None)), nn.BCEWithLogitsLoss)
    assert TB.n_outputs(nn.Conv2d(3, 3, 1), None) is None
    assert TB.n_outputs(model, ModelInfo(arch="x", framework="torch", n_classes=5)) == 5


def test_the_default_binary_loss_follows_the_output_count_when_it_is_unknown():
    """Bug caught: `n_out != 2` for BCE: a binary model whose output count is unknown got BCE, which fails on two
    logits; the automatic loss picks BCE for one logit and cross-entropy for two."""
    import torch
    import torch.nn.functional as F

    from course_utils.train import _batches as TB

    assert isinstance(TB.default_loss("binary", 1), torch.nn.BCEWithLogitsLoss)
    assert isinstance(TB.default_loss("binary", 2), torch.nn.CrossEntropyLoss)
    assert isinstance(TB.default_loss("multi-label", 2), torch.nn.BCEWithLogitsLoss)
    assert isinstance(TB.default_loss("multi-class", 5), torch.nn.CrossEntropyLoss)
    auto = TB.default_loss("binary", None)
    y = torch.tensor([0, 1, 1])
    one, two = torch.tensor([[0.3], [-1.0], [2.0]]), torch.tensor([[0.3, 0.1], [-1.0, 0.5], [2.0, 0.0]])
    torch.testing.assert_close(auto(one, TB.loss_targets(y, "binary", 1)),
                               F.binary_cross_entropy_with_logits(one, y.float()[:, None]))
    torch.testing.assert_close(auto(two, TB.loss_targets(y, "binary", 2)), F.cross_entropy(two, y))


def test_feature_vectors_and_one_column_labels_pass_the_first_batch_checks():
    """Bugs caught: `x.ndim != 4` (feature vectors for a head trained on frozen features refused), and [batch, 1]
    labels for a binary task refused in check_inputs or not flattened by loss_targets."""
    import torch

    from course_utils.train import _batches as TB

    column = torch.tensor([[0], [1], [1], [0]])
    TB.check_inputs(torch.randn(4, 16), column.reshape(-1), "binary")
    TB.check_inputs(torch.randn(4, 3, 8, 8), column, "binary")
    TB.check_labels(column, "binary", "train, batch 1", n_out=1)
    with pytest.raises(CourseError, match=r"\[batch, channels, height, width\]"):
        TB.check_inputs(torch.randn(4, 3, 8), column, "binary")
    one = TB.loss_targets(column, "binary", 1)
    assert one.shape == (4, 1) and one.dtype == torch.float32 and one[:, 0].tolist() == [0, 1, 1, 0]
    for task, n_out in (("binary", 2), ("multi-class", 3)):
        two = TB.loss_targets(column, task, n_out)
        assert two.shape == (4,) and two.dtype == torch.long
    multi = TB.loss_targets(torch.tensor([[0, 1], [1, 1]]), "multi-label", 2)
    assert multi.shape == (2, 2) and multi.dtype == torch.float32


def test_a_batch_of_images_only_is_refused_for_training_and_read_for_prediction():
    """Bug caught: a one-element batch (x,) accepted even when labels are required: training on it failed later
    with a TypeError on `len(None)`, not with the message saying the loader yields no labels."""
    import torch

    from course_utils.train import _batches as TB

    x, y, t = torch.zeros(2, 3, 4, 4), torch.zeros(2), torch.ones(2, 5)
    with pytest.raises(CourseError, match=r"a batch must be \(images, labels\); got tuple of length 1"):
        TB.split_batch((x,))
    assert TB.split_batch((x,), labels_required=False)[1] is None
    with pytest.raises(CourseError, match="images only"):
        TB.split_batch(x)
    assert TB.split_batch(x, labels_required=False)[0] is x
    images, labels, extra = TB.split_batch([x, y, t, t])
    assert images is x and labels is y and len(extra) == 2 and extra[0] is t


def test_the_folder_loader_finds_its_classes_and_names_the_layout_when_it_cannot(tmp_path):
    top = tmp_path / "top"
    for i in range(4):
        _png(top / "Parasitized" / f"p{i}.png", 200)
        _png(top / "Uninfected" / f"u{i}.png", 20)
    _png(top / "cell_images" / "Parasitized" / "other.png", 90)       # an unrelated cell_images/ beside them
    assert len(_all_images(D.load_malaria_folder(top, image_size=8))[1]) == 8   # the top level wins
    empty = tmp_path / "empty"
    (empty / "parasitized").mkdir(parents=True)                          # any case
    (empty / "UNINFECTED").mkdir()
    with pytest.raises(CourseError, match=r"no images found under .*expected layout:\n  <path>/Parasitized/\*\.png"):
        D.load_malaria_folder(empty)
    _png(empty / "parasitized" / "a.png", 1)
    with pytest.raises(CourseError, match="only one class has readable images"):
        D.load_malaria_folder(empty, image_size=8)
    with pytest.raises(CourseError, match="has no Uninfected folder; expected layout"):
        (empty / "UNINFECTED").rmdir()
        D.load_malaria_folder(empty)
    hidden = tmp_path / "hidden"
    for i in range(3):
        _png(hidden / "Parasitized" / f"p{i}.png", 200)
        _png(hidden / "Uninfected" / f"u{i}.png", 20)
    _png(hidden / "Uninfected" / ".secret.png", 20)                      # hidden: not read, not counted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = D.load_malaria_folder(hidden, image_size=8, fractions=(0.34, 0.33, 0.33))
    assert len(_all_images(ds)[1]) == 6
