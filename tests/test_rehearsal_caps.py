"""course_utils.rehearsal: FLOPs per image counted for the T4 estimate, the capped functions installed from outside
(and only in a rehearsal), the one repeat helper, and the work each capped loop records."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from course_utils.models import torch_models as mt
from course_utils.train import torch_engine as tt
from course_utils import rehearsal as rh
from course_utils.rehearsal import flops as work


def test_torch_flops_of_a_linear_and_a_conv_are_counted_by_hand():
    lin = torch.nn.Linear(10, 4)
    assert work.torch_flops_per_image(lin, torch.zeros(3, 10)) == 2 * 10 * 4      # a batch: one row counted
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 16, 2))
    want = 2 * (16 * 8 * 3 * 3 * 3) + 2 * (8 * 16 * 2)   # 4 x 4 image: 16 positions x 8 filters x 27 inputs
    assert work.torch_flops_per_image(conv, torch.zeros(3, 4, 4)) == want


def test_counting_leaves_frozen_batchnorm_in_eval_mode():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model.train()
    model[1].eval()
    work.torch_flops_per_image(model, torch.zeros(1, 3, 8, 8))
    assert model.training and model[0].training and not model[1].training


def _loaders(n=96, batch=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 2, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=g), \
        DataLoader(TensorDataset(x, y), batch_size=32)


def test_torch_fit_honours_the_cap_and_records_the_uncapped_work(rehearsal):
    train, val = _loaders()
    model, info = mt.small_cnn(1, in_chans=3)
    hist = tt.fit(model, train, val, epochs=5, info=info, progress=False, device="cpu")
    assert hist.n_epochs == 1                                   # 5 epochs asked, 1 run
    recs = [json.loads(line) for line in rehearsal.read_text().splitlines()]
    work_recs = [r for r in recs if r["kind"] == "work"]
    train_rec = [r for r in work_recs if r["pass"] == "train"]
    assert train_rec[0]["images"] == 5 * 96 and train_rec[0]["steps"] == 5 * 12     # what full mode does
    assert train_rec[0]["flops_per_image"] > 0 and train_rec[0]["framework"] == "torch"
    assert sum(r["images"] for r in work_recs if r["pass"] == "forward") == 5 * 96   # a validation per epoch


def test_train_one_epoch_stops_after_the_capped_steps(rehearsal):
    train, _ = _loaders()
    model, _ = mt.small_cnn(1, in_chans=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stats = tt.train_one_epoch(model, train, torch.nn.BCEWithLogitsLoss(), opt, task="binary")
    assert stats["steps"] == 2 and stats["n"] == 16


def test_caps_are_what_the_rehearsal_cuts():
    assert (rh.CAPS.steps, rh.CAPS.epochs, rh.CAPS.mc_passes, rh.CAPS.eval_batches) == (2, 1, 2, 4)
    assert rh.CAPS.ig_steps == 32 and rh.CAPS.deletion_steps == 4 and rh.CAPS.randomisation_steps == 2


def test_record_work_appends_one_line(monkeypatch, tmp_path):
    path = tmp_path / "report.jsonl"
    monkeypatch.setenv("COURSE_REPORT", str(path))
    rh.record_work("train", images=0, steps=4, flops_per_image=1e6, what="m")      # nothing done: nothing noted
    assert not path.exists()
    rh.record_work("train", images=100, steps=4, flops_per_image=1e6, what="m", framework="torch")
    rec = json.loads(path.read_text())
    assert rec == {"kind": "work", "pass": "train", "images": 100, "steps": 4, "flops_per_image": 1e6,
                   "model": "m", "framework": "torch"}


@pytest.mark.parametrize("env", [{}, {"COURSE_MODE": "full", "COURSE_REHEARSAL": "1"}])
def test_the_rehearsal_is_loaded_and_installed_only_when_asked(env):
    """A normal session never loads the rehearsal, and no course function or Keras method is replaced."""
    import os
    import subprocess
    import sys

    code = ("import sys, course_utils as cu, keras; from course_utils import train_torch as tt; "
            "print(hasattr(tt.fit, 'rehearsal_original'), 'course_utils.rehearsal' in sys.modules); "
            "cu.runtime.import_tensorflow(); print(hasattr(keras.Model.fit, 'rehearsal_original'))")
    base = {k: v for k, v in os.environ.items() if k not in ("COURSE_REHEARSAL", "COURSE_MODE")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    want = "True" if env else "False"
    assert out.stdout.split() == [want, want, want]


def test_repeat_rows_and_first_outputs_run_the_first_batches_only():
    first = rh.FirstOutputs(2)
    calls = []
    outs = [first(lambda i=i: (calls.append(i), np.full((3, 1), i))[1], 3) for i in range(4)]
    assert calls == [0, 1] and [o[:, 0].tolist() for o in outs] == [[0, 0, 0], [1, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert rh.repeat_rows(torch.arange(3), 5).tolist() == [0, 1, 2, 0, 1]
    assert len(rh.FirstBatches(range(10), 3)) == 3 and list(rh.FirstBatches(range(10), 3)) == [0, 1, 2]


def test_without_the_rehearsal_nothing_is_capped(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_MODE", "smoke")
    monkeypatch.delenv("COURSE_REHEARSAL", raising=False)
    monkeypatch.setenv("COURSE_REPORT", str(tmp_path / "r.jsonl"))
    train, _ = _loaders()
    model, _ = mt.small_cnn(1, in_chans=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    stats = tt.train_one_epoch(model, train, torch.nn.BCEWithLogitsLoss(), opt, task="binary")
    assert stats["steps"] == 12 and not (tmp_path / "r.jsonl").exists()


def test_mc_passes_are_capped_in_a_rehearsal(rehearsal):
    from course_utils.active import torch_outputs as active_torch

    head = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3))
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    mc = active_torch.torch_mc_samples(head, x, mc_passes=20)
    assert mc.shape == (2, 20, 3)
    rec = json.loads(rehearsal.read_text().splitlines()[0])
    assert rec["images"] == 20 * 20 and rec["flops_per_image"] == 2 * (6 * 8 + 8 * 3)


def test_evaluation_runs_the_model_on_the_capped_batches_and_keeps_full_size_outputs(rehearsal):
    calls = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 1))
    model.register_forward_hook(lambda *_: calls.append(1))
    _, val = _loaders(n=200)                                   # 7 batches of 32
    batches = []
    val.collate_fn = (lambda collate: lambda b: batches.append(1) or collate(b))(val.collate_fn)
    result = tt.evaluate(model, val, "binary")
    assert result["n"] == 200 and len(result["probs"]) == 200
    assert len(calls) == 1 + 4               # one pass counting its FLOPs, then rehearsal.CAPS.eval_batches batches
    assert len(batches) == 7                 # the loader is read once: no extra batch just to count FLOPs
    rec = [json.loads(line) for line in rehearsal.read_text().splitlines()][-1]
    assert rec["pass"] == "forward" and rec["images"] == 200 and rec["flops_per_image"] == 2 * 3 * 16 * 16


def test_query_outputs_run_a_model_on_its_first_batches_only_over_all_calls(rehearsal):
    from course_utils.active import torch_outputs as active_torch

    calls = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    net.register_forward_hook(lambda *_: calls.append(1))
    x = np.random.default_rng(0).integers(0, 255, size=(100, 8, 8, 3), dtype=np.uint8)   # images (NHWC uint8)
    for _ in range(3):                                  # 3 calls of 2 batches: 4 batches run, then reused
        out = active_torch.torch_outputs(net, x, needs=("probs", "embeddings"), batch_size=50)
        assert out["probs"].shape == (100, 3) and out["embeddings"].shape == (100, 8)
    assert len(calls) == 1 + 4                          # one pass counting FLOPs (cached), then CAPS.eval_batches
    head, feats = net[1:], np.random.default_rng(1).normal(size=(100, 192)).astype(np.float32)
    calls.clear()
    head.register_forward_hook(lambda *_: calls.append(1))
    for _ in range(3):                                  # a head on features always runs in full
        active_torch.torch_outputs(head, feats, needs=("probs",), batch_size=50)
    assert len(calls) == 1 + 3 * 2


def test_explanations_in_a_rehearsal_run_the_first_batches_and_keep_the_full_size(rehearsal):
    from course_utils.xai import methods as xai

    calls = []
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    model.register_forward_hook(lambda _m, inp, _o: calls.append(len(inp[0])))
    x = torch.rand(300, 3, 8, 8)
    assert xai.predict_logits(model, x).shape == (300, 2)
    assert sum(c for c in calls if c > 1) == 128               # 4 batches of 32 (and a one-image probe)
    assert xai.grad_cam(model, x, target=1).shape == (300, 8, 8)


def test_explanation_passes_are_recorded_with_what_capped_loops_skip(rehearsal):
    """Every forward and gradient pass of an explanation is recorded as work; a capped loop (deletion steps, IG
    steps) also records the passes full mode would add. Counted by hand: FLOPs too."""
    from course_utils.xai import methods as xai
    from course_utils.xai import faithfulness as xai_faithfulness

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    flops = 2 * (64 * 4 * 27) + 2 * 4 * 2                    # 8 x 8 image: conv + linear
    x = torch.rand(6, 3, 8, 8)
    maps = np.random.default_rng(0).random((6, 8, 8))
    di = xai_faithfulness.deletion_insertion(model, x, maps, target=1, steps=20)
    assert len(di.fractions) == 4 + 1                        # CAPS.deletion_steps, not 20
    records = [json.loads(line) for line in rehearsal.read_text().splitlines()]
    forward = sum(r["images"] for r in records if r["kind"] == "work" and r["pass"] == "forward")
    assert forward >= 4 * 6 * 21                             # 2 maps x 2 curves x 21 points per image, as full mode
    assert all(r["flops_per_image"] == flops for r in records if r["kind"] == "work")
    rehearsal.write_text("")
    xai.integrated_gradients(model, x, target=1, steps=128)
    records = [json.loads(line) for line in rehearsal.read_text().splitlines()]
    assert sum(r["images"] for r in records if r["kind"] == "work" and r["pass"] == "train") == 6 * 128


def test_a_new_model_never_reads_the_flop_count_of_a_model_that_is_gone():
    """The count was cached by id(model): a new model that got a freed model's id read its count (and skipped
    its own counting pass). The cache now holds each model weakly."""
    import gc

    from course_utils.rehearsal import flops

    x = torch.zeros(1, 4)
    small = torch.nn.Linear(4, 1)
    assert flops.torch_flops_per_image(small, x) == 2 * 4
    del small
    gc.collect()
    for _ in range(50):                                          # whatever ids come back, each is counted afresh
        big = torch.nn.Linear(4, 3)
        assert flops.torch_flops_per_image(big, x) == 2 * 4 * 3
        del big


def test_a_projects_prediction_pass_runs_its_first_batches_and_still_gives_every_image_a_row(rehearsal, tmp_path):
    from PIL import Image

    from course_utils.project import cycle, folder
    from course_utils.rehearsal.core import CAPS

    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(40):
        Image.fromarray(np.full((12, 12, 3), 6 * i, np.uint8)).save(root / f"im{i:02d}.png")
    store = folder.open_project(root, ["a", "b"], verbose=False)
    model, info = mt.small_cnn(2, in_chans=3)
    result = cycle.RoundResult(1, model, info, None, "binary", 12, 0, tmp_path / "m.pt", tmp_path / "h.csv")
    ids = store.ids("pool")
    seen = []
    real_forward = model.forward
    model.forward = lambda x: (seen.append(len(x)), real_forward(x))[1]
    out = list(cycle.stream_probabilities(store, result, ids, batch_size=4, features=True, workers=0))
    assert np.concatenate([o[0] for o in out]).tolist() == ids.tolist()       # every image has its row
    assert sum(seen) == CAPS.eval_batches * 4 + 1         # only the first batches ran (and one image for FLOPs)
    assert all(o[1].shape == (len(o[0]), 2) and o[3].shape[0] == len(o[0]) for o in out)
    recs = [json.loads(line) for line in rehearsal.read_text().splitlines()]
    assert [r["images"] for r in recs if r["kind"] == "work"] == [len(ids)]  # full mode's work, recorded once
    store.close()


def test_whole_image_inference_runs_its_first_windows_and_records_them_all(rehearsal):
    from course_utils.project import wholeimage
    from course_utils.rehearsal.core import CAPS

    model, _ = mt.small_cnn(2, in_chans=3)
    seen = []
    real_forward = model.forward
    model.forward = lambda x: (seen.append(len(x)), real_forward(x))[1]
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3)).astype(np.uint8)
    tf = lambda a: torch.from_numpy(a.astype(np.float32).transpose(2, 0, 1) / 255)  # noqa: E731
    heat = wholeimage.sliding_heatmap(model, image, patch=16, stride=8, batch_size=4, transform=tf)
    assert heat.shape == (96, 96) and np.isfinite(heat).all()
    assert sum(seen) <= CAPS.eval_batches * 4 + 1                     # 121 windows asked, the first batches run
    recs = [json.loads(line) for line in rehearsal.read_text().splitlines() if '"work"' in line]
    assert [r["images"] for r in recs] == [11 * 11]


def test_files_outside_a_project_are_predicted_from_their_first_batches(rehearsal, tmp_path):
    from PIL import Image

    from course_utils.project import cycle
    from course_utils.rehearsal.core import CAPS

    paths = []
    for i in range(30):
        Image.fromarray(np.full((12, 12, 3), 8 * i, np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    model, info = mt.small_cnn(2, in_chans=3)
    seen = []
    real_forward = model.forward
    model.forward = lambda x: (seen.append(len(x)), real_forward(x))[1]
    result = cycle.RoundResult(1, model, info, None, "binary", 12, 0, tmp_path / "m.pt", tmp_path / "h.csv")
    probs = cycle.predict_files(result, paths, batch_size=2)
    assert probs.shape == (30, 2) and sum(seen) <= CAPS.eval_batches * 2 + 1
    recs = [json.loads(line) for line in rehearsal.read_text().splitlines() if '"work"' in line]
    assert [r["images"] for r in recs] == [30]


def test_a_rehearsal_reports_a_lessons_claim_instead_of_failing_on_two_training_steps(rehearsal, capsys):
    """Its models train for a few steps: `cu.expect` and `cu.check_claim` say "not checked" instead of raising
    (the 04 rehearsal failed on check_claim before it was capped too)."""
    import course_utils as cu
    from course_utils.stats import paired_t_interval

    cu.check_claim("alpha 0.75 finds more", paired_t_interval([0.1, -0.1, 0.0]))
    cu.expect(False, "the loss fell")
    out = capsys.readouterr().out
    assert "[rehearsal] not checked: alpha 0.75 finds more" in out and "[rehearsal] not checked: the loss fell" in out
