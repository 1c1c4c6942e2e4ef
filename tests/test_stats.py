"""course_utils.stats against independent references: scipy's paired t-test, notebook 04's bootstrap and verdict
(copied verbatim below), Hanley & McNeil by hand, and simulations of chance models scored with sklearn."""
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

import course_utils as cu
from course_utils import CourseError, stats
from course_utils.xai import methods as xai


# --------------------------------------------------------------------------- references, copied verbatim
def old_paired_interval(a, b, confidence=0.95):
    """course_utils.xai.paired_interval before it moved to stats (the numbers must not change)."""
    d = np.asarray(a, dtype=np.float64).ravel() - np.asarray(b, dtype=np.float64).ravel()
    mean = float(d.mean())
    if d.size < 2:
        half = float("inf")
    else:
        sd = float(d.std(ddof=1))
        half = float(sps.t.ppf(0.5 + confidence / 2, d.size - 1) * sd / np.sqrt(d.size)) if sd > 0 else 0.0
    return mean, mean - half, mean + half


def nb04_paired_difference(stat, a, b, y, n_boot=1000, seed=0):
    """Notebook 04's bootstrap, as it stands in the notebook."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    def diff(seeds, idx):
        return np.mean([stat(a[k][idx], y[idx]) - stat(b[k][idx], y[idx]) for k in seeds])
    boot = [diff(rng.integers(0, len(a), len(a)), np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
            for _ in range(n_boot)]
    return diff(range(len(a)), np.arange(len(y))), np.percentile(boot, [2.5, 97.5])


def nb04_verdict(lo, hi, what):
    return f"higher {what}" if lo > 0 else f"lower {what}" if hi < 0 else "no clear difference"


def nb04_auc_se(auc, n_pos, n_neg):
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    return float(np.sqrt((auc * (1 - auc) + (n_pos - 1) * (q1 - auc ** 2) + (n_neg - 1) * (q2 - auc ** 2))
                         / (n_pos * n_neg)))


def recall_at(p, y, threshold=0.5):
    return float(np.mean(p[y == 1] >= threshold))


def auc_of(p, y):
    ranks, n1 = sps.rankdata(p), int(y.sum())
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1)))


@pytest.fixture(scope="module")
def three_seeds():
    """Scores [3 seeds, 78 images] of two models on notebook 04's validation split (21 malignant)."""
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(21, int), np.zeros(57, int)]
    rng.shuffle(y)
    a = np.clip(rng.normal(0.35 + 0.3 * y, 0.2, (3, 78)), 0, 1)
    b = np.clip(rng.normal(0.30 + 0.2 * y, 0.2, (3, 78)), 0, 1)
    return a, b, y


# --------------------------------------------------------------------------- paired t-interval
@pytest.mark.parametrize("n, confidence", [(2, 0.95), (5, 0.9), (20, 0.95), (200, 0.99)])
def test_paired_t_interval_equals_scipys_ttest_rel_and_the_old_xai_numbers(n, confidence):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0.3, 0.1, n), rng.normal(0.35, 0.1, n)
    iv = stats.paired_t_interval(a, b, confidence)
    ref = sps.ttest_rel(a, b).confidence_interval(confidence)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high), rel=1e-12)
    assert iv.mean == pytest.approx(np.mean(a - b), rel=1e-12) and iv.n == n and iv.confidence == confidence
    assert (iv.mean, iv.low, iv.high) == old_paired_interval(a, b, confidence)          # bit for bit
    assert iv.method == "t" and iv.sign == (1 if ref.low > 0 else -1 if ref.high < 0 else 0)


