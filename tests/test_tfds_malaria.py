"""tfds_malaria: the real tfds code path (through tfds' own mock data) and its tidying after a failed try."""
import numpy as np

from course_utils.data import tfds_malaria as T


def test_read_encoded_gives_bytes_and_labels_through_tfds_mock_data(tmp_path):
    tfds = T.import_tfds()
    with tfds.testing.mock_data(num_examples=12):
        encoded, labels = T.read_encoded(tmp_path)
    assert len(encoded) == len(labels) == 12 and isinstance(encoded[0], bytes)
    assert labels.dtype == np.int64 and set(np.unique(labels)) <= {0, 1}


def test_empty_folders_left_by_a_failed_try_are_removed_and_nothing_else(tmp_path):
    variant = tmp_path / "malaria" / "1.0.0"
    variant.mkdir(parents=True)
    keep = tmp_path / "other" / "1.0.0"
    keep.mkdir(parents=True)
    (keep / "data.tfrecord").write_bytes(b"x")
    T._remove_empty_dirs(variant, up_to=tmp_path)
    assert not (tmp_path / "malaria").exists() and tmp_path.exists()
    T._remove_empty_dirs(keep, up_to=tmp_path)
    assert (keep / "data.tfrecord").exists()
    downloads = tmp_path / "downloads" / "nih"
    (downloads / "cell.tmp.1").mkdir(parents=True)
    (downloads / "cell.tmp.2").mkdir()
    (downloads / "cell.tmp.2" / "part").write_bytes(b"y")
    T._remove_empty_download_dirs(tmp_path / "downloads")
    assert sorted(p.name for p in downloads.iterdir()) == ["cell.tmp.2"]
