"""The TensorFlow / torchvision import-order crash (design section 7), in fresh subprocesses.

With triton installed, ``import tensorflow`` then ``import torchvision`` segfaults. The course
removes triton where there is no CUDA GPU (make setup) and ``cu.setup()`` imports torchvision
first where triton is present; both orders must work either way.
"""
import subprocess
import sys

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("tensorflow")

ORDERS = {
    "tensorflow first": "import tensorflow, torchvision, timm",
    "torchvision first": "import torchvision, timm, tensorflow",
    "setup, then tensorflow first": "import course_utils as cu; cu.setup(quiet=True); import tensorflow, torchvision, timm",
    "import_tensorflow helper, then torchvision": "from course_utils.runtime import import_tensorflow; import_tensorflow(); import torchvision",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ORDERS))
def test_both_import_orders_work(name):
    code = ORDERS[name] + "; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COURSE_MODE": "smoke"})
    assert res.returncode == 0, f"{name}: exit {res.returncode} (-11 is the segfault)\n{res.stderr[-2000:]}"
    assert res.stdout.strip().endswith("ok")
