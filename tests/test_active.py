"""Active learning: model adapters (torch, Keras), the simulated loop, self-distillation, the label store
and the labelling widget."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from course_utils import CourseError
from course_utils import active as al

torch = pytest.importorskip("torch")
nn = torch.nn
ROOT = Path(__file__).resolve().parents[1]


# =========================================================================== torch adapters
def tiny_cnn(n_out: int = 3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, n_out))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(24, 8, 8, 1), dtype=np.uint8)


def test_torch_probs_and_embeddings_match_a_manual_forward(images):
    model = tiny_cnn()
    with torch.no_grad():  # give BN non-trivial running stats
        model.train()(torch.rand(16, 1, 8, 8) * 3)
    model.train()                                       # adapters must not depend on the caller's mode
    out = al.torch_outputs(model, images, needs=("probs", "embeddings"), batch_size=5)
    assert model.training                               # mode restored
    x = torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2)
    model.eval()
    with torch.no_grad():
        ref_p = torch.softmax(model(x), 1).numpy()
        ref_h = model[:-1](x).numpy()                   # input of the final Linear (after Dropout, eval = identity)
    np.testing.assert_allclose(out["probs"], ref_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["embeddings"], ref_h, rtol=1e-5, atol=1e-6)
    assert out["embeddings"].shape == (24, 6)
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, atol=1e-6)


def test_torch_mc_dropout_keeps_batchnorm_in_eval_mode(images):
    model = tiny_cnn()
    bn = model[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    mc = al.torch_mc_samples(model, images, mc_passes=6, batch_size=7)
    assert mc.shape == (6, 24, 3)
    torch.testing.assert_close(bn.running_mean, before[0])
    torch.testing.assert_close(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    assert np.abs(mc[0] - mc[1]).max() > 1e-3           # dropout is on: passes differ
    np.testing.assert_allclose(al.torch_mc_samples(model, images, mc_passes=6, batch_size=7), mc)  # seeded
    assert model.training and model[1].training and model[7].training  # the caller's (train) mode restored
    # BN in eval mode: a batch of one image gives the same MC distribution as inside a big batch
    one = al.torch_mc_samples(model, images[:1], mc_passes=1, seed=3)
    assert np.all(np.isfinite(one))
    with pytest.raises(CourseError, match="no Dropout"):
        al.torch_mc_samples(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), images)


def test_torch_gradient_embedding_class_count_comes_from_the_model(images):
    model = tiny_cnn(n_out=5)
    g = al.torch_gradient_embeddings(model, images)
    assert g.shape == (24, 5 * 6)                       # 5 outputs x 6 features, whatever the labels are
    one_logit = tiny_cnn(n_out=1)
    p = al.torch_probs(one_logit, images)
    assert p.shape == (24, 2)                           # sigmoid head -> [1 - p, p]
    assert al.torch_gradient_embeddings(one_logit, images).shape == (24, 2 * 6)
    with pytest.raises(CourseError, match="no nn.Linear"):
        al.torch_embeddings(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), images)


# =========================================================================== Keras adapters
@pytest.fixture(scope="module")
def keras():
    from course_utils.runtime import import_tensorflow

    import_tensorflow()
    import keras as k

    return k


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_keras_adapters_with_batchnorm_and_dropout(keras, images, kind):
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Conv2D(4, 3, padding="same"), keras.layers.BatchNormalization(),
              keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(6, activation="relu"),
              keras.layers.Dropout(0.5), keras.layers.Dense(3, activation="softmax")]
    if kind == "sequential":
        model = keras.Sequential([keras.Input((8, 8, 1)), *layers])
    else:
        inp = keras.Input((8, 8, 1))
        x = inp
        for layer in layers:
            x = layer(x)
        model = keras.Model(inp, x)
    bn = layers[1]
    model(np.random.default_rng(1).random((16, 8, 8, 1)).astype("float32") * 3, training=True)  # move BN stats
    before = [np.array(v) for v in (bn.moving_mean, bn.moving_variance)]
    out = al.keras_outputs(model, images, needs=("probs", "mc_samples", "embeddings", "grad_embeddings"),
                           mc_passes=5)
    assert out["probs"].shape == (24, 3)
    np.testing.assert_allclose(out["probs"], model.predict(images.astype("float32") / 255, verbose=0), rtol=1e-4,
                               atol=1e-6)
    assert out["embeddings"].shape == (24, 6)
    assert out["grad_embeddings"].shape == (24, 18)
    mc = out["mc_samples"]
    assert mc.shape == (5, 24, 3) and np.abs(mc[0] - mc[1]).max() > 1e-3
    np.testing.assert_allclose(bn.moving_mean, before[0], atol=0)        # BN untouched by MC dropout
    np.testing.assert_allclose(bn.moving_variance, before[1], atol=0)
    assert bn.trainable                                                   # flag restored
    sigmoid = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5),
                                keras.layers.Dropout(0.5), keras.layers.Dense(1, activation="sigmoid")])
    assert al.keras_probs(sigmoid, images).shape == (24, 2)                 # one sigmoid unit -> [1 - p, p]
    assert al.keras_gradient_embeddings(sigmoid, images).shape == (24, 2 * 5)
    # the trap the adapter avoids: a plain training=True call does move the statistics
    model(images.astype("float32") / 255, training=True)
    assert np.abs(np.array(bn.moving_mean) - before[0]).max() > 0


def test_keras_mc_dropout_switches_off_augmentation_layers(keras, images):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.RandomFlip("horizontal")(inp)
    x = keras.layers.Dense(4)(keras.layers.Flatten()(x))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Dropout(0.0)(x))
    model = keras.Model(inp, out)
    p = al.keras_probs(model, images)
    mc = al.keras_mc_samples(model, images, mc_passes=3)
    np.testing.assert_allclose(mc, np.broadcast_to(p, mc.shape), atol=1e-6)    # no flips, dropout rate 0
    flipped = np.stack([np.asarray(model(images.astype("float32") / 255, training=True)) for _ in range(3)])
    assert np.abs(flipped - p).max() > 1e-3                                     # what a plain call would do
    assert "call" not in vars(model.layers[1])                                  # the override was removed


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


# =========================================================================== label store
@pytest.fixture
def store(tmp_path):
    s = al.LabelStore.create(tmp_path / "labels.db", 50, ["benign", "malignant"], seed=1)
    yield s
    s.close()


def test_store_holdout_queries_labels_and_undo(store):
    c = store.counts()
    assert (c["pool"], c["holdout"], c["labelled"]) == (45, 5, 0)
    hold = set(store.ids("holdout").tolist())
    assert store.ids(split=None).tolist() == list(range(50))
    with pytest.raises(CourseError, match="write_predictions"):
        store.next_batch("entropy", 4)
    pool = store.ids("pool")
    probs = np.tile([[0.9, 0.1]], (45, 1))
    probs[7] = [0.5, 0.5]
    probs[3] = [0.6, 0.4]
    store.write_predictions(pool, probs)
    assert store.next_batch("entropy", 2, random_state=0) == [int(pool[7]), int(pool[3])]
    with pytest.raises(CourseError, match="only"):
        store.next_batch("bald", 2)
    seen = set()
    while store.counts()["labelled"] < 45:                              # label everything, batch by batch
        batch = store.next_batch("random", 8, random_state=len(seen))
        assert not set(batch) & hold and not set(batch) & seen
        for i in batch:
            store.label(i, i % 2)
        seen |= set(batch)
    assert seen == set(pool.tolist())
    with pytest.raises(CourseError, match="every pool image"):
        store.next_batch("random", 1)
    with pytest.raises(CourseError, match="hold-out"):
        store.label(min(hold), 0)
    with pytest.raises(CourseError, match="class index"):
        store.label(int(pool[0]), 2)
    i = int(pool[0])
    store.label(i, 1)
    assert store.labels()[i] == 1
    assert store.undo() == i and store.labels()[i] == 0                # back to the earlier label
    assert store.undo() is not None
    assert i not in store.labels() or store.labels()[i] is not None
    t = store.table()
    assert {"id", "ref", "split", "label", "confidences", "predicted_at", "labeled_at"} <= set(t.columns)


def test_store_holdout_evaluation_warns_the_second_time(store):
    hold = store.ids("holdout")
    truth = np.arange(len(hold)) % 2
    p = np.stack([1 - truth, truth], 1) * 0.8 + 0.1
    with pytest.raises(CourseError, match="no reference label"):
        store.evaluate_holdout(p)
    store.set_holdout_labels(truth)
    first = store.evaluate_holdout(p)
    assert first["accuracy"] == 1.0 and first["evaluations"] == 1
    with pytest.warns(UserWarning, match="evaluated 2 times"):
        store.evaluate_holdout(p)
    with pytest.raises(CourseError, match="rows"):
        store.evaluate_holdout(p[:-1])


def test_store_is_never_overwritten_and_checks_its_schema(tmp_path, store):
    path = store.path
    store.label(int(store.ids("pool")[0]), 1)
    with pytest.raises(CourseError, match="never overwritten"):
        al.LabelStore.create(path, 50, ["benign", "malignant"])
    again = al.LabelStore.create(path, 50, ["benign", "malignant"], reuse=True)     # resumes
    assert again.counts()["labelled"] == 1
    with pytest.raises(CourseError, match="different image list"):
        al.LabelStore.create(path, 40, ["benign", "malignant"], reuse=True)
    again.close()
    resumed = al.LabelStore(path)
    assert resumed.counts()["labelled"] == 1
    resumed.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(CourseError, match="schema version 99"):
        al.LabelStore(path)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE something (x)")
    with pytest.raises(CourseError, match="not a course label store"):
        al.LabelStore(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(CourseError, match="not a SQLite label store|not a course label store"):
        al.LabelStore(junk)
    with pytest.raises(CourseError, match="no label store"):
        al.LabelStore(tmp_path / "missing.db")


WRITER = textwrap.dedent("""
    import sys, time
    from course_utils.active import LabelStore
    store = LabelStore(sys.argv[1])
    ids, tag = [int(i) for i in sys.argv[2].split(",")], int(sys.argv[3])
    for i in ids:
        store.label(i, (i + tag) % 2)
        print(i, flush=True)       # printed only after the commit
