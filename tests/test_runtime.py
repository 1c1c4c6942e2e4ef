"""course_utils.runtime: mode selection, pick, seeding, banner, reporting, cache fallback."""
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

import course_utils as cu
from course_utils import runtime


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("COURSE_MODE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(runtime, "gpu_available", lambda: False)
    return monkeypatch


def test_auto_mode_is_lite_without_gpu_and_full_with_one(clean_env):
    assert runtime.get_mode() == "lite"
    clean_env.setattr(runtime, "gpu_available", lambda: True)
    assert runtime.get_mode() == "full"


def test_ci_means_smoke_unless_mode_is_set(clean_env):
    clean_env.setenv("CI", "true")
    assert runtime.get_mode() == "smoke"
    clean_env.setenv("COURSE_MODE", "lite")
    assert runtime.get_mode() == "lite"
    clean_env.setenv("COURSE_MODE", "auto")  # explicit auto ignores CI
    assert runtime.get_mode() == "lite"


def test_ci_false_is_not_ci(clean_env):
    clean_env.setenv("CI", "false")
    assert not runtime.in_ci()
    assert runtime.get_mode() == "lite"


def test_bad_mode_is_a_clear_error(clean_env):
    clean_env.setenv("COURSE_MODE", "fast")
    with pytest.raises(cu.CourseError, match="smoke, lite, full"):
        runtime.get_mode()
    with pytest.raises(cu.CourseError):
        runtime.set_mode("turbo")


def test_pick_follows_mode(clean_env):
    for mode, want in [("smoke", 1), ("lite", 5), ("full", 25)]:
        clean_env.setenv("COURSE_MODE", mode)
        assert cu.pick(full=25, lite=5, smoke=1) == want
    assert cu.pick(full="a", lite="b", smoke="c", mode="full") == "a"
    with pytest.raises(TypeError):
        cu.pick(full=1, lite=2)  # every mode must be given


def test_set_mode_sets_the_environment(clean_env):
    assert runtime.set_mode("smoke") == "smoke"
    assert os.environ["COURSE_MODE"] == "smoke"


def test_seed_everything_makes_numpy_python_and_torch_repeatable():
    torch = pytest.importorskip("torch")

    def draw():
        return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()

    runtime.seed_everything(123)
    a = draw()
    runtime.seed_everything(123)
    b = draw()
    runtime.seed_everything(124)
    c = draw()
    assert a == b
    assert a != c


def test_setup_prints_one_banner_with_mode_and_device(clean_env, capsys):
    clean_env.setenv("COURSE_MODE", "smoke")
    info = cu.setup(seed=7, data_sources={"malaria": "stand-in"})
    out = capsys.readouterr().out
    assert "mode: smoke" in out and "device: CPU" in out
    assert "malaria <- stand-in" in out
    assert info["mode"] == "smoke" and info["seed"] == 7
    assert info["versions"]["python"].count(".") == 2


def test_report_labels_stand_in_numbers_and_records_them(tmp_path, clean_env, capsys):
    path = tmp_path / "r.jsonl"
    clean_env.setenv("COURSE_REPORT", str(path))
    clean_env.setenv("COURSE_MODE", "smoke")
    cu.report("test accuracy", np.float32(0.5), source="stand-in")
    cu.report("auc", 0.91, source="tfds")
    runtime.record_data_source("malaria", "stand-in")
    out = capsys.readouterr().out
    assert "test accuracy: 0.500  [stand-in data" in out
    assert "auc: 0.910\n" in out
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"kind": "number", "name": "test accuracy", "value": 0.5, "source": "stand-in", "mode": "smoke"}
    assert rows[1]["source"] == "tfds"
    assert rows[2] == {"kind": "source", "name": "malaria", "source": "stand-in"}


def test_report_never_breaks_a_lesson_when_the_file_cannot_be_written(tmp_path, clean_env):
    clean_env.setenv("COURSE_REPORT", str(tmp_path / "missing-dir" / "r.jsonl"))
    with pytest.warns(UserWarning, match="could not record"):
        assert cu.report("x", 1) == 1


def test_cache_dir_falls_back_when_base_is_a_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="not writable"):
        got = runtime.cache_dir("stand-ins", base=blocker)
    assert got.is_dir()
    (got / "probe").write_text("ok")


def test_cache_dir_uses_course_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "c"))
    assert runtime.cache_dir("sub") == tmp_path / "c" / "sub"


