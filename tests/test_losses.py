"""course_utils.losses: focal loss checked against torchvision and Keras, values and gradients."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from course_utils import CourseError
from course_utils.train import losses as L


def _logits_targets(shape=(64, 3), lim=15.0, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(-lim, lim, shape).astype(np.float32)
    t = (rng.random(shape) > 0.7).astype(np.float32)
    return z, t


def _value_and_grad(fn, z, t):
    zt = torch.tensor(z, requires_grad=True)
    loss = fn(zt, torch.tensor(t))
    (grad,) = torch.autograd.grad(loss, zt)
    return loss.item(), grad.numpy()


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.75, 0.5), (0.5, 0.0), (0.1, 5.0)])
def test_sigmoid_focal_equals_torchvision(alpha, gamma):
    z, t = _logits_targets()
    ours = _value_and_grad(lambda a, b: L.sigmoid_focal_loss(a, b, alpha, gamma), z, t)
    ref = _value_and_grad(lambda a, b: torchvision.ops.sigmoid_focal_loss(a, b, alpha, gamma, reduction="mean"), z, t)
    assert ours[0] == pytest.approx(ref[0], rel=1e-6)
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-5, atol=1e-9)


def test_no_alpha_equals_torchvision_alpha_off():
    z, t = _logits_targets(seed=1)
    ours = _value_and_grad(lambda a, b: L.sigmoid_focal_loss(a, b, None, 2.0), z, t)
    ref = _value_and_grad(lambda a, b: torchvision.ops.sigmoid_focal_loss(a, b, -1, 2.0, reduction="mean"), z, t)
    assert ours[0] == pytest.approx(ref[0], rel=1e-6)
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-5, atol=1e-9)


def test_gamma_zero_without_alpha_is_binary_cross_entropy():
    z, t = _logits_targets(seed=2)
    ours = _value_and_grad(lambda a, b: L.sigmoid_focal_loss(a, b, None, 0.0), z, t)
    ref = _value_and_grad(F.binary_cross_entropy_with_logits, z, t)
    assert ours[0] == pytest.approx(ref[0], rel=1e-6)
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-5, atol=1e-9)


def test_softmax_focal_gamma_zero_is_cross_entropy_and_gamma_shrinks_easy_examples():
    torch.manual_seed(0)
    logits = torch.randn(32, 5) * 4
    y = torch.randint(0, 5, (32,))
    ce_value = F.cross_entropy(logits, y).item()
    assert L.softmax_focal_loss(logits, y, gamma=0.0).item() == pytest.approx(ce_value, rel=1e-6)
    w = [0.1, 0.2, 0.3, 0.2, 0.2]
    assert L.softmax_focal_loss(logits, y, alpha=w, gamma=0.0, reduction="sum").item() == pytest.approx(
        F.cross_entropy(logits, y, weight=torch.tensor(w), reduction="sum").item(), rel=1e-5)
    per = L.softmax_focal_loss(logits, y, gamma=2.0, reduction="none")
    ce = F.cross_entropy(logits, y, reduction="none")
    p_t = torch.exp(-ce)
    torch.testing.assert_close(per, ce * (1 - p_t) ** 2)
    assert torch.all(per <= ce + 1e-7)


@pytest.mark.slow
def test_sigmoid_focal_equals_keras_binary_focal_crossentropy():
    """Keras 3 with from_logits=True matches to float32 precision for |logit| <= 15 (measured:
    still within 1e-6 at |logit| = 30, because Keras computes the BCE part from logits)."""
    from course_utils.runtime import import_tensorflow

    tf = import_tensorflow()
    z, t = _logits_targets(shape=(64, 4), lim=15.0, seed=3)
    for alpha, gamma in [(0.25, 2.0), (0.6, 1.0)]:
        ours = _value_and_grad(lambda a, b: L.sigmoid_focal_loss(a, b, alpha, gamma), z, t)
        keras_loss = L.keras_focal_loss(alpha, gamma)
        zv = tf.Variable(z)
        with tf.GradientTape() as tape:
            value = keras_loss(tf.constant(t), zv)
        grad = tape.gradient(value, zv).numpy()
        assert ours[0] == pytest.approx(float(value), rel=1e-5)
        np.testing.assert_allclose(ours[1], grad, rtol=1e-4, atol=1e-8)


def test_large_logits_stay_finite_even_for_gamma_below_one():
    z = torch.tensor([[40.0], [-40.0], [200.0], [-200.0]], requires_grad=True)
    t = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    loss = L.sigmoid_focal_loss(z, t, 0.25, 0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert loss.item() > 10  # the two confidently wrong ones dominate, as they should


def test_focal_loss_module_dispatches_on_target_shape():
    fl = L.FocalLoss(alpha=0.25, gamma=2.0)
    z = torch.randn(8, 1)
    t = torch.randint(0, 2, (8, 1)).float()
    assert fl(z, t).item() == pytest.approx(L.sigmoid_focal_loss(z, t, 0.25, 2.0).item())
    z2, y2 = torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert fl(z2, y2).item() == pytest.approx(L.softmax_focal_loss(z2, y2, 0.25, 2.0).item())


def test_bad_shapes_and_parameters_raise_clear_errors():
    with pytest.raises(CourseError, match="same shape"):
        L.sigmoid_focal_loss(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(CourseError, match="gamma"):
        L.sigmoid_focal_loss(torch.zeros(4, 1), torch.zeros(4, 1), gamma=-1)
    with pytest.raises(CourseError, match="alpha"):
        L.sigmoid_focal_loss(torch.zeros(4, 1), torch.zeros(4, 1), alpha=1.5)
    with pytest.raises(CourseError, match="class weights"):
        L.softmax_focal_loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), alpha=[0.5, 0.5])


def test_prior_bias_makes_the_untrained_model_predict_the_prior():
    assert L.prior_bias(0.5) == 0.0
    b = L.prior_bias(0.01)
    assert b == pytest.approx(-math.log(99))
    assert torch.sigmoid(torch.tensor(b)).item() == pytest.approx(0.01)
    layer = torch.nn.Linear(8, 3)
    L.init_prior_bias(layer, [0.1, 0.27, 0.5])
    torch.testing.assert_close(torch.sigmoid(layer.bias.detach()), torch.tensor([0.1, 0.27, 0.5]))
    with pytest.raises(CourseError):
        L.prior_bias(0.0)
    with pytest.raises(CourseError):
        L.init_prior_bias(torch.nn.Linear(8, 2), [0.1, 0.2, 0.3])


# ---------------------------------------------------------------- issue 20: defaults, shapes, priors, exactly
def test_the_defaults_are_no_alpha_and_gamma_2():
    """Issue 22: no class weighting by default (RetinaNet's 0.25 weighs a rare positive class down, as 04 shows)."""
    import torch

    g = torch.Generator().manual_seed(0)
    logits, t = torch.randn(12, 1, generator=g) * 2, (torch.rand(12, 1, generator=g) > 0.5).float()
    assert torch.equal(L.sigmoid_focal_loss(logits, t), L.sigmoid_focal_loss(logits, t, alpha=None, gamma=2.0))
    p = torch.sigmoid(logits)
    p_t = p * t + (1 - p) * (1 - t)
    by_hand = -((1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert torch.allclose(L.sigmoid_focal_loss(logits, t), by_hand, atol=1e-6)
    assert L.FocalLoss().alpha is None
    import inspect
    assert inspect.signature(L.keras_focal_loss).parameters["alpha"].default is None
    logits3, y3 = torch.randn(12, 3, generator=g) * 2, torch.randint(0, 3, (12,), generator=g)
    q = torch.softmax(logits3, 1)[torch.arange(12), y3]
    assert torch.allclose(L.softmax_focal_loss(logits3, y3), (-(1 - q) ** 2 * torch.log(q)).mean(), atol=1e-6)


def test_softmax_focal_refuses_every_shape_mismatch_and_weights_classes_by_the_target():
    import torch

    logits = torch.randn(4, 3)
    for bad in (torch.zeros(3, dtype=torch.long), torch.zeros(4, 1, dtype=torch.long)):
        with pytest.raises(CourseError, match=r"logits \[N, C\] and targets \[N\]"):
            L.softmax_focal_loss(logits, bad)
    with pytest.raises(CourseError, match=r"logits \[N, C\]"):
        L.softmax_focal_loss(torch.randn(4), torch.zeros(4, dtype=torch.long))
    y = torch.tensor([0, 1, 2, 2])
    plain = L.softmax_focal_loss(logits, y, reduction="none")
    weighted = L.softmax_focal_loss(logits, y, alpha=[0.5, 1.0, 2.0], reduction="none")
    assert torch.allclose(weighted, plain * torch.tensor([0.5, 1.0, 2.0, 2.0]))
    assert torch.allclose(L.softmax_focal_loss(logits, y, alpha=0.5, reduction="sum"), 0.5 * plain.sum())
    assert weighted.dtype == torch.float32


def test_prior_bias_bounds_and_init_prior_bias_per_output():
    import torch

    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(CourseError, match="strictly between 0 and 1"):
            L.prior_bias(bad)
    lin = torch.nn.Linear(4, 2)
    L.init_prior_bias(lin, (0.1, 0.5))                                  # a tuple: one prior per output
    assert torch.allclose(lin.bias, torch.tensor([math.log(0.1 / 0.9), 0.0]))
    L.init_prior_bias(lin, 0.2)                                         # one number: every output
    assert torch.allclose(lin.bias, torch.full((2,), math.log(0.2 / 0.8)))
    L.init_prior_bias(lin, np.array([0.3, 0.6]))                        # an array works like a list
    assert torch.allclose(lin.bias, torch.tensor([math.log(0.3 / 0.7), math.log(0.6 / 0.4)]))
    one = torch.nn.Linear(4, 1).double()
    L.init_prior_bias(one, [0.25])
    assert one.bias.dtype == torch.float64 and one.bias.item() == pytest.approx(math.log(1 / 3))
    with pytest.raises(CourseError, match="2 priors for a layer with 3 outputs"):
        L.init_prior_bias(torch.nn.Linear(4, 3), [0.1, 0.2])
    with pytest.raises(CourseError, match="no bias"):
        L.init_prior_bias(torch.nn.Linear(4, 1, bias=False), 0.1)
    with pytest.raises(CourseError, match="no bias"):
        L.init_prior_bias(object(), 0.1)
