"""course_utils.standin_cache: the stand-in files are deterministic, cached and verified, in medmnist's own
format with medmnist's split sizes; metadata matches medmnist.INFO; the cache name carries the renderers'
version; too large or unwritable caches are handled up front. (The renderers: test_standins.py.)"""
import os
from pathlib import Path

import numpy as np
import pytest

from course_utils import CourseError
from course_utils.data import loaders as D
from course_utils.data import standin_cache as C
from course_utils.data import standins as S


# --------------------------------------------------------------------------- stand-ins
def test_malaria_stand_in_is_deterministic_and_cached(tmp_path):
    a = C.make_malaria_stand_in(40, image_size=32, seed=1, cache=False)
    b = C.make_malaria_stand_in(40, image_size=32, seed=1, cache=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], C.make_malaria_stand_in(40, image_size=32, seed=2, cache=False)[0])
    first = C.make_malaria_stand_in(40, image_size=32, seed=1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("malaria*.npz"))) == 1
    second = C.make_malaria_stand_in(40, image_size=32, seed=1, cache_dir=tmp_path)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[0], a[0])
    assert a[0].dtype == np.uint8 and a[0].shape == (40, 32, 32, 3)
    assert np.bincount(a[1]).tolist() == [20, 20]
    # plausible: dark background corners, bright pinkish cell centre (red > green)
    corner = a[0][:, :3, :3].mean()
    centre = a[0][:, 12:20, 12:20].reshape(-1, 3).mean(axis=0)
    assert corner < 30 and centre[0] > 150 and centre[0] > centre[1]