def test_paired_t_interval_edge_cases():
    one = stats.paired_t_interval([1.0], [0.0])                           # one pair proves nothing
    assert (one.mean, one.low, one.high, one.n) == (1.0, -np.inf, np.inf, 1) and one.sign == 0
    flat = stats.paired_t_interval([0.5, 0.75, 1.0], [0.25, 0.5, 0.75])   # no spread: a point
    assert flat.low == flat.high == flat.mean == 0.25 and flat.sign == 1
    same = stats.paired_t_interval([0.3, 0.4], [0.3, 0.4])
    assert (same.low, same.high) == (0.0, 0.0) and same.sign == 0 and same.verdict() == "no clear difference"
    d = np.array([0.1, -0.05, 0.2, 0.02])
    assert stats.paired_t_interval(d) == stats.paired_t_interval(d + 1, 1.0) == stats.paired_t_interval(d, 0 * d)
    assert stats.paired_t_interval(np.ones((2, 3)), np.zeros((2, 3))).n == 6      # any shape, flattened
    for bad in ([np.nan, 1.0], [np.inf, 1.0], []):
        with pytest.raises(CourseError, match="finite"):
            stats.paired_t_interval(bad, np.zeros(len(bad)))
    with pytest.raises(CourseError, match="as many"):
        stats.paired_t_interval([1.0, 2.0, 3.0], [1.0, 2.0])
    for c in (0.0, 1.0, 95):
        with pytest.raises(CourseError, match="confidence"):
            stats.paired_t_interval([1.0, 2.0], [0.0, 0.0], c)


def test_xai_keeps_its_names_for_the_same_functions():
    assert xai.paired_interval is stats.paired_t_interval and xai.PairedInterval is stats.PairedInterval
    assert cu.stats is stats and "stats" in cu.__all__


def test_the_interval_prints_as_before_and_names_a_bootstrap():
    iv = stats.PairedInterval(0.1, -0.02, 0.22, 20, 0.95)
    assert str(iv) == "+0.100 (95% interval -0.020 to +0.220, 20 images)"
    boot = stats.PairedInterval(0.1, 0.02, 0.22, 78, 0.9, method="bootstrap")
    assert str(boot) == "+0.100 (90% bootstrap interval +0.020 to +0.220, 78 images)"
    with pytest.raises(AttributeError):
        iv.mean = 0.0                                                     # frozen


# --------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("lo, hi", [(0.1, 0.2), (-0.2, -0.1), (0.0, 0.2), (-0.1, 0.0), (-0.1, 0.1), (0.0, 0.0),
                                    (np.nan, np.nan), (-np.inf, np.inf), (1e-12, 1.0)])
def test_verdict_is_notebook_04s_wording(lo, hi):
    assert stats.verdict(lo, hi, "malignant recall") == nb04_verdict(lo, hi, "malignant recall")
    assert stats.PairedInterval(0.5 * (lo + hi), lo, hi, 3, 0.95).verdict("AUC") == nb04_verdict(lo, hi, "AUC")


def test_verdict_templates_and_the_minimum_difference():
    words = dict(above="better than {what}", below="worse than {what}")
    assert stats.verdict(0.01, 0.03, "random", **words) == "better than random"
    assert stats.verdict(-0.03, -0.01, "random", **words) == "worse than random"
    assert stats.verdict(-0.03, 0.01, "random", **words, neither="inconclusive") == "inconclusive"
    small = stats.PairedInterval(0.004, 0.002, 0.006, 30, 0.95)
    assert small.verdict("AUC") == "higher AUC"
    assert small.verdict("AUC", min_difference=0.01) == "no clear difference"     # clear, but too small to matter
    assert stats.PairedInterval(-0.02, -0.03, -0.01, 30, 0.95).verdict("AUC", min_difference=0.01) == "lower AUC"


# --------------------------------------------------------------------------- paired bootstrap
@pytest.mark.parametrize("stat", [recall_at, auc_of], ids=["recall", "auc"])
def test_paired_bootstrap_reproduces_notebook_04_draw_for_draw(three_seeds, stat):
    a, b, y = three_seeds
    d, (lo, hi) = nb04_paired_difference(stat, a, b, y, n_boot=300, seed=0)
    iv = stats.paired_bootstrap(stat, a, b, y, n_boot=300, seed=0)
    assert (iv.mean, iv.low, iv.high) == (d, lo, hi)                      # bit for bit
    assert iv.n == 78 and iv.confidence == 0.95 and iv.method == "bootstrap"
    assert iv.verdict("recall") == nb04_verdict(lo, hi, "recall")
    other = stats.paired_bootstrap(stat, a, b, y, n_boot=300, seed=np.random.default_rng(0))  # a Generator: same
    assert (other.low, other.high) == (iv.low, iv.high)
    assert stats.paired_bootstrap(stat, a, b, y, n_boot=300, seed=1).low != iv.low


