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
    assert "<th>train samples</th>" in table.replace("\n", "")     # headers on one line, never split mid-word
    assert "0.25" in table and "0.250000" not in table           # 3 significant digits


def test_refused_attempts_are_not_numbered_as_runs():
    calls = []
    panel = cw.SliderPanel(fake_train(calls), SLIDERS)
    panel.run(train_samples=2000)                      # refused by the training function
    result = panel.run()
    assert result is not None and panel.board.runs[0].number == 1
    assert "run 1 done" in panel.message.value


# --------------------------------------------------------------------------- issue 20: hand-written bugs
def _table(panel) -> str:
    return panel.board_table.value.replace("\n", "")


def test_a_single_run_keeps_its_settings_in_the_table():
    """Bug caught: `len(frame) >= 1`: with one run every setting counted as "the same in every run" and left the
    table for the note above it."""
    panel = cw.SliderPanel(fake_train([]), SLIDERS)
    panel.run()
    table = _table(panel)
    assert "same in every run" not in table
    assert "<th>head</th>" in table and "<th>train samples</th>" in table


def test_a_metric_equal_in_every_run_stays_a_column():
    """Bug caught: the "shared settings" note not limited to settings: a metric that happened to be equal in
    every run was moved out of the results table."""
    panel = cw.SliderPanel(lambda x: {"val_accuracy": 0.5}, {"x": (1, 3, 1, 2)})
    panel.run()
    panel.run(x=3)
    table = _table(panel)
    assert "same in every run" not in table  # x differs; val_accuracy is a result, not a setting
    assert "<th>val accuracy</th>" in table and "nowrap" in table


def test_board_curves_start_at_epoch_1_and_are_labelled_by_run():
    """Bug caught: `range(len(values))`: the curves were drawn from epoch 0."""
    panel = cw.SliderPanel(fake_train([]), SLIDERS)
    panel.run()
    panel.run(train_samples=1000)
    ax = panel.board.plot("val_accuracy").axes[0]
    first, second = ax.get_lines()
    assert list(first.get_xdata()) == [1, 2] and list(second.get_ydata()) == [0.5, 0.5]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("run 1: train_samples=500") and legend[1].startswith("run 2: train_samples=1000")


def test_the_board_plots_the_runs_with_curves_among_runs_without():
    """Bug caught: `metric in r.history` without the `history is not None` test: a run that returned only a dict
    broke every later redraw of the board (TypeError)."""
    h = cu.History()
    h.append(loss=1.0, val_accuracy=0.6)
    results = iter([{"test_accuracy": 0.7}, h])
    panel = cw.SliderPanel(lambda x: next(results), {"x": (1, 3, 1, 2)})
    panel.run()
    assert panel.board_image.layout.display == "none"      # no curves yet: no (broken) image shown (issue 22)
    assert panel.run() is h and panel.board_image.value and panel.board_image.layout.display is None
    assert len(panel.board.plot("val_accuracy").axes[0].get_lines()) == 1


def test_a_float_slider_reads_back_clean_multiples_of_its_step():
    """Bugs caught: the read value not rounded (0.30000000000000004 reached train_fn), and _decimals counting
    the trailing zeros (a ".12f" readout)."""
    panel = cw.SliderPanel(lambda **kw: None, {"dropout": (0.0, 0.9, 0.1, 0.3), "wd": (0.0, 0.05, 0.005, 0.01)})
    c = panel.controls["dropout"]
    assert isinstance(c, w.FloatSlider) and (c.min, c.max, c.step, c.value) == (0.0, 0.9, 0.1, 0.3)
    assert c.readout_format == ".1f" and panel.controls["wd"].readout_format == ".3f"
    c.value = 0.1 + 0.2
    assert panel.values == {"dropout": 0.3, "wd": 0.01}
    assert [cw._decimals(s) for s in (1e-4, 0.25, 0.5, 1.0, 2)] == [4, 2, 1, 1, 1]


def test_a_log_slider_reads_back_three_significant_digits():
    """Bug caught: two significant digits (10**-2.75 read as 0.0018, not 0.00178)."""
    panel = cw.SliderPanel(lambda **kw: None, SLIDERS)
    panel.controls["lr"].value = 10 ** -2.75
    assert panel.values["lr"] == 0.00178


