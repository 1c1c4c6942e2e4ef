"""The Keras fit wrapper (History, CSV, learning) and the whole-test-set evaluation helper."""
import numpy as np
import pytest

import course_utils as cu
from course_utils.models import keras_models as mk
from course_utils.train import keras_fit as tk

tf = cu.runtime.import_tensorflow()


def blobs(n, size=24, seed=0):
    """Class 1 images carry a bright square at a random place; class 0 is noise only."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(90, 25, (n, size, size, 3))
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, size - 6, 2)
        x[i, r:r + 6, c:c + 6] += 150
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def dataset(x, y, batch=16, one_hot=False, drop_remainder=False, shuffle=False):
    labels = tf.one_hot(y, 2) if one_hot else y
    ds = tf.data.Dataset.from_tensor_slices((x.astype("float32") / 255.0, labels))
    if shuffle:
        ds = ds.shuffle(len(x), seed=0)
    return ds.batch(batch, drop_remainder=drop_remainder)


@pytest.fixture(scope="module")
def data():
    return blobs(192), blobs(64, seed=1)


def test_fit_learns_and_keeps_a_csv(data, tmp_path):
    (x, y), (xv, yv) = data
    cu.seed_everything(0)
    model, _ = mk.small_cnn(x.shape[1:], 2, filters=(8, 16), dense=32)
    hist = tk.fit(model, dataset(x, y, shuffle=True), dataset(xv, yv), epochs=6, learning_rate=2e-3,
                  run_dir=tmp_path / "run", verbose=0)
    assert isinstance(hist, cu.History)
    assert set(hist.metrics) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert hist.n_epochs == 6
    assert hist["loss"][-1] < 0.9 * hist["loss"][0]
    assert hist.best("val_accuracy") >= 0.85  # chance is 0.5
    csv = tmp_path / "run" / "history.csv"
    assert csv.exists() and hist.meta["csv"] == str(csv)
    from_csv = cu.History.from_csv(csv)
    np.testing.assert_allclose(from_csv["loss"], hist["loss"], rtol=1e-5)
    assert hist.meta["learning_rate"] == 2e-3 and hist.meta["dtype_policy"] == "float32"
    assert hist.meta["wall_s"] > 0


def test_fit_one_hot_labels_use_categorical_loss(data, tmp_path):
    (x, y), _ = data
    model, _ = mk.small_cnn(x.shape[1:], 2, filters=(8,), dense=0, dropout=0)
    ds = dataset(x, y, one_hot=True)
    assert type(tk.auto_loss(model, ds)).__name__ == "CategoricalCrossentropy"
    assert type(tk.auto_loss(model, dataset(x, y))).__name__ == "SparseCategoricalCrossentropy"
    hist = tk.fit(model, ds, epochs=1, run_dir=tmp_path, verbose=0)
    assert "val_loss" not in hist and hist.n_epochs == 1


@pytest.mark.parametrize("kwargs, match", [(dict(epochs=0), "epochs"), (dict(epochs=1, learning_rate=0), "learning_rate"),
                                           (dict(epochs=1, optimizer="lbfgs"), "optimizer")])
def test_fit_bad_arguments(data, kwargs, match, tmp_path):
    (x, y), _ = data
    model, _ = mk.small_cnn(x.shape[1:], 2, filters=(8,))
    with pytest.raises(cu.CourseError, match=match):
        tk.fit(model, dataset(x, y), run_dir=tmp_path, verbose=0, **kwargs)


def test_evaluate_uses_every_test_sample(data):
    (x, y), _ = data
    x, y = x[:53], y[:53]  # not a multiple of any batch size
    model, _ = mk.small_cnn(x.shape[1:], 2, filters=(8,))
    res = tk.evaluate(model, x, y, batch_size=16)
    assert res["n"] == 53 == len(res["y_pred"]) == len(res["probs"])
    from sklearn.metrics import accuracy_score, roc_auc_score
    assert res["accuracy"] == pytest.approx(accuracy_score(y, res["probs"].argmax(1)))
    assert res["auc"] == pytest.approx(roc_auc_score(y, res["probs"][:, 1]))
    assert res["accuracy"] == cu.metrics.accuracy(y, res["probs"]) and res["auc"] == cu.metrics.roc_auc(y, res["probs"])
    np.testing.assert_array_equal(res["y_true"], y)
    from_ds = tk.evaluate(model, dataset(x, y, batch=16))
    assert from_ds["n"] == 53
    np.testing.assert_allclose(from_ds["probs"], res["probs"], rtol=1e-4, atol=1e-6)
    with pytest.raises(cu.CourseError, match="dropped"):
        tk.evaluate(model, dataset(x, y, batch=16, drop_remainder=True), y)


def test_evaluate_refuses_labels_that_disagree_with_a_shuffled_datasets_own(data):
    """Issue 20, BAD 6: evaluate(shuffled_dataset, labels) scored against misaligned labels (accuracy 0.42 for a
    perfect model, no warning): the dataset's own labels were dropped when labels= was passed."""
    (x, y), _ = data
    model, _ = mk.small_cnn(x.shape[1:], 2, filters=(8,))
    shuffled = dataset(x, y, shuffle=True)
    with pytest.raises(cu.CourseError, match="carries its own labels.*differs from them for [0-9]+ of 192"):
        tk.evaluate(model, shuffled, y)
    alone = tk.evaluate(model, shuffled)                       # its own labels, in the order it yields them
    np.testing.assert_array_equal(np.sort(alone["y_true"]), np.sort(y))
    in_order = tk.evaluate(model, dataset(x, y), y)            # labels= that agree are fine
    assert in_order["n"] == 192
    with pytest.raises(cu.CourseError, match=r"class indices 0\.\.1 .* from 0 to 5"):
        tk.evaluate(model, x, np.where(y == 1, 5, 0))          # was sklearn's "multi_class must be in ('ovo','ovr')"


