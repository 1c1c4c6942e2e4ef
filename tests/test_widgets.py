"""The slider panel driven headless: set slider values, click Run, read the board."""
import math

import ipywidgets as w
import pytest

import course_utils as cu
from course_utils.teaching import widgets as cw

SLIDERS = {
    "train_samples": (250, 2000, 250, 500),
    "lr": (1e-4, 1e-2, 1e-4, 1e-3),
    "pre_train": True,
    "head": ["gap", "classic"],
}


def fake_train(calls):
    """A training function that records its arguments and returns a History with two epochs."""
    def train_fn(train_samples, lr, pre_train, head):
        calls.append(dict(train_samples=train_samples, lr=lr, pre_train=pre_train, head=head))
        if train_samples > 1500:
            raise cu.CourseError(f"train_samples={train_samples} is more than the 1500 images the split holds")
        h = cu.History()
        h.append(loss=1.0, accuracy=0.5, val_loss=1.1, val_accuracy=0.5)
        h.append(loss=0.5, accuracy=0.8, val_loss=0.7, val_accuracy=train_samples / 2000)
        return h
    return train_fn


def test_spec_to_controls():
    panel = cw.SliderPanel(lambda **kw: {}, SLIDERS)
    c = panel.controls
    assert isinstance(c["train_samples"], w.IntSlider)
    assert (c["train_samples"].min, c["train_samples"].max, c["train_samples"].step, c["train_samples"].value) == (250, 2000, 250, 500)
    # a learning rate spans decades: a log-scale slider (FloatLogSlider exists in ipywidgets 7.7.1 too)
    assert type(c["lr"]).__name__ == "FloatLogSlider" and c["lr"].value == pytest.approx(1e-3)
    assert (c["lr"].min, c["lr"].max) == (pytest.approx(-4), pytest.approx(-2))
    assert c["lr"].readout_format == ".2g"  # 1e-3 must not read as 0.00
    assert isinstance(c["pre_train"], w.Checkbox) and c["pre_train"].value is True
    assert isinstance(c["head"], w.Dropdown) and c["head"].value == "gap"
    assert panel.values == {"train_samples": 500, "lr": 1e-3, "pre_train": True, "head": "gap"}


def test_moving_sliders_trains_nothing_and_click_runs_with_their_values():
    calls = []
    panel = cw.SliderPanel(fake_train(calls), SLIDERS, title="t")
    panel.controls["train_samples"].value = 1000
    panel.controls["lr"].value = 3e-3
    panel.controls["head"].value = "classic"
    panel.controls["pre_train"].value = False
    assert calls == []  # nothing trains on slider move
    panel.button.click()
    assert calls == [dict(train_samples=1000, lr=pytest.approx(3e-3), pre_train=False, head="classic")]
    assert len(panel.board.runs) == 1
    run = panel.board.runs[0]
    assert run.metrics["val_accuracy"] == pytest.approx(0.5)
    assert run.wall_s >= 0 and not math.isnan(run.wall_s)
    panel.set(train_samples=250)
    panel.button.click()
    assert len(panel.board) == 2
    table = panel.board.table()
    assert list(table["train_samples"]) == [1000, 250]
    assert {"lr", "pre_train", "head", "loss", "val_accuracy", "wall time s"} <= set(table.columns)
    assert "done" in panel.message.value


def test_run_overrides_win_and_return_the_result():
    calls = []
    panel = cw.SliderPanel(fake_train(calls), SLIDERS)
    result = panel.run(head="classic")
    assert isinstance(result, cu.History)
    assert calls[0]["head"] == "classic" and calls[0]["train_samples"] == 500
    assert panel.controls["head"].value == "gap"  # overrides do not move the sliders


def test_bad_combination_shows_message_and_keeps_earlier_runs():
    calls = []
    panel = cw.SliderPanel(fake_train(calls), SLIDERS)
    panel.button.click()
    assert len(panel.board) == 1
    panel.controls["train_samples"].value = 2000
    panel.button.click()  # the function raises CourseError: no traceback, a message
    assert len(panel.board) == 1
    assert panel.last_error is not None and "1500 images" in panel.last_error
    assert "Could not run" in panel.message.value and "1500 images" in panel.message.value
    assert panel.button.disabled is False
    panel.controls["train_samples"].value = 750
    panel.button.click()
    assert len(panel.board) == 2 and panel.last_error is None


def test_validate_refuses_before_training():
    calls = []

    def validate(values):
        if values["lr"] > 5e-3 and values["pre_train"]:
            return "a learning rate above 5e-3 wrecks pre-trained weights"
        return None

    panel = cw.SliderPanel(fake_train(calls), SLIDERS, validate=validate)
    panel.controls["lr"].value = 1e-2
    panel.button.click()
    assert calls == [] and len(panel.board) == 0
    assert "wrecks pre-trained" in panel.message.value


