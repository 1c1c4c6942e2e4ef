"""Exercises: every stored solution passes its own check, wrong answers get a sentence, never a traceback."""
import math
import re

import numpy as np
import pytest
from scipy.special import xlogy

from course_utils import CourseError
from course_utils.teaching import exercises as ex

# what the notebooks pass as context (value exercises) or as the run's outcome (prediction exercises)
CONTEXT = {"03.3": {"n_test": 70},
           "03.4": {"val_auc": [0.80, 0.91, 0.88]},
           "04.4": {"table": __import__("pandas").DataFrame({"balanced": [0.7, 0.8, 0.5]},
                                                            index=["a", "b", "always malignant (no model)"])},
           "04b.3": {"verdict": "either"},
           "05.4": {"verdicts": ["no clear difference", "better than random"]},
           "06.3": {"faithful": "inconclusive", "randomised": 0},
           "07.4": {"verdict": "model"}}
OBSERVED = {"01.3": 35, "02.3": (0.61, 0.72), "03.2": (0.95, 0.81), "04.2": "down", "04b.2": "no clear change", "05.3": 6, "06.2": "better than random",
            "07.2": 6, "07.3": 0}


def stored_solution(e):
    """The stored solution, as a student would type it: the code for functions, the value otherwise."""
    if e.kind == "function":
        namespace = {"np": np, "xlogy": xlogy}
        exec(e.solution_text, namespace)                      # noqa: S102 - our own stored solution
        return next(v for k, v in namespace.items() if callable(v) and k not in ("np", "xlogy", "__builtins__"))
    if e.kind == "prediction":
        return e.expected(OBSERVED[e.key])
    return e.expected(**CONTEXT.get(e.key, {}))


@pytest.mark.parametrize("key", [e.key for e in ex.all_exercises()])
def test_every_stored_solution_passes_its_check(key, capsys):
    e = ex.get(key)
    kw = {"observed": OBSERVED[key]} if e.kind == "prediction" else CONTEXT.get(key, {})
    assert e.check(stored_solution(e), **kw) is True, capsys.readouterr().out
    assert "correct!" in capsys.readouterr().out


def test_each_notebook_has_a_line_to_write_and_a_prediction_to_test():
    kinds = {}
    for e in ex.all_exercises():
        kinds.setdefault(e.key.split(".")[0], set()).add(e.kind)
    assert sorted(kinds) == ["01", "02", "03", "04", "04b", "05", "06", "07"]
    assert all("prediction" in k for k in kinds.values())
    assert sum("function" in k for k in kinds.values()) >= 5           # 03's line is written in the notebook


def test_the_answers_are_not_in_the_task_text():
    for e in ex.all_exercises():
        if e.kind == "value":
            want = e.expected(**CONTEXT.get(e.key, {}))
            if isinstance(want, (int, float)) and not isinstance(want, bool) and abs(want) > 1:
                for text in {f"{want:g}", f"{want:.2f}", str(round(want))}:
                    assert not re.search(rf"(?<![\d.]){re.escape(text)}(?![\d.])", e.task), (e.key, text)


def test_wrong_answers_get_a_sentence_never_a_traceback(capsys):
    e = ex.get("02.1")
    assert e.check(lambda kernels, strides: 1 + sum(k - 1 for k in kernels)) is False   # forgets the strides
    out = capsys.readouterr().out
    assert "expected" in out and "returned" in out
    assert e.check(42) is False and "expected a function" in capsys.readouterr().out
    assert e.check(lambda kernels, strides: 1 / 0) is False and "ZeroDivisionError" in capsys.readouterr().out
    v = ex.get("02.2")
    assert v.check("2432") is False and "expected a whole number" in capsys.readouterr().out
    assert v.check([1, 2]) is False
    arr = ex.get("06.1")
    assert arr.check(lambda a, g: np.zeros(3)) is False and "shape" in capsys.readouterr().out
    p = ex.get("04.2")
    assert p.check(3, observed="down") is False and "'up', 'down' or 'no clear change'" in capsys.readouterr().out


def test_unanswered_hint_solution_and_a_missing_observation(capsys):
    e = ex.get("05.2")
    assert "BALD" in capsys.readouterr().out                             # get() prints the task
    assert e.check(None) is None and "not answered yet" in capsys.readouterr().out
    e.hint()
    assert "hint:" in capsys.readouterr().out
    e.solution()
    assert "shown before any try" in capsys.readouterr().out            # allowed, and says so
    e.check(0.5)
    e.solution()
    assert "shown before any try" not in capsys.readouterr().out
    assert ex.get("05.2").tries == 0                                     # every get() is a fresh copy
    with pytest.raises(CourseError, match="observed"):
        ex.get("05.3").check(6)
    with pytest.raises(CourseError, match="no exercise"):
        ex.get("09.1")


def test_a_prediction_is_judged_by_the_run_not_by_a_fixed_answer(capsys):
    e = ex.get("03.2")
    assert e.check("lower", observed=(0.95, 0.81)) is True
    assert e.check("lower", observed=(0.81, 0.95)) is False and "higher" in capsys.readouterr().out
    assert ex.get("02.3").check("higher", observed=(0.5, 0.9)) is True
    assert math.isclose(ex.EXERCISES["04.3"].expected(), 0.0980, abs_tol=1e-4)


def test_the_deletion_prediction_is_judged_by_the_interval_verdict():
    e = ex.get("06.2")
    assert e.check("inconclusive", observed="inconclusive") is True
    assert e.check("better", observed="worse than random") is False
    assert e.check("worse", observed="worse than random") is True


@pytest.mark.slow
def test_the_separable_convolution_answer_is_what_keras_counts():
    from course_utils.runtime import import_keras

    keras = import_keras()
    layer = keras.layers.SeparableConv2D(32, 5)
    layer.build((None, 32, 32, 3))
    assert ex.EXERCISES["02.2"].expected() == layer.count_params() == 203
