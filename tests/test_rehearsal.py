"""scripts/rehearsal.py (memory watch, work totals, T4 estimate), run_course --rehearse's table, and
scripts/gpu_check.py's path on a machine without a GPU."""
import csv
import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rehearsal = _load("rehearsal")
run_course = _load("run_course")
gpu_check = _load("gpu_check")

REPORTS = [
    {"kind": "data", "name": "malaria", "images": 27558, "bytes": 2_116_000_000, "shape": [160, 160, 3]},
    {"kind": "work", "pass": "train", "images": 1000, "steps": 32, "flops_per_image": 1e9, "model": "m",
     "framework": "keras"},
    {"kind": "work", "pass": "forward", "images": 2000, "steps": 8, "flops_per_image": 1e9, "model": "m",
     "framework": "keras"},
    {"kind": "number", "name": "accuracy", "value": 0.5},
]


def test_work_is_summed_and_turned_into_a_t4_estimate():
    s = rehearsal.summarize(REPORTS)
    assert s["train_images"] == 1000 and s["forward_images"] == 2000 and s["steps"] == 40
    assert s["tflops"] == pytest.approx((3 * 1000 + 2000) * 1e9 / 1e12)     # training pass = 3x forward
    assert s["datasets"] == ["malaria"] and s["data_gb"] == pytest.approx(2.12, abs=0.01) and s["keras_fits"] == 1
    t = rehearsal.t4_estimate(s)
    compute = 5e12 / rehearsal.T4_SUSTAINED_FLOPS
    overhead = 40 * rehearsal.STEP_OVERHEAD_S + rehearsal.KERAS_FIT_OVERHEAD_S    # 1 GFLOP per image: not a head
    data = rehearsal.SETUP_S + rehearsal.DATA_PREP_S["malaria"]
    assert t["t4_estimate_s"] == round(compute + overhead + data)


def test_a_head_on_features_costs_less_per_step():
    head = {"kind": "work", "pass": "train", "images": 3200, "steps": 100, "flops_per_image": 2e5, "model": "h"}
    s = rehearsal.summarize([head])
    assert s["overhead_s"] == pytest.approx(100 * rehearsal.HEAD_TRAIN_STEP_S)


def test_rehearsal_csv_has_the_estimate_column(tmp_path):
    s = rehearsal.summarize(REPORTS)
    rows = [{"notebook": "01_x", "status": "ok", "wall_s": 12.5, "error": "",
             "rehearsal": {"peak_rss_gb": 3.2, **s, **rehearsal.t4_estimate(s)}}]
    table = run_course.write_rehearsal(rows, tmp_path, 10.0)
    got = list(csv.DictReader(open(tmp_path / "rehearsal.csv")))
    assert got[0]["notebook"] == "01_x" and float(got[0]["peak_rss_gb"]) == 3.2
    assert int(got[0]["t4_estimate_s"]) == rehearsal.t4_estimate(s)["t4_estimate_s"]
    assert "| 01_x | ok | 3.2 |" in table
    run_course.write_rehearsal([{**rows[0], "notebook": "02_y"}], tmp_path, 10.0)   # a partial rerun (--only 02)
    got = list(csv.DictReader(open(tmp_path / "rehearsal.csv")))
    assert [r["notebook"] for r in got] == ["01_x", "02_y"]


def test_memory_watch_stops_a_kernel_over_budget():
    hog = subprocess.Popen([sys.executable, "-c", "x = bytearray(300 * 2**20); import time; time.sleep(60)"])
    try:
        client = SimpleNamespace(km=SimpleNamespace(provisioner=SimpleNamespace(process=hog)))
        watch = rehearsal.MemoryWatch(client, budget=150 * 2**20, interval=0.05)
        watch.start()
        hog.wait(timeout=30)                      # killed by the watch, not after its 60 s
        watch.stop()
        assert watch.exceeded is not None and watch.exceeded > 150 * 2**20 and watch.peak >= watch.exceeded
        note = rehearsal.watch_note(watch, "03_x", 0.15)
        assert "03_x" in note and "0.15 GB budget" in note
    finally:
        if hog.poll() is None:
            hog.kill()


def test_memory_watch_without_a_kernel_yet_records_nothing():
    watch = rehearsal.MemoryWatch(SimpleNamespace(), budget=1)
    assert watch.sample() is None and rehearsal.kernel_pid(SimpleNamespace(km=None)) is None


def test_gpu_check_without_a_gpu_says_so_and_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "cuda_gpu", lambda: None)
    assert gpu_check.main([]) == 1
    assert "needs a CUDA GPU and found none" in capsys.readouterr().err


