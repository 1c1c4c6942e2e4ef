"""course_utils.metrics against scikit-learn and hand-computed values on small arrays."""
import warnings

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


# --------------------------------------------------------------------------- every task against sklearn
def _data(task, n=40, c=3, seed=0):
    rng = np.random.default_rng(seed)
    if task == "binary":
        y = rng.integers(0, 2, n)
        return y, np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1)
    if task == "multi-class":
        y = rng.integers(0, c, n)
        z = rng.normal(size=(n, c)) + 1.2 * np.eye(c)[y]
        return y, np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = rng.integers(0, 2, (n, c))
    return y, np.clip(0.3 * y + rng.uniform(0, 0.7, (n, c)), 0, 1)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.62])
def test_summarize_binary_equals_sklearn_at_the_threshold(threshold):
    y, s = _data("binary")
    pred = (s >= threshold).astype(int)
    out = M.summarize(y, s, "binary", class_names=["neg", "pos"], threshold=threshold)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert out["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert out["ap"] == pytest.approx(skm.average_precision_score(y, s))
    rec = skm.recall_score(y, pred, average=None)
    assert out["recall_neg"] == pytest.approx(rec[0]) and out["recall_pos"] == pytest.approx(rec[1])
    two = M.summarize(y, np.stack([1 - s, s], 1), "binary", threshold=threshold)
    assert two == pytest.approx({k.replace("neg", "0").replace("pos", "1"): v for k, v in out.items()})


def test_summarize_multi_class_and_multi_label_equal_sklearn():
    y, s = _data("multi-class")
    pred = s.argmax(1)
    out = M.summarize(y, s, "multi-class")
    assert set(out) == {"accuracy", "macro_f1", "auc", "ap", "recall_0", "recall_1", "recall_2"}
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert out["auc"] == pytest.approx(skm.roc_auc_score(y, s, multi_class="ovr"))
    assert out["ap"] == pytest.approx(np.mean([skm.average_precision_score(y == c, s[:, c]) for c in range(3)]))
    rec = skm.recall_score(y, pred, average=None)
    assert [out[f"recall_{c}"] for c in range(3)] == pytest.approx(list(rec))
    assert M.summarize(y, s, "multi-class", threshold=0.9) == out            # argmax: no threshold
    yl, sl = _data("multi-label")
    for thr in (0.4, 0.6):
        out = M.summarize(yl, sl, "multi-label", threshold=thr)
        pred = (sl >= thr).astype(int)
        assert set(out) == {"accuracy", "macro_f1", "auc", "ap"}
        assert out["accuracy"] == pytest.approx((pred == yl).mean())
        assert out["macro_f1"] == pytest.approx(skm.f1_score(yl, pred, average="macro"))
        assert out["auc"] == pytest.approx(skm.roc_auc_score(yl, sl, average="macro"))
        assert out["ap"] == pytest.approx(skm.average_precision_score(yl, sl, average="macro"))
        np.testing.assert_allclose(M.per_label_accuracy(yl, sl, threshold=thr), (pred == yl).mean(0))


def test_auc_ap_partial_classes_and_two_softmax_columns():
    y, s = _data("multi-class", n=30, c=4, seed=3)
    y = np.where(y == 3, 0, y)                                            # class 3 never occurs
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                    # scored without a warning
        auc = M.roc_auc(y, s, "multi-class")
    assert auc == pytest.approx(np.mean([skm.roc_auc_score(y == c, s[:, c]) for c in range(3)]))
    assert M.average_precision(y, s, "multi-class") == pytest.approx(
        np.mean([skm.average_precision_score(y == c, s[:, c]) for c in range(3)]))
    yb, sb = _data("binary", seed=4)
    two = np.stack([1 - sb, sb], 1)
    assert M.roc_auc(yb, two, "multi-class") == pytest.approx(skm.roc_auc_score(yb, sb))   # class 1's column
    assert M.roc_auc(yb, sb[:, None], "binary") == pytest.approx(skm.roc_auc_score(yb, sb))
    assert M.average_precision(yb, two, "binary") == pytest.approx(skm.average_precision_score(yb, sb))
    yl, sl = _data("multi-label", seed=5)
    yl[:, 1] = 1                                                          # label 1 has a single class
    with pytest.warns(UserWarning, match="1 label"):
        assert M.roc_auc(yl, sl, "multi-label") == pytest.approx(skm.roc_auc_score(yl[:, [0, 2]], sl[:, [0, 2]]))
    yl[:, 2] = 0                                                          # label 2 has no positive
    assert M.average_precision(yl, sl, "multi-label") == pytest.approx(
        skm.average_precision_score(yl[:, :2], sl[:, :2], average="macro"))
    with pytest.warns(UserWarning, match="undefined"):
        assert np.isnan(M.roc_auc(np.zeros(5, int), np.linspace(0, 1, 5)))
    with pytest.warns(UserWarning, match="undefined"):
        assert np.isnan(M.average_precision(np.zeros(5, int), np.linspace(0, 1, 5)))


def test_confusion_matrix_recall_and_thresholds_by_hand():
    y = np.array([0, 0, 1, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(M.confusion_matrix(y, p), [[1, 1, 0], [0, 2, 1], [0, 0, 1]])
    np.testing.assert_array_equal(M.confusion_matrix(y, p, n_classes=4)[3], [0, 0, 0, 0])
    np.testing.assert_allclose(M.confusion_matrix(y, p, normalize="true")[1], [0, 2 / 3, 1 / 3])
    probs = np.eye(3)[p] * 0.6 + 0.1333
    np.testing.assert_array_equal(M.confusion_matrix(y, probs), [[1, 1, 0], [0, 2, 1], [0, 0, 1]])
    assert M.class_recall(y, p, 1) == pytest.approx(2 / 3) and M.class_recall(y, probs, 0) == 0.5
    assert M.class_recall(y, p, "c", ["a", "b", "c"]) == 1.0
    with pytest.warns(UserWarning, match="undefined"):
        assert np.isnan(M.class_recall(np.array([0, 0, 2]), np.array([0, 0, 2]), 1))
    s = np.array([0.2, 0.45, 0.55, 0.7])
    yb = np.array([0, 1, 0, 1])
    np.testing.assert_array_equal(M.confusion_matrix(yb, s, threshold=0.5), [[1, 1], [1, 1]])
    np.testing.assert_array_equal(M.confusion_matrix(yb, s, threshold=0.4), [[1, 1], [0, 2]])
    assert M.class_recall(yb, s, 1, threshold=0.4) == 1.0 and M.class_recall(yb, s, 1, threshold=0.5) == 0.5
    assert M.accuracy(yb, s, threshold=0.4) == 0.75 and M.accuracy(yb, s, threshold=0.5) == 0.5
    assert M.macro_f1(yb, s, threshold=0.4) == pytest.approx(skm.f1_score(yb, s >= 0.4, average="macro"))
    np.testing.assert_array_equal(M.to_predictions(s, "binary", 0.55), [0, 0, 1, 1])   # >= the threshold


def test_best_threshold_by_brute_force():
    y, s = _data("binary", n=50, seed=7)
    cands = np.unique(s)

    def f1(t):
        return skm.f1_score(y, s >= t)

    def youden(t):
        pred = s >= t
        return pred[y == 1].mean() - pred[y == 0].mean()

    for crit, fn in (("f1", f1), ("youden", youden)):
        t = M.best_threshold(y, s, crit)
        assert fn(t) == pytest.approx(max(fn(c) for c in cands)), crit
    assert M.best_threshold(y, np.stack([1 - s, s], 1)) == M.best_threshold(y, s)
    with pytest.raises(CourseError, match="criterion"):
        M.best_threshold(y, s, "accuracy")
    with pytest.raises(CourseError, match="both classes"):
        M.best_threshold(np.ones(4, int), np.linspace(0, 1, 4))


def test_confusion_matrix_shapes_and_best_threshold_edges():
    with pytest.warns(UserWarning, match="single label"):                                    # sklearn says so
        np.testing.assert_array_equal(M.confusion_matrix([0, 0], [0, 0]), [[2]])             # one class seen
    y = np.array([0, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(M.confusion_matrix(y[:, None], y), [[2, 0], [0, 4]])        # an N x 1 column
    with pytest.raises(CourseError, match="multi-label"):
        M.confusion_matrix(np.ones((6, 2), int), y)
    s = np.array([0.1, 0.35, 0.45, 0.2, 0.8, 0.9])
    two = np.stack([1 - s, s], 1)                                                             # binary: thresholded
    np.testing.assert_array_equal(M.confusion_matrix(y, two, threshold=0.15), [[1, 1], [0, 4]])
    assert M.class_recall(y, two, 1, threshold=0.4) == 0.75
    three = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])                                      # two rows, 3 classes
    np.testing.assert_array_equal(M.confusion_matrix([1, 0], three), [[0, 0, 1], [0, 1, 0], [0, 0, 0]])
    assert M.class_recall([1, 0], three, 1) == 1.0
    # Youden's best is the 'nothing positive' point for anti-correlated scores: clipped to 1 for probabilities,
    # left infinite for logits
    assert M.best_threshold([1, 0, 1, 0], [0.1, 0.9, 0.2, 0.8], "youden") == 1.0
    assert M.best_threshold([1, 0, 1, 0], [-2.0, 3.0, -1.0, 2.0], "youden") == np.inf
    assert M.best_threshold([0, 1, 0, 1], [0.0, 0.6, 0.3, 0.4], "youden") == 0.4
    for seed in range(25):                                                                    # F1: brute force
        rng = np.random.default_rng(seed)
        yy = rng.integers(0, 2, 14)
        yy[:2] = [0, 1]
        ss = np.round(rng.uniform(0, 1, 14) * 0.6 + 0.4 * yy, 2)
        t = M.best_threshold(yy, ss, "f1")
        assert skm.f1_score(yy, ss >= t) == pytest.approx(max(skm.f1_score(yy, ss >= c) for c in np.unique(ss)))


def test_huge_logits_and_youden_clipping_edges():
    z = np.array([[1000.0, 0.0], [0.0, 1.0]])                          # rows far apart: each shifted by its own max
    np.testing.assert_allclose(M.probabilities(z, "multi-class"), [[1, 0], [1 / (1 + np.e), np.e / (1 + np.e)]])
    y = [1, 0, 1, 0]
    assert M.best_threshold(y, [0.0, 1.0, 0.2, 0.8], "youden") == 1.0   # 0 and 1 are probabilities too
    assert M.best_threshold(y, [0.1, 1.5, 0.2, 1.2], "youden") == np.inf   # scores above 1: not probabilities


def test_defaults_partial_classes_and_exact_thresholds():
    s = np.array([0.2, 0.5, 0.7])
    np.testing.assert_array_equal(M.to_predictions(s, "binary"), [0, 1, 1])                    # 0.5 by default
    np.testing.assert_array_equal(M.to_predictions(np.array([[0.5, 0.49]]), "multi-label"), [[1, 0]])  # >= too
    assert M.to_predictions(s, "binary").dtype.kind == "i"
    y3 = np.array([0, 2, 0, 2, 2, 0])                                                          # class 1 absent
    p3 = np.random.default_rng(2).dirichlet([1, 1, 1], 6)
    assert M.roc_auc(y3, p3, "multi-class") == pytest.approx(
        np.mean([skm.roc_auc_score(y3 == c, p3[:, c]) for c in (0, 2)]))
    yl, sl = _data("multi-label", seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                                        # nothing skipped: no warning
        assert M.roc_auc(yl, sl, "multi-label") == pytest.approx(skm.roc_auc_score(yl, sl, average="macro"))
    y = np.array([0, 1, 1, 0])
    assert M.class_recall(y[:, None], np.array([0, 1, 0, 0]), 1) == 0.5                        # an N x 1 column
    with pytest.raises(CourseError, match="multi-label"):
        M.class_recall(np.ones((4, 2), int), np.ones((4, 2)), 1)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 1.0])
def test_recall_target_threshold_is_the_highest_that_reaches_the_target_by_brute_force(target):
    y, s = _data("binary", n=60, seed=3)
    t = M.best_threshold(y, s, "recall", target=target)
    reaching = [c for c in np.unique(s) if skm.recall_score(y, s >= c) >= target]
    assert t == max(reaching)
    assert skm.recall_score(y, s >= t) >= target
    with pytest.raises(CourseError, match="target"):
        M.best_threshold(y, s, "recall")