def test_paired_bootstrap_against_a_brute_force_loop(three_seeds):
    """Each round resamples seeds, then malignant, then benign images: a plain loop over the same draws, with the
    percentiles of another confidence computed by sorting, gives the same interval."""
    a, b, y = three_seeds
    rng = np.random.default_rng(3)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boot = []
    for _ in range(200):
        seeds = rng.integers(0, 3, 3)
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        diffs = []
        for k in seeds:
            diffs.append(auc_of(a[k, idx], y[idx]) - auc_of(b[k, idx], y[idx]))
        boot.append(np.mean(diffs))
    ordered = np.sort(boot)
    def pct(q):                                                           # linear interpolation, by hand
        pos_ = q / 100 * (len(ordered) - 1)
        lo_i = int(np.floor(pos_))
        return ordered[lo_i] + (pos_ - lo_i) * (ordered[min(lo_i + 1, len(ordered) - 1)] - ordered[lo_i])
    iv = stats.paired_bootstrap(auc_of, a, b, y, n_boot=200, seed=3, confidence=0.8)
    assert (iv.low, iv.high) == pytest.approx((pct(10), pct(90)), abs=1e-12)
    assert iv.mean == pytest.approx(np.mean([auc_of(a[k], y) - auc_of(b[k], y) for k in range(3)]), abs=1e-15)


def test_paired_bootstrap_keeps_the_prevalence_and_knows_a_sure_difference(three_seeds):
    a, b, y = three_seeds
    seen = []
    def positives(p, labels):
        seen.append(int(labels.sum()))
        return float(p.mean())
    stats.paired_bootstrap(positives, a, b, y, n_boot=50)
    assert set(seen) == {21}                                              # every resample: 21 malignant images
    shifted = stats.paired_bootstrap(lambda p, _: float(p.mean()), a + 0.1, a, y, n_boot=50)
    assert shifted.low == pytest.approx(0.1) and shifted.high == pytest.approx(0.1) and shifted.verdict("x") == "higher x"
    same = stats.paired_bootstrap(auc_of, a, a, y, n_boot=50)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0) and same.verdict("AUC") == "no clear difference"


def test_paired_bootstrap_of_a_mean_agrees_with_the_t_interval():
    """One seed, the statistic a plain mean: the bootstrap and the t-interval estimate the same thing."""
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(150, int), np.zeros(150, int)]
    b = rng.normal(0.5, 0.2, 300)
    a = b + rng.normal(0.02, 0.1, 300)
    boot = stats.paired_bootstrap(lambda p, _: float(p.mean()), a[None], b[None], y, n_boot=2000)
    t = stats.paired_t_interval(a, b)
    assert boot.mean == pytest.approx(t.mean, abs=1e-12)
    assert boot.high - boot.low == pytest.approx(t.high - t.low, rel=0.15)
    assert boot.low == pytest.approx(t.low, abs=0.005) and boot.high == pytest.approx(t.high, abs=0.005)
    one = stats.paired_bootstrap(lambda p, _: float(p.mean()), a, b, y, n_boot=10)    # 1-D: one seed
    assert one.mean == pytest.approx(t.mean)


def test_paired_bootstrap_refuses_mismatched_shapes(three_seeds):
    a, b, y = three_seeds
    with pytest.raises(CourseError, match="same shape"):
        stats.paired_bootstrap(auc_of, a, b[:2], y)
    with pytest.raises(CourseError, match="label"):
        stats.paired_bootstrap(auc_of, a, b, y[:-1])
    with pytest.raises(CourseError, match="confidence"):
        stats.paired_bootstrap(auc_of, a, b, y, confidence=1.5)