def test_slider_defaults_and_bounds():
    """Bugs caught: a 3-tuple defaulting to its max instead of its min, and `lo <= default < hi` refusing a default
    at the top of the range."""
    assert cw.make_control("n", (2, 8, 2)).value == 2
    assert cw.make_control("n", (1, 5, 1, 5)).value == 5
    assert cw.make_control("p", (0.0, 1.0, 0.1, 1.0)).value == 1.0
    assert cw.make_control("n", (1, 5, 1, 1)).value == 1


def test_descriptions_label_the_controls():
    """Bug caught: `desc = name`: the descriptions= mapping was ignored."""
    panel = cw.SliderPanel(lambda **kw: None, SLIDERS, descriptions={"lr": "learning rate"})
    assert panel.controls["lr"].description == "learning rate"
    assert panel.controls["head"].description == "head"


def test_a_panel_without_sliders_or_without_a_function_is_refused():
    """Bug caught: `if sliders is None`: an empty dict made a panel with nothing to set."""
    with pytest.raises(cu.CourseError, match="at least one slider"):
        cw.SliderPanel(lambda: None, {})
    with pytest.raises(cu.CourseError, match="train_fn must be a function"):
        cw.SliderPanel("train", SLIDERS)


def test_setting_an_unknown_slider_names_the_ones_there_are():
    """Bug caught: the name check dropped from set(): a typo was a bare KeyError."""
    panel = cw.SliderPanel(lambda **kw: None, SLIDERS)
    with pytest.raises(cu.CourseError, match="no slider 'learning_rate'.*train_samples, lr, pre_train, head"):
        panel.set(learning_rate=1e-3)
    panel.set(train_samples=750, head="classic")
    assert panel.values["train_samples"] == 750 and panel.values["head"] == "classic"


def test_a_successful_run_clears_the_previous_runs_error():
    """Bug caught: run() not resetting the red error area: a fixed problem stayed on screen next to "done"."""
    outcomes = [RuntimeError("boom"), {"val_accuracy": 0.5}]

    def flaky(x):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    panel = cw.SliderPanel(flaky, {"x": (1, 3, 1, 2)})
    panel.button.click()
    assert "boom" in panel.error.value
    panel.button.click()
    assert panel.error.value == "" and "run 1 done" in panel.message.value


def test_the_status_line_shows_validation_and_test_metrics():
    """Bug caught: only "val_" metrics picked for the status line (test metrics dropped)."""
    panel = cw.SliderPanel(lambda x: {"loss": 0.25, "val_auc": 0.8, "test_auc": 0.7}, {"x": (1, 3, 1, 2)})
    panel.run()
    message = panel.message.value
    assert "val_auc 0.800" in message and "test_auc 0.700" in message and "loss 0.250" not in message


def test_a_pair_without_history_and_a_dict_that_overrides_the_history():
    """Bugs caught: (None, dict) refused as a return value, and the History's summary overwriting the final
    metrics the function returned explicitly."""
    panel = cw.SliderPanel(lambda x: (None, {"test_auc": 0.7}), {"x": (1, 3, 1, 2)})
    panel.run()
    assert panel.last_error is None and panel.board.runs[0].metrics == {"test_auc": 0.7}
    h = cu.History()
    h.append(loss=1.0, val_accuracy=0.6)
    pair = cw.SliderPanel(lambda x: (h, {"val_accuracy": 0.9}), {"x": (1, 3, 1, 2)})
    pair.run()
    assert pair.board.runs[0].metrics == {"loss": 1.0, "val_accuracy": 0.9}


def test_setting_values_are_escaped_in_the_board_table():
    """Bug caught: table cells written without html.escape (a setting like "<b>" became markup)."""
    panel = cw.SliderPanel(lambda head: {"val_accuracy": 0.5}, {"head": ["<b>gap</b>", "classic"]})
    panel.run()
    table = _table(panel)
    assert "&lt;b&gt;gap&lt;/b&gt;" in table and "<b>gap</b>" not in table


def test_a_static_page_shows_a_sentence_not_the_widget_repr(monkeypatch):
    """Issue 22: an executed notebook showed `VBox(children=(HTML(value='<h3>...` where the panel was."""
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append((a, k)))
    panel = cw.SliderPanel(lambda x: {"acc": 0.5}, {"x": (1, 3, 1, 2)}, title="t")
    panel.display()
    (data,), kwargs = shown[0]
    assert kwargs == {"raw": True} and data["text/plain"].startswith("[the slider panel: it appears here")
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id
