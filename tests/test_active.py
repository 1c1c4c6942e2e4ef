"""Active learning: the simulated loop, its results, and self-distillation."""
from __future__ import annotations

import numpy as np
import pytest

from course_utils import CourseError
from course_utils.active import loop as al

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

    from course_utils.teaching import plots

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


# =========================================================================== the loop, checked step by step
class _RecordingLearner:
    """A framework-free learner whose 'model' is the set of pool ids it was trained on.

    Pool images are their own ids (x = [[id]]), test images are negative. Test probabilities depend on the
    number of training images only, through fixed hand-chosen scores, so every accuracy and AUC of the table
    can be recomputed with sklearn from what this learner returned.
    """

    def __init__(self, pool_p1):
        self.pool_p1 = np.asarray(pool_p1, float)
        self.fits, self.pool_calls, self.test_calls = [], [], []

    def fit(self, x, y, *, model=None, teacher=None, seed=0):
        ids = np.asarray(x)[:, 0].astype(int).tolist()
        self.fits.append({"ids": ids, "y": np.asarray(y).tolist(), "model": model, "teacher": teacher,
                          "seed": seed})
        return {"ids": ids, "from": None if model is None else list(model["ids"])}

    def test_p1(self, model):
        s = np.array([2.0, -1.05, 0.55, -0.2, 1.5, -2.3, 0.1, -0.6])  # fixed per test image (no p of 0.5)
        q = len(model["ids"]) / 10.0 - 1.0                               # shifts the decisions with the size
        return 1.0 / (1.0 + np.exp(-(s + q)))

    def outputs(self, model, x, needs, seed=0):
        x = np.asarray(x)[:, 0]
        if x[0] < 0:
            self.test_calls.append({"needs": set(needs), "seed": seed, "n": len(model["ids"])})
            p1 = self.test_p1(model)
        else:
            self.pool_calls.append({"needs": set(needs), "seed": seed, "n": len(model["ids"])})
            p1 = self.pool_p1
        return {"probs": np.stack([1 - p1, p1], axis=1)}

    def clone(self, model):
        return {"ids": list(model["ids"]), "from": model["from"]}


def _ids_data(n_pool=30):
    x_pool = np.arange(n_pool, dtype=np.float32)[:, None]
    y_pool = (np.arange(n_pool) % 3 == 0).astype(int)
    x_test = -(np.arange(8, dtype=np.float32)[:, None] + 1)
    y_test = np.array([1, 0, 1, 1, 0, 0, 0, 1])
    return x_pool, y_pool, x_test, y_test


def test_simulate_queries_labels_and_scores_step_by_step():
    from sklearn.metrics import accuracy_score, roc_auc_score

    x_pool, y_pool, x_test, y_test = _ids_data()
    rng = np.random.default_rng(3)
    pool_p1 = rng.uniform(0.01, 0.99, len(y_pool))
    learner = _RecordingLearner(pool_p1)
    start = [4, 1, 7]
    res = al.simulate(learner, x_pool, y_pool, x_test, y_test, strategies=["entropy"], initial=start, budget=4,
                      rounds=3, seeds=[5], progress=False, full_data=True)
    t = res.table
    # the labelled set by hand: each round the 4 unlabelled pool images whose p1 is nearest 0.5 (highest entropy)
    ent = -(pool_p1 * np.log(pool_p1) + (1 - pool_p1) * np.log(1 - pool_p1))
    labelled = set(start)
    expected_sets = [sorted(labelled)]
    for _ in range(3):
        rest = [i for i in np.argsort(-ent) if i not in labelled]
        labelled |= set(int(i) for i in rest[:4])
        expected_sets.append(sorted(labelled))
    fits = learner.fits
    assert [f["ids"] for f in fits[:4]] == expected_sets             # trained on exactly the labelled images
    assert all(f["y"] == y_pool[f["ids"]].tolist() for f in fits)   # with their true labels
    assert fits[-1]["ids"] == list(range(30))                       # full_data: the whole pool
    assert [f["model"] for f in fits] == [None] * 5                 # retrain="scratch": always from scratch
    assert all(f["teacher"] is None for f in fits)
    assert [f["seed"] for f in fits] == [5, 5001, 5002, 5003, 5]
    assert [c["seed"] for c in learner.pool_calls] == [6, 7, 8]     # pool read once per round, seed + round
    assert all(c["needs"] == {"probs"} for c in learner.pool_calls)
    assert [c["n"] for c in learner.pool_calls] == [3, 7, 11]          # read with the current model
    assert t["n_labelled"].tolist() == [3, 7, 11, 15] and t["round"].tolist() == [0, 1, 2, 3]
    assert t["strategy"].tolist() == ["entropy"] * 4 and t["seed"].tolist() == [5] * 4
    for row, ids in zip(t.itertuples(), expected_sets):
        p1 = learner.test_p1({"ids": ids})
        assert row.accuracy == pytest.approx(accuracy_score(y_test, p1 > 0.5))
        assert row.auc == pytest.approx(roc_auc_score(y_test, p1))       # the positive class's column
    assert t["accuracy"].nunique() > 1                                   # the sizes do change the decisions
    assert res.full_accuracy == pytest.approx(accuracy_score(y_test, learner.test_p1({"ids": range(30)}) > 0.5))