# --------------------------------------------------------------------------- power
@pytest.mark.parametrize("n", [5, 10, 30])
def test_detectable_difference_has_the_stated_power(n):
    """At the returned difference a paired t-test rejects with probability ~power (the non-central t, exactly)."""
    sd = 0.03
    delta = stats.detectable_difference(sd, n, confidence=0.95, power=0.8)
    crit, nc = sps.t.ppf(0.975, n - 1), delta / (sd / np.sqrt(n))
    power = sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)
    assert power == pytest.approx(0.8, abs=0.03)
    # power 0.5: the difference that just touches the edge of its interval, i.e. the interval's half-width
    half = sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    assert stats.detectable_difference(sd, n, power=0.5) == pytest.approx(half, rel=1e-12)
    assert stats.detectable_difference(sd, n, power=0.9) > delta > stats.detectable_difference(sd, 2 * n)


def test_detectable_difference_edge_cases():
    assert stats.detectable_difference(0.1, 1) == np.inf                 # one seed can show nothing
    assert stats.detectable_difference(0.0, 10) == 0.0
    with pytest.raises(CourseError, match="power"):
        stats.detectable_difference(0.1, 10, power=1.0)
    with pytest.raises(CourseError, match="confidence"):
        stats.detectable_difference(0.1, 10, confidence=0.0)


# --------------------------------------------------------------------------- AUC errors and floors
def test_auc_se_is_hanley_and_mcneil_worked_by_hand():
    # AUC 0.8 on 20 positives and 30 negatives: Q1 = 0.8 / 1.2 = 2/3, Q2 = 2 * 0.64 / 1.8 = 32/45, so
    # var = (0.16 + 19 (2/3 - 0.64) + 29 (32/45 - 0.64)) / 600 = (36 + 114 + 464) / 225 / 600 = 614 / 135000
    var = (Fraction(4, 25) + 19 * (Fraction(2, 3) - Fraction(16, 25)) + 29 * (Fraction(32, 45) - Fraction(16, 25))) / 600
    assert var == Fraction(614, 135000)
    assert stats.auc_se(0.8, 20, 30) == pytest.approx(float(var) ** 0.5, rel=1e-12) == pytest.approx(0.06744, abs=1e-5)
    assert stats.auc_se(0.8, 20, 30) == nb04_auc_se(0.8, 20, 30)          # notebook 04's helper, bit for bit
    assert stats.auc_se(1.0, 20, 30) == 0.0 and stats.auc_se(0.0, 20, 30) == 0.0
    assert stats.auc_se(0.8, 80, 120) == pytest.approx(stats.auc_se(0.8, 20, 30) / 2, rel=0.02)   # ~ 1 / sqrt(n)


