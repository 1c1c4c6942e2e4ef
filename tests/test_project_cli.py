"""The `course-project` command line (issue 21): every subcommand's --help, init / add / status / train /
evaluate on a folder of image files, exit codes, and errors that say what to do; also as `python -m`."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from course_utils.project import cli


def _folder(root, n=30):
    from PIL import Image

    rng = np.random.default_rng(0)
    truth = {}
    for i in range(n):
        a = rng.integers(150, 200, (16, 16, 3)).astype(np.uint8)
        if i % 2:
            a[4:12, 4:12] = 20
        rel = f"{'a' if i % 3 else 'b/c'}/img{i:02d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / rel)
        truth[rel] = i % 2
    return truth


@pytest.mark.parametrize("command", ["init", "add", "status", "next", "train", "predict", "evaluate", "report",
                                     "label", "heatmap", "duplicates"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0 and "folder" in capsys.readouterr().out


def test_usage_errors_and_bad_input_have_their_own_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["init", str(tmp_path)])                          # neither --classes nor --labels
    assert done.value.code == 2
    assert cli.main(["status", str(tmp_path)]) == cli.EXIT_BAD_INPUT
    assert "no project at" in capsys.readouterr().err
    assert cli.main(["init", str(tmp_path / "missing"), "--classes", "a", "b"]) == cli.EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err


def test_a_whole_cycle_from_the_command_line(tmp_path, capsys):
    from course_utils.active.labels import LabelStore

    root = tmp_path / "my images"
    truth = _folder(root)
    assert cli.main(["init", str(root), "--classes", "plain", "spot"]) == 0
    assert "new project" in capsys.readouterr().out
    store = LabelStore(root / ".course" / "labels.db")
    pool = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    for ref in list(pool)[:16]:
        store.label(pool[ref], truth[ref])
    hold = store.ids("holdout").tolist()
    for i, ref in zip(hold, store.refs(hold)):
        store.label(i, truth[ref], holdout=True)
    store.close()
    assert cli.main(["train", str(root), "--model", "small_cnn", "--epochs", "2", "--batch-size", "8",
                     "--image-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "round 1: trained on 16 labels" in out and "predicted" in out
    assert cli.main(["status", str(root)]) == 0
    status = capsys.readouterr().out
    assert "16 of" in status and "1 round(s) trained" in status and "evaluated 0 time(s)" in status
    if hold:
        assert cli.main(["evaluate", str(root)]) == 0
        assert "evaluation number 1" in capsys.readouterr().out
        assert cli.main(["evaluate", str(root)]) == cli.EXIT_BAD_INPUT    # a second look needs --again
        assert "already been evaluated 1 time(s)" in capsys.readouterr().err
        assert cli.main(["evaluate", str(root), "--again"]) == 0
        assert "optimistic" in capsys.readouterr().out
    assert cli.main(["report", str(root)]) == 0
    page = root / ".course" / "report" / "index.html"
    assert f"report: {page}" in capsys.readouterr().out
    text = page.read_text()
    assert "Grad-CAM left out" in text and "4 x 4" in text and not (page.parent / "gradcam.png").exists()
    for png in ("training_curves.png", "labels_vs_score.png") + (("holdout_curves.png",) if hold else ()):
        assert png in text and (page.parent / png).stat().st_size > 1000, png
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "late.png")
    assert cli.main(["add", str(root)]) == 0
    assert "1 new image(s) added" in capsys.readouterr().out


def test_too_few_labels_from_the_command_line_say_how_many_more(tmp_path, capsys):
    root = tmp_path / "imgs"
    _folder(root, n=12)
    assert cli.main(["init", str(root), "--labels", "spot", "dark"]) == 0
    capsys.readouterr()
    assert cli.main(["train", str(root), "--model", "small_cnn"]) == cli.EXIT_BAD_INPUT
    assert "too few labels to train" in capsys.readouterr().err


def test_python_m_runs_the_same_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "course_utils.project", "status", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == cli.EXIT_BAD_INPUT and "no project at" in done.stderr


def test_label_writes_a_notebook_that_opens_the_project_by_a_relative_path(tmp_path, capsys):
    import nbformat

    root = tmp_path / "imgs"
    _folder(root, n=12)
    assert cli.main(["init", str(root), "--classes", "plain", "spot"]) == 0
    assert cli.main(["label", str(root), "--no-launch"]) == 0
    out = capsys.readouterr().out
    nb_path = root / ".course" / "label.ipynb"
    assert f"labelling notebook: {nb_path}" in out and "-m jupyterlab" in out and "label.ipynb" in out
    nb = nbformat.read(nb_path, as_version=4)
    code = nb.cells[1].source
    assert "LabelStore('labels.db')" in code and "strategy='random'" in code and "blind" not in code
    assert "1 = plain, 2 = spot" in nb.cells[0].source
    assert cli.main(["label", str(root), "--no-launch", "--holdout"]) == 0
    assert "blind=True" in nbformat.read(nb_path, as_version=4).cells[1].source
    ns: dict = {}
    import os

    here = os.getcwd()
    os.chdir(nb_path.parent)                                       # where JupyterLab starts its kernel
    try:
        exec(code.replace("labeller.display()", ""), ns)           # the cell runs as written
    finally:
        os.chdir(here)
    assert ns["labeller"].current is not None and not ns["labeller"].error
    ns["store"].close()


@pytest.mark.processes
def test_a_round_trip_of_real_commands_takes_under_a_minute(tmp_path):
    """init, labels (an oracle writes them, as keys would), train + predict, the next batch, add, the hold-out
    evaluated once: each step a real `python -m course_utils.project` process, as a user types them."""
    import time

    from course_utils.active.labels import LabelStore

    def run(*args, code=0):
        done = subprocess.run([sys.executable, "-m", "course_utils.project", *map(str, args)], capture_output=True,
                              text=True, timeout=120, env={**__import__("os").environ, "COURSE_MODE": "smoke"})
        assert done.returncode == code, done.stdout + done.stderr
        return done.stdout + done.stderr

    start = time.perf_counter()
    root = tmp_path / "my images"
    truth = _folder(root, n=40)
    assert "new project" in run("init", root, "--classes", "plain", "spot")
    store = LabelStore(root / ".course" / "labels.db")
    for i, ref in zip(store.ids("pool").tolist()[:16], store.refs(store.ids("pool")[:16])):
        store.label(i, truth[ref])
    held = store.ids("holdout").tolist()
    assert held, "40 images give a hold-out (about 4 by their hashes)"
    for i, ref in zip(held, store.refs(held)):
        store.label(i, truth[ref], holdout=True)
    store.close()
    out = run("train", root, "--model", "small_cnn", "--epochs", "2", "--batch-size", "8", "--image-size", "16")
    assert "round 1: trained on 16 labels" in out and "predicted" in out
    nxt = run("next", root, "--batch-size", "3")
    assert "by entropy" in nxt and len(re.findall(r"^\s+\d+\t", nxt, flags=re.M)) == 3
    assert "by coreset" in run("next", root, "--strategy", "coreset", "--batch-size", "2")   # from the embeddings
    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(root / "new.png")
    assert "1 new image(s) added" in run("add", root)
    assert "evaluation number 1" in run("evaluate", root)
    assert "already been evaluated" in run("evaluate", root, code=3)
    assert time.perf_counter() - start < 60


def test_train_no_predict_then_predict_fills_the_pool_and_keeps_the_embeddings(tmp_path, capsys):
    """`train --no-predict` leaves the pool unpredicted; `predict` then fills it with that round's model, and
    predicting again (as after an interrupted pass) rewrites the same rows, never duplicates."""
    from course_utils.active.labels import LabelStore
    from course_utils.project import cli

    root = tmp_path / "imgs"
    truth = _folder(root, n=30)
    assert cli.main(["init", str(root), "--classes", "plain", "spot"]) == 0
    store = LabelStore(root / ".course" / "labels.db")
    for i, ref in zip(store.ids("pool").tolist()[:12], store.refs(store.ids("pool")[:12])):
        store.label(i, truth[ref])
    store.close()
    assert cli.main(["train", str(root), "--model", "small_cnn", "--epochs", "1", "--image-size", "16",
                     "--no-predict"]) == 0
    store = LabelStore(root / ".course" / "labels.db")
    assert store.counts()["predicted"] == 0
    assert not (root / ".course" / "embeddings_round1.npz").exists()
    store.close()
    capsys.readouterr()
    for _ in range(2):
        assert cli.main(["predict", str(root), "--batch-size", "4"]) == 0
        assert "with round 1" in capsys.readouterr().out
    store = LabelStore(root / ".course" / "labels.db")
    unlabelled = store.ids("pool", labelled=False)
    assert store.counts()["predicted"] == len(unlabelled) > 0
    assert set(store.prediction_rounds(unlabelled.tolist()).values()) == {1}
    assert not list((root / ".course").glob("*.partial"))
    with np.load(root / ".course" / "embeddings_round1.npz") as data:
        assert len(data["ids"]) == len(store.ids("pool"))                    # labelled too: Coreset's distances
    store.close()


def test_output_dir_keeps_every_round_file_and_the_hold_out_scores_together(tmp_path, capsys):
    from course_utils.active.labels import LabelStore

    root, out = tmp_path / "imgs", tmp_path / "elsewhere"
    truth = _folder(root, n=40)
    assert cli.main(["init", str(root), "--classes", "plain", "spot"]) == 0
    store = LabelStore(root / ".course" / "labels.db")
    for i, ref in zip(store.ids("pool").tolist()[:16], store.refs(store.ids("pool")[:16])):
        store.label(i, truth[ref])
    held = store.ids("holdout").tolist()
    for i, ref in zip(held, store.refs(held)):
        store.label(i, truth[ref], holdout=True)
    store.close()
    out.mkdir()
    assert cli.main(["train", str(root), "--model", "small_cnn", "--epochs", "1", "--image-size", "64",
                     "--output-dir", str(out), "--evaluate-holdout"]) == 0
    assert (out / "models" / "round1.pt").exists() and (out / "history_round1.csv").exists()
    assert (out / "holdout_round1.npz").exists() and not (root / ".course" / "holdout_round1.npz").exists()
    assert cli.main(["report", str(root), "--output-dir", str(out)]) == 0
    assert (out / "report" / "holdout_curves.png").exists()
    assert (out / "report" / "gradcam.png").stat().st_size > 1000           # at 64 px the map is 8 x 8: shown
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    assert cli.main(["heatmap", str(root), str(tmp_path / "big.png"), "--output-dir", str(out), "--stride", "32"]) == 0
    said = capsys.readouterr().out
    assert "heat map:" in said and "P(spot)" in said and (out / "heatmap_big.png").stat().st_size > 1000
    assert cli.main(["heatmap", str(root), str(tmp_path / "big.png"), "--output-dir", str(out),
                     "--target", "nope"]) == cli.EXIT_BAD_INPUT
    assert "--target must be one of" in capsys.readouterr().err
    assert cli.main(["evaluate", str(root), "--output-dir", str(out), "--again"]) == 0       # round 1, found there
    assert "evaluation number 2" in capsys.readouterr().out
    assert cli.main(["status", str(root), "--output-dir", str(out)]) == 0
    assert "1 round(s) trained" in capsys.readouterr().out
    assert cli.main(["next", str(root), "--output-dir", str(out), "--strategy", "coreset", "--batch-size", "2"]) == 0
    assert "by coreset" in capsys.readouterr().out                      # its embeddings, read from --output-dir
    capsys.readouterr()


def test_duplicates_lists_a_resaved_copy_and_whether_it_crosses_the_split(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "imgs"
    _folder(root)
    first = sorted(p for p in root.rglob("*.png"))[0]
    Image.open(first).save(root / "resaved.jpg", quality=90)
    assert cli.main(["init", str(root), "--classes", "plain", "spot"]) == 0
    capsys.readouterr()
    assert cli.main(["duplicates", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 pair(s) of near-copies") and "resaved.jpg" in out and first.name in out