""")


def _writer(path, ids, tag):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), ",".join(map(str, ids)), str(tag)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_killed_writer_keeps_every_committed_label(store):
    pool = store.ids("pool").tolist()
    proc = _writer(store.path, pool * 40, 0)          # far more writes than it will get to finish
    committed = []
    deadline = time.time() + 60
    while len(committed) < 30 and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed.append(int(line))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(committed) >= 30, proc.stderr.read()
    fresh = al.LabelStore(store.path)
    labels = fresh.labels()
    assert set(committed) <= set(labels)               # every printed (committed) label survived
    n_events = fresh._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert n_events >= len(committed)
    assert fresh._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    fresh.close()


def test_two_writers_at_once_leave_a_consistent_database(store):
    pool = store.ids("pool").tolist()
    a, b = _writer(store.path, pool, 0), _writer(store.path, pool[::-1], 1)
    outs = [p.communicate(timeout=120) for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    fresh = al.LabelStore(store.path)
    conn = fresh._conn
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2 * len(pool)
    # each item's label is the one written by the last event for it
    last = dict(conn.execute("SELECT item_id, new_label FROM events e WHERE seq = "
                             "(SELECT MAX(seq) FROM events WHERE item_id = e.item_id)").fetchall())
    assert fresh.labels() == last and len(last) == len(pool)
    fresh.close()


# =========================================================================== the widget
def test_labeling_session_oracle_clicks_undo_and_keys(store):
    pytest.importorskip("ipywidgets")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 12, 12), dtype=np.uint8)
    truth = rng.integers(0, 2, 50)
    session = al.LabelingSession(store, images, strategy="random", batch_size=5, oracle=truth)
    assert len(session.batch) == 5 and len(session.grid.children) == 5
    written = session.label_with_oracle(n_batches=2)
    assert written == 10
    labels = store.labels()
    assert len(labels) == 10 and all(labels[i] == truth[int(store.refs([i])[0])] for i in labels)
    assert "10/45" in session.counter.value
    # a human click on the second class of a new image
    session.next_batch()
    first = session.batch[0]
    session.cards[first][1][1].click()
    assert store.labels()[first] == 1 and session.cards[first][1][1].button_style == "success"
    session.undo_button.click()
    assert first not in store.labels()
    # keyboard fallback: type "1" + Enter labels the first open image with class 0
    session.keys.value = "1"
    assert store.labels()[session.batch[0]] == 0 and session.keys.value == ""
    session.keys.value = "7"
    assert "class number" in session.counter.value
    assert not set(store.labels()) & set(store.ids("holdout").tolist())