def test_simulate_continue_and_distill_start_from_the_previous_model():
    x_pool, y_pool, x_test, y_test = _ids_data()
    learner = _RecordingLearner(np.linspace(0.05, 0.9, 30))
    al.simulate(learner, x_pool, y_pool, x_test, y_test, strategies=["random"], initial=[0, 1], budget=3,
                rounds=2, seeds=[0], retrain="continue", distill=True, progress=False)
    f = learner.fits
    assert f[0]["model"] is None and f[0]["teacher"] is None                       # round 0
    for prev, cur in zip(f[:-1], f[1:]):
        assert cur["model"] is not None and cur["model"]["ids"] == prev["ids"]    # goes on from the last weights
        assert cur["teacher"]["ids"] == prev["ids"]                                # taught by the last model
    assert learner.pool_calls == []                                                # random needs no outputs
    learner = _RecordingLearner(np.linspace(0.05, 0.9, 30))
    res = al.simulate(learner, x_pool, y_pool, x_test, y_test, strategies=["random", "margin"], initial=[0, 1],
                      budget=3, rounds=1, seeds=[0, 1], progress=False)
    assert [f["model"] for f in learner.fits] == [None] * 6 and res.full_accuracy is None
    assert res.table["strategy"].tolist() == ["random", "random", "margin", "margin"] * 2
    assert res.table["seed"].tolist() == [0] * 4 + [1] * 4


def test_label_efficiency_by_hand():
    import pandas as pd

    rows = []
    acc = {"a": {10: [0.5, 0.6], 20: [0.7, 0.76], 30: [0.8, 0.9]}, "b": {10: [0.6, 0.7], 20: [0.66, 0.7],
                                                                         30: [0.7, 0.7]}}
    for name, by_n in acc.items():
        for rnd, (n, accs) in enumerate(by_n.items()):
            for seed, a in enumerate(accs):
                rows.append({"strategy": name, "seed": seed, "round": rnd, "n_labelled": n, "accuracy": a})
    res = al.ALResult(table=pd.DataFrame(rows), full_accuracy=0.8)
    eff = res.label_efficiency(0.9).set_index("strategy")     # target 0.72: a's means 0.55, 0.73, 0.85
    assert eff.loc["a", "labels_needed"] == 20 and eff.loc["a", "target_accuracy"] == pytest.approx(0.72)
    assert np.isnan(eff.loc["b", "labels_needed"])                 # b's means 0.65, 0.68, 0.7: never
    assert eff.loc["b", "best_mean_accuracy"] == pytest.approx(0.7) and eff.loc["a", "fraction_of_full"] == 0.9
    assert list(res.label_efficiency(0.9).strategy) == ["a", "b"]              # reached first, never last
    assert res.label_efficiency()["target_accuracy"].iloc[0] == pytest.approx(0.95 * 0.8)   # the default fraction
    eff = res.label_efficiency(0.75, full_accuracy=0.8).set_index("strategy")  # target 0.6
    assert res.label_efficiency(0.5, full_accuracy=1.4)["target_accuracy"].iloc[0] == pytest.approx(0.7)   # given
    assert eff.loc["a", "labels_needed"] == 20 and eff.loc["b", "labels_needed"] == 10
    assert res.label_efficiency(1.0).set_index("strategy").loc["a", "labels_needed"] == 30     # 0.85 >= 0.8
    t = al.labels_to_reach(pd.DataFrame(rows), 0.64)
    assert t.set_index("strategy")["labels_needed"].to_dict() == {"a": 20, "b": 10}
    assert "fraction_of_full" not in t


