"""Widgets for the course: slider panels with a Run button, a results board, and errors shown in the widget.

    panel = cu.widgets.SliderPanel(train_fn, sliders={
        "train_samples": (250, 2000, 250, 500),    # (min, max, step, default) -> IntSlider
        "lr": (1e-4, 1e-2, 1e-4, 1e-3),            # floats over two decades or more -> FloatLogSlider
        "pre_train": True,                         # bool -> Checkbox
        "head": ["gap", "classic"],                # list of str -> Dropdown (first is the default)
    }, title="Transfer learning")
    panel.display()        # sliders + Run button + status line + progress area + results board
    panel.run()            # exactly what clicking Run does; CI calls it once with the defaults

Nothing trains when a slider moves: only Run calls ``train_fn(**values)``, which returns a
:class:`~course_utils.History`, a dict of final metrics, or a ``(History, dict)`` pair. A bad combination
(``CourseError``/``ValueError``) is shown in the panel and is not numbered as a run; any other error of a
callback is shown in red with its traceback. Panels use core widgets only (Colab's ipywidgets 7.7.1 and 8.x).
The keyboard labeller (an ``anywidget``) is :class:`course_utils.labeller.Labeller`; it shows its errors
the same way.
"""
from __future__ import annotations

import html
import io
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..train.history import History
from ..runtime import CourseError

__all__ = ["ResultsBoard", "Run", "SliderPanel", "make_control", "shown_errors", "error_html"]


# --------------------------------------------------------------------------- results board
@dataclass
class Run:
    """One finished run: its settings, final metrics, curves (if any) and wall time."""

    number: int
    settings: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    history: History | None = None
    wall_s: float = math.nan

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.settings.items())
        return f"run {self.number}: {shown}"


class ResultsBoard:
    """Every run of a panel, kept for side-by-side comparison (table and overlaid curves)."""

    def __init__(self, *, source: str | None = None) -> None:
        self.runs: list[Run] = []
        self.source = source

    def __len__(self) -> int:
        return len(self.runs)

    def add(self, settings: Mapping[str, Any], result: Any, wall_s: float = math.nan) -> Run:
        """Record one run from ``train_fn``'s return value (History, dict or (History, dict))."""
        history, metrics = split_result(result)
        final = history.summary() if history is not None else {}
        final.update(metrics)
        run = Run(number=len(self.runs) + 1, settings=dict(settings), metrics=final,
                  history=history, wall_s=float(wall_s))
        self.runs.append(run)
        return run

    def clear(self) -> None:
        self.runs.clear()

    def table(self):
        """A pandas DataFrame, one row per run: settings, final metrics, ``wall time s``."""
        import pandas as pd  # noqa: PLC0415

        rows = [{"run": r.number, **r.settings, **r.metrics, "wall time s": round(r.wall_s, 1)}
                for r in self.runs]
        frame = pd.DataFrame(rows)
        if len(frame):
            frame = frame.set_index("run")
        return frame

    def html(self) -> str:
        """The table as compact HTML for the panel: 3 significant digits, headers on one line (``val_auc`` shown
        as "val auc", never split mid-word), settings that every run shares listed once above the table instead of
        repeated in a column."""
        frame = self.table()
        if not len(frame):
            return ""
        shared = {}
        if len(frame) > 1:
            for name in list(frame.columns):
                if name in self.runs[0].settings and frame[name].nunique(dropna=False) == 1:
                    shared[name] = frame[name].iloc[0]
                    frame = frame.drop(columns=name)
        shown = frame.map(lambda v: f"{v:.3g}" if isinstance(v, float) else html.escape(str(v)))
        shown.columns = [html.escape(str(c).replace("_", " ")) for c in shown.columns]
        table = shown.to_html(escape=False, border=0)
        note = ("<div style='font-size:12px;color:#555'>same in every run: "
                + html.escape(", ".join(f"{k}={_fmt(v)}" for k, v in shared.items())) + "</div>") if shared else ""
        style = ("<style>.course-board th{white-space:nowrap;font-size:12px;vertical-align:bottom}"
                 ".course-board td{font-size:12px;padding:1px 6px}</style>")
        return f"{style}<div class='course-board' style='max-width:100%;overflow-x:auto'>{note}{table}</div>"

    def png(self, metric: str) -> bytes:
        """The board's curves drawn to PNG bytes explicitly (``savefig``), not through the inline backend:
        under JupyterLab's subshells a figure captured from a button callback can come out blank."""
        import matplotlib.pyplot as plt  # noqa: PLC0415

        fig = self.plot(metric)
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", dpi=90)
        finally:
            plt.close(fig)
        return buf.getvalue()

    def metric_names(self) -> list[str]:
        """Metrics that at least one run has curves for."""
        names: list[str] = []
        for r in self.runs:
            if r.history is not None:
                names += [m for m in r.history.metrics if m not in names]
        return names

    def plot(self, metric: str = "val_accuracy", *, ax=None, title: str | None = None):
        """Overlay ``metric`` per epoch for every run that recorded it; returns the Figure."""
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

        from .plots import source_suffix  # noqa: PLC0415

        with_curve = [r for r in self.runs if r.history is not None and metric in r.history]
        if not with_curve:
            have = ", ".join(self.metric_names()) or "none (no run returned a History yet)"
            raise CourseError(f"no run on the board has a {metric!r} curve; metrics with curves: {have}")
        if ax is None:
            fig, ax = plt.subplots(figsize=(7.6, 3.6))
        else:
            fig = ax.figure
        for r in with_curve:
            values = r.history[metric]
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=5, label=r.label)   # one epoch: a visible point
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title((title or f"Results board: {metric} per run") + source_suffix(self.source))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)   # beside, not over
        fig.tight_layout()
        return fig


