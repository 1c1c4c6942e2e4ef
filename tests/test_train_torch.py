"""course_utils.train_torch: the engine learns, freezes, skips bad batches, resumes exactly,
and rejects bad input with a clear message. Synthetic tensors and a small CNN on the CPU."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from course_utils import CourseError, History
from course_utils import metrics as M
from course_utils.models import torch_models as mt
from course_utils.train import torch_engine as tt
from course_utils.train import two_phase
from course_utils.train.history import join_histories


def _data(n=96, n_classes=2, size=16, seed=0, multi_label=0):
    """Images whose class is written into channel 1 (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    if multi_label:
        y = (torch.rand(n, multi_label, generator=g) > 0.5).float()
        for j in range(multi_label):
            x[:, j % 3, j::multi_label, :] += y[:, j, None, None] * 1.5
        return x, y
    y = torch.randint(0, n_classes, (n,), generator=g)
    x[:, 1] += (y.float() - (n_classes - 1) / 2)[:, None, None] * 1.5
    return x, y


def _loader(x, y, batch_size=16, shuffle=True):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fit_learns_and_returns_keras_style_history():
    x, y = _data()
    model, info = mt.small_cnn(1, width=8)
    hist = tt.fit(model, _loader(x, y), _loader(*_data(seed=1), shuffle=False), epochs=4, task="binary",
                  info=info, progress=False, seed=0)
    assert isinstance(hist, History) and hist.n_epochs == 4
    for key in ("loss", "accuracy", "lr", "val_loss", "val_accuracy", "val_auc", "val_ap"):
        assert key in hist and len(hist[key]) == 4
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist.best("val_auc") > 0.9
    lrs = hist["lr"]
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] >= 1e-5
    assert hist.meta["device"] == "cpu" and hist.meta["amp"] is False and hist.meta["restored_best"] is True
    assert hist.meta["model"] == info.to_dict() and hist.meta["loss_fn"] == "BCEWithLogitsLoss"


def test_best_state_is_restored_and_early_stopping_stops():
    x, y = _data()
    model = mt.small_cnn(2, width=8)[0]
    for m in model.modules():   # BatchNorm's running statistics would still move (and val_loss with them,
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):   # up or down by the thread count's rounding)
            m.momentum = 0.0
    val = _loader(*_data(seed=1), shuffle=False)
    hist = tt.fit(model, _loader(x, y), val, epochs=5, task="multi-class", lr=0.0, schedule="constant",
                  monitor="val_loss", early_stopping_patience=1, progress=False, seed=0)
    # lr = 0: nothing improves after epoch 1, so training stops after epoch 2 and epoch 1 is restored
    assert hist.meta["stopped_early_at"] == 2 and hist.n_epochs == 2
    assert hist.meta["best_epoch"] == 1 and hist.meta["restored_best"]
    result = tt.evaluate(model, val, "multi-class", loss_fn=torch.nn.CrossEntropyLoss())
    assert result["loss"] == pytest.approx(hist["val_loss"][0], rel=1e-5)


def test_gradients_are_clipped_after_every_step(monkeypatch):
    calls = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        norm = real(params, max_norm, *a, **k)
        calls.append((float(norm), max_norm))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    x, y = _data(n=64)
    tt.fit(mt.small_cnn(1, width=8)[0], _loader(x, y), epochs=1, clip_grad_norm=0.5, progress=False, seed=0)
    assert len(calls) == 4 and all(m == 0.5 for _, m in calls)
    calls.clear()
    tt.fit(mt.small_cnn(1, width=8)[0], _loader(x, y), epochs=1, clip_grad_norm=None, progress=False, seed=0)
    assert calls == []


def test_two_phase_really_freezes_the_backbone_then_fine_tunes_it(monkeypatch):
    snapshots = []
    real_fit = tt.fit

    def recording_fit(model, *a, **k):
        hist = real_fit(model, *a, **k)
        snapshots.append(_state(model))
        return hist

    monkeypatch.setattr(tt, "fit", recording_fit)
    x, y = _data()
    model, info = mt.small_cnn(2, width=8)
    start = _state(model)
    hist = two_phase.fit_two_phase(model, _loader(x, y), _loader(*_data(seed=1), shuffle=False), head_epochs=2,
                            finetune_epochs=2, head_lr=1e-2, finetune_lr=1e-3, task="multi-class", info=info,
                            progress=False, seed=0)
    after_head, after_finetune = snapshots
    backbone = [k for k in start if not k.startswith("classifier.")]
    assert backbone and all(torch.equal(start[k], after_head[k]) for k in backbone), \
        "phase 1 changed the backbone (weights or BatchNorm statistics)"
    assert not torch.equal(start["classifier.1.weight"], after_head["classifier.1.weight"])
    assert any(not torch.equal(after_head[k], after_finetune[k]) for k in backbone if k.endswith("weight"))
    assert all(p.requires_grad for p in model.parameters())
    assert hist.n_epochs == 4 and hist.meta["phase_epochs"] == [2, 2]
    assert hist["lr"][0] == pytest.approx(1e-2) and hist["lr"][2] == pytest.approx(1e-3)
    assert hist.meta["phase1"]["trainable_params"] < hist.meta["phase2"]["trainable_params"]
    assert hist.meta["phase1"]["model"] == info.to_dict() and hist.meta["phase2"]["batchnorm_eval"] is True


def test_nan_pixels_are_skipped_counted_and_weights_stay_finite():
    x, y = _data(n=64)
    x[16:32] = float("nan")  # exactly the second batch (no shuffling)
    model = mt.small_cnn(1, width=8)[0]
    with pytest.warns(UserWarning, match="skipped 1 batch"):
        hist = tt.fit(model, _loader(x, y, shuffle=False), epochs=1, progress=False, seed=0)
    assert hist.meta["skipped_batches"] == 1 and hist.meta["skipped_per_epoch"] == [1]
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert math.isfinite(hist["loss"][0])