def test_paired_differences_edge_cases_by_hand():
    import pandas as pd
    from scipy import stats

    def table(diffs_by_strategy, rounds=(0, 1)):
        rows = []
        for seed in range(len(next(iter(diffs_by_strategy.values())))):
            for rnd in rounds:
                rows.append({"strategy": "random", "seed": seed, "round": rnd, "accuracy": 0.5 + 0.01 * seed})
                for name, d in diffs_by_strategy.items():
                    rows.append({"strategy": name, "seed": seed, "round": rnd,
                                 "accuracy": 0.5 + 0.01 * seed + (d[seed] if rnd else 0.3)})   # round 0 ignored
        return pd.DataFrame(rows)

    res = al.paired_differences(table({"same": [0.02, 0.02], "worse": [-0.1, -0.11], "tiny": [0.123456, 0.1234]}))
    assert res["strategy"].tolist() == ["tiny", "same", "worse"]                 # best first
    assert res.index.tolist() == [0, 1, 2]
    assert list(res.columns) == ["strategy", "mean_difference", "ci_low", "ci_high", "seeds", "verdict", "detectable_80"]
    # the power: 2 seeds with spread sd detect (t_.975 + t_.8, 1 df) * sd / sqrt(2)
    sd = np.std([-0.1, -0.11], ddof=1)
    assert res.set_index("strategy").loc["worse", "detectable_80"] == round(
        (stats.t.ppf(0.975, 1) + stats.t.ppf(0.8, 1)) * sd / np.sqrt(2), 4)
    r = res.set_index("strategy")
    assert r.loc["same", "mean_difference"] == 0.02 and r.loc["same", "ci_low"] == 0.02   # no spread: no width
    assert r.loc["same", "verdict"] == "better than random" and r.loc["same", "seeds"] == 2
    half = stats.t.ppf(0.975, 1) * np.std([-0.1, -0.11], ddof=1) / np.sqrt(2)
    assert r.loc["worse", "ci_high"] == round(-0.105 + half, 4) and r.loc["worse", "ci_low"] == round(-0.105 - half, 4)
    assert r.loc["worse", "verdict"] == "worse than random"                      # the interval is wider than it
    assert r.loc["tiny", "mean_difference"] == round(0.123428, 4)                # rounded to 4 digits
    zero = al.paired_differences(table({"flat": [0.0, 0.0]})).iloc[0]
    assert zero["verdict"] == "no clear difference" and zero["ci_low"] == 0.0     # an interval touching 0 proves nothing
    one = al.paired_differences(table({"a": [0.2]})).iloc[0]
    assert one["mean_difference"] == 0.2 and one["ci_low"] == -np.inf and one["ci_high"] == np.inf
    wide = al.paired_differences(table({"w": [0.3, -0.1]}), confidence=0.5).iloc[0]
    half = stats.t.ppf(0.75, 1) * np.std([0.3, -0.1], ddof=1) / np.sqrt(2)
    assert wide["ci_low"] == round(0.1 - half, 4) and wide["ci_high"] == round(0.1 + half, 4)
    late = al.paired_differences(table({"b": [0.05, 0.07]}, rounds=(0, 1, 2)), metric="accuracy").iloc[0]
    assert late["mean_difference"] == 0.06                                       # rounds 1 and 2 both count


def test_distillation_loss_accepts_its_whole_range_and_refuses_outside_it():
    s, t = torch.tensor([[1.0, -1.0, 0.5]]), torch.tensor([[0.2, 0.1, 0.0]])
    y = torch.tensor([2])
    pt, ps = torch.softmax(t, 1), torch.softmax(s, 1)                       # T = 1: plain softmax
    kl = (pt * (pt.log() - ps.log())).sum()
    torch.testing.assert_close(al.distillation_loss(s, t, y, temperature=1.0, weight=1.0), kl)
    torch.testing.assert_close(al.distillation_loss(s, t, y, temperature=0.5, weight=0.0), -ps.log()[0, 2])
    for bad in (1.5, -0.1):
        with pytest.raises(CourseError):
            al.distillation_loss(s, t, y, weight=bad)