def split_result(result: Any) -> tuple[History | None, dict[str, float]]:
    """Normalise what a training function returned into ``(history or None, final metrics)``."""
    if result is None:
        return None, {}
    if isinstance(result, History):
        return result, {}
    if isinstance(result, Mapping):
        return None, _scalars(result)
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], (History, type(None))) \
            and isinstance(result[1], Mapping):
        return result[0], _scalars(result[1])
    raise CourseError(
        f"the training function returned a {type(result).__name__}; a panel needs a History, a dict of "
        "final metrics, or a (History, dict) pair. Return one of those from your function."
    )


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# --------------------------------------------------------------------------- controls
def _widgets():
    try:
        import ipywidgets  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - ipywidgets is a dependency
        raise CourseError("ipywidgets is not installed: `pip install ipywidgets` (Colab has it).") from exc
    return ipywidgets


def _decimals(step: float) -> int:
    """Digits after the point needed to show multiples of ``step`` exactly (1e-4 -> 4)."""
    text = f"{step:.12f}".rstrip("0")
    return max(1, len(text.split(".")[1])) if "." in text else 1


def make_control(name: str, spec: Any, description: str | None = None):
    """Turn one slider spec into an ipywidgets control.

    ``(min, max, step, default)`` (or ``(min, max, step)``, default = min) gives an IntSlider when
    all four are ints, else a FloatSlider; ``True``/``False`` a Checkbox; a list of strings a
    Dropdown (first entry is the default); an existing widget is used as it is.
    """
    w = _widgets()
    desc = description or name
    style = {"description_width": "initial"}
    if isinstance(spec, w.Widget):
        return spec
    if isinstance(spec, bool):
        return w.Checkbox(value=spec, description=desc, indent=False, style=style)
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, str) for s in spec):
        return w.Dropdown(options=list(spec), value=spec[0], description=desc, style=style)
    if isinstance(spec, tuple) and len(spec) in (3, 4) and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) for s in spec):
        lo, hi, step = spec[:3]
        default = spec[3] if len(spec) == 4 else lo
        if not lo < hi:
            raise CourseError(f"slider {name!r}: min {lo} must be smaller than max {hi}")
        if step <= 0:
            raise CourseError(f"slider {name!r}: step must be positive, got {step}")
        if not lo <= default <= hi:
            raise CourseError(f"slider {name!r}: default {default} lies outside [{lo}, {hi}]")
        layout = w.Layout(width="420px")
        if all(isinstance(s, int) for s in (lo, hi, step, default)):
            return w.IntSlider(value=default, min=lo, max=hi, step=step, description=desc,
                               continuous_update=False, style=style, layout=layout)
        if lo > 0 and hi / lo >= 100:   # two decades or more (a learning rate): a log-scale slider
            return w.FloatLogSlider(value=float(default), base=10, min=math.log10(lo), max=math.log10(hi),
                                    step=0.25, description=desc, readout_format=".2g",
                                    continuous_update=False, style=style, layout=layout)
        return w.FloatSlider(value=float(default), min=float(lo), max=float(hi), step=float(step),
                             description=desc, readout_format=f".{_decimals(step)}f",
                             continuous_update=False, style=style, layout=layout)
    raise CourseError(
        f"slider {name!r}: cannot make a control from {spec!r}. Use (min, max, step, default) for a "
        "slider, True/False for a checkbox, or a list of strings for a dropdown."
    )


