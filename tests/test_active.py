"""Active learning: the simulated loop, its results, and self-distillation."""
from __future__ import annotations

import numpy as np
import pytest

from course_utils import CourseError
from course_utils import active as al

torch = pytest.importorskip("torch")
nn = torch.nn


# =========================================================================== self-distillation
def test_distillation_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    T, w = 5.0, 0.5
    ps, pt = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    kl_by_hand = (pt * (pt.log() - ps.log())).sum(1).mean()
    ce_by_hand = -torch.log_softmax(s, 1)[torch.arange(6), y].mean()
    expected = (1 - w) * ce_by_hand + w * T ** 2 * kl_by_hand
    torch.testing.assert_close(al.distillation_loss(s, t, y), expected)
    kl_torch = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), pt, reduction="batchmean")
    torch.testing.assert_close(kl_torch, kl_by_hand)
    torch.testing.assert_close(al.distillation_loss(s, s, y, weight=1.0), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(al.distillation_loss(s, t, y, weight=0.0), ce_by_hand)
    with pytest.raises(CourseError):
        al.distillation_loss(s, t, y, temperature=0)


# =========================================================================== the loop
def blobs(n=260, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.normal(size=(3, d)) * 2.5
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def test_simulate_table_curves_and_label_efficiency():
    x, y = blobs()
    threads_before = torch.get_num_threads()
    learner = al.TorchLearner(mlp, epochs=15, batch_size=16, lr=1e-2, mc_passes=4, num_threads=1)
    res = al.simulate(learner, x[:200], y[:200], x[200:], y[200:], strategies=["random", "entropy", "bald", "badge",
                                                                              "coreset"],
                      initial=6, budget=8, rounds=3, seeds=[0, 1], full_data=True, progress=False)
    t = res.table
    assert list(t.columns) == ["strategy", "seed", "round", "n_labelled", "accuracy", "auc", "seconds"]
    assert len(t) == 5 * 2 * 4
    for (_s, _seed), g in t.groupby(["strategy", "seed"]):
        assert list(g["n_labelled"]) == [6, 14, 22, 30]                 # monotone, initial + budget x round
    r0 = t[t["round"] == 0]
    assert r0.groupby("seed")["accuracy"].nunique().max() == 1          # same start for every strategy
    assert t["accuracy"].between(0, 1).all() and (t["seconds"] >= 0).all()
    assert res.full_accuracy is not None and res.full_accuracy > 0.8    # separable blobs
    assert t[t["round"] == 3]["accuracy"].mean() > 0.6                  # learned from 30 labels
    eff = res.label_efficiency(0.8)
    assert set(eff["strategy"]) == set(t["strategy"]) and "labels_needed" in eff
    fig = res.plot()
    assert "learning curves" in fig.axes[0].get_title() and fig.axes[0].get_xlabel() == "labelled images"
    assert len(res.final()) == 5
    assert torch.get_num_threads() == threads_before                   # num_threads=1 was temporary


def test_simulate_with_distillation_and_continue(monkeypatch):
    x, y = blobs(seed=1)
    teachers = []
    real = al.train_torch_classifier

    def spy(model, xs, ys, **kw):
        teachers.append(kw.get("teacher"))
        return real(model, xs, ys, **kw)

    monkeypatch.setattr(al, "train_torch_classifier", spy)
    learner = al.TorchLearner(mlp, epochs=3, batch_size=16, num_threads=1)
    res = al.simulate(learner, x[:200], y[:200], x[200:], y[200:], strategies=["coreset"], initial=10, budget=10,
                      rounds=2, seeds=[0], distill=True, retrain="continue", progress=False)
    assert set(res.table["strategy"]) == {"coreset+distill"}
    assert teachers[0] is None and all(t is not None for t in teachers[1:])   # round 0 has no teacher
    with pytest.raises(CourseError, match="pool has only"):
        al.simulate(learner, x[:50], y[:50], x[200:], y[200:], initial=10, budget=20, rounds=3, progress=False)
    with pytest.raises(CourseError, match="retrain"):
        al.simulate(learner, x[:50], y[:50], x[200:], y[200:], retrain="warm", progress=False)
    with pytest.raises(CourseError, match="full-data accuracy"):
        res.label_efficiency(0.9)
    fixed = al.simulate(learner, x[:200], y[:200], x[200:], y[200:], strategies=["random"], initial=[0, 1, 2, 3],
                        budget=5, rounds=1, seeds=[0, 1], progress=False)
    assert list(fixed.table["n_labelled"]) == [4, 9, 4, 9]
    with pytest.raises(CourseError, match="inside the pool"):
        al.simulate(learner, x[:50], y[:50], x[200:], y[200:], initial=[0, 50], progress=False)


def test_learning_curves_figure_and_bad_columns():
    import pandas as pd

    from course_utils import plots

    table = pd.DataFrame({"strategy": ["a"] * 4 + ["b"] * 4, "seed": [0, 0, 1, 1] * 2,
                          "n_labelled": [10, 20] * 4, "accuracy": [0.5, 0.7, 0.6, 0.8, 0.5, 0.6, 0.5, 0.7]})
    fig = plots.learning_curves(table, reference=0.9, source="stand-in")
    ax = fig.axes[0]
    assert "[stand-in data]" in ax.get_title() and ax.get_ylabel() == "test accuracy"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.55, 0.75])        # mean over the two seeds
    assert len(ax.collections) == 2                                          # one min-max band per strategy
    with pytest.raises(ValueError, match="no column 'auc'"):
        plots.learning_curves(table, metric="auc")


def test_paired_differences_follow_the_interval():
    import pandas as pd
    from scipy import stats

    rows = []
    gains = {"good": [0.05, 0.06, 0.04], "noisy": [0.10, -0.09, 0.02]}
    for seed in range(3):
        for rnd in range(3):
            base = 0.5 + 0.1 * rnd + 0.01 * seed
            rows.append({"strategy": "random", "seed": seed, "round": rnd, "accuracy": base})
            for name, g in gains.items():
                rows.append({"strategy": name, "seed": seed, "round": rnd,
                             "accuracy": base + (g[seed] if rnd else 0.0)})   # round 0 is the shared start
    res = al.paired_differences(pd.DataFrame(rows))
    good, noisy = (res.set_index("strategy").loc[n] for n in ("good", "noisy"))
    assert good["mean_difference"] == pytest.approx(0.05) and good["verdict"] == "better than random"
    half = stats.t.ppf(0.975, 2) * np.std(gains["good"], ddof=1) / np.sqrt(3)          # by hand
    assert good["ci_low"] == pytest.approx(0.05 - half, abs=1e-4) and good["seeds"] == 3
    assert noisy["verdict"] == "no clear difference" and noisy["ci_low"] < 0 < noisy["ci_high"]
    one_seed = al.paired_differences(pd.DataFrame([r for r in rows if r["seed"] == 0]))
    assert set(one_seed["verdict"]) == {"no clear difference"}                         # one seed proves nothing
    with pytest.raises(CourseError, match="baseline 'margin'"):
        al.paired_differences(pd.DataFrame(rows), baseline="margin")