def _simulated_aucs(pos_scores, neg_scores, checked=200):
    """ROC-AUC of each row (one simulated test set per row), vectorised (Mann-Whitney); the first `checked` rows
    are also scored by sklearn's roc_auc_score, which must agree."""
    n_pos, n_neg = pos_scores.shape[1], neg_scores.shape[1]
    ranks = sps.rankdata(np.concatenate([pos_scores, neg_scores], axis=1), axis=1)
    aucs = (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    sk = [roc_auc_score(y, np.r_[p, q]) for p, q in zip(pos_scores[:checked], neg_scores[:checked])]
    np.testing.assert_allclose(aucs[:checked], sk, rtol=0, atol=1e-12)
    return aucs


def test_auc_se_is_a_conservative_error_for_simulated_aucs_and_the_floor_holds_for_working_models():
    """Binormal scores separated to a true AUC of 0.8, on notebook 04's 21 malignant / 57 benign images. The exact
    variance has the same form as Hanley-McNeil's with Q1 = Q2 = P(X1 > Y, X2 > Y) of the binormal model;
    Hanley-McNeil's Q1, Q2 (an exponential model) overstate it by about 12 % here: its floors are conservative."""
    rng = np.random.default_rng(0)
    c = sps.norm.ppf(0.8)
    aucs = _simulated_aucs(rng.normal(np.sqrt(2) * c, 1, (20000, 21)), rng.normal(0, 1, (20000, 57)))
    q = sps.multivariate_normal([0, 0], [[1, 0.5], [0.5, 1]]).cdf([c, c])
    exact = np.sqrt((0.8 * 0.2 + (21 - 1) * (q - 0.64) + (57 - 1) * (q - 0.64)) / (21 * 57))
    assert aucs.mean() == pytest.approx(0.8, abs=0.002) and aucs.std() == pytest.approx(exact, rel=0.02)
    assert exact < stats.auc_se(0.8, 21, 57) < 1.15 * exact
    floor = stats.auc_floor(0.8, 21, 57)
    assert floor == 0.8 - 2.33 * stats.auc_se(0.8, 21, 57)
    assert 0.001 < np.mean(aucs <= floor) < 0.01                          # at most ~1 in 100 working models below


def test_auc_floors_are_notebook_04s_and_06s_numbers():
    nb04 = 0.80 - 2.33 * nb04_auc_se(0.80, 21, 57)                        # notebook 04: auc_floor(EXPECTED_AUC, ...)
    assert stats.auc_floor(0.80, 21, 57) == nb04
    n_pos, n_neg = 42, 114                                                # notebook 06: BreastMNIST test split
    nb06 = 0.5 + 2.33 * np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    assert stats.chance_auc_floor(n_pos, n_neg) == nb06 and round(nb06, 2) == 0.62    # 06's comment: 0.62
    # 06's rule is Hanley-McNeil at AUC 0.5 (which is exact there: the Mann-Whitney variance under no skill)
    assert stats.chance_auc_floor(n_pos, n_neg) == pytest.approx(0.5 + 2.33 * stats.auc_se(0.5, n_pos, n_neg), rel=1e-14)
    assert stats.chance_auc_floor(n_pos, n_neg) < stats.auc_floor(0.75, n_pos, n_neg)


@pytest.mark.parametrize("n_pos, n_neg", [(42, 114), (21, 57), (10, 10)])
def test_chance_auc_floor_is_exceeded_by_about_one_chance_model_in_a_hundred(n_pos, n_neg):
    rng = np.random.default_rng(n_pos)
    aucs = _simulated_aucs(rng.random((20000, n_pos)), rng.random((20000, n_neg)))   # scores that ignore the label
    assert aucs.std() == pytest.approx(stats.auc_se(0.5, n_pos, n_neg), rel=0.03)
    rate = np.mean(aucs > stats.chance_auc_floor(n_pos, n_neg))
    assert 0.007 <= rate <= 0.013, rate                                   # z = 2.33: 1 % one-sided
    assert np.mean(aucs > stats.chance_auc_floor(n_pos, n_neg, z=1.645)) == pytest.approx(0.05, abs=0.01)


def test_proportion_floor_is_notebook_06s_bound_and_holds_for_guessing():
    majority, n = 0.53, 2756                                              # 06: acc_floor for the malaria test split
    assert stats.chance_proportion_floor(majority, n) == majority + 2.33 * np.sqrt(majority * (1 - majority) / n)
    flagged, n_malignant = 0.3, 42                                        # 04: coin_margin of the test recall
    assert 2.33 * stats.proportion_se(flagged, n_malignant) == 2.33 * np.sqrt(flagged * (1 - flagged) / n_malignant)
    for p, m in ((0.5, 156), (0.73, 156), (0.3, 42)):
        exceed = sps.binom.sf(np.floor(stats.chance_proportion_floor(p, m) * m), m, p)   # P(guessing > floor), exact
        assert 0.002 <= exceed <= 0.02, (p, m, exceed)


def test_stats_imports_neither_tensorflow_nor_torch():
    code = ("import sys, course_utils.stats; bad = [m for m in ('tensorflow', 'torch', 'keras', 'sklearn') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_perfect_auc_lower_bound_is_the_product_of_the_exact_bounds_worked_by_hand():
    assert stats.perfect_auc_lower_bound(23, 43) == pytest.approx(0.025 ** (1 / 23) * 0.025 ** (1 / 43))
    assert stats.perfect_auc_lower_bound(23, 43) < stats.perfect_auc_lower_bound(230, 430) < 1
    with pytest.raises(CourseError):
        stats.perfect_auc_lower_bound(0, 10)


def test_a_model_whose_true_auc_is_the_bound_ranks_perfectly_less_than_one_time_in_twenty():
    from scipy.stats import norm
    n_pos, n_neg = 23, 43
    bound = stats.perfect_auc_lower_bound(n_pos, n_neg)
    shift = np.sqrt(2) * norm.ppf(bound)                    # equal-variance binormal scores with AUC = bound
    rng = np.random.default_rng(0)
    perfect = [rng.normal(shift, 1, n_pos).min() > rng.normal(0, 1, n_neg).max() for _ in range(4000)]
    assert np.mean(perfect) < 0.05


def test_a_paired_interval_names_what_was_paired():
    assert str(stats.paired_t_interval([0.1, 0.2, 0.3], [0.0, 0.0, 0.1], unit="seeds")).endswith("3 seeds)")
    assert str(stats.paired_t_interval([0.1, 0.2, 0.3])).endswith("3 images)")


def test_bootstrap_interval_covers_a_ratio_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        a, b = rng.normal(2.0, 1.0, 40), rng.normal(4.0, 1.0, 40)
        iv = stats.bootstrap_interval(lambda i: a[i].mean() / b[i].mean(), 40, n_boot=300, seed=rng)
        assert iv.low <= iv.mean <= iv.high and iv.method == "bootstrap" and iv.n == 40
        hits += iv.low <= 0.5 <= iv.high
    assert 0.88 <= hits / 200 <= 0.99
    with pytest.raises(CourseError, match="at least 2"):
        stats.bootstrap_interval(lambda i: 0.0, 1)


def test_accuracy_floor_and_chance_bound_are_the_binomial_quantiles_and_hold_99_times_in_100():
    rng = np.random.default_rng(3)
    n = 120
    floor, bound = stats.accuracy_floor(0.88, n), stats.chance_accuracy_bound(0.5, n)
    assert floor == sps.binom.ppf(0.01, n, 0.88) / n and bound == sps.binom.ppf(0.99, n, 0.5) / n
    working = rng.binomial(n, 0.88, 20000) / n
    guessing = rng.binomial(n, 0.5, 20000) / n
    assert (working >= floor).mean() >= 0.99 and (guessing > bound).mean() <= 0.01
    assert bound < floor            # on 120 images a working model and a guess cannot be confused


def test_macro_auc_floor_is_expected_minus_z_mean_label_errors():
    y = np.zeros((100, 2), int)
    y[:20, 0], y[:50, 1] = 1, 1
    want = 0.7 - 2.33 * np.mean([stats.auc_se(0.7, 20, 80), stats.auc_se(0.7, 50, 50)])
    assert np.isclose(stats.macro_auc_floor(0.7, y), want)
    with pytest.raises(CourseError, match=r"\[N, K\]"):
        stats.macro_auc_floor(0.7, y[:, 0])


def test_a_verdict_says_same_only_when_the_whole_interval_lies_within_the_margin():
    iv = stats.PairedInterval(0.01, -0.02, 0.04, 30, 0.95)
    assert iv.verdict(same="same", margin=0.05) == "same"
    assert iv.verdict(same="same", margin=0.03) == "no clear difference"           # +0.04 is beyond the margin
    clear = stats.PairedInterval(-0.028, -0.055, -0.001, 64, 0.95)
    assert clear.verdict(below="less", same="same", margin=0.05) == "less"          # -0.055 is outside it