def test_non_finite_loss_is_caught_before_the_step():
    calls = {"n": 0}

    def flaky_loss(logits, target):
        calls["n"] += 1
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        return loss * float("inf") if calls["n"] == 2 else loss

    x, y = _data(n=64)
    model = mt.small_cnn(1, width=8)[0]
    with pytest.warns(UserWarning, match="non-finite"):
        hist = tt.fit(model, _loader(x, y), epochs=1, loss_fn=flaky_loss, progress=False, seed=0)
    assert hist.meta["skipped_batches"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_all_batches_bad_is_a_clear_error():
    x, y = _data(n=32)
    x[:] = float("inf")
    with pytest.raises(CourseError, match="every batch was skipped"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt.fit(mt.small_cnn(1, width=8)[0], _loader(x, y), epochs=1, progress=False)


class _Disconnect(Exception):
    pass


class _DisconnectingLoader:
    """A loader that dies in the middle of a given epoch, like a Colab runtime disconnecting."""

    def __init__(self, loader, die_in_epoch, after_batches=2):
        self.loader, self.die_in_epoch, self.after = loader, die_in_epoch, after_batches
        self.epoch = 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.epoch += 1
        for i, batch in enumerate(self.loader):
            if self.epoch == self.die_in_epoch and i == self.after:
                raise _Disconnect()
            yield batch


def test_resume_after_a_disconnect_reaches_the_same_state(tmp_path):
    x, y = _data(n=64)
    val = _loader(*_data(n=32, seed=1), shuffle=False)
    kwargs = dict(epochs=4, task="binary", progress=False)

    torch.manual_seed(0)
    reference = mt.small_cnn(1, width=8)[0]
    ref_hist = tt.fit(reference, _loader(x, y), val, seed=0, restore_best=False, **kwargs)

    ckpt = tmp_path / "run.pt"
    torch.manual_seed(0)
    model = mt.small_cnn(1, width=8)[0]
    with pytest.raises(_Disconnect):
        tt.fit(model, _DisconnectingLoader(_loader(x, y), die_in_epoch=3), val, seed=0, restore_best=False,
               checkpoint_path=ckpt, **kwargs)
    assert ckpt.exists() and not (tmp_path / "run.pt.tmp").exists()

    torch.manual_seed(123)  # a fresh session: different RNG state, fresh model
    resumed = mt.small_cnn(1, width=8)[0]
    hist = tt.fit(resumed, _loader(x, y), val, restore_best=False, checkpoint_path=ckpt, resume=True, **kwargs)
    assert hist.meta["resumed_from_epoch"] == 2 and hist.n_epochs == 4
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6, msg=f"{k} differs")
    np.testing.assert_allclose(hist["loss"], ref_hist["loss"], rtol=1e-6)
    np.testing.assert_allclose(hist["lr"], ref_hist["lr"], rtol=1e-12)


def test_predict_returns_probabilities_in_the_documented_shapes():
    x, y = _data(n=40)
    model = mt.small_cnn(1, width=8)[0]
    probs, labels = tt.predict(model, _loader(x, y, shuffle=False))
    assert probs.shape == (40, 2) and np.allclose(probs.sum(1), 1) and np.array_equal(labels, y.numpy())
    _, _, logits = tt.predict(model, _loader(x, y, shuffle=False), return_logits=True)
    np.testing.assert_allclose(probs, M.probabilities(logits), rtol=1e-5, atol=1e-6)  # the one rule, in metrics
    images_only = DataLoader(x, batch_size=16)
    probs2, labels2 = tt.predict(model, images_only)
    assert labels2 is None and np.allclose(probs, probs2, atol=1e-6)
    xm, ym = _data(n=40, multi_label=3)
    probs3, _ = tt.predict(mt.small_cnn(3, width=8)[0], _loader(xm, ym, shuffle=False))
    assert probs3.shape == (40, 3) and not np.allclose(probs3.sum(1), 1)
    assert model.training  # predict restores the mode it found


def test_multi_label_training_learns():
    x, y = _data(n=128, multi_label=3)
    model = mt.small_cnn(3, width=8)[0]
    hist = tt.fit(model, _loader(x, y), _loader(*_data(n=64, seed=1, multi_label=3), shuffle=False), epochs=3,
                  task="multi-label", lr=3e-3, progress=False, seed=0)
    assert hist["loss"][-1] < hist["loss"][0] and hist.best("val_auc") > 0.7


@pytest.mark.parametrize("task,n_out,labels,match", [
    ("binary", 1, torch.zeros(16, 3), "labels must be \\[batch\\]"),
    ("binary", 1, torch.full((16,), 2), "0 or 1"),
    ("multi-class", 3, torch.full((16,), 5), "labels go up to 5 but the model has only 3 outputs"),
    ("binary", 3, torch.zeros(16), "1 output .* or 2"),
    ("multi-label", 4, torch.zeros(16, 3), "3 columns but the model has 4 outputs"),
    ("multi-label", 3, torch.zeros(16), "\\[batch, n_labels\\]"),
])
def test_bad_input_names_the_mismatch(task, n_out, labels, match):
    x = torch.randn(16, 3, 16, 16)
    with pytest.raises(CourseError, match=match):
        tt.fit(mt.small_cnn(n_out, width=4)[0], _loader(x, labels), epochs=1, task=task, progress=False)


def test_empty_loader_uint8_images_and_bad_task_are_rejected():
    model = mt.small_cnn(1, width=4)[0]
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0)), batch_size=4)
    with pytest.raises(CourseError, match="yields no batches"):
        tt.fit(model, empty, epochs=1, progress=False)
    with pytest.raises(CourseError, match="val_loader yields no batches"):
        tt.fit(model, _loader(*_data(n=16)), empty, epochs=1, progress=False)
    as_uint8 = _loader(torch.zeros(16, 3, 8, 8, dtype=torch.uint8), torch.zeros(16))
    with pytest.raises(CourseError, match="not float"):
        tt.fit(model, as_uint8, epochs=1, progress=False)
    with pytest.raises(CourseError, match="task must be"):
        tt.fit(model, _loader(*_data(n=16)), epochs=1, task="regression", progress=False)
    with pytest.raises(CourseError, match="needs a val_loader"):
        tt.fit(model, _loader(*_data(n=16)), epochs=1, monitor="val_auc", progress=False)


def test_two_phase_keeps_the_head_only_model_when_fine_tuning_never_beats_it(monkeypatch):
    x, y = _data()
    val = _loader(*_data(seed=1), shuffle=False)
    real_fit = tt.fit

    def sabotaged_fit(model, train_loader, *a, **k):
        if k["lr"] == 1e-3:  # phase 2 learns from flipped labels: it can only get worse
            train_loader = _loader(x, 1 - y)
        return real_fit(model, train_loader, *a, **k)

    monkeypatch.setattr(tt, "fit", sabotaged_fit)
    model, info = mt.small_cnn(2, width=8)
    hist = two_phase.fit_two_phase(model, _loader(x, y), val, head_epochs=2, finetune_epochs=2, head_lr=1e-2,
                            finetune_lr=1e-3, task="multi-class", info=info, monitor="val_loss", progress=False,
                            seed=0)
    assert hist.meta["best_phase"] == 1 and hist.meta["best_epoch"] <= 2
    assert hist.meta["phase2"]["best_value"] > hist.meta["phase1"]["best_value"]
    result = tt.evaluate(model, val, "multi-class", loss_fn=torch.nn.CrossEntropyLoss())
    assert result["loss"] == pytest.approx(hist.meta["phase1"]["best_value"], rel=1e-5)


def test_batchnorm_eval_keeps_running_statistics():
    x, y = _data(n=64)
    model = mt.small_cnn(1, width=8)[0]
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    tt.fit(model, _loader(x, y), epochs=1, batchnorm_eval=True, progress=False, seed=0)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    tt.fit(model, _loader(x, y), epochs=1, progress=False, seed=0)
    assert not all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def _fit_small(x, y, ckpt, width=4, **kwargs):
    torch.manual_seed(0)
    model = mt.small_cnn(1, width=width)[0]
    kwargs = {"epochs": 1, "progress": False, "seed": 0, **kwargs}
    return tt.fit(model, _loader(x, y), checkpoint_path=ckpt, **kwargs)


