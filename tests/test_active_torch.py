"""The torch adapters: probabilities, MC-dropout samples, embeddings and BADGE gradient embeddings."""
from __future__ import annotations

import numpy as np
import pytest

from course_utils import CourseError

torch = pytest.importorskip("torch")
nn = torch.nn
from course_utils.active import torch_outputs as at  # noqa: E402


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
    out = at.torch_outputs(model, images, needs=("probs", "embeddings"), batch_size=5)
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
    mc = at.torch_mc_samples(model, images, mc_passes=6, batch_size=7)
    assert mc.shape == (6, 24, 3)
    torch.testing.assert_close(bn.running_mean, before[0])
    torch.testing.assert_close(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    assert np.abs(mc[0] - mc[1]).max() > 1e-3           # dropout is on: passes differ
    np.testing.assert_allclose(at.torch_mc_samples(model, images, mc_passes=6, batch_size=7), mc)  # seeded
    assert model.training and model[1].training and model[7].training  # the caller's (train) mode restored
    # BN in eval mode: a batch of one image gives the same MC distribution as inside a big batch
    one = at.torch_mc_samples(model, images[:1], mc_passes=1, seed=3)
    assert np.all(np.isfinite(one))
    with pytest.raises(CourseError, match="no Dropout"):
        at.torch_mc_samples(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), images)


def test_torch_gradient_embedding_class_count_comes_from_the_model(images):
    model = tiny_cnn(n_out=5)
    g = at.torch_gradient_embeddings(model, images)
    assert g.shape == (24, 5 * 6)                       # 5 outputs x 6 features, whatever the labels are
    one_logit = tiny_cnn(n_out=1)
    p = at.torch_probs(one_logit, images)
    assert p.shape == (24, 2)                           # sigmoid head -> [1 - p, p]
    assert at.torch_gradient_embeddings(one_logit, images).shape == (24, 2 * 6)
    with pytest.raises(CourseError, match="no nn.Linear"):
        at.torch_embeddings(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), images)


def test_nan_pixels_in_the_pool_are_refused_naming_the_images(images):
    """Issue 20, BAD 5: NaN pixels gave finite probabilities that every strategy accepted."""
    x = images.astype(np.float32) / 255
    x = x.transpose(0, 3, 1, 2).copy()
    x[[2, 7], 0, 1, 1] = np.nan
    with pytest.raises(CourseError, match=r"2 of 24 images have NaN or inf pixels \(index 2, 7\)"):
        at.torch_outputs(tiny_cnn(), x, needs=("probs",))
    with pytest.raises(CourseError, match=r"index 2, 7"):
        at.torch_outputs(tiny_cnn(), torch.from_numpy(x), needs=("probs",))
