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


def test_check_claim_prints_the_claim_with_its_interval_and_fails_when_the_interval_touches_0(capsys):
    """Issue 22: a lesson's check reads as the lesson: a tick, the claim, the interval; or the claim, refused."""
    import pytest

    from course_utils import check_claim
    from course_utils.stats import paired_t_interval

    clear = paired_t_interval([0.3, 0.4, 0.35, 0.45])
    check_claim("alpha 0.75 finds more cancers", clear)
    assert capsys.readouterr().out.startswith("✓ alpha 0.75 finds more cancers: +0.375 (95% interval")
    for unclear in (paired_t_interval([0.3, -0.2, 0.1]), paired_t_interval([-0.3, -0.4, -0.35])):
        with pytest.raises(AssertionError, match="✗ alpha 0.75 finds more cancers: not shown by this run"):
            check_claim("alpha 0.75 finds more cancers", unclear)
    with pytest.raises(AssertionError, match="not above 0.5"):
        check_claim("far better", clear, above=0.5)