@pytest.mark.parametrize("change", [
    {"lr": 0.1}, {"epochs": 2}, {"seed": 1}, {"weight_decay": 0.5}, {"clip_grad_norm": None},
    {"schedule": "constant"}, {"width": 8}, {"settings": {"data": "chestmnist"}},
    {"loss_fn": torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))},
])
def test_resume_with_changed_settings_starts_fresh_and_says_so(tmp_path, capsys, change):
    """Issue 11: a checkpoint belongs to its settings; a finished run is not silently reloaded for another."""
    x, y = _data(n=32)
    ckpt = tmp_path / "run.pt"
    base = {"loss_fn": torch.nn.BCEWithLogitsLoss(), "settings": {"data": "breastmnist"}}
    _fit_small(x, y, ckpt, **base)
    capsys.readouterr()
    same = _fit_small(x, y, ckpt, resume=True, **base)
    assert same.meta["resumed_from_epoch"] == 1 and same.meta["fresh_start"] is None
    assert capsys.readouterr().out == ""  # progress=False: a plain resume is silent
    hist = _fit_small(x, y, ckpt, resume=True, **{**base, **change})
    out = capsys.readouterr().out.strip()
    assert hist.meta["resumed_from_epoch"] is None and hist.meta["fresh_start"], hist.meta
    assert len(out.splitlines()) == 1 and "other settings" in out and str(ckpt) in out, out
    assert hist.n_epochs == change.get("epochs", 1)  # it trained
    again = _fit_small(x, y, ckpt, resume=True, **{**base, **change})  # the checkpoint now holds the new run
    assert again.meta["resumed_from_epoch"] == change.get("epochs", 1)


def test_a_changed_setting_keeps_the_old_checkpoint_even_when_the_new_run_stops_at_once(tmp_path, capsys):
    """Issue 20, BAD 1: "train longer" (epochs 3 -> 6) with resume=True, stopped in its first epoch, used to leave
    only the new run's epoch-0 file: the three trained epochs were gone. The old run is now kept aside."""
    from course_utils.train import _checkpoint as C

    x, y = _data(n=32)
    ckpt = tmp_path / "run.pt"
    done = _fit_small(x, y, ckpt, epochs=3)
    torch.manual_seed(0)
    model = mt.small_cnn(1, width=4)[0]
    calls = []

    def stop(*_):
        calls.append(1)
        if len(calls) == 2:           # 32 images in batches of 16: the second batch of epoch 1
            raise KeyboardInterrupt   # Ctrl-C (or a Colab disconnect) in the new run's first epoch
    model.register_forward_hook(stop)
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):
        tt.fit(model, _loader(x, y), checkpoint_path=ckpt, epochs=6, resume=True, progress=False, seed=0)
    aside = tmp_path / f"run.settings-{done.meta['settings_key']}.pt"
    out = capsys.readouterr().out
    assert aside.exists() and str(aside) in out and "kept as" in out, out
    assert C.read_checkpoint(aside, torch.device("cpu"))["epoch"] == 3
    assert C.read_checkpoint(ckpt, torch.device("cpu"))["epoch"] == 0        # the new run's own file
    again = _fit_small(x, y, aside, epochs=3, resume=True)                    # the old run resumes from there
    assert again.meta["resumed_from_epoch"] == 3 and again.n_epochs == 3
    _fit_small(x, y, ckpt, epochs=1, resume=True)                             # a third setting: a second name
    assert len(list(tmp_path.glob("run.settings-*.pt"))) == 2


def test_setting_a_checkpoint_aside_never_overwrites_an_earlier_one(tmp_path):
    from course_utils.train import _checkpoint as C

    ckpt = tmp_path / "run.pt"
    for text in ("first", "second"):
        ckpt.write_text(text)
        C.set_aside(ckpt, {"a": 1})
    kept = sorted(p.read_text() for p in tmp_path.glob("run.settings-*.pt"))
    assert kept == ["first", "second"] and not ckpt.exists()


def test_the_settings_see_the_constants_of_a_loss_function():
    from course_utils.train._checkpoint import describe_loss

    def focal(alpha):
        return lambda z, t: cu_focal(z, t, alpha=alpha)

    def cu_focal(z, t, alpha):  # pragma: no cover - only described, never called
        return z

    quarter, also_quarter = (lambda z, t: cu_focal(z, t, alpha=0.25)), (lambda z, t: cu_focal(z, t, alpha=0.25))
    assert describe_loss(quarter) != describe_loss(lambda z, t: cu_focal(z, t, alpha=0.75))
    assert describe_loss(quarter) == describe_loss(also_quarter)
    assert describe_loss(focal(0.25)) != describe_loss(focal(0.75))
    from course_utils.train.losses import FocalLoss

    assert describe_loss(FocalLoss(alpha=0.25)) != describe_loss(FocalLoss(alpha=0.75))
    assert describe_loss(torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))) != \
        describe_loss(torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0])))


def test_a_key_in_the_checkpoint_path_gives_each_setting_its_own_file(tmp_path):
    x, y = _data(n=32)
    pattern = tmp_path / "run_{key}.pt"
    h1 = _fit_small(x, y, pattern)
    h2 = _fit_small(x, y, pattern, lr=0.1)
    h3 = _fit_small(x, y, pattern, resume=True)
    assert h1.meta["checkpoint"] != h2.meta["checkpoint"] and h1.meta["checkpoint"] == h3.meta["checkpoint"]
    assert h1.meta["checkpoint"] == str(tmp_path / f"run_{h1.meta['settings_key']}.pt")
    assert h3.meta["resumed_from_epoch"] == 1 and len(list(tmp_path.glob("run_*.pt"))) == 2
    assert tt.settings_key(h1.meta["settings"]) == h1.meta["settings_key"] and len(h1.meta["settings_key"]) == 8


def test_a_checkpoint_without_settings_is_not_resumed(tmp_path, capsys):
    from course_utils.train import _checkpoint as C
    from course_utils.train._records import BestEpoch

    x, y = _data(n=32)
    ckpt = tmp_path / "old.pt"
    h = _fit_small(x, y, ckpt)
    h.meta.pop("settings")
    state = C.read_checkpoint(ckpt, torch.device("cpu"))
    assert state["settings"] == _fit_small(x, y, tmp_path / "other.pt").meta["settings"]
    state.pop("settings")
    model = mt.small_cnn(1, width=4)[0]
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    C.save_checkpoint(ckpt, 1, 1, model, opt, sched, torch.amp.GradScaler("cpu", enabled=False), h,
                      BestEpoch(None), 0, _loader(x, y))
    capsys.readouterr()
    hist = _fit_small(x, y, ckpt, resume=True)
    assert hist.meta["fresh_start"] == "the checkpoint records no settings (an older one)"
    assert "other settings" in capsys.readouterr().out


