"""course_utils.train: the two entry points forward to the engines and return the same History."""
import numpy as np
import pytest

import course_utils as cu
from course_utils import History, train


def _toy(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    return x, y


def test_importing_train_is_cheap():
    assert train.History is History


def test_fit_forwards_to_the_torch_engine():
    torch = pytest.importorskip("torch")
    x, y = _toy()
    images = torch.from_numpy(x).reshape(-1, 1, 2, 2)  # the engine expects N x C x H x W
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.from_numpy(y)), batch_size=16)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    hist = cu.train.fit(model, loader, loader, epochs=2, task="multi-class", progress=False, seed=0)
    assert isinstance(hist, History) and hist.n_epochs == 2
    assert {"loss", "val_loss", "val_accuracy"} <= set(hist.metrics)


def test_fit_keras_forwards_to_the_keras_wrapper(tmp_path):
    tf = cu.runtime.import_tensorflow()
    import keras

    x, y = _toy()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    hist = cu.train.fit_keras(model, ds, ds, epochs=2, learning_rate=1e-2, run_dir=tmp_path, verbose=0)
    assert isinstance(hist, History) and hist.n_epochs == 2
    assert "val_loss" in hist and (tmp_path / "history.csv").exists()