def test_medmnist_stand_in_in_medmnist_format(tmp_path):
    medmnist = pytest.importorskip("medmnist")
    path = C.make_medmnist_stand_in("breastmnist", size=28, root=tmp_path)
    assert path.name == "breastmnist.npz"
    with np.load(path) as z:
        assert sorted(z.files) == sorted([f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")]
                                         + ["course_stand_in"])          # the marker: never taken for MedMNIST
        assert str(z["course_stand_in"]) == C.STAND_IN_VERSION
    for split, n in medmnist.INFO["breastmnist"]["n_samples"].items():
        ds = medmnist.BreastMNIST(split=split, root=str(tmp_path), download=False)
        assert len(ds) == n  # medmnist's own split-size assertion passes
    labels = medmnist.BreastMNIST(split="train", root=str(tmp_path)).labels.ravel()
    assert abs((labels == 0).mean() - 0.27) < 0.01  # 0 = malignant, about 27 %
    mtime = path.stat().st_mtime_ns
    assert C.make_medmnist_stand_in("breastmnist", size=28, root=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert C.make_medmnist_stand_in("breastmnist", size=64, root=tmp_path).name == "breastmnist_64.npz"


def test_stand_in_metadata_matches_medmnist():
    medmnist = pytest.importorskip("medmnist")
    for flag, (task, ch, n_samples, names) in C._MEDMNIST_META.items():
        info = medmnist.INFO[flag]
        assert info["task"] == task and info["n_channels"] == ch and info["n_samples"] == n_samples
        assert [info["label"][k] for k in sorted(info["label"], key=int)] == names


@pytest.mark.parametrize("flag,channels,n_classes", [("dermamnist", 3, 7), ("pneumoniamnist", 1, 2)])
def test_other_medmnist_stand_ins(flag, channels, n_classes):
    ds = D.load_medmnist(flag, source="stand-in", max_per_split=70)
    assert ds.train.images.shape[1:] == (28, 28, channels) and ds.info.n_classes == n_classes
    assert ds.train.labels.dtype == np.int64 and ds.train.labels.max() < n_classes


# --------------------------------------------------------------------------- bad input
def test_too_large_stand_in_is_refused_up_front(tmp_path):
    with pytest.raises(CourseError, match=r"GiB.*28, 64") as err:
        C.make_medmnist_stand_in("pathmnist", size=224, root=tmp_path)
    assert "16" in str(err.value) or "15" in str(err.value)  # ~15 GiB for 107,180 RGB images at 224 px
    assert not list(tmp_path.iterdir())


def test_unwritable_cache_falls_back_to_temp(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, so nothing can be created below it")
    with pytest.warns(UserWarning, match="not writable"):
        images, labels = C.make_malaria_stand_in(10, image_size=16, seed=0, cache_dir=blocker / "cache")
    assert images.shape == (10, 16, 16, 3)
    with pytest.warns(UserWarning, match="not writable"):
        path = C.make_medmnist_stand_in("breastmnist", root=blocker / "medmnist")
    assert path.exists() and blocker not in path.parents


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("flag", ("malaria",) + S.MEDMNIST_FLAGS)
def test_stand_in_sample_is_deterministic(flag):
    size = 32 if flag == "malaria" else 28
    a = C.stand_in_sample(flag, 48, size=size, seed=5)
    b = C.stand_in_sample(flag, 48, size=size, seed=5)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()  # same bytes
    assert a[0].tobytes() != C.stand_in_sample(flag, 48, size=size, seed=6)[0].tobytes()


def test_medmnist_stand_in_file_is_deterministic(tmp_path):
    paths = [C.make_medmnist_stand_in("breastmnist", size=28, root=tmp_path / d) for d in ("a", "b")]
    with np.load(paths[0]) as za, np.load(paths[1]) as zb:  # the zip's time stamps differ, the arrays must not
        for key in za.files:
            assert za[key].tobytes() == zb[key].tobytes(), key


def test_stand_in_version_is_bumped_for_the_calibrated_renderers(tmp_path):
    assert C.STAND_IN_VERSION != "v1"  # v1 caches hold the old, too easy images
    assert C.STAND_IN_VERSION.startswith(S.RENDERER_VERSION + "-")  # + a fingerprint of the knobs
    C.make_malaria_stand_in(10, image_size=16, seed=0, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.glob("*.npz")] == [f"malaria_{C.STAND_IN_VERSION}_n10_16px_seed0.npz"]


def test_a_killed_writers_temporary_file_is_removed_and_a_living_ones_kept(tmp_path):
    """Issue 20: a kill while the stand-in cache was written left an orphan *.tmp<pid>.npz that was never removed."""
    import subprocess
    import sys

    C.make_malaria_stand_in(40, image_size=32, seed=1, cache_dir=tmp_path)
    cache = next(tmp_path.glob("malaria*.npz"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                      # a writer that is gone
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        orphan = cache.with_name(cache.name + f".tmp{dead.pid}.npz")
        busy = cache.with_name(cache.name + f".tmp{alive.pid}.npz")
        for f in (orphan, busy):
            f.write_bytes(b"half a file")
        cache.unlink()                                               # the next run writes the cache again
        C.make_malaria_stand_in(40, image_size=32, seed=1, cache_dir=tmp_path)
        assert not orphan.exists() and busy.exists() and cache.exists()
    finally:
        alive.kill()


def test_the_cache_name_changes_when_the_code_that_draws_the_stand_ins_changes(tmp_path):
    """Issue 20: the stand-in caches were keyed by version and knobs only, so a broken renderer passed a local
    `make test` with a warm cache. The name now carries a fingerprint of the drawing code too."""
    import shutil

    here = Path(C.__file__).parent
    for name in ("standins.py", "_drawing.py", "splits.py"):
        shutil.copy(here / name, tmp_path / name)
    same = C._code_fingerprint(tmp_path)
    assert C.STAND_IN_VERSION.endswith(same[:len(C.STAND_IN_VERSION) - len(S.RENDERER_VERSION) - 1])
    drawing = tmp_path / "_drawing.py"
    drawing.write_text(drawing.read_text().replace("0.5", "0.6", 1))     # one changed constant in a renderer
    assert C._code_fingerprint(tmp_path) != same


def test_orphaned_temporary_files_of_dead_writers_are_removed_and_living_ones_kept(tmp_path):
    import subprocess
    import sys

    from course_utils import integrity

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        names = [f"x.npz.tmp{dead_pid}.npz", f"x.npz.tmp{alive.pid}.npz", f"x.npz.tmp{os.getpid()}.npz", "x.npz"]
        for n in names:
            (tmp_path / n).write_bytes(b"partial")
        C._remove_orphans(tmp_path / "x.npz")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    finally:
        alive.kill()
