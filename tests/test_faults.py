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
