"""Shared test set-up: headless plotting, quiet TensorFlow, a cache inside the checkout.

Stand-ins and caches written by the tests (and by the notebooks they execute) go to
``build/test_cache`` rather than the user's home cache: fresh in a new clone, reused locally.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("COURSE_CACHE", str(ROOT / "build" / "test_cache"))

import matplotlib  # noqa: E402
import pytest  # noqa: E402

# Headless figures in this process only: an MPLBACKEND variable would also reach the notebook
# kernels that nbval starts, and there the inline backend must stay, as in a real session.
matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