def test_other_exceptions_are_bugs_and_propagate():
    def broken(**kw):
        raise RuntimeError("boom")

    panel = cw.SliderPanel(broken, {"x": (1, 3, 1, 2)})
    with pytest.raises(RuntimeError):
        panel.run()
    assert panel.button.disabled is False and len(panel.board) == 0


def test_result_shapes_dict_pair_and_bad_return():
    panel = cw.SliderPanel(lambda x: {"test_accuracy": 0.9, "note": "text"}, {"x": (1, 3, 1, 2)})
    panel.run()
    assert panel.board.runs[0].metrics == {"test_accuracy": 0.9}
    h = cu.History()
    h.append(loss=1.0, val_accuracy=0.6)
    pair = cw.SliderPanel(lambda x: (h, {"test_auc": 0.7}), {"x": (1, 3, 1, 2)})
    pair.run()
    assert pair.board.runs[0].metrics == {"loss": 1.0, "val_accuracy": 0.6, "test_auc": 0.7}
    bad = cw.SliderPanel(lambda x: 42, {"x": (1, 3, 1, 2)})
    assert bad.run() is None and "History" in bad.last_error and len(bad.board) == 0


def test_board_plot_overlays_runs():
    panel = cw.SliderPanel(fake_train([]), SLIDERS, source="stand-in")
    panel.run()
    panel.run(train_samples=1000)
    fig = panel.board.plot("val_accuracy")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "val_accuracy"
    assert "stand-in" in ax.get_title()
    with pytest.raises(cu.CourseError, match="no run on the board"):
        panel.board.plot("val_auc")


@pytest.mark.parametrize("spec", [(5, 1, 1, 2), (1, 5, 0, 2), (1, 5, 1, 9), {"a": 1}, "text"])
def test_bad_slider_specs_are_clear_errors(spec):
    with pytest.raises(cu.CourseError, match="slider 'x'"):
        cw.SliderPanel(lambda x: None, {"x": spec})


def test_panel_displays_as_a_widget():
    panel = cw.SliderPanel(lambda **kw: None, SLIDERS, title="Demo")
    assert isinstance(panel.widget, w.VBox)
    assert any(panel.button in getattr(c, "children", ()) for c in panel.widget.children)
    assert panel.error in panel.widget.children and panel.board_image in panel.widget.children
    assert hasattr(panel, "_ipython_display_")


def test_errors_are_handled_even_when_output_swallows_exceptions(monkeypatch):
    """In a kernel, ipywidgets' Output context manager suppresses exceptions; the panel must not rely on them."""
    monkeypatch.setattr(w.Output, "__exit__", lambda self, *exc: True)
    calls = []
    panel = cw.SliderPanel(fake_train(calls), SLIDERS)
    panel.run()
    panel.run(train_samples=2000)
    assert len(panel.board) == 1 and "1500 images" in panel.last_error

    def broken(**kw):
        raise RuntimeError("boom")

    bug = cw.SliderPanel(broken, {"x": (1, 3, 1, 2)})
    with pytest.raises(RuntimeError, match="boom"):
        bug.run()
    assert "RuntimeError" in bug.message.value and bug.button.disabled is False


# --------------------------------------------------------------------------- the panel as a person sees it
def test_an_unexpected_callback_error_is_shown_in_the_panel_not_lost():
    def broken(**kw):
        raise RuntimeError("boom in the training function")

    panel = cw.SliderPanel(broken, {"x": (1, 3, 1, 2)})
    panel.button.click()                               # a click: nothing may escape into the kernel log
    assert "RuntimeError" in panel.error.value and "boom in the training function" in panel.error.value
    assert "<details>" in panel.error.value and "Traceback" in panel.error.value
    assert len(panel.board) == 0 and panel.button.disabled is False


def _pixel_std(png: bytes) -> float:
    import io

    import numpy as np
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float).std())


def test_each_run_redraws_a_non_blank_board_and_a_compact_table():
    panel = cw.SliderPanel(fake_train([]), SLIDERS, source="stand-in")
    panel.button.click()
    first = panel.board_image.value
    assert len(first) > 5000 and _pixel_std(first) > 10          # curves and text, not a white square
    panel.set(train_samples=1000)
    panel.button.click()
    assert panel.board_image.value != first and _pixel_std(panel.board_image.value) > 10
    table = panel.board_table.value
    assert "same in every run" in table and "head=gap" in table   # constant settings listed once
    assert "<th>train_<wbr>samples</th>" in table.replace("\n", "")     # long headers may wrap
    assert "0.25" in table and "0.250000" not in table           # 3 significant digits


def test_refused_attempts_are_not_numbered_as_runs():
    calls = []
    panel = cw.SliderPanel(fake_train(calls), SLIDERS)
    panel.run(train_samples=2000)                      # refused by the training function
    result = panel.run()
    assert result is not None and panel.board.runs[0].number == 1
    assert "run 1 done" in panel.message.value