def test_gpu_check_writes_measured_times_into_the_t4_column():
    readme = ("| # | notebook | framework | T4 (full) | CPU (lite) | Colab |\n|---|---|---|---|---|---|\n"
              "| 03 | [Transfer](notebooks/03_transfer.ipynb) | Keras | about 9 min (estimate) | 90 s | badge |\n"
              "| 04 | [Focal](notebooks/04_focal.ipynb) | PyTorch | about 3 min (estimate) | 63 s | badge |\n")
    rows = [{"notebook": "03_transfer", "status": "ok", "wall_s": "312.4"},
            {"notebook": "04_focal", "status": "failed", "wall_s": "20"}]
    out = gpu_check.update_readme(readme, rows, "Tesla T4")
    assert "| 5 min 12 s (measured, Tesla T4) |" in out
    assert "about 3 min (estimate)" in out           # a failed run keeps its estimate


def test_the_last_rehearsal_kept_every_notebook_within_colabs_memory_budget():
    """Colab gives about 12.7 GB; each notebook's full mode must stay under 10 GB (build/rehearsal.csv, `make rehearse`)."""
    path = ROOT / "build" / "rehearsal.csv"
    if not path.exists():
        pytest.skip("no build/rehearsal.csv: run `make rehearse`")
    rows = list(csv.DictReader(open(path)))
    over = [f"{r['notebook']}: {r['peak_rss_gb']} GB" for r in rows if r.get("peak_rss_gb") and float(r["peak_rss_gb"]) > 10]
    assert not over, f"full mode over the 10 GB memory budget: {', '.join(over)}"


# ----------------------------------------------------------------------------- float32 copies of whole arrays
# A full-mode split is large (malaria's 27,558 cells at 160 px: 2.1 GB as uint8, 8.5 GB as float32): notebooks
# convert batches or slices to float (the pipelines and the course's predict do it per batch), never a whole split.
import ast  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

WHOLE_ARRAY = re.compile(r"(^|\.)(images|x_train|x_val|x_test|train_x|val_x|test_x|pool_x|raw_x|check_x)$")


def _float_conversions(tree: ast.AST):
    """(operand, line) of every conversion to float: ``.astype(float...)``, ``/ 255``, ``np.asarray/np.array(...,
    dtype=float...)``, ``tf.cast(..., float...)``, ``np.float32(...)``."""
    floaty = lambda node: node is not None and "float" in ast.unparse(node)   # noqa: E731
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, args = node.func.attr, node.args
            dtype = next((k.value for k in node.keywords if k.arg == "dtype"), None)
            if name == "astype" and (floaty(args[0] if args else dtype)):
                yield node.func.value, node.lineno
            elif name in ("asarray", "array") and args and floaty(dtype):
                yield args[0], node.lineno
            elif name == "cast" and len(args) > 1 and floaty(args[1]):
                yield args[0], node.lineno
            elif name in ("float32", "float64") and args:
                yield args[0], node.lineno
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and \
                isinstance(node.right, ast.Constant) and node.right.value in (255, 255.0):
            yield node.left, node.lineno


def _whole_array_conversions(source: str) -> list[str]:
    code = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())                # IPython magics: not Python
    found = []
    for operand, line in _float_conversions(ast.parse(code)):
        if isinstance(operand, ast.Subscript):      # an index or a slice: part of an array
            continue
        text = ast.unparse(operand)
        if WHOLE_ARRAY.search(text):
            found.append(f"line {line}: {text}")
    return found


def test_the_float_check_finds_whole_array_conversions():
    bad = ("x = data.train.images.astype('float32') / 255\ny = np.asarray(x_train, dtype=np.float32)\n"
           "z = tf.cast(test_x, tf.float32)\nw = malaria.val.images / 255.0\n")
    assert len(_whole_array_conversions(bad)) == 4
    good = ("x = x_val[:8].astype('float32') / 255\nds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))\n"
            "cell = data.train.images[i].mean(axis=-1) / 255.0\n%pip install x\n")
    assert _whole_array_conversions(good) == []


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("0*.ipynb")))
def test_no_notebook_converts_a_whole_split_to_float(notebook):
    cells = json.loads((ROOT / "notebooks" / notebook).read_text(encoding="utf-8"))["cells"]
    found = [f"cell {i} {hit}" for i, c in enumerate(cells) if c["cell_type"] == "code"
             for hit in _whole_array_conversions("".join(c["source"]))]
    assert not found, (f"{notebook} converts a whole image array to float (4x its uint8 memory; over Colab's budget "
                       "in full mode): convert per batch (cu.data.to_tf_dataset / to_torch_loader) or a slice. "
                       + "; ".join(found))
