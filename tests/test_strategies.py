"""Query strategies: one template test every registered strategy must pass, then golden cases."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy

from course_utils import CourseError
from course_utils.active import strategies as st

N, C, T, D = 60, 3, 8, 5


@pytest.fixture(scope="module")
def pool():
    """Every input any strategy needs, for one pool of N points (some ties on purpose)."""
    rng = np.random.default_rng(123)
    logits = rng.normal(size=(N, C)) * 2
    logits[:6] = 0.0                                    # six exact ties (uniform rows)
    probs = softmax(logits, axis=1)
    mc = softmax(logits[None] + rng.normal(size=(T, N, C)), axis=2)
    emb = rng.normal(size=(N, D)).astype(np.float32)
    labelled = np.zeros(N, dtype=bool)
    labelled[[3, 10, 20]] = True
    return {"probs": probs, "mc_samples": mc, "embeddings": emb, "labelled": labelled}


# =========================================================================== template test
@pytest.mark.parametrize("name", sorted(st.STRATEGIES))
def test_every_strategy_follows_the_interface(name, pool):
    n_unlab = int((~pool["labelled"]).sum())
    for batch_size in (1, 7, n_unlab):
        a, ua = st.get_strategy(name, random_state=5).query(**pool, batch_size=batch_size, return_utilities=True)
        b = st.get_strategy(name, random_state=5).query(**pool, batch_size=batch_size)
        np.testing.assert_array_equal(a, b)                              # reproducible
        assert a.dtype == np.int64 and a.shape == (batch_size,)
        assert len(np.unique(a)) == batch_size                           # no duplicates
        assert not pool["labelled"][a].any()                             # never an already-labelled index
        assert ua.shape == (batch_size, N)                               # utilities: one row per pick
        assert np.isnan(ua[:, pool["labelled"]]).all()                   # labelled are never eligible
        for step, j in enumerate(a):
            assert np.isfinite(ua[step, j]) or ua[step, j] == np.inf     # the picked point had a score
    # candidates respected (mask or indices), labelled indices inside candidates dropped
    cand = np.array([1, 3, 5, 8, 13, 21, 34, 55])
    picked = st.get_strategy(name, random_state=0).query(**pool, batch_size=4, candidates=cand)
    assert set(picked) <= set(cand) - {3}
    mask = np.zeros(N, dtype=bool)
    mask[cand] = True
    picked_mask = st.get_strategy(name, random_state=0).query(**pool, batch_size=4, candidates=mask)
    np.testing.assert_array_equal(picked, picked_mask)
    # all 7 eligible candidates can be taken, 8 cannot
    assert len(st.get_strategy(name, random_state=0).query(**pool, batch_size=7, candidates=cand)) == 7
    with pytest.raises(CourseError, match="only 7 unlabelled candidates"):
        st.get_strategy(name, random_state=0).query(**pool, batch_size=8, candidates=cand)
    # labelled as indices is the same as the mask
    idx_version = st.get_strategy(name, random_state=1).query(
        **{**pool, "labelled": np.flatnonzero(pool["labelled"])}, batch_size=5)
    np.testing.assert_array_equal(idx_version, st.get_strategy(name, random_state=1).query(**pool, batch_size=5))


@pytest.mark.parametrize("name", sorted(st.STRATEGIES))
def test_seed_changes_tie_breaks_only_where_there_are_ties(name, pool):
    picks = {tuple(st.get_strategy(name, random_state=s).query(**pool, batch_size=3)) for s in range(6)}
    if name in ("random", "badge"):
        assert len(picks) > 1              # stochastic by design: different seeds, different picks
    elif name in ("least_confidence", "margin", "entropy"):
        assert len(picks) > 1              # the six uniform rows tie for first place
        for p in picks:
            assert set(p) <= set(range(6))
    else:
        assert len(picks) == 1             # no ties in these scores: the seed must not matter


def test_registry_and_errors(pool):
    assert set(st.STRATEGIES) == {"random", "least_confidence", "margin", "entropy", "dbal", "bald",
                                  "coreset", "coreset_cosine", "badge", "confident"}
    assert isinstance(st.get_strategy("least_confident"), st.LeastConfidence)
    assert st.get_strategy("coreset_cosine").metric == "cosine"
    assert set(st.PROBABILITY_STRATEGIES) == {"random", "least_confidence", "margin", "entropy", "confident"}
    with pytest.raises(CourseError, match="unknown strategy"):
        st.get_strategy("bogus")
    s = st.get_strategy("entropy")
    with pytest.raises(CourseError, match="needs probs"):
        s.query(embeddings=pool["embeddings"], batch_size=1)
    with pytest.raises(CourseError, match="rows must sum to 1"):
        s.query(probs=pool["probs"] * 0.5, batch_size=1)
    with pytest.raises(CourseError, match="look like logits|outside"):
        s.query(probs=np.array([[3.0, -2.0]]), batch_size=1)
    with pytest.raises(CourseError, match="do not match"):
        s.query(probs=pool["probs"], labelled=np.zeros(N + 1, dtype=bool), batch_size=1)
    with pytest.raises(CourseError, match="do not match"):
        st.get_strategy("badge").query(probs=pool["probs"], embeddings=pool["embeddings"][:-1], batch_size=1)
    with pytest.raises(CourseError, match="outside the pool"):
        s.query(probs=pool["probs"], labelled=[0, N], batch_size=1)
    with pytest.raises(CourseError, match="batch_size"):
        s.query(probs=pool["probs"], batch_size=0)
    with pytest.raises(CourseError, match="pool size"):
        st.get_strategy("random").query(batch_size=1)
    assert len(st.get_strategy("random", random_state=0).query(n_samples=10, batch_size=10)) == 10
    with pytest.raises(CourseError, match="NaN"):
        s.query(probs=np.array([[np.nan, 1.0]]), batch_size=1)
    with pytest.raises(CourseError, match="at least 2"):
        st.get_strategy("bald").query(mc_samples=pool["mc_samples"][:1], batch_size=1)


# =========================================================================== golden cases
def test_entropy_is_maximal_for_a_uniform_row():
    p = np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [0.8, 0.1, 0.1], [1.0, 0.0, 0.0]])
    h = st.entropy(p)
    np.testing.assert_allclose(h, [np.log(3), np.log(2), scipy_entropy([0.8, 0.1, 0.1]), 0.0], atol=1e-12)
    assert h.argmax() == 0


def test_first_picks_on_hand_made_rows():
    p = np.array([
        [0.90, 0.05, 0.05],   # confident
        [0.40, 0.35, 0.25],   # least confident (max 0.40)
        [0.45, 0.44, 0.11],   # smallest margin (0.01)
        [0.34, 0.33, 0.33],   # highest entropy... and also lowest max: see below
    ])
    # least confidence: max p is 0.34 in row 3
    assert st.get_strategy("least_confidence", random_state=0).query(probs=p, batch_size=1)[0] == 3
    # margin: row 3 has margin 0.01 too, so drop it to test the margin ordering on rows 0-2
    assert st.get_strategy("margin", random_state=0).query(probs=p[:3], batch_size=1)[0] == 2
    assert st.get_strategy("least_confidence", random_state=0).query(probs=p[:3], batch_size=1)[0] == 1
    assert st.get_strategy("entropy", random_state=0).query(probs=p, batch_size=1)[0] == 3
    # hand values
    np.testing.assert_allclose(st.least_confidence(p[:3]), [0.10, 0.60, 0.55])
    np.testing.assert_allclose(st.margin(p[:3]), [0.15, 0.95, 0.99])
    # full ranking for entropy on rows 0..2: row 1 (0.40, 0.35, 0.25) beats row 2 (0.45, 0.44, 0.11)
    order = st.get_strategy("entropy", random_state=0).query(probs=p[:3], batch_size=3)
    np.testing.assert_array_equal(order, [1, 2, 0])


def test_exact_zeros_and_ones_give_no_nan_and_never_rank_the_confident_first():
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.4], [0.9, 0.1]])
    for name in ("least_confidence", "margin", "entropy"):
        picked, util = st.get_strategy(name, random_state=0).query(probs=p, batch_size=4, return_utilities=True)
        assert np.all(np.isfinite(util[0])), name
        assert picked[0] == 2, name                   # the most uncertain row
        assert set(picked[2:]) == {0, 1}, name        # the certain rows come last
    # naive p * log p would give NaN here, which is exactly the trap:
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(-(p * np.log(p)).sum(axis=1)).any()
    mc = np.stack([p, p[:, ::-1]])                    # passes disagree on certain rows
    for fn in (st.bald, st.predictive_entropy):
        assert np.all(np.isfinite(fn(mc)))


def test_binary_vector_means_probability_of_class_one():
    p1 = np.array([0.99, 0.5, 0.2])
    np.testing.assert_allclose(st.entropy(p1), st.entropy(np.stack([1 - p1, p1], 1)))
    assert st.get_strategy("entropy", random_state=0).query(probs=p1, batch_size=1)[0] == 1


def test_bald_zero_when_samples_agree_positive_when_they_confidently_disagree():
    agree = np.tile(np.array([[0.7, 0.3], [0.5, 0.5]])[None], (10, 1, 1))
    np.testing.assert_allclose(st.bald(agree), 0.0, atol=1e-12)
    disagree = np.stack([np.array([[0.99, 0.01]]), np.array([[0.01, 0.99]])] * 5)
    score = st.bald(disagree)[0]
    assert score > 0.5                                    # close to log 2 = 0.693
    # hand value: H[mean] - mean H
    h = lambda q: -(q * np.log(q)).sum()  # noqa: E731
    np.testing.assert_allclose(score, h(np.array([0.5, 0.5])) - h(np.array([0.99, 0.01])))
    # DBAL cannot tell the two apart (both have a mean of 0.5 / 0.5); BALD can
    mixed = np.concatenate([np.tile(np.array([[[0.5, 0.5]]]), (10, 1, 1)), disagree], axis=1)
    np.testing.assert_allclose(st.predictive_entropy(mixed), [np.log(2)] * 2)
    assert st.get_strategy("bald", random_state=0).query(mc_samples=mixed, batch_size=1)[0] == 1


def test_coreset_on_a_line_picks_the_farthest_point_first():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0], [4.0]], dtype=np.float32)
    s = st.get_strategy("coreset", random_state=0)
    picked, util = s.query(embeddings=x, labelled=[0], batch_size=3, return_utilities=True)
    assert picked[0] == 4                                  # 10 is farthest from the labelled 0
    np.testing.assert_allclose(util[0, 4], 10.0)
    # after centers {0, 10}: distances 1, 2, 3, 4 (x=4 is 4 from 0 and 6 from 10) -> x=4 (index 5)
    assert picked[1] == 5
    np.testing.assert_allclose(util[1, 5], 4.0)


def test_coreset_matches_a_brute_force_k_center_and_cosine_is_scale_free():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    lab = np.arange(5)
    picked = st.Coreset(random_state=0, chunk_bytes=256).query(embeddings=x, labelled=lab, batch_size=10)
    centers, mine = list(lab), []
    full = np.linalg.norm(x[:, None] - x[None], axis=2)   # small N only: the brute-force reference
    for _ in range(10):
        d = full[:, centers].min(axis=1)
        d[centers] = -1
        mine.append(int(d.argmax()))
        centers.append(mine[-1])
    np.testing.assert_array_equal(picked, mine)
    scaled = x * rng.uniform(0.1, 10, size=(200, 1)).astype(np.float32)
    a = st.CoresetCosine(random_state=0).query(embeddings=x, labelled=lab, batch_size=10)
    b = st.CoresetCosine(random_state=0).query(embeddings=scaled, labelled=lab, batch_size=10)
    np.testing.assert_array_equal(a, b)


def test_badge_starts_at_the_largest_gradient_norm_and_then_spreads_out():
    rng = np.random.default_rng(1)
    # two tight clusters of features far apart, all points equally uncertain
    h = np.concatenate([rng.normal(0, 0.01, size=(20, 4)) + [5, 0, 0, 0],
                        rng.normal(0, 0.01, size=(20, 4)) + [0, 5, 0, 0]])
    h[7] *= 1.5                                            # the largest feature norm
    probs = np.tile([[0.6, 0.4]], (40, 1))
    probs[7] = [0.55, 0.45]
    g = st.gradient_embedding(probs, h)
    assert np.linalg.norm(g, axis=1).argmax() == 7
    for seed in range(5):
        picked = st.get_strategy("badge", random_state=seed).query(probs=probs, embeddings=h, batch_size=2)
        assert picked[0] == 7                              # k-means++ starts at the largest norm
        assert picked[1] >= 20                             # the second comes from the other cluster


def test_badge_factorised_distances_equal_the_explicit_gradient_embedding():
    rng = np.random.default_rng(2)
    probs = softmax(rng.normal(size=(30, 4)), axis=1)
    h = rng.normal(size=(30, 6))
    g = st.gradient_embedding(probs, h)
    assert g.shape == (30, 24)
    a = probs - np.eye(4)[probs.argmax(1)]
    np.testing.assert_allclose((g ** 2).sum(1), (a ** 2).sum(1) * (h ** 2).sum(1))
    np.testing.assert_allclose(g @ g[3], (a @ a[3]) * (h @ h[3]))
    # same k-means++ picks whether BADGE gets (probs, h) or runs on the explicit g with one class
    picks = st.BADGE(random_state=0).query(probs=probs, embeddings=h, batch_size=8)
    sq = (g ** 2).sum(1)
    ref, _ = st.kmeans_pp(sq, lambda j: ((g - g[j]) ** 2).sum(1), 8, np.random.default_rng(0))
    np.testing.assert_array_equal(picks, ref)


def test_badge_samples_proportionally_to_the_squared_distance_hand_computed():
    """D^2 sampling checked against probabilities worked out by hand, not against the code under test.

    One class direction, features on a line: g_i = a (x) h_i with the same a for every point, so
    |g_i - g_j|^2 = |a|^2 (h_i - h_j)^2. The first pick is the largest norm, h = 4 (index 0); the others
    are 3, 2 and 1 away from it, so D^2 sampling picks them with probability 9/14, 4/14, 1/14
    (sampling by the plain distance would give 3/6, 2/6, 1/6).
    """
    h = np.array([[4.0], [1.0], [2.0], [3.0]])
    probs = np.tile([[0.6, 0.4]], (4, 1))
    hand = {1: 9 / 14, 2: 4 / 14, 3: 1 / 14}
    seconds = []
    for seed in range(1500):
        picked, util = st.BADGE(random_state=seed).query(probs=probs, embeddings=h, batch_size=2,
                                                         return_utilities=True)
        assert picked[0] == 0
        np.testing.assert_allclose(util[1, picked[1]], hand[picked[1]], rtol=1e-6)
        seconds.append(picked[1])
    freq = np.bincount(seconds, minlength=4)[1:] / len(seconds)
    np.testing.assert_allclose(freq, [9 / 14, 4 / 14, 1 / 14], atol=0.045)    # ~4 standard errors
    assert abs(freq[0] - 3 / 6) > 0.09                                          # not proportional to distance


def test_badge_every_pick_probability_equals_a_brute_force_d2_rule():
    """On random data, each pick's probability (its utility) equals min_j |g_i - g_j|^2 / sum over the
    unpicked, recomputed from the explicit gradient embedding; the first pick has the largest |g|."""
    rng = np.random.default_rng(3)
    probs = softmax(rng.normal(size=(40, 3)) * 2, axis=1)
    h = rng.normal(size=(40, 5))
    lab = np.array([0, 7, 9])
    picked, util = st.BADGE(random_state=4).query(probs=probs, embeddings=h, labelled=lab, batch_size=6,
                                                  return_utilities=True)
    g = st.gradient_embedding(probs, h)
    free = np.setdiff1d(np.arange(40), lab)                  # labelled points are not centres in BADGE
    assert picked[0] == free[np.argmax((g[free] ** 2).sum(1))]
    for step in range(1, 6):
        centres = g[picked[:step]]
        d2 = ((g[:, None, :] - centres[None]) ** 2).sum(2).min(axis=1)
        d2[lab] = 0.0
        d2[picked[:step]] = 0.0
        np.testing.assert_allclose(util[step, picked[step]], d2[picked[step]] / d2.sum(), rtol=1e-5)


# =========================================================================== peer library
def test_agrees_with_scikit_activeml_uncertainty_scores_and_k_center():
    skal = pytest.importorskip("skactiveml.pool", reason="scikit-activeml is an optional dev dependency")
    rng = np.random.default_rng(7)
    p = softmax(rng.normal(size=(50, 4)) * 3, axis=1)
    p[0] = [1, 0, 0, 0]
    for mine, theirs in (("least_confidence", "least_confident"), ("margin", "margin_sampling"),
                         ("entropy", "entropy")):
        np.testing.assert_allclose(st.get_strategy(mine).score({"probs": p}, len(p)),
                                   skal.uncertainty_scores(p, method=theirs), atol=1e-12)
    x = rng.normal(size=(80, 6))
    y = np.full(80, np.nan)
    y[:4] = 0
    theirs = skal.k_greedy_center(x, y, batch_size=6, random_state=0)
    theirs = np.asarray(theirs[0] if isinstance(theirs, tuple) else theirs).ravel()
    mine = st.Coreset(random_state=0).query(embeddings=x, labelled=np.arange(4), batch_size=6)
    np.testing.assert_array_equal(mine, theirs)


def test_scores_and_gradient_embedding_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])
    np.testing.assert_allclose(st.least_confidence(p), [0.3, 0.6])
    np.testing.assert_allclose(st.margin(p), [1 - 0.5, 1 - 0.0])
    np.testing.assert_allclose(st.entropy(p), [-(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)),
                                               -(2 * 0.4 * np.log(0.4) + 0.2 * np.log(0.2))])
    mc = np.array([[[0.9, 0.1], [0.5, 0.5]], [[0.1, 0.9], [0.5, 0.5]]])       # T=2 passes, N=2, C=2
    h2 = -2 * 0.5 * np.log(0.5)
    h_conf = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(st.predictive_entropy(mc), [h2, h2])           # the mean is uniform for both
    np.testing.assert_allclose(st.bald(mc), [h2 - h_conf, 0.0], atol=1e-12)   # only the first disagrees
    h = np.array([[1.0, 2.0], [3.0, -1.0]])
    g = st.gradient_embedding(p, h)
    a0 = np.array([0.7 - 1, 0.2, 0.1])                                        # p - onehot(argmax p)
    a1 = np.array([0.4 - 1, 0.4, 0.2])                                        # a tie goes to the first class
    np.testing.assert_allclose(g, [np.outer(a0, h[0]).ravel(), np.outer(a1, h[1]).ravel()])
    assert g.shape == (2, 6) and g.dtype == np.float64
    assert st.gradient_embedding(p, h.astype(np.float32)).dtype == np.float64
    with pytest.raises(CourseError, match="N x D"):
        st.gradient_embedding(p, h[:1])
    with pytest.raises(CourseError, match="N x D"):
        st.gradient_embedding(p, h[:, :, None])


def _brute_k_center(x, labelled, cand, k, first=None, cosine=False):
    """Greedy k-center by brute force: the candidate whose nearest center is farthest, each step."""
    def dist(a, b):
        if cosine:
            return 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        return np.sqrt(((a - b) ** 2).sum())

    centers, picks, dists = list(labelled), [], []
    for step in range(k):
        if step == 0 and not centers:
            j, d = first, np.inf
        else:
            left = [c for c in cand if c not in picks]
            near = {c: min(dist(x[c], x[m]) for m in centers) for c in left}
            j = max(near, key=near.get)
            d = near[j]
        picks.append(j)
        dists.append(d)
        centers.append(j)
    return picks, dists


@pytest.mark.parametrize("n_cand, labelled, chunk", [(30, [3, 17], 8), (6, [0, 5, 9], 64 * 2**20), (30, [], 8),
                                                     (6, [], 16)])
def test_k_center_greedy_equals_brute_force_small_distances_and_chunks(n_cand, labelled, chunk):
    rng = np.random.default_rng(n_cand + len(labelled))
    x = rng.normal(size=(40, 3)) * 0.05                      # squared distances well under 1
    cand = np.setdiff1d(rng.permutation(40)[:n_cand + len(labelled)], labelled)[:n_cand]
    picks = {}
    for metric in ("euclidean", "cosine"):
        picked, dist = st.k_center_greedy(x, np.array(labelled, dtype=np.int64), cand, 4, metric=metric,
                                          rng=np.random.default_rng(1), chunk_bytes=chunk)
        xs = x if metric == "euclidean" else x / np.linalg.norm(x, axis=1, keepdims=True)
        ref, ref_d = _brute_k_center(xs if metric == "euclidean" else x, labelled, cand.tolist(), 4,
                                     first=int(picked[0]), cosine=metric == "cosine")
        assert picked.tolist() == ref, metric
        np.testing.assert_allclose(dist, ref_d, rtol=2e-3, atol=1e-6)
        assert set(picked.tolist()) <= set(cand.tolist()) and len(set(picked.tolist())) == 4
        picks[metric] = picked.tolist()
    again = st.k_center_greedy(x, np.array(labelled, dtype=np.int64), cand, 4, rng=np.random.default_rng(1),
                               chunk_bytes=chunk)[0]
    assert again.tolist() == picks["euclidean"]                     # seeded, also the cold start
    st.k_center_greedy(x, np.array(labelled, dtype=np.int64), cand, 2)   # no rng given: still runs


def test_k_center_greedy_breaks_exact_ties_among_the_tied_only():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.2, 0.1]])
    seen = set()
    for seed in range(12):
        picked, dist = st.k_center_greedy(x, np.array([0]), np.arange(1, 6), 1, rng=np.random.default_rng(seed))
        assert picked[0] in {1, 2, 3, 4} and dist[0] == pytest.approx(1.0)   # four points tie at distance 1
        seen.add(int(picked[0]))
    assert len(seen) > 1                                                     # the tie is broken at random


def test_coreset_cold_start_is_seeded_through_the_strategy():
    h = np.random.default_rng(9).normal(size=(40, 4))
    for seed in (0, 1, 2):
        a = st.get_strategy("coreset", random_state=seed).query(embeddings=h, batch_size=3)
        b = st.get_strategy("coreset", random_state=seed).query(embeddings=h, batch_size=3)
        assert list(a) == list(b)


def test_kmeans_pp_probabilities_by_hand_small_distances_and_duplicates():
    x = np.array([0.0, 0.1, 0.3, 0.35])                         # squared distances all well under 1

    def d2(j):
        return (x - x[j]) ** 2

    for seed in range(6):
        picked, probs = st.kmeans_pp(x ** 2, d2, 2, np.random.default_rng(seed))
        assert picked[0] == 3 and probs[0] == 1.0               # the largest norm first
        w = d2(3)
        assert probs[1] == pytest.approx(w[picked[1]] / w.sum())   # D^2 sampling, by hand
    same = np.ones(4)
    picked, probs = st.kmeans_pp(same, lambda j: np.zeros(4), 3, np.random.default_rng(0))
    assert len(set(picked.tolist())) == 3                       # all duplicates: uniform over the rest
    np.testing.assert_allclose(probs, [1.0, 1 / 3, 1 / 2])


def test_the_confident_queue_shows_the_surest_images_first():
    """Issue 21: a 'check for systematic errors' queue: the images the model is surest about."""
    probs = np.array([[0.5, 0.5], [0.99, 0.01], [0.2, 0.8], [0.03, 0.97], [0.6, 0.4]])
    picked, util = st.get_strategy("confident", random_state=0).query(probs=probs, batch_size=3,
                                                                      return_utilities=True)
    assert picked.tolist() == [1, 3, 2]
    assert util[0, 1] == pytest.approx(0.99) and util[0, 0] == pytest.approx(0.5)
    least = st.get_strategy("least_confidence", random_state=0).query(probs=probs, batch_size=2)
    assert set(least.tolist()).isdisjoint(picked[:2].tolist())
