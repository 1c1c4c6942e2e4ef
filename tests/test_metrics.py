"""course_utils.metrics against scikit-learn and hand-computed values on small arrays."""
import numpy as np
import pytest
from sklearn import metrics as skm

from course_utils import CourseError
from course_utils import metrics as M

Y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
P1 = np.array([0.1, 0.2, 0.3, 0.6, 0.2, 0.1, 0.9, 0.4, 0.7, 0.8])  # probability of class 1


def test_binary_metrics_match_sklearn_and_accept_two_columns():
    two_cols = np.stack([1 - P1, P1], axis=1)
    assert M.roc_auc(Y, P1) == pytest.approx(skm.roc_auc_score(Y, P1))
    assert M.roc_auc(Y, two_cols) == M.roc_auc(Y, P1)
    assert M.average_precision(Y, P1) == pytest.approx(skm.average_precision_score(Y, P1))
    pred = (P1 >= 0.5).astype(int)
    assert M.accuracy(Y, P1) == pytest.approx(0.8)  # hand count: one FP (0.6), one FN (0.4)
    assert M.macro_f1(Y, two_cols) == pytest.approx(skm.f1_score(Y, pred, average="macro"))
    np.testing.assert_array_equal(M.confusion_matrix(Y, P1), [[5, 1], [1, 3]])


def test_recall_of_a_named_class_and_the_always_majority_trap():
    names = ["malignant", "benign"]
    y = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    always_benign = np.ones_like(y)
    assert M.accuracy(y, always_benign) == pytest.approx(0.8)
    assert M.class_recall(y, always_benign, "malignant", names) == 0.0
    assert M.class_recall(y, always_benign, "benign", names) == 1.0
    assert M.class_recall(Y, P1, 1) == pytest.approx(skm.recall_score(Y, (P1 >= 0.5).astype(int)))
    with pytest.raises(CourseError, match="not among"):
        M.class_recall(y, always_benign, "cyst", names)


def test_multiclass_auc_is_sklearn_ovr_macro():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    logits = rng.normal(size=(30, 3)) + np.eye(3)[y] * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert M.roc_auc(y, probs, "multi-class") == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert M.accuracy(y, probs, "multi-class") == pytest.approx(np.mean(probs.argmax(1) == y))
    assert M.macro_f1(y, probs, "multi-class") == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"))
    report = M.classification_report(y, probs, ["a", "b", "c"], task="multi-class", output_dict=True)
    assert report["b"]["recall"] == pytest.approx(skm.recall_score(y, probs.argmax(1), average=None)[1])


def test_multilabel_metrics():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]])
    p = np.array([[.9, .2, .1], [.3, .8, .4], [.6, .4, .2], [.2, .1, .7], [.4, .3, .9], [.1, .9, .3]])
    np.testing.assert_allclose(M.per_label_accuracy(y, p), [5 / 6, 5 / 6, 5 / 6])
    assert M.roc_auc(y, p, "multi-label") == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert M.average_precision(y, p, "multi-label") == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    assert M.accuracy(y, p, "multi-label") == pytest.approx(15 / 18)
    # a label without positives is skipped (with a warning), not a crash
    y2 = y.copy()
    y2[:, 2] = 0
    with pytest.warns(UserWarning, match="single class"):
        assert M.roc_auc(y2, p, "multi-label") == pytest.approx(skm.roc_auc_score(y2[:, :2], p[:, :2]))


def test_best_threshold_maximises_f1_or_youden_on_validation():
    thr = M.best_threshold(Y, P1, "f1")
    f1s = {t: skm.f1_score(Y, (P1 >= t).astype(int)) for t in np.unique(P1)}
    assert skm.f1_score(Y, (P1 >= thr).astype(int)) == pytest.approx(max(f1s.values()))
    j = M.best_threshold(Y, P1, "youden")
    youden = {t: skm.recall_score(Y, (P1 >= t).astype(int)) + skm.recall_score(1 - Y, (P1 < t).astype(int)) - 1
              for t in np.unique(P1)}
    assert youden[j] == pytest.approx(max(youden.values()))
    with pytest.raises(CourseError, match="both classes"):
        M.best_threshold(np.zeros(4), np.ones(4) * 0.3)


def test_undefined_auc_is_nan_with_a_warning_and_bad_shapes_raise():
    with pytest.warns(UserWarning, match="undefined"):
        assert np.isnan(M.roc_auc(np.ones(5), np.linspace(0, 1, 5)))
    with pytest.raises(CourseError, match="different lengths"):
        M.roc_auc(Y, P1[:5])
    with pytest.raises(CourseError, match="task must be"):
        M.accuracy(Y, P1, task="regression")
    with pytest.raises(CourseError, match="N x L"):
        M.per_label_accuracy(Y, P1)


def test_summarize_reports_the_headline_numbers():
    out = M.summarize(Y, P1, "binary", class_names=["malignant", "benign"])
    assert set(out) == {"accuracy", "macro_f1", "auc", "ap", "recall_malignant", "recall_benign"}
    assert out["recall_benign"] == pytest.approx(0.75) and out["recall_malignant"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("shape, task", [((6, 1), "auto"), ((6, 2), "auto"), ((6, 5), "multi-class"),
                                         ((6, 3), "multi-label"), ((6,), "binary")])
def test_probabilities_numpy_and_torch_agree_with_scipy(shape, task):
    """The one logits -> probabilities rule: numpy and torch versions equal each other and scipy."""
    torch = pytest.importorskip("torch")
    from scipy.special import expit, softmax

    z = np.random.default_rng(0).normal(size=shape) * 8  # large logits too
    p_np = M.probabilities(z, task)
    p_torch = M.probabilities_torch(torch.from_numpy(z), task).double().numpy()
    np.testing.assert_allclose(p_np, p_torch, rtol=1e-5, atol=1e-6)
    z2 = z.reshape(len(z), -1)
    if task == "multi-label":
        expected = expit(z2)
    elif z2.shape[1] == 1:
        expected = np.concatenate([1 - expit(z2), expit(z2)], axis=1)
    else:
        expected = softmax(z2, axis=1)
    np.testing.assert_allclose(p_np, expected, rtol=1e-10, atol=1e-12)
    assert p_np.shape == (z2.shape if task == "multi-label" else (len(z), max(2, z2.shape[1])))