def _control_value(control) -> Any:
    value = control.value
    if isinstance(value, float) and type(control).__name__ == "FloatLogSlider":
        return float(f"{value:.3g}")
    if isinstance(value, float) and hasattr(control, "step") and control.step:
        value = round(value, _decimals(float(control.step)) + 2)
    return value


# --------------------------------------------------------------------------- panel
class SliderPanel:
    """Sliders + a Run button + a status line + a progress area + a :class:`ResultsBoard`.

    ``train_fn(**values)`` is called only when Run is clicked (or :meth:`run` is called).
    ``validate(values)`` may return an error message to refuse a combination before training.
    ``plot_metric`` is the curve drawn on the board after each run (skipped if no run has it).
    """

    def __init__(self, train_fn: Callable[..., Any], sliders: Mapping[str, Any], *, title: str = "",
                 validate: Callable[[dict[str, Any]], str | None] | None = None,
                 descriptions: Mapping[str, str] | None = None, plot_metric: str = "val_accuracy",
                 source: str | None = None, run_label: str = "Run") -> None:
        if not callable(train_fn):
            raise CourseError(f"train_fn must be a function, got {type(train_fn).__name__}")
        if not sliders:
            raise CourseError("a SliderPanel needs at least one slider")
        w = _widgets()
        descriptions = dict(descriptions or {})
        self.train_fn = train_fn
        self.validate = validate
        self.title = title
        self.plot_metric = plot_metric
        self.board = ResultsBoard(source=source)
        self.controls = {name: make_control(name, spec, descriptions.get(name)) for name, spec in sliders.items()}
        self.button = w.Button(description=run_label, button_style="primary", icon="play",
                               tooltip="train with these settings")
        self.button.on_click(shown_errors(self._show_error, lambda _button: self.run()))
        self.message = w.HTML(value="Set the sliders, then click <b>Run</b>.")
        self.output = w.Output(layout=w.Layout(max_height="320px", overflow="auto"))
        self.error = w.HTML(value="")                  # an unexpected error of a callback, in red
        self.board_table = w.HTML(value="")
        # hidden until a run has curves: an empty Image shows the browser's broken-image icon
        self.board_image = w.Image(format="png", layout=w.Layout(max_width="100%", display="none"))
        self.last_error: str | None = None
        self.last_result: Any = None
        header = [w.HTML(value=f"<h3>{html.escape(title)}</h3>")] if title else []
        self.widget = w.VBox([*header, *self.controls.values(), w.HBox([self.button, self.message]),
                              self.error, self.output, self.board_table, self.board_image])

    # ---------------------------------------------------------------- reading
    @property
    def values(self) -> dict[str, Any]:
        """The current slider settings."""
        return {name: _control_value(c) for name, c in self.controls.items()}

    def set(self, **values: Any) -> None:
        """Move sliders from code (trains nothing); unknown names are an error."""
        for name, value in values.items():
            if name not in self.controls:
                raise CourseError(f"no slider {name!r}; this panel has: {', '.join(self.controls)}")
            self.controls[name].value = value

    # ---------------------------------------------------------------- running
    def run(self, **overrides: Any) -> Any:
        """Do what clicking Run does: read the sliders (``overrides`` win), train, record the run.

        Returns ``train_fn``'s result, or ``None`` when the settings were refused or the run raised
        a ``ValueError``/``CourseError`` (the message is shown in the panel and kept in
        ``last_error``; the board keeps its earlier runs). Other exceptions are real bugs and
        propagate.
        """
        values = {**self.values, **overrides}
        self.error.value = ""
        self.last_error = None
        self.last_result = None
        if self.validate is not None:
            refusal = self.validate(dict(values))
            if refusal:
                self._fail(f"these settings cannot work: {refusal}")
                return None
        self.button.disabled = True
        self._status(f"running {_settings_text(values)} ...", color="#555")
        start = time.perf_counter()
        problem: Exception | None = None
        run = None
        # Exceptions are caught inside the ``with``: in a kernel, ipywidgets' Output swallows any
        # exception that leaves the block (it prints a traceback instead).
        try:
            with self.output:
                self.output.clear_output(wait=True)
                print(f"running: {_settings_text(values)}")
                try:
                    result = self.train_fn(**values)
                    run = self.board.add(values, result, time.perf_counter() - start)
                except ValueError as exc:  # CourseError is a ValueError: a bad combination, not a bug
                    problem = exc
                except Exception as exc:  # a real bug: show the traceback here, then re-raise below
                    traceback.print_exc()
                    problem = exc
        finally:
            self.button.disabled = False
        if problem is None and run is None:  # interrupted (e.g. KeyboardInterrupt shown by the Output)
            self._status("interrupted: the run was not recorded", color="#b00020")
            return None
        if problem is not None:
            if not isinstance(problem, ValueError):
                self._status(f"failed with {type(problem).__name__}: {problem} (traceback above)", color="#b00020")
                raise problem
            self._fail(str(problem))
            return None
        wall = run.wall_s
        self.last_result = result
        headline = {k: v for k, v in run.metrics.items() if k.startswith(("val_", "test"))} or run.metrics
        shown = ", ".join(f"{k} {v:.3f}" for k, v in list(headline.items())[:4])
        self._show_board()                 # the board first: "done" appears when the row is there
        self._status(f"run {run.number} done in {wall:.1f} s" + (f": {shown}" if shown else ""), color="green")
        return result

    def _fail(self, text: str) -> None:
        self.last_error = text
        self._status(f"Could not run: {text}", color="#b00020")
        with self.output:
            print(f"Could not run: {text}")

    def _status(self, text: str, *, color: str) -> None:
        self.message.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def _show_error(self, exc: BaseException) -> None:
        self.error.value = error_html(exc)

    def _show_board(self) -> None:
        """Redraw the table and the curves (when runs have them) under the panel, as widget values."""
        self.board_table.value = self.board.html()
        if any(r.history is not None and self.plot_metric in r.history for r in self.board.runs):
            self.board_image.value = self.board.png(self.plot_metric)
            self.board_image.layout.display = None

    # ---------------------------------------------------------------- showing
    def display(self) -> None:
        """Show the panel in the notebook. A page that cannot draw widgets (an executed notebook on GitHub, a static
        HTML page) shows one line saying so, not the widget's ``VBox(children=...)`` repr."""
        from IPython.display import display  # noqa: PLC0415

        bundle = getattr(self.widget, "_repr_mimebundle_", None)    # ipywidgets 8
        data = bundle() if callable(bundle) else None
        if not (isinstance(data, dict) and "application/vnd.jupyter.widget-view+json" in data):   # 7.7 (Colab)
            data = {"application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                                  "model_id": self.widget.model_id}}
        display({**data, "text/plain": "[the slider panel: it appears here when the notebook runs in Jupyter or "
                                       "Colab; the table below the run cell lists its runs]"}, raw=True)

    def _ipython_display_(self) -> None:
        self.display()


def _settings_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())




# --------------------------------------------------------------------------- errors shown where the user looks
def error_html(exc: BaseException) -> str:
    """A red line with the error's type and text, and the traceback in an expandable area."""
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return (f'<div style="color:#b00020"><b>{html.escape(type(exc).__name__)}</b>: {html.escape(str(exc))}'
            f'<details><summary>traceback</summary><pre style="font-size:11px">{html.escape(detail)}</pre>'
            "</details></div>")


def shown_errors(show: Callable[[BaseException], None], fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a widget callback so that an exception is shown by ``show`` instead of vanishing.

    ipywidgets logs callback exceptions to the kernel log, which nobody sees (and under JupyterLab 4.6
    the callback runs in a subshell thread): every course widget callback goes through this.
    """
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shown in the widget, which is the point
            show(exc)
            return None
    return guarded
