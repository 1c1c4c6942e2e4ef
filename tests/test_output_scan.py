"""The output scan (scripts/output_scan.py) that every executed notebook cell passes through in the tests."""
import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest

from course_utils import runtime

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("output_scan", ROOT / "scripts" / "output_scan.py")
scan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scan)


def stream(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


def display(plain, widget=False, html=None):
    data = {"text/plain": plain}
    if widget:
        data["application/vnd.jupyter.widget-view+json"] = {"model_id": "x", "version_major": 2}
    if html:
        data["text/html"] = html
    return {"output_type": "display_data", "data": data, "metadata": {}}


def test_progress_frames_fold_to_the_last_one_and_keep_their_place():
    outs = [stream("epoch 1:  0%|  | 0/4\r"), stream("epoch 1: 50%|# | 2/4\r"), stream("epoch 1: 100%|##| 4/4\n"),
            display("<Figure>"), stream("after the figure\n")]
    folded = scan.fold(outs)
    assert [o["output_type"] for o in folded] == ["stream", "display_data", "stream"]
    assert folded[0]["text"] == "epoch 1: 100%|##| 4/4\n" and folded[2]["text"] == "after the figure\n"
    assert scan.fold([stream("ab\x08c\n")])[0]["text"] == "ac\n"
    assert scan.fold([stream("word boundaries stay\n")])[0]["text"] == "word boundaries stay\n"


def test_a_cleared_bar_then_a_line_leaves_only_the_line():
    assert scan.fold([stream("42%|####  |\r          \r"), stream("epoch 1: loss 0.3\n")])[0]["text"] == \
        "epoch 1: loss 0.3\n"


def test_the_course_progress_bar_is_text_that_folds_to_its_last_frame():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        for _ in runtime.progress(range(5), desc="work", leave=True, mininterval=0):
            pass
    text = scan.fold([stream(buf.getvalue())])[0]["text"]
    assert text.count("\n") == 1 and "work: 100%" in text and "5/5" in text, text
    assert scan.problems([stream(buf.getvalue())]) == []


@pytest.mark.parametrize("out, words", [
    (stream("W0000 cuInit: UNKNOWN ERROR (303)\n", "stderr"), "CUDA start-up"),
    (stream("oneDNN custom operations are on.\n"), "CPU start-up"),
    (stream("\x1b[1mDownloading and preparing dataset Unknown size\n"), "tfds download"),
    (display("Dl Completed...: 0 url [00:00, ? url/s]", widget=True), "tfds download"),
    (stream("WARNING:urllib3.connectionpool:Retrying (Retry(total=0))\n", "stderr"), "urllib3"),
    (stream("STAND-IN DATA: (ConnectionError: HTTPSConnectionPool(host='x', port=443))\n"), "raw network exception"),
    (stream("x.py:3: DeprecationWarning: __array__ implementation doesn't accept a copy keyword\n", "stderr"),
     "deprecation"),
    (stream("mean AUC np.float64(0.118)\n"), "numpy scalar repr"),
    (stream("threshold 0.651939332485199, size 28\n"), "unrounded number"),
    ({"output_type": "execute_result", "data": {"text/plain": "0.7307692307692307"}, "metadata": {}}, "unrounded"),
    (display("epoch 1/2:   0%|          | 0/10 [00:00<?, ?it/s]", widget=True), "first frame"),
    (stream("/tmp/ipykernel_1/2.py:8: UserWarning: something\n", "stderr"), "stderr output"),
])
def test_each_rule_finds_what_it_names(out, words):
    found = scan.problems([out])
    assert found and any(words in f for f in found), found


def test_clean_outputs_pass():
    outs = [stream("train 280 images | Parasitized: 140; lr 1e-05; 3.14159265 is pi to 8\n"),
            display("<Figure size 640x480>"),
            display("VBox(children=(HTML(value='<h3>panel</h3>'),))", widget=True),
            display("", html="<div>STAND-IN DATA ... (no network connection to data.lhncbc.nlm.nih.gov)</div>"),
            stream("\n", "stderr"),
            stream("/tmp/ipykernel_9/1.py:4: UserWarning: the hold-out of x.db has now been evaluated 3 times. "
                   "Tune on validation.\n  scores = store.evaluate_holdout(p)\n", "stderr")]
    assert scan.problems(outs) == []
    assert scan.problems([stream("x.py:1: UserWarning: the hold-out of x.db has now been evaluated 2 times\n"
                                 "  ok()\nTraceback (most recent call last):\n", "stderr")])


def test_scan_notebook_names_the_cell(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "source": "np.float64(1)"},
                    {"cell_type": "code", "outputs": [stream("fine\n")]},
                    {"cell_type": "code", "outputs": [stream("np.float32(2.0)\n")]}]}
    path = tmp_path / "07_x.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    assert [f.split(":")[0] for f in scan.scan_notebook(path)] == ["07_x.ipynb cell 2"]
    assert scan.main([str(path)]) == 1


def test_the_conftest_hook_fails_a_notebook_cell_that_shows_noise():
    """The hook in conftest.py scans the cells nbval runs: a probe notebook inside the checkout (so the
    hook applies) with one noisy cell fails that cell and passes the clean ones (a value hidden by ';' too)."""
    import os
    import subprocess
    import sys

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import numpy as np\nprint({'auc': np.float64(0.5)})"),
                nbformat.v4.new_code_cell("print('fine')"),
                nbformat.v4.new_code_cell("x = 0.7307692307692307\nfloat(x);")]   # ';' hides it, as in Jupyter
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    probe = ROOT / "build" / f"scan_probe_{os.getpid()}.ipynb"
    probe.parent.mkdir(exist_ok=True)
    nbformat.write(nb, probe)
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", str(probe), "-q"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        probe.unlink(missing_ok=True)
    assert run.returncode == 1, run.stdout[-2000:]
    assert "1 failed, 2 passed" in run.stdout and "numpy scalar repr" in run.stdout, run.stdout[-2000:]