def test_simulate_defaults_progress_seeds_and_refusals(monkeypatch):
    from course_utils import runtime

    bars, steps, descriptions = [], [], []

    class Bar:
        def update(self, n):
            steps.append(n)

        def set_description_str(self, text, refresh=True):
            descriptions.append(text)

        def set_postfix_str(self, text):
            assert text and len(text) < 40            # short: tqdm's 90 columns cut a long postfix ("strategy=badg")

        def close(self):
            steps.append("closed")

    def spy(**kw):
        bars.append(kw)
        return Bar()

    monkeypatch.setattr(runtime, "progress", spy)
    x_pool = np.arange(130, dtype=np.float32)[:, None]
    y_pool = (np.arange(130) % 2)[:, None]                          # a column: flattened
    x_test, y_test = _ids_data()[2:]
    learner = _RecordingLearner(np.linspace(0.05, 0.95, 130))
    res = al.simulate(learner, x_pool, y_pool, x_test, y_test[:, None])   # every default; labels as columns
    t = res.table
    assert t["strategy"].tolist() == (["random"] * 6 + ["entropy"] * 6) * 3 and sorted(set(t["seed"])) == [0, 1, 2]
    assert t["n_labelled"].tolist() == [20, 40, 60, 80, 100, 120] * 6 and t["round"].tolist() == list(range(6)) * 6
    assert all(f["y"] == (np.array(f["ids"]) % 2).tolist() for f in learner.fits)
    assert bars == [{"total": 3 * 2 * 6, "desc": "active learning", "disable": False, "leave": True}]
    assert steps == [1] * 36 + ["closed"]                              # one step per row, then closed
    assert descriptions[0] == "random, seed 0" and descriptions[-1] == "active learning"   # the strategy in words
    assert [c["seed"] for c in learner.test_calls] == [0] * 11 + [1] * 11 + [2] * 11   # each seed's own
    sizes = [c["n"] for c in learner.pool_calls]                       # the pool is read by the current model
    assert sizes == [20, 40, 60, 80, 100] * 3
    assert (t["seconds"] >= 0).all() and (t["seconds"] < 60).all()
    assert {c["seed"] for c in learner.test_calls} == {0, 1, 2} and all(c["needs"] == set() for c in learner.test_calls)
    assert [c["seed"] for c in learner.test_calls[:3]] == [0, 0, 0] and learner.test_calls[0]["n"] == 20
    # the same seeds give the same random picks; another seed, others
    first = [f["ids"] for f in learner.fits]
    learner2 = _RecordingLearner(np.linspace(0.05, 0.95, 130))
    al.simulate(learner2, x_pool, y_pool, x_test, y_test, strategies=["random"], rounds=1, seeds=[0, 1],
                full_data=True, distill=True, progress=False)
    assert [f["ids"] for f in learner2.fits][:2] == first[:2]
    assert learner2.fits[1]["ids"] != learner2.fits[3]["ids"]                       # seed 1's random picks differ
    assert bars[-1]["total"] == 2 * 1 * 2 + 2 and bars[-1]["disable"] is True and steps[-7:] == [1] * 6 + ["closed"]
    assert [c["seed"] for c in learner2.test_calls] == [0, 0, 0, 1, 1, 1]             # full data too
    assert set(al.simulate(learner2, x_pool, y_pool, x_test, y_test, strategies=["random"], rounds=1, seeds=[0],
                           distill=True, progress=False).table["strategy"]) == {"random+distill"}
    ok = dict(strategies=["random"], seeds=[0], progress=False)
    al.simulate(learner, x_pool[:3], y_pool[:3], x_test, y_test, initial=1, budget=1, rounds=2, **ok)   # the edges
    al.simulate(learner, x_pool[:1], y_pool[:1], x_test, y_test, initial=1, budget=1, rounds=0, **ok)
    al.simulate(learner, x_pool[:3], y_pool[:3], x_test, y_test, initial=[0, 2], budget=1, rounds=1, **ok)
    bad = [(dict(initial=0), "need initial"), (dict(budget=0), "need initial"), (dict(rounds=-1), "need initial"),
           (dict(initial=2, budget=1, rounds=2), "pool has only"), (dict(initial=[]), "inside the pool"),
           (dict(initial=[-1, 0]), "inside the pool"), (dict(initial=[0, 3]), "inside the pool"),
           (dict(retrain="warm"), "retrain")]
    for kw, match in bad:
        with pytest.raises(CourseError, match=match):
            al.simulate(learner, x_pool[:3], y_pool[:3], x_test, y_test, **{"budget": 1, "rounds": 1, **ok, **kw})
    assert al.simulate(learner, x_pool[:3], y_pool[:3], x_test, y_test, initial=1, budget=1, rounds=1, source="s",
                       **ok).source == "s"
    for pool, test in (((x_pool[:5], y_pool[:4]), (x_test, y_test)), ((x_pool[:5], y_pool[:5]), (x_test[:3], y_test))):
        with pytest.raises(CourseError, match="differ in length"):
            al.simulate(learner, *pool, *test, initial=1, budget=1, rounds=1, **ok)


