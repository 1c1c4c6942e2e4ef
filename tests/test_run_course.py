"""scripts/run_course.py, the main job: executes notebooks, writes build/ and a summary table."""
import csv
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
run_course = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_course)


def _notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


@pytest.mark.slow
def test_main_job_writes_executed_notebooks_html_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # a headless shell's setting must not hide the figures
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_ok.ipynb",
              "import course_utils as cu\nimport os\nassert cu.get_mode() == 'smoke', os.environ.get('COURSE_MODE')",
              "cu.runtime.record_data_source('toy', 'stand-in')\ncu.report('accuracy', 0.75, source='stand-in')",
              "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.title('a figure');")
    _notebook(nbs / "02_broken.ipynb", "raise RuntimeError('boom')")
    out = tmp_path / "build"
    rc = run_course.main(["--notebooks", str(nbs), "--out", str(out), "--mode", "smoke"])
    assert rc == 1  # one notebook failed, and the job says so
    for name in ("01_ok.ipynb", "01_ok.html", "02_broken.ipynb", "summary.md", "summary.csv", "index.html"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["notebook"] for r in rows] == ["01_ok", "02_broken"]
    ok, broken = rows
    assert ok["status"] == "ok" and ok["mode"] == "smoke" and ok["data_source"] == "toy: stand-in"
    assert ok["headline"] == "accuracy=0.750 (stand-in)"
    assert float(ok["wall_s"]) > 0
    assert broken["status"] == "failed" and "boom" in broken["error"]
    executed = nbformat.read(out / "01_ok.ipynb", as_version=4)
    assert any(o.get("text", "").startswith("accuracy: 0.750") for o in executed.cells[1].outputs)
    assert any("image/png" in o.get("data", {}) for o in executed.cells[2].outputs), "figures reach build/"
    assert "(stand-in)" in (out / "summary.md").read_text()
    page = (out / "index.html").read_text()          # the dashboard: a card per notebook, its figure, its numbers
    assert page.count("<section class='card") == 2 and page.count("data:image/png;base64,") == 1
    assert "<td class='v'>0.750</td><td><span class=si>stand-in</span>" in page and "failed: " in page


def test_only_filters_by_number_prefix(tmp_path):
    for name in ("01_a.ipynb", "02_b.ipynb", "02b_c.ipynb", "notes.ipynb"):
        _notebook(tmp_path / name, "1")
    assert [p.name for p in run_course.find_notebooks(tmp_path, None)] == ["01_a.ipynb", "02_b.ipynb", "02b_c.ipynb"]
    assert [p.name for p in run_course.find_notebooks(tmp_path, ["02"])] == ["02_b.ipynb", "02b_c.ipynb"]
    assert [p.name for p in run_course.find_notebooks(tmp_path, ["02_"])] == ["02_b.ipynb"]     # one of the two
    assert [p.name for p in run_course.find_notebooks(tmp_path, ["02b"])] == ["02b_c.ipynb"]
    with pytest.raises(SystemExit, match="no notebooks matched"):
        run_course.find_notebooks(tmp_path, ["07"])
