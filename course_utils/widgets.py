"""Slider panels with a Run button and a results board, for live lectures and for CI.

    panel = cu.widgets.SliderPanel(train_fn, sliders={
        "train_samples": (250, 2000, 250, 500),    # (min, max, step, default) -> IntSlider
        "lr": (1e-4, 1e-2, 1e-4, 1e-3),            # floats -> FloatSlider
        "pre_train": True,                         # bool -> Checkbox
        "head": ["gap", "classic"],                # list of str -> Dropdown (first is the default)
    }, title="Transfer learning")
    panel.display()        # sliders + Run button + status line + progress area + results board
    panel.run()            # exactly what clicking Run does; CI calls it once with the defaults
    panel.board.table()    # one row per run: settings, final metrics, wall time

Nothing trains when a slider moves: only the Run button (or ``run()``) calls ``train_fn(**values)``.
``train_fn`` returns a :class:`~course_utils.History` (its curves go on the board), a dict of final
metrics, or a ``(History, dict)`` pair. A run that raises ``CourseError``/``ValueError`` (a bad
combination of settings) shows its message in the panel instead of a traceback, and the board keeps
its earlier runs. Only core widgets are used, so panels work in Colab's ipywidgets 7.7.1 and in 8.x.
"""
from __future__ import annotations

import html
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .history import History
from .runtime import CourseError

__all__ = ["ResultsBoard", "Run", "SliderPanel", "make_control"]


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

        from .plots import _label  # noqa: PLC0415

        with_curve = [r for r in self.runs if r.history is not None and metric in r.history]
        if not with_curve:
            have = ", ".join(self.metric_names()) or "none (no run returned a History yet)"
            raise CourseError(f"no run on the board has a {metric!r} curve; metrics with curves: {have}")
        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 3.6))
        else:
            fig = ax.figure
        for r in with_curve:
            values = r.history[metric]
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=r.label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title((title or f"Results board: {metric} per run") + _label(self.source))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
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
        return w.FloatSlider(value=float(default), min=float(lo), max=float(hi), step=float(step),
                             description=desc, readout_format=f".{_decimals(step)}f",
                             continuous_update=False, style=style, layout=layout)
    raise CourseError(
        f"slider {name!r}: cannot make a control from {spec!r}. Use (min, max, step, default) for a "
        "slider, True/False for a checkbox, or a list of strings for a dropdown."
    )


def _control_value(control) -> Any:
    value = control.value
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
        self.button.on_click(lambda _button: self.run())
        self.message = w.HTML(value="Set the sliders, then click <b>Run</b>.")
        self.output = w.Output(layout=w.Layout(max_height="320px", overflow="auto"))
        self.board_output = w.Output()
        self.last_error: str | None = None
        self.last_result: Any = None
        header = [w.HTML(value=f"<h3>{html.escape(title)}</h3>")] if title else []
        self.widget = w.VBox([*header, *self.controls.values(), w.HBox([self.button, self.message]),
                              self.output, self.board_output])

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
                print(f"run {len(self.board) + 1}: {_settings_text(values)}")
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
        self._status(f"run {run.number} done in {wall:.1f} s" + (f": {shown}" if shown else ""), color="green")
        self._show_board()
        return result

    def _fail(self, text: str) -> None:
        self.last_error = text
        self._status(f"Could not run: {text}", color="#b00020")
        with self.output:
            print(f"Could not run: {text}")

    def _status(self, text: str, *, color: str) -> None:
        self.message.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def _show_board(self) -> None:
        """Redraw the table (and the curves, when runs have them) under the panel."""
        if not _in_kernel():
            return
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from IPython.display import display  # noqa: PLC0415

        with self.board_output:
            self.board_output.clear_output(wait=True)
            display(self.board.table())
            if any(r.history is not None and self.plot_metric in r.history for r in self.board.runs):
                fig = self.board.plot(self.plot_metric)
                display(fig)
                plt.close(fig)

    # ---------------------------------------------------------------- showing
    def display(self) -> None:
        """Show the panel in the notebook."""
        from IPython.display import display  # noqa: PLC0415

        display(self.widget)

    def _ipython_display_(self) -> None:
        self.display()


def _settings_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