def test_predict_resizes_to_the_model_input(data):
    (x, _), _ = data
    model, _ = mk.small_cnn((16, 16, 3), 2, filters=(8,))
    probs, labels = tk.predict(model, x[:7], batch_size=4)
    assert probs.shape == (7, 2) and labels is None


def test_frozen_base_is_untouched_by_training(data, tmp_path):
    """Frozen layers keep their weights, and frozen BatchNorm keeps its moving statistics."""
    (x, y), _ = data
    size = 32
    x32 = tf.image.resize(x[:64], (size, size)).numpy().astype(np.uint8)
    model, info = mk.efficientnet_b0((size, size, 3), 2, pretrained=False, trainable_layers=3, freeze_bn=True)
    base = mk.find_base(model)
    before = {v.path: np.array(v) for v in base.weights}
    tk.fit(model, dataset(x32, y[:64], batch=32), epochs=1, learning_rate=1e-3, run_dir=tmp_path, verbose=0)
    changed = {p for v in base.weights if not np.allclose(before[(p := v.path)], np.array(v))}
    assert changed and all("top_conv" in p for p in changed), changed


def test_fit_on_any_keras_model(tmp_path):
    """(moved from the removed course_utils.train) a plain Dense model on feature vectors."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    hist = tk.fit(model, ds, ds, epochs=2, learning_rate=1e-2, run_dir=tmp_path, verbose=0)
    assert isinstance(hist, cu.History) and hist.n_epochs == 2
    assert "val_loss" in hist and (tmp_path / "history.csv").exists()


def test_a_single_sigmoid_unit_gives_two_probability_columns(data):
    import keras

    (x, y), _ = data
    model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    probs, _ = tk.predict(model, x[:5])
    assert probs.shape == (5, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    res = tk.evaluate(model, x[:20], y[:20])
    assert res["n"] == 20 and res["probs"].shape == (20, 2)


@pytest.mark.filterwarnings("ignore:CUDA initialization")  # torch imported after TensorFlow on a GPU-less machine
def test_keras_and_torch_evaluate_return_the_same_keys(data):
    """Both engines' evaluate: n, loss, accuracy, macro_f1, auc, ap, recall_<class>, probs, y_true, y_pred."""
    torch = pytest.importorskip("torch")
    from course_utils.models import torch_models as mt
    from course_utils.train import torch_engine as tt

    (x, y), _ = data
    names = ["noise", "square"]
    keras_model, _ = mk.small_cnn(x.shape[1:], 2, filters=(8,))
    keras_result = tk.evaluate(keras_model, x[:40], y[:40], class_names=names)
    images = torch.from_numpy(x[:40]).permute(0, 3, 1, 2).float() / 255
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.from_numpy(y[:40])), batch_size=16)
    for n_out, task in ((1, "binary"), (2, "binary"), (2, "multi-class")):
        torch_model, _ = mt.small_cnn(n_out, width=4)
        torch_result = tt.evaluate(torch_model, loader, task, class_names=names)
        assert set(torch_result) == set(keras_result), (task, set(torch_result) ^ set(keras_result))
    assert set(keras_result) == {"n", "loss", "accuracy", "macro_f1", "auc", "ap", "recall_noise", "recall_square",
                                 "probs", "y_true", "y_pred"}


