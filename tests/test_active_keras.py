"""The Keras adapters: the Keras counterpart of the torch adapters, batch-norm left alone by MC dropout."""
from __future__ import annotations

import numpy as np
import pytest

from course_utils.active import keras_outputs as ak


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(24, 8, 8, 1), dtype=np.uint8)


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
    out = ak.keras_outputs(model, images, needs=("probs", "mc_samples", "embeddings", "grad_embeddings"),
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
    assert ak.keras_probs(sigmoid, images).shape == (24, 2)                 # one sigmoid unit -> [1 - p, p]
    assert ak.keras_gradient_embeddings(sigmoid, images).shape == (24, 2 * 5)
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
    p = ak.keras_probs(model, images)
    mc = ak.keras_mc_samples(model, images, mc_passes=3)
    np.testing.assert_allclose(mc, np.broadcast_to(p, mc.shape), atol=1e-6)    # no flips, dropout rate 0
    flipped = np.stack([np.asarray(model(images.astype("float32") / 255, training=True)) for _ in range(3)])
    assert np.abs(flipped - p).max() > 1e-3                                     # what a plain call would do
    assert "call" not in vars(model.layers[1])                                  # the override was removed


def test_nan_pixels_in_the_pool_are_refused_naming_the_images(keras, images):
    """Issue 20, BAD 5: the Keras outputs of NaN images were finite probabilities that the strategies accepted."""
    from course_utils import CourseError

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.GlobalMaxPooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    x = images.astype(np.float32) / 255
    x[5, 0, 0, 0] = np.inf
    with pytest.raises(CourseError, match=r"1 of 24 images have NaN or inf pixels \(index 5\)"):
        ak.keras_outputs(model, x, needs=("probs",))


def test_keras_distillation_loss_equals_the_torch_one(keras):
    import torch

    from course_utils.active.loop import distillation_loss, keras_distillation_loss

    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    y = rng.integers(0, 4, 6)
    soft = np.exp(teacher / 2.0) / np.exp(teacher / 2.0).sum(axis=1, keepdims=True)
    y_true = np.concatenate([np.eye(4)[y], soft], axis=1).astype(np.float32)
    mine = float(np.mean(keras.ops.convert_to_numpy(
        keras_distillation_loss(4, temperature=2.0, weight=0.3)(y_true, student.astype(np.float32)))))
    ref = float(distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(y), temperature=2.0,
                                  weight=0.3))
    assert mine == pytest.approx(ref, rel=1e-5)


def test_simulate_runs_with_a_keras_learner_and_self_distillation(keras):
    from course_utils.active import loop

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    y_pool, y_test = rng.integers(0, 3, 90), rng.integers(0, 3, 45)
    x_pool = (centres[y_pool] + rng.normal(size=(90, 8))).astype(np.float32)
    x_test = (centres[y_test] + rng.normal(size=(45, 8))).astype(np.float32)

    def make_model():
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                 keras.layers.Dropout(0.3), keras.layers.Dense(3)])

    learner = loop.KerasLearner(make_model, epochs=5, batch_size=16, min_steps=150, lr=3e-3, mc_passes=3)
    res = loop.simulate(learner, x_pool, y_pool, x_test, y_test, strategies=["random", "bald", "coreset"],
                        initial=9, budget=6, rounds=2, seeds=[0], distill=True, progress=False)
    assert set(res.table["strategy"]) == {"random+distill", "bald+distill", "coreset+distill"}
    assert res.table["n_labelled"].max() == 21 and res.table["accuracy"].between(0, 1).all()
    assert res.table.groupby("strategy")["accuracy"].last().max() > 0.6     # separable classes: it learns
