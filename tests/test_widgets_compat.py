"""The slider panels must work with Colab's ipywidgets 7.7.1 as well as with 8.x.

`make setup` keeps ipywidgets 7.7.1 in .venv/compat/ipywidgets7; this test re-runs the widget
tests in a subprocess with that copy first on the path.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPAT = Path(sys.prefix) / "compat" / "ipywidgets7"
# the slider panels and the keyboard labeller (anywidget on ipywidgets 7.7.1)
WIDGET_TESTS = ["tests/test_widgets.py", "tests/test_labeller.py"]


@pytest.mark.slow
def test_widget_tests_pass_under_ipywidgets_7_7_1():
    if not (COMPAT / "ipywidgets").is_dir():
        pytest.fail(f"ipywidgets 7.7.1 is not at {COMPAT}: run `make setup` (it installs it there)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(COMPAT), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", "import ipywidgets; print(ipywidgets.__version__)"],
                           env=env, capture_output=True, text=True, cwd=ROOT)
    assert probe.stdout.strip() == "7.7.1", probe.stderr
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", *WIDGET_TESTS],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout
