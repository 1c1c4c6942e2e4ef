"""course_utils.checks: exercise feedback."""
import numpy as np

from course_utils import check


def test_unanswered_is_neither_right_nor_wrong(capsys):
    assert check(None, 3, hint="count them", name="ex1") is None
    assert "not answered yet. Hint: count them" in capsys.readouterr().out


def test_numbers_and_arrays_within_tolerance(capsys):
    assert check(0.2701, 0.27, hint="h", rtol=1e-2) is True
    assert check(np.array([1, 2, 3]), [1, 2, 3], hint="h") is True
    assert check(0.5, 0.27, hint="the minority class") is False
    assert "not quite. Hint: the minority class" in capsys.readouterr().out


def test_shape_mismatch_is_wrong_with_an_explanation(capsys):
    assert check([1, 2], [1, 2, 3], hint="h") is False
    assert "shape (2,) differs" in capsys.readouterr().out


def test_strings_tuples_and_sets():
    assert check(" Uninfected", "uninfected", hint="h") is True
    assert check((32, 64, 64, 3), (32, 64, 64, 3), hint="h") is True
    assert check({3, 1}, {1, 3}, hint="h") is True
    assert check(True, False, hint="h") is False
