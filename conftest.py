"""Shared test set-up: headless plotting, quiet TensorFlow, a cache inside the checkout.

Stand-ins and caches written by the tests (and by the notebooks they execute) go to
``build/test_cache`` rather than the user's home cache: fresh in a new clone, reused locally.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("COURSE_CACHE", str(ROOT / "build" / "test_cache"))

import importlib.util  # noqa: E402

import matplotlib  # noqa: E402
import pytest  # noqa: E402

_spec = importlib.util.spec_from_file_location("output_scan", ROOT / "scripts" / "output_scan.py")
output_scan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(output_scan)

# Headless figures in this process only: an MPLBACKEND variable would also reach the notebook
# kernels that nbval starts, and there the inline backend must stay, as in a real session.
matplotlib.use("Agg")


@pytest.fixture
def rehearsal(monkeypatch, tmp_path):
    """A full-mode rehearsal (COURSE_MODE=full, COURSE_REHEARSAL=1, the capped functions installed) for this test;
    yields the report file (COURSE_REPORT) where the capped functions record the work full mode would do."""
    report = tmp_path / "report.jsonl"
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.setenv("COURSE_REHEARSAL", "1")
    monkeypatch.setenv("COURSE_REPORT", str(report))
    from course_utils import rehearsal as caps  # noqa: PLC0415  (loaded only for rehearsal tests, as in a session)

    caps.install()
    yield report
    caps.uninstall()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Every notebook cell nbval runs is also scanned: noise, warnings or a frozen bar fail that cell
    (rules and the stderr allow-list: scripts/output_scan.py)."""
    result = yield
    outputs = getattr(item, "test_outputs", None)
    cell = getattr(item, "cell", None)
    if outputs and cell is not None and cell.source.rstrip().endswith(";"):
        # nbval runs cells without storing history, so IPython cannot see the ';' that hides the last value;
        # Jupyter and `make course` do: drop the value a student would not see.
        outputs = [o for o in outputs if o.get("output_type") != "execute_result"]
    if outputs and str(getattr(item, "path", "")).endswith(".ipynb"):
        found = output_scan.problems(outputs)
        if found:
            pytest.fail("this cell's output would show a student:\n  " + "\n  ".join(found), pytrace=False)
    return result