def test_test_scores_multi_class_and_labels_to_reach_at_the_target():
    import pandas as pd
    from sklearn.metrics import accuracy_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1])
    p = rng.dirichlet([1, 1, 1], 8)
    acc, auc = al._test_scores(y, p)
    assert acc == pytest.approx(accuracy_score(y, p.argmax(1))) and auc == pytest.approx(roc_auc_score(y, p,
                                                                                                       multi_class="ovr"))
    t = pd.DataFrame({"strategy": ["b", "b", "a", "a"], "seed": 0, "round": [0, 1, 0, 1], "n_labelled": [10, 20] * 2,
                      "accuracy": [0.5, 0.7, 0.6, 0.65]})
    r = al.labels_to_reach(t, 0.7, fraction=0.123456)
    assert r["strategy"].tolist() == ["b", "a"] and r["labels_needed"].iloc[0] == 20      # reached exactly: counts
    assert r["fraction_of_full"].iloc[0] == 0.123456 and list(r.columns)[0] == "strategy"
    assert al.labels_to_reach(t, 0.123456)["target_accuracy"].iloc[0] == 0.1235
    assert r.index.tolist() == [0, 1]


def test_plot_versus_draws_each_strategys_interval_and_plot_can_pick_strategies():
    """Issue 22: 05's eight overlapping bands become one interval per strategy; the curves can show a few."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    rows = [{"strategy": s, "seed": seed, "round": r, "n_labelled": 10 + 10 * r, "accuracy": 0.5 + d * r + 0.01 * seed,
             "auc": 0.6, "seconds": 0.1}
            for s, d in (("random", 0.0), ("entropy", 0.02), ("coreset", -0.03)) for seed in range(3) for r in range(3)]
    res = al.ALResult(table=pd.DataFrame(rows), source="stand-in")
    fig = res.plot_versus("random")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["coreset", "entropy"]     # best on top
    assert "[stand-in data]" in ax.get_title() and "3 seeds" in ax.get_xlabel()
    assert len(res.plot(strategies=["random", "entropy"]).axes[0].get_lines()) >= 2
    with pytest.raises(CourseError, match="no runs of badge"):
        res.plot(strategies=["badge"])


def test_the_active_learning_command_writes_its_table_comparison_and_figures(tmp_path, capsys, monkeypatch):
    import json

    from course_utils.active import experiment

    monkeypatch.setenv("COURSE_OFFLINE", "1")
    out = tmp_path / "derma"
    assert experiment.main(["simulate", "--dataset", "dermamnist", "--strategies", "entropy", "coreset_cosine",
                            "--seeds", "0", "1", "--rounds", "2", "--budget", "10", "--initial", "10", "--pool", "120",
                            "--test", "80", "--feature-px", "32", "--epochs", "2", "--min-steps", "5",
                            "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "entropy" in printed and "coreset_cosine" in printed and "95 % interval" in printed
    table = __import__("pandas").read_csv(out / "table.csv")
    assert set(table["strategy"]) == {"random", "entropy", "coreset_cosine"} and set(table["seed"]) == {0, 1}
    assert table["n_labelled"].max() == 30
    assert set(__import__("pandas").read_csv(out / "versus.csv")["strategy"]) == {"entropy", "coreset_cosine"}
    assert (out / "curves.png").stat().st_size > 0 and (out / "versus.png").stat().st_size > 0
    assert json.loads((out / "settings.json").read_text())["source"] == "stand-in"
    assert experiment.main(["simulate", "--dataset", "nosuchmnist", "--out", str(out)]) == 3
    assert experiment.main(["simulate", "--pool", "50", "--out", str(out)]) == 3        # 30 + 6 x 30 > 50
    assert "lower the budget" in capsys.readouterr().err


@pytest.mark.slow
def test_the_active_learning_command_runs_the_original_setting_keras_binary_with_self_distillation(tmp_path, monkeypatch):
    from course_utils.active import experiment

    monkeypatch.setenv("COURSE_OFFLINE", "1")
    res = experiment.run_experiment("breastmnist", strategies=["coreset"], seeds=[0], initial=10, budget=10,
                                    rounds=1, pool=60, test=40, feature_px=32, epochs=2, min_steps=20,
                                    framework="keras", distill=True, out=tmp_path, progress=False)
    assert set(res.table["strategy"]) == {"random+distill", "coreset+distill"}
    assert (tmp_path / "versus.csv").exists()
    with pytest.raises(CourseError, match="framework"):
        experiment.run_experiment("breastmnist", framework="jax")