def test_two_phase_checkpoints_carry_the_whole_recipe(tmp_path):
    x, y = _data(n=32)
    kwargs = dict(head_epochs=1, finetune_epochs=1, task="multi-class", progress=False, seed=0)

    def run(**k):
        torch.manual_seed(0)
        model, info = mt.small_cnn(2, width=4)
        return two_phase.fit_two_phase(model, _loader(x, y), _loader(x, y, shuffle=False), info=info,
                                checkpoint_path=tmp_path / "ft_{key}.pt", **{**kwargs, **k})

    a = run()
    b = run(head_lr=1e-2)   # only phase 1 changed: phase 2 starts from other weights, so it is another run too
    assert a.meta["phase2"]["checkpoint"] != b.meta["phase2"]["checkpoint"]
    c = run(resume=True)
    assert c.meta["phase1"]["resumed_from_epoch"] == 1 and c.meta["phase2"]["resumed_from_epoch"] == 1
    assert len(list(tmp_path.glob("ft_*_phase*.pt"))) == 4


def test_clipping_is_counted():
    x, y = _data(n=64)
    tight = tt.fit(mt.small_cnn(1, width=8)[0], _loader(x, y), epochs=1, clip_grad_norm=1e-6, progress=False, seed=0)
    loose = tt.fit(mt.small_cnn(1, width=8)[0], _loader(x, y), epochs=1, clip_grad_norm=float("inf"),
                   progress=False, seed=0)
    assert tight["clipped"] == [1.0] and loose["clipped"] == [0.0]   # share of the 4 steps clipping shortened
    assert loose["grad_norm"][0] > 0
    off = tt.fit(mt.small_cnn(1, width=8)[0], _loader(x, y), epochs=1, clip_grad_norm=None, progress=False, seed=0)
    assert "clipped" not in off and "grad_norm" not in off


def test_the_plain_loop_of_notebook_04_gives_the_engines_weights():
    """Issue 12: zero_grad, forward, loss, backward, clip, step, scheduler.step with AdamW (no decay on
    biases and norms) and CosineAnnealingLR is what fit does, to float precision, for one epoch."""
    x, y = _data(n=80)
    lr, epochs = 3e-3, 2

    torch.manual_seed(0)
    model = mt.small_cnn(1, width=8)[0]
    loader = _loader(x, y)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader), eta_min=0.01 * lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb.float().unsqueeze(1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            scheduler.step()

    torch.manual_seed(0)
    engine = mt.small_cnn(1, width=8)[0]
    tt.fit(engine, _loader(x, y), epochs=epochs, lr=lr, weight_decay=1e-4, schedule="cosine", min_lr_ratio=0.01,
           clip_grad_norm=1.0, loss_fn=loss_fn, amp=False, device="cpu", progress=False)
    for k, v in engine.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=1e-6, msg=f"{k} differs")