def test_importing_course_utils_imports_neither_tensorflow_nor_torch():
    code = ("import sys, course_utils as cu; cu.get_mode; cu.History; cu.check; cu.plots; "
            "cu.train_torch; cu.train_keras; cu.models_torch; cu.models_keras; cu.active; cu.labels; cu.widgets; "
            "cu.standins; cu.standin_cache; cu.pipelines; cu.active_torch; cu.active_keras; cu.model_info; "
            "cu.xai; cu.xai_faithfulness; cu.labeller; "
            "bad = [m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_colab_detection(monkeypatch):
    assert not runtime.in_colab()
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert runtime.in_colab()


def test_torch_threads_sets_and_restores():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with runtime.torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with runtime.torch_threads(None):  # None leaves it alone
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_network_probe_offline_switch_and_refused_port(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    assert runtime.network_problem("localhost") == "COURSE_OFFLINE is set"
    assert not runtime.can_reach("localhost", "127.0.0.1")
    monkeypatch.delenv("COURSE_OFFLINE")
    import socket

    with socket.socket() as free:  # a port nobody listens on: refused at once, with the reason
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    problem = runtime.network_problem("127.0.0.1", port, timeout=2)
    assert problem and "Refused" in problem
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert runtime.can_reach("127.0.0.1", port=server.getsockname()[1], timeout=2)


def test_import_keras_returns_keras_3():
    keras = runtime.import_keras()
    assert keras.__version__.startswith("3.")


def test_native_stderr_filter_keeps_back_known_lines_and_passes_the_rest():
    code = ("import os, course_utils.runtime as r\n"
            "with r.native_stderr_filtered(('oneDNN custom operations are on',)):\n"
            "    os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on. blah\\n')\n"
            "    os.write(2, b'E0000 something real went wrong\\n')\n"
            "os.write(2, b'after\\n')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "oneDNN" not in res.stderr and "something real went wrong" in res.stderr and "after" in res.stderr


def test_importing_tensorflow_prints_no_start_up_noise_on_a_cpu():
    code = "import course_utils as cu; tf = cu.runtime.import_tensorflow(); import keras; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert res.stdout.strip() == "ok", res.stderr
    if shutil.which("nvidia-smi") is None:
        assert res.stderr.strip() == "", res.stderr


# --------------------------------------------------------------------------- the full-mode rehearsal cap
@pytest.fixture
def rehearsal_env(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.delenv("COURSE_REHEARSAL", raising=False)
    return monkeypatch


def test_rehearsal_is_off_unless_set(rehearsal_env):
    assert not runtime.rehearsal()
    for off in ("0", "false", "off", ""):
        rehearsal_env.setenv("COURSE_REHEARSAL", off)
        assert not runtime.rehearsal()
    rehearsal_env.setenv("COURSE_REHEARSAL", "1")
    assert runtime.rehearsal()


@pytest.mark.parametrize("value", ["2", "yes please", "full"])
def test_unknown_rehearsal_value_is_a_clear_error(rehearsal_env, value):
    rehearsal_env.setenv("COURSE_REHEARSAL", value)
    with pytest.raises(cu.CourseError, match="COURSE_REHEARSAL"):
        runtime.rehearsal()


def test_rehearsal_needs_full_mode(rehearsal_env):
    rehearsal_env.setenv("COURSE_REHEARSAL", "1")
    rehearsal_env.setenv("COURSE_MODE", "smoke")
    with pytest.raises(cu.CourseError, match="COURSE_MODE=full"):
        runtime.rehearsal()


def test_banner_shows_the_cap_only_in_a_rehearsal(rehearsal_env, capsys, monkeypatch):
    monkeypatch.setattr(runtime, "gpu_available", lambda: False)
    assert runtime.setup()["rehearsal"] is False
    assert "REHEARSAL" not in capsys.readouterr().out
    rehearsal_env.setenv("COURSE_REHEARSAL", "1")
    assert runtime.setup()["rehearsal"] is True
    assert "REHEARSAL of full mode" in capsys.readouterr().out


def test_gpu_memory_peak_is_none_without_a_gpu_and_the_watch_needs_a_kernel(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert runtime.gpu_memory_peak() is None
    monkeypatch.setenv("COURSE_GPU_REPORT", "1")
    assert runtime._watch_gpu_memory() is False          # outside a Jupyter kernel: nothing to hook


def test_cache_dir_from_many_threads_at_once_never_falls_back(tmp_path):
    """Issue 20: concurrent calls shared one `.write_test` probe; about 10 % fell back to a temp folder with a
    false "not writable"."""
    import concurrent.futures
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")            # a fallback warns: that fails the test
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: runtime.cache_dir("shared", base=tmp_path), range(400)))
    assert set(got) == {tmp_path / "shared"} and list((tmp_path / "shared").iterdir()) == []


def test_network_probe_says_an_unresolvable_name_in_words():
    problem = runtime.network_problem("no-such-host.invalid", timeout=5)   # .invalid never resolves (RFC 2606)
    assert problem and "does not resolve" in problem and "Errno" not in problem