def test_auto_verbosity_is_one_line_per_epoch_in_a_notebook(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ipykernel", sys.modules.get("ipykernel") or type(sys)("ipykernel"))
    assert tk._verbose("auto") == 2          # Keras' bar would print hundreds of fragments into the notebook
    assert tk._verbose(0) == 0 and tk._verbose(1) == 1


@pytest.fixture
def keras_cap(rehearsal):
    """The rehearsal's cap on ``keras.Model.fit`` and ``predict`` installed for one test, Keras' own put back
    afterwards; returns the report file."""
    import keras

    assert hasattr(keras.Model.fit, "rehearsal_original") and hasattr(keras.Model.predict, "rehearsal_original")
    yield rehearsal
    cu.rehearsal.uninstall()
    assert not hasattr(keras.Model.fit, "rehearsal_original") and not hasattr(keras.Model.predict, "rehearsal_original")


def test_the_rehearsal_caps_every_keras_fit_and_records_the_uncapped_work(data, tmp_path, monkeypatch, keras_cap):
    import json

    import keras

    (xtr, ytr), (xva, yva) = data
    train = cu.pipelines.to_tf_dataset(xtr, ytr, batch_size=16, training=True)   # 12 batches
    model, _ = mk.small_cnn((24, 24, 3), n_classes=2, filters=(4,))
    steps = []
    count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    hist = tk.fit(model, train, dataset(xva, yva), epochs=4, run_dir=tmp_path / "run", verbose=0,
                  callbacks=[count])
    assert len(hist["loss"]) == 1 and len(steps) == 2           # 1 epoch of 2 steps, not 4 x 12
    recs = [json.loads(line) for line in keras_cap.read_text().splitlines()]
    train_rec = next(r for r in recs if r["kind"] == "work" and r["pass"] == "train")
    assert train_rec["images"] == 4 * 192 and train_rec["steps"] == 4 * 12 and train_rec["flops_per_image"] > 0
    cu.rehearsal.uninstall()                                     # outside a rehearsal: Keras as it is
    steps.clear()
    model.fit(train, epochs=1, verbose=0, callbacks=[count], shuffle=False)
    assert len(steps) == 12


def test_rehearsal_caps_keras_predict_but_returns_one_output_per_image(monkeypatch, data, keras_cap):
    """In a rehearsal ``model.predict`` (a notebook's own call) runs CAPS.eval_batches batches and repeats their
    outputs, so lengths stay what full mode gives (here 64 of 70 images with drop_remainder); outside it, Keras'."""
    import json

    import tensorflow as tf

    (xtr, ytr), _ = data
    x = xtr[:70].astype("float32") / 255.0
    model, _ = mk.small_cnn((24, 24, 3), n_classes=2, filters=(4,))
    import keras

    exact = keras.Model.predict.rehearsal_original(model, x, batch_size=8, verbose=0)   # Keras' own, all 9 batches
    leaky = tf.data.Dataset.from_tensor_slices((x, ytr[:70])).batch(8, drop_remainder=True)   # 8 batches
    out = model.predict(leaky, verbose=0)
    assert out.shape == (64, 2)
    kept = cu.rehearsal.CAPS.eval_batches * 8
    assert np.allclose(out[:kept], exact[:kept], atol=1e-5)          # the batches it ran are the real outputs
    assert np.allclose(out[kept:2 * kept], out[:kept])                # the rest repeat them
    work = [json.loads(line) for line in keras_cap.read_text().splitlines()]
    assert [(r["pass"], r["images"], r["steps"]) for r in work if r["kind"] == "work"] == [("forward", 64, 8)]
    arrays = model.predict(x, batch_size=8, verbose=0)                 # arrays: 9 batches, 4 run
    assert arrays.shape == (70, 2) and np.allclose(arrays[:kept], exact[:kept], atol=1e-5)
    cu.rehearsal.uninstall()                                          # outside a rehearsal: Keras as it is
    assert np.allclose(model.predict(x, batch_size=8, verbose=0), exact, atol=1e-6)
