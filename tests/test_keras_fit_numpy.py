"""train.keras_fit's numpy side, without TensorFlow: these run under mutmut (whose forked workers TensorFlow would
deadlock); what needs TensorFlow is tested in test_train_keras.py."""
import numpy as np
import pytest

from course_utils import CourseError
from course_utils.train import keras_fit as tk


def test_a_sigmoid_column_becomes_two_class_columns_and_softmax_stays():
    p = np.array([[0.2], [0.9]])
    np.testing.assert_allclose(tk._two_columns(p), [[0.8, 0.2], [0.1, 0.9]])
    soft = np.array([[0.1, 0.7, 0.2]])
    assert tk._two_columns(soft) is soft


def test_labels_become_int64_class_indices():
    got = tk._class_indices([[0, 1], [1, 0], [0, 1]])           # one-hot rows: their argmax
    assert got.dtype == np.int64 and got.tolist() == [1, 0, 1]
    assert tk._class_indices(np.array([[2], [0]])).tolist() == [2, 0]   # a column of indices, not one-hot
    assert tk._class_indices(np.array([1.0, 0.0])).tolist() == [1, 0]
    for missing in (None, np.array(3)):
        with pytest.raises(CourseError, match="evaluate needs labels"):
            tk._class_indices(missing)