# ---------------------------------------------------------------------------- the parts of the engine
def test_train_one_epoch_and_evaluate_compose_by_hand():
    x, y = _data(n=64)
    val = _loader(*_data(n=48, seed=1), shuffle=False)
    model, _ = mt.small_cnn(2, width=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    before = tt.evaluate(model, val, "multi-class", loss_fn=loss_fn)
    for _ in range(3):
        stats = tt.train_one_epoch(model, _loader(x, y), loss_fn, optimizer, task="multi-class")
    assert set(stats) == {"loss", "accuracy", "grad_norm", "clipped", "steps", "skipped", "n"}
    assert stats["n"] == 64 and stats["skipped"] == 0 and math.isnan(stats["grad_norm"])  # no clipping asked
    after = tt.evaluate(model, val, "multi-class", loss_fn=loss_fn)
    assert after["loss"] < before["loss"] and after["n"] == 48
    assert after["accuracy"] == pytest.approx(M.accuracy(after["y_true"], after["probs"], "multi-class"))
    assert after["auc"] == pytest.approx(M.roc_auc(after["y_true"], after["probs"], "multi-class"))
    assert np.array_equal(after["y_pred"], after["probs"].argmax(1))
    default = tt.evaluate(model, val, "multi-class")  # no loss_fn: the default loss, the same keys
    assert set(default) == set(after) and default["loss"] == pytest.approx(after["loss"], rel=1e-6)


def test_evaluate_keys_are_documented_and_stable():
    x, y = _data(n=40)
    result = tt.evaluate(mt.small_cnn(1, width=4)[0], _loader(x, y, shuffle=False), "binary",
                         class_names=["benign", "malignant"])
    assert set(result) == {"n", "loss", "accuracy", "macro_f1", "auc", "ap", "recall_benign", "recall_malignant",
                           "probs", "y_true", "y_pred"}
    assert result["probs"].shape == (40, 2) and result["y_pred"].shape == (40,)


def test_fit_takes_the_device_from_runtime(monkeypatch):
    asked = []

    def fake_device(prefer=None):
        asked.append(prefer)
        return "cpu"

    monkeypatch.setattr(tt, "torch_device", fake_device)
    x, y = _data(n=32)
    hist = tt.fit(mt.small_cnn(1, width=4)[0], _loader(x, y), _loader(x, y), epochs=1, progress=False, seed=0)
    assert asked and hist.meta["device"] == "cpu"


def _teacher_loader(x, y, teacher, batch_size=16):
    return DataLoader(TensorDataset(x, y, teacher), batch_size=batch_size, shuffle=False)


def test_extra_per_sample_targets_reach_the_loss():
    """(x, y, teacher_logits) batches: the loss sees the teacher's logits, on the device, batch by batch."""
    x, y = _data(n=64)
    teacher = torch.randn(64, 2, generator=torch.Generator().manual_seed(5)) * 3
    seen = []

    def distill(logits, target, teacher_logits):
        seen.append((tuple(teacher_logits.shape), teacher_logits.device.type))
        soft = torch.nn.functional.kl_div(torch.log_softmax(logits, 1), torch.softmax(teacher_logits, 1),
                                          reduction="batchmean")
        return 0.5 * torch.nn.functional.cross_entropy(logits, target) + 0.5 * soft

    def ignoring(logits, target, teacher_logits):
        return torch.nn.functional.cross_entropy(logits, target)

    loader = _teacher_loader(x, y, teacher)
    runs = {}
    for name, loss_fn in (("distill", distill), ("ignore", ignoring)):
        torch.manual_seed(0)  # the same initial weights for every run
        model = mt.small_cnn(2, width=8)[0]
        hist = tt.fit(model, loader, loader, epochs=2, task="multi-class", loss_fn=loss_fn, monitor=None,
                      progress=False, seed=0)
        runs[name] = (model, hist)
    # training: 2 epochs x 4 batches of 16; validation: the whole set once per epoch
    assert seen == [((16, 2), "cpu")] * 4 + [((64, 2), "cpu")] + [((16, 2), "cpu")] * 4 + [((64, 2), "cpu")]
    (m_d, h_d), (m_i, h_i) = runs["distill"], runs["ignore"]
    assert any(not torch.equal(a, b) for a, b in zip(m_d.state_dict().values(), m_i.state_dict().values()))
    assert h_d["loss"] != h_i["loss"]
    # evaluate passes the extra tensors too: its loss is the distillation loss on every sample
    m_d.eval()
    with torch.no_grad():
        expected = float(distill(m_d(x), y, teacher))
    assert tt.evaluate(m_d, loader, "multi-class", loss_fn=distill)["loss"] == pytest.approx(expected, rel=1e-5)
    assert h_d["val_loss"][-1] == pytest.approx(expected, rel=1e-5)
    # plain (x, y) batches are unchanged: the same loss, called with two arguments
    torch.manual_seed(0)
    plain_loader = _loader(x, y, shuffle=False)
    plain = tt.fit(mt.small_cnn(2, width=8)[0], plain_loader, plain_loader, epochs=2, task="multi-class",
                   loss_fn=lambda logits, target: ignoring(logits, target, None), monitor=None, progress=False, seed=0)
    np.testing.assert_allclose(plain["loss"], h_i["loss"], rtol=1e-6)
    np.testing.assert_allclose(plain["val_loss"], h_i["val_loss"], rtol=1e-6)


def test_extra_targets_keep_the_batch_checks():
    x, y = _data(n=32)
    teacher = torch.randn(32, 2)
    kl = lambda logits, target, t: torch.nn.functional.cross_entropy(logits, target)  # noqa: E731
    with pytest.raises(CourseError, match="labels go up to 5 but the model has only 2 outputs"):
        tt.fit(mt.small_cnn(2, width=4)[0], _teacher_loader(x, torch.full((32,), 5), teacher), epochs=1,
               task="multi-class", loss_fn=kl, progress=False)
    with pytest.raises(CourseError, match="not float"):
        tt.fit(mt.small_cnn(2, width=4)[0], _teacher_loader(x.to(torch.uint8), y, teacher), epochs=1,
               task="multi-class", loss_fn=kl, progress=False)
    short = [(x[:16], y[:16], teacher[:8])]  # a loader whose extra tensor is not per sample
    with pytest.raises(CourseError, match="extra tensor 1 .* has 8 rows"):
        tt.fit(mt.small_cnn(2, width=4)[0], short, epochs=1, task="multi-class", loss_fn=kl, progress=False)
    with pytest.raises(CourseError, match="extra tensor\\(s\\) after the labels"):
        tt.fit(mt.small_cnn(2, width=4)[0], _teacher_loader(x, y, teacher), epochs=1, task="multi-class",
               loss_fn=torch.nn.CrossEntropyLoss(), progress=False)


def test_fit_two_phase_refuses_a_single_batchnorm_switch():
    x, y = _data(n=32)
    with pytest.raises(CourseError, match="finetune_batchnorm_eval"):
        two_phase.fit_two_phase(mt.small_cnn(2, width=4)[0], _loader(x, y), head_epochs=1, finetune_epochs=1,
                         task="multi-class", batchnorm_eval=True, progress=False)


def test_fit_trains_any_module_without_builder_info():
    """(moved from the removed course_utils.train) a plain nn.Sequential: no info, the output count from its Linear."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(64, 4)).astype("float32")
    labels = (feats[:, 0] > 0).astype("int64")
    images = torch.from_numpy(feats).reshape(-1, 1, 2, 2)  # the engine expects N x C x H x W
    loader = DataLoader(TensorDataset(images, torch.from_numpy(labels)), batch_size=16)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    hist = tt.fit(model, loader, loader, epochs=2, task="multi-class", progress=False, seed=0)
    assert isinstance(hist, History) and hist.n_epochs == 2
    assert {"loss", "val_loss", "val_accuracy"} <= set(hist.metrics)
    assert hist.meta["model"] == {"arch": "Sequential"} and hist.meta["loss_fn"] == "CrossEntropyLoss"



def test_the_engine_returns_the_shared_history():
    """(moved from the removed course_utils.train) one History class for every fit of the course."""
    assert tt.History is History


def test_join_histories_puts_the_phases_one_after_the_other():
    a, b = History(), History()
    a.append(loss=1.0, val_auc=0.6)
    b.append(loss=0.5, val_auc=0.7)
    b.append(loss=0.4, val_auc=0.8)
    b.meta["best_epoch"] = 2
    joined = join_histories(a, b)
    assert joined["loss"] == [1.0, 0.5, 0.4] and joined["val_auc"] == [0.6, 0.7, 0.8] and joined.meta["best_epoch"] == 2


def test_recalibrate_batchnorm_gives_the_statistics_of_the_clean_images():
    x, y = _data(n=64)
    model = mt.small_cnn(1, width=4)[0]
    tt.fit(model, _loader(x * 3 + 2, y), epochs=1, progress=False, seed=0)   # trained on shifted, scaled images
    bn, conv = model.features[1], model.features[0]
    with torch.no_grad():
        feats = conv(x)                                                       # what the first BatchNorm sees
    model.eval()
    assert tt.recalibrate_batchnorm(model, _loader(x, y, batch_size=64, shuffle=False)) == 3
    torch.testing.assert_close(bn.running_mean, feats.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, feats.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and not model.training                          # settings and mode restored
    frozen = mt.small_cnn(1, width=4)[0]
    for p in frozen.features.parameters():
        p.requires_grad_(False)
    before = frozen.features[1].running_mean.clone()
    assert tt.recalibrate_batchnorm(frozen, _loader(x, y)) == 0                # frozen layers keep their statistics
    assert torch.equal(frozen.features[1].running_mean, before)


def test_recalibrated_batchnorm_removes_the_shift_from_augmented_training():
    """Trained on brighter images, a model's outputs on clean images are shifted; recalibration on clean images
    brings them back to what the model gives its own (brighter) training images."""
    x, y = _data(n=96)
    torch.manual_seed(0)                  # the initial weights, not whatever earlier tests left in torch's RNG
    model = mt.small_cnn(1, width=8)[0]
    tt.fit(model, _loader(x + 1.0, y), epochs=3, progress=False, seed=0)
    with torch.no_grad():
        model.eval()
        on_train = torch.sigmoid(model(x + 1.0)).mean()
        before = torch.sigmoid(model(x)).mean()
        tt.recalibrate_batchnorm(model, _loader(x, y))
        after = torch.sigmoid(model(x)).mean()
    assert abs(after - on_train) < abs(before - on_train)


# ---------------------------------------------------------------------------- accuracy and lr schedule by hand
def test_epoch_sums_accuracy_by_hand_for_every_head():
    from course_utils.train._records import EpochSums

    dev = torch.device("cpu")
    single = EpochSums(dev, "binary")                        # one logit: decided at 0, targets float [B, 1]
    single.add(torch.tensor(0.5), torch.tensor([[1.2], [-0.3], [0.4]]), torch.tensor([[1.0], [1.0], [0.0]]))
    single.add(torch.tensor(1.0), torch.tensor([[-2.0]]), torch.tensor([[0.0]]))
    r = single.result()
    assert r["accuracy"] == pytest.approx(2 / 4) and r["n"] == 4 and r["steps"] == 2
    assert r["loss"] == pytest.approx((0.5 * 3 + 1.0 * 1) / 4)    # per-image mean, not per-batch
    soft = EpochSums(dev, "binary")                           # two logits: argmax, long targets [B]
    soft.add(torch.tensor(0.2), torch.tensor([[0.1, 0.3], [2.0, -1.0], [0.0, 0.5]]), torch.tensor([1, 1, 1]))
    assert soft.result()["accuracy"] == pytest.approx(2 / 3)
    multi = EpochSums(dev, "multi-class")
    multi.add(torch.tensor(0.2), torch.tensor([[0.1, 0.3, 0.2], [2.0, -1.0, 3.0]]), torch.tensor([1, 0]))
    assert multi.result()["accuracy"] == pytest.approx(1 / 2)
    multi.add(torch.tensor(0.2), torch.tensor([[0.0, 0.3, 0.9]]), torch.tensor([1]))     # sums over batches
    assert multi.result()["accuracy"] == pytest.approx(1 / 3)
    multi.add_norm(torch.tensor(3.0), 2.0)
    multi.add_norm(torch.tensor(1.0), 2.0)
    multi.add_norm(torch.tensor(float("inf")), 2.0)                                      # a skipped AMP step
    r = multi.result()
    assert r["grad_norm"] == pytest.approx(2.0) and r["clipped"] == 1                   # mean of the finite norms
    ml = EpochSums(dev, "multi-label")                        # every label decision counts
    ml.add(torch.tensor(0.3), torch.tensor([[1.0, -1.0, 2.0], [-0.5, 0.5, 0.1]]),
           torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
    r = ml.result()
    assert r["accuracy"] == pytest.approx(4 / 6) and r["n"] == 2
    assert math.isnan(r["grad_norm"]) and r["clipped"] == 0 and r["skipped"] == 0


@pytest.mark.parametrize("min_ratio", [0.0, 0.05, 0.3])
def test_cosine_schedule_equals_torchs_cosine_annealing_down_to_the_floor(min_ratio):
    lr, steps = 0.02, 12
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler, _ = tt._optimization(model, lr, 1e-4, "cosine", min_ratio, steps, torch.device("cpu"),
                                               False)
    peer_opt = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=lr)
    peer = torch.optim.lr_scheduler.CosineAnnealingLR(peer_opt, T_max=steps, eta_min=min_ratio * lr)
    ours, theirs = [], []
    for _ in range(steps):
        ours.append(optimizer.param_groups[0]["lr"])
        theirs.append(peer_opt.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        peer_opt.step()
        peer.step()
    ours.append(optimizer.param_groups[0]["lr"])
    theirs.append(peer_opt.param_groups[0]["lr"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-15)
    assert ours[0] == lr and ours[-1] == pytest.approx(min_ratio * lr, abs=1e-15)
    assert ours[steps // 2] == pytest.approx(lr * (1 + min_ratio) / 2)               # half way: the mean
    for _ in range(3):                                                                # past the end: the floor
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(min_ratio * lr, abs=1e-15)
    assert all(g["lr"] == optimizer.param_groups[0]["lr"] for g in optimizer.param_groups)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]      # no decay on the bias
    assert [len(g["params"]) for g in optimizer.param_groups] == [1, 1]


def test_constant_schedule_and_a_zero_step_cosine():
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler, scaler = tt._optimization(model, 0.01, 0.0, "constant", 0.1, 5, torch.device("cpu"), False)
    for _ in range(8):
        assert optimizer.param_groups[0]["lr"] == 0.01
        optimizer.step()
        scheduler.step()
    assert not scaler.is_enabled()
    f = tt._cosine(0, 0.1)                           # no steps: already at the floor, no division by zero
    assert f(0) == 1.0 and f(1) == pytest.approx(0.1)


@pytest.mark.processes
def test_a_real_full_disk_while_checkpointing_says_so(tiny_disk):
    """Issue 20: on a real full disk torch raises `enforce fail ... unexpected pos`, not OSError(ENOSPC), so the
    disk-full message never fired (the old test faked the OSError). Both write paths now share integrity.disk_full."""
    done = tiny_disk('''
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        from course_utils import CourseError
        from course_utils.models import torch_models as mt
        from course_utils.train import torch_engine as tt
        torch.manual_seed(0)
        model = mt.small_cnn(1, width=16)[0]
        x, y = torch.rand(32, 3, 28, 28), torch.randint(0, 2, (32,)).float()
        try:
            tt.fit(model, DataLoader(TensorDataset(x, y), batch_size=16), epochs=1, progress=False,
                   checkpoint_path=DISK / "run.pt")
        except CourseError as exc:
            print("ERROR", exc)
        print("LEFT", sorted(p.name for p in DISK.iterdir() if p.suffix != ".lock"))   # the run lock stays
    ''', size_kb=16)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ERROR could not write the checkpoint" in done.stdout and "The disk is full" in done.stdout, done.stdout
    assert "LEFT []" in done.stdout, done.stdout


_SAME_RUN = '''
import sys, time
import torch
from torch.utils.data import DataLoader, Dataset
from course_utils import CourseError
from course_utils.models import torch_models as mt
from course_utils.train import torch_engine as tt


class Slow(Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        time.sleep(float(sys.argv[2]))
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, 16, 16, generator=g), torch.tensor(float(i % 2))


torch.manual_seed(0)
model = mt.small_cnn(1, width=8, depth=2)[0]
try:
    h = tt.fit(model, DataLoader(Slow(), batch_size=8), epochs=2, progress=False, seed=0,
               checkpoint_path=sys.argv[1], resume=True)
    print("DONE", h.n_epochs, flush=True)
except CourseError as exc:
    print("ERROR", exc, flush=True)
'''


@pytest.mark.processes
def test_two_runs_on_one_checkpoint_the_second_is_refused_and_nothing_is_overwritten(tmp_path):
    """Issue 20: two runs with the same checkpoint key shared one `.tmp` (a raw FileNotFoundError) and one said
    "the previous checkpoint is unchanged", which was false. Now a run holds the checkpoint's lock: a second one
    (a real second process) is refused at once, and once the first is done the same call resumes its result."""
    import subprocess
    import sys
    import time

    script = tmp_path / "same_run.py"
    script.write_text(_SAME_RUN)
    ckpt = tmp_path / "run.pt"
    first = subprocess.Popen([sys.executable, str(script), str(ckpt), "0.05"], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:      # the first run has written its initial state
        time.sleep(0.05)
    second = subprocess.run([sys.executable, str(script), str(ckpt), "0"], capture_output=True, text=True,
                            timeout=120)
    out_first = first.communicate(timeout=300)[0]
    assert "DONE 2" in out_first, out_first
    assert "ERROR another run is training into" in second.stdout and "process " in second.stdout, second.stdout
    assert not list(tmp_path.glob("*.tmp")), list(tmp_path.iterdir())
    third = subprocess.run([sys.executable, str(script), str(ckpt), "0"], capture_output=True, text=True,
                           timeout=120)
    assert "DONE 2" in third.stdout, third.stdout + third.stderr[-2000:]


def test_checkpoint_temporary_files_are_unique_per_writer(tmp_path, monkeypatch):
    from pathlib import Path

    names = []
    real = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (
        names.append(Path(f).name) if isinstance(f, (str, Path)) else None, real(obj, f, *a, **k)))
    model = mt.small_cnn(1, width=8, depth=2)[0]
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 2, (16,)).float()
    tt.fit(model, DataLoader(TensorDataset(x, y), batch_size=8), epochs=1, progress=False,
           checkpoint_path=tmp_path / "a.pt")
    assert len(names) == 2 and len(set(names)) == 2, names              # the initial state, then epoch 1
    assert all(n.startswith("a.pt.") and n.endswith(".tmp") for n in names), names


# ---------------------------------------------------------------- issue 20: the checkpoint helpers, message by message
def test_keep_says_where_the_run_stopped_and_which_checkpoint_is_good(tmp_path):
    from pathlib import Path

    from course_utils.train._checkpoint import RunProgress

    def history(n):
        h = History()
        for e in range(n):
            h.append(train_loss=1.0 / (e + 1))
        return h

    ckpt = Path(tmp_path / "run.pt")
    fresh = RuntimeError("boom")
    RunProgress(ckpt, 3, None).keep(fresh, history(0))
    assert fresh.history.n_epochs == 0 and str(fresh) == "boom" and not getattr(fresh, "__notes__", None)

    run = RunProgress(ckpt, 5, 2)
    run.epoch, run.phase = 3, "validating"
    err = CourseError("NaN in the loss.")
    run.keep(err, history(2))
    assert str(err) == ("NaN in the loss. Fit stopped in epoch 3/5 (validating); the History of the 2 finished "
                        "epoch(s) is attached as exc.history (e.g. `except CourseError as exc: history = exc.history`)"
                        f"; the last good checkpoint is {ckpt} (after epoch 2): fit(..., checkpoint_path="
                        f"{str(ckpt)!r}, resume=True) continues from it.")
    assert err.history.n_epochs == 2
    two = CourseError("first", "second")
    run.keep(two, history(1))
    assert two.args[1] == "second" and two.args[0].startswith("first. Fit stopped")

    none = RunProgress(None, 4, None)
    none.phase = "starting"
    other = ValueError("bad value")
    none.keep(other, history(1))
    assert str(other) == "bad value" and other.__notes__ == [
        "fit stopped in starting; the History of the 1 finished epoch(s) is attached as exc.history (e.g. `except "
        "CourseError as exc: history = exc.history`); no checkpoint was saved (pass checkpoint_path= to be able to "
        "resume)."]
    unsaved = RunProgress(ckpt, 4, None)
    unsaved.epoch, unsaved.phase = 1, "training"
    e3 = CourseError("x")
    unsaved.keep(e3, history(1))
    assert str(e3).endswith(f"; no checkpoint was written to {ckpt}.") and "Fit stopped in epoch 1/4 (training)" in str(e3)
    saved_only = RunProgress(ckpt, 4, 0)                    # only the initial state saved: nothing to resume
    e4 = CourseError("y")
    saved_only.keep(e4, history(0))
    assert str(e4) == "y"
    one_saved = RunProgress(ckpt, 4, 1)                     # an epoch saved, none in this call's History
    e5 = CourseError("z")
    one_saved.keep(e5, history(0))
    assert "(after epoch 1)" in str(e5) and "z. Fit stopped in starting;" in str(e5)
    frozen = KeyboardInterrupt()                            # an exception that takes no attribute: still noted
    RunProgress(ckpt, 2, 1).keep(frozen, history(1))
    assert frozen.history.n_epochs == 1


def test_set_aside_names_and_never_overwrites(tmp_path, monkeypatch):
    import os

    from course_utils.train import _checkpoint as C

    plain = tmp_path / "run"                                 # no suffix: .pt
    plain.write_text("a")
    aside = C.set_aside(plain, None)
    assert aside.name == "run.settings-unknown.pt" and aside.read_text() == "a" and not plain.exists()
    plain.write_text("b")
    assert C.set_aside(plain, None).name == "run.settings-unknown-2.pt"
    keyed = tmp_path / "k.ckpt"
    keyed.write_text("c")
    assert C.set_aside(keyed, {"lr": 0.1}).name == f"k.settings-{C.settings_key({'lr': 0.1})}.ckpt"

    def no_links(src, dst):
        raise PermissionError(1, "no hard links on this drive")

    monkeypatch.setattr(os, "link", no_links)               # FAT / network drives: a rename to a free name
    plain.write_text("d")
    moved = C.set_aside(plain, None)
    assert moved.name == "run.settings-unknown-3.pt" and moved.read_text() == "d"
    assert sorted(p.read_text() for p in tmp_path.glob("run.settings-unknown*.pt")) == ["a", "b", "d"]


def test_settings_helpers():
    import numpy as np

    from course_utils.train import _checkpoint as C

    assert C._plain(np.float32(0.5)) == 0.5 and isinstance(C._plain(np.int64(3)), int)
    assert C._plain((1, np.float64(0.1), [True])) == [1, 0.1, [True]]
    assert C._plain({1: np.int32(2)}) == {"1": 2}
    assert C._plain(torch.arange(40.0).reshape(2, 20)) == {"shape": [2, 20], "values": [float(i) for i in range(32)]}
    assert C._plain(object()) == "object" and C._plain(1 / 3) == 0.3333333333
    s = {"lr": 0.1, "epochs": 3, "seed": 1}
    assert C.keyed_path("runs/m_{key}.pt", s) == f"runs/m_{C.settings_key(s)}.pt" and C.keyed_path(None, s) is None
    assert C.keyed_path("runs/m.pt", s) == "runs/m.pt" and len(C.settings_key(s)) == 8
    assert C.settings_diff(s, dict(s)) == ""
    assert C.settings_diff(s, {**s, "seed": None}) == ""                       # any stored seed is accepted
    assert C.settings_diff(None, s) == "the checkpoint records no settings (an older one)"
    assert C.settings_diff(s, {**s, "lr": 0.2}) == "lr 0.1 -> 0.2"
    many = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    assert C.settings_diff(many, {k: v + 1 for k, v in many.items()}) == "a 1 -> 2, b 2 -> 3, c 3 -> 4 and 2 more"
    assert C.settings_diff({"m": "x" * 50}, {"m": "y"}) == f"m {'x' * 37}... -> y"


def test_run_settings_name_every_setting_and_the_trainable_parameters():
    from course_utils.train import _checkpoint as C

    model, info = mt.small_cnn(1, width=8, depth=2)
    loader = DataLoader(TensorDataset(torch.rand(8, 3, 8, 8), torch.zeros(8)), batch_size=4)
    kw = dict(model=model, info=info, loss_fn=torch.nn.BCEWithLogitsLoss(), task="binary", epochs=3, lr=0.01,
              weight_decay=1e-4, schedule="cosine", min_lr_ratio=0.1, clip_grad_norm=1.0, batchnorm_eval=False,
              monitor="val_auc", seed=7, train_loader=loader)
    s = C.run_settings(**kw)
    assert set(s) == {"task", "epochs", "lr", "weight_decay", "schedule", "min_lr_ratio", "clip_grad_norm",
                      "batchnorm_eval", "monitor", "seed", "loss", "model", "parameters", "trainable",
                      "batches_per_epoch"}
    assert (s["task"], s["epochs"], s["lr"], s["weight_decay"], s["schedule"], s["min_lr_ratio"], s["clip_grad_norm"],
            s["batchnorm_eval"], s["monitor"], s["seed"], s["batches_per_epoch"]) == \
        ("binary", 3, 0.01, 1e-4, "cosine", 0.1, 1.0, False, "val_auc", 7, 2)
    assert s["model"]["arch"] == "small_cnn" and s["trainable"] == sum(p.numel() for p in model.parameters())
    assert C.run_settings(**{**kw, "info": None})["model"] == type(model).__name__
    assert C.run_settings(**kw, extra={"recipe": (1, 2)})["extra"] == {"recipe": [1, 2]}
    for p in list(model.parameters())[:2]:
        p.requires_grad_(False)                                   # frozen: another run
    frozen = C.run_settings(**kw)
    assert frozen["parameters"] != s["parameters"] and frozen["trainable"] < s["trainable"]
    assert C.settings_diff({"only_stored": 1}, {}) == "only_stored 1 -> null"


def test_a_checkpoint_holds_each_piece_and_restores_every_random_state(tmp_path):
    import random

    from course_utils.train import _checkpoint as C
    from course_utils.train._records import BestEpoch

    g = torch.Generator().manual_seed(3)
    loader = DataLoader(TensorDataset(torch.rand(12, 3, 8, 8), torch.zeros(12)), batch_size=4, shuffle=True,
                        generator=g)
    model = mt.small_cnn(1, width=8, depth=2)[0]
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    hist = History(meta={"lr": 0.01, "settings": {"a": 1}, "skipped_batches": 0, "skipped_per_epoch": [0],
                         "epoch_seconds": [1.5]})
    hist.append(loss=0.5)
    best = BestEpoch("val_loss")
    best.value, best.epoch, best.tiebreak = 0.4, 1, 0.25
    best.state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "deep" / "er" / "ck.pt"                    # folders made on the way
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    C.save_checkpoint(path, 2, 5, model, opt, sched, scaler, hist, best, 1, loader)
    after = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    state = C.read_checkpoint(path, torch.device("cpu"))
    assert (state["epoch"], state["epochs"], state["steps_per_epoch"], state["lr"], state["bad_epochs"]) == (2, 5, 3,
                                                                                                            0.01, 1)
    assert state["best"]["tiebreak"] == 0.25 and state["best"]["value"] == 0.4 and state["settings"] == {"a": 1}
    assert len(state["rng"]["loader"]) == 1 and state["rng"]["cuda"] is None
    random.seed(9), np.random.seed(9), torch.manual_seed(9), g.manual_seed(9)
    h2, b2 = History(meta={"lr": 0.01}), BestEpoch("val_auc")
    done = C.load_checkpoint(path, model, opt, sched, scaler, h2, b2, loader, torch.device("cpu"))
    assert done == (2, 1) and h2.metrics == {"loss": [0.5]} and (b2.monitor, b2.value, b2.epoch, b2.tiebreak) == (
        "val_loss", 0.4, 1, 0.25)
    assert set(b2.state) == set(model.state_dict())
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item()) == after
    h2.metrics["loss"].append(9.9)                                 # a copy, not the checkpoint's own list
    assert C.read_checkpoint(path, torch.device("cpu"))["history"]["metrics"] == {"loss": [0.5]}


def test_a_failed_checkpoint_write_says_when_and_what_is_kept(tmp_path, monkeypatch):
    from course_utils.train import _checkpoint as C

    real = torch.save

    def boom(obj, f, *a, **k):
        if not hasattr(f, "write"):                                  # the file, not seal()'s in-memory buffer
            raise OSError(5, "I/O error")
        return real(obj, f, *a, **k)

    model = mt.small_cnn(1, width=8, depth=2)[0]
    loader = DataLoader(TensorDataset(torch.rand(8, 3, 8, 8), torch.zeros(8)), batch_size=4)
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 2, (8,)).float()
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(CourseError) as first:
        tt.fit(model, DataLoader(TensorDataset(x, y), batch_size=4), epochs=1, progress=False,
               checkpoint_path=tmp_path / "c.pt")
    text = str(first.value)
    assert "(the initial state, before epoch 1)" in text and "no earlier checkpoint exists" in text
    assert "Check that the folder is writable and has space" in text and "The disk is full" not in text
    calls = []
    monkeypatch.setattr(C, "save_checkpoint", lambda *a: calls.append(a))
    run = C.RunProgress(tmp_path / "r.pt", 7, None)
    state = ("m", "o", "s", "sc", "h", "b", loader)
    run.save(0, state, 0)
    assert run.phase == "saving the initial checkpoint" and run.saved_epoch == 0
    run.save(3, state, 2)
    assert run.phase == "saving the checkpoint" and run.saved_epoch == 3
    assert calls[1] == (tmp_path / "r.pt", 3, 7, "m", "o", "s", "sc", "h", "b", 2, loader)
    C.RunProgress(None, 7, None).save(1, state, 0)                   # no checkpoint asked: nothing written
    assert len(calls) == 2


def test_discriminative_rates_put_each_parameter_in_its_group_and_change_the_run_key(tmp_path):
    import course_utils as cu
    from course_utils.train import torch_engine

    model, info = cu.models_torch.small_cnn(1, in_chans=1)
    scale = torch_engine.depth_lr_scale(model, info, lowest=0.1)
    names = [n for n, _ in model.named_parameters()]
    body = [n for n in names if not n.startswith(info.head + ".")]
    assert scale[body[0]] == pytest.approx(0.1) and scale[body[-1]] == pytest.approx(1.0)
    assert all(scale[n] == 1.0 for n in names if n.startswith(info.head + "."))
    assert all(a <= b for a, b in zip([scale[n] for n in body], [scale[n] for n in body][1:]))   # rising with depth
    opt = torch_engine._adamw(model, 1e-3, 0.01, scale)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for n, p in model.named_parameters():
        assert lr_of[id(p)] == pytest.approx(1e-3 * scale[n])
        assert decay_of[id(p)] == (0.01 if p.ndim > 1 else 0.0)
    with pytest.raises(cu.CourseError, match="does not have"):
        torch_engine._adamw(model, 1e-3, 0.01, {"nope.weight": 0.5})
    x = torch.rand(16, 1, 28, 28)
    y = (torch.rand(16) > 0.5).float()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    plain = cu.train_torch.fit(model, loader, epochs=1, info=info, progress=False, seed=0, monitor=None)
    model2, info2 = cu.models_torch.small_cnn(1, in_chans=1)
    scaled = cu.train_torch.fit(model2, loader, epochs=1, info=info2, progress=False, seed=0, monitor=None,
                                lr_scale=torch_engine.depth_lr_scale(model2, info2))
    assert plain.meta["settings_key"] != scaled.meta["settings_key"]   # a checkpoint of one never resumes the other
