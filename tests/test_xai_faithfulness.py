"""course_utils.xai_faithfulness: deletion / insertion scores against a random map, their paired intervals
and verdicts, the curves equal to the plain per-image loop for every baseline, and bad input refused.
(The blob model comes from conftest.py; the Keras layout twin of these scores is in test_xai.py's
Keras-equals-torch test, which builds the Keras twins.)"""
from __future__ import annotations

import numpy as np
import pytest

from course_utils import CourseError
from course_utils.xai import methods as xai
from course_utils.xai import faithfulness as xai_faithfulness


def test_deletion_beats_a_random_map(blob_model):
    model, x, _ = blob_model
    maps = xai.grad_cam(model, x[:12], target=1)
    scores = xai_faithfulness.deletion_insertion(model, x[:12], maps, target=1, steps=16, baseline="mean")
    assert scores.deletion.mean() < scores.deletion_random.mean() - 0.1
    assert scores.insertion.mean() > scores.insertion_random.mean() + 0.1
    compared = scores.compare()
    assert {k: v["verdict"] for k, v in compared.items()} == {"deletion": "better than random",
                                                              "insertion": "better than random"}
    assert compared["deletion"]["interval"].high < 0 < compared["insertion"]["interval"].low
    assert scores.beats_random and scores.verdict() == "better than random" and scores.baseline == "mean"
    # the flat mean-coloured image has no blob left: the check can tell maps apart
    assert scores.deletion_curve[0] > 0.9 and scores.deletion_curve[-1] < 0.5 and scores.deletion_curve.shape == (17,)


def test_a_map_no_better_than_random_is_inconclusive(blob_model):
    model, x, _ = blob_model
    same_as_random = np.random.default_rng(3).random((12, *x.shape[-2:]))   # the very map the function draws
    scores = xai_faithfulness.deletion_insertion(model, x[:12], same_as_random, target=1, steps=8, seed=3,
                                                 baseline="mean")
    assert np.array_equal(scores.deletion, scores.deletion_random)
    assert scores.verdict() == "inconclusive" and not scores.beats_random
    assert all(v["verdict"] == "inconclusive" for v in scores.compare().values())
    # a 4 px blob survives a blur of sigma 1 px (16 / 16): both curves stay at 1 and only rounding differs,
    # which must not count as a difference
    blurred = xai_faithfulness.deletion_insertion(model, x[:12], xai.grad_cam(model, x[:12], 1), target=1, steps=8)
    assert blurred.baseline == "blur" and blurred.deletion_curve.min() > 0.9
    assert blurred.verdict() == "inconclusive"


def _curves_one_image_at_a_time(model, x, maps, target, steps, end_of):
    """The plain loop deletion is defined by: per image, per step, set the top-ranked pixels, predict."""
    probs = []
    for img, m in zip(x, maps):
        end = end_of(img)
        order = np.argsort(-m.ravel(), kind="stable")
        row = []
        for c in np.round(np.linspace(0, m.size, steps + 1)).astype(int):
            im = img.copy()
            rr, cc = np.unravel_index(order[:c], m.shape)
            im[:, rr, cc] = end[:, rr, cc]
            row.append(xai.predict_proba(model, im[None], target)[0])
        probs.append(row)
    return np.array(probs)


@pytest.mark.parametrize("baseline", ["blur", "mean", "zero"])
def test_deletion_curves_equal_the_plain_loop_for_each_baseline(blob_model, baseline):
    from scipy.ndimage import gaussian_filter

    model, x, _ = blob_model
    maps = xai.saliency(model, x[:5], target=1)
    maps = maps + np.arange(maps[0].size).reshape(maps.shape[1:]) * -1e-9    # no ties: the loop's order is the same
    ends = {"blur": lambda im: gaussian_filter(im, sigma=(0, 2.0, 2.0)),
            "mean": lambda im: np.broadcast_to(im.mean(axis=(1, 2), keepdims=True), im.shape),
            "zero": np.zeros_like}
    ref = _curves_one_image_at_a_time(model, x[:5], maps, 1, 6, ends[baseline])
    res = xai_faithfulness.deletion_insertion(model, x[:5], maps, target=1, steps=6, baseline=baseline,
                                              blur_sigma=2.0, batch_size=8)   # several chunks of images
    assert np.allclose(res.deletion_curve, ref.mean(axis=0), atol=1e-6)
    assert np.allclose(res.deletion, np.trapezoid(ref, np.linspace(0, 1, 7), axis=1), atol=1e-6)
    # insertion from the same baseline ends on the intact image, where deletion started
    assert np.allclose(res.insertion_curve[-1], ref[:, 0].mean(), atol=1e-6)
    assert np.allclose(res.insertion_curve[0], ref[:, -1].mean(), atol=1e-6)


def test_deletion_bad_input(blob_model):
    model, x, _ = blob_model
    maps = xai.grad_cam(model, x[:2], target=1)
    with pytest.raises(CourseError, match="baseline must be one of"):
        xai_faithfulness.deletion_insertion(model, x[:2], maps, target=1, baseline="black")
    with pytest.raises(CourseError, match="insertion_from"):
        xai_faithfulness.deletion_insertion(model, x[:2], maps, target=1, insertion_from="noise")
    with pytest.raises(CourseError, match="NaN"):
        xai_faithfulness.deletion_insertion(model, x[:2], np.full_like(maps, np.nan), target=1)
    with pytest.raises(CourseError, match="steps"):
        xai_faithfulness.deletion_insertion(model, x[:2], maps, target=1, steps=0)
    with pytest.raises(CourseError, match="maps must be"):
        xai_faithfulness.deletion_insertion(model, x[:2], maps[:1], target=1)



def test_the_overall_verdict_names_checks_that_disagree_or_only_one_that_is_clear():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.6, 40)
    noise = lambda: rng.normal(0, 0.01, 40)   # noqa: E731
    curve = np.zeros(3)

    def scores(deletion_shift, insertion_shift):
        return xai_faithfulness.DeletionInsertion(
            deletion=base + deletion_shift + noise(), insertion=base + insertion_shift + noise(),
            deletion_random=base, insertion_random=base, fractions=curve, deletion_curve=curve,
            insertion_curve=curve, deletion_curve_random=curve, insertion_curve_random=curve)

    assert scores(-0.1, +0.1).verdict() == "better than random"
    # deletion higher (worse) and insertion higher (better): the checks disagree, and the verdict says which is which
    assert scores(+0.1, +0.1).verdict() == ("the two checks disagree (deletion worse than random, "
                                            "insertion better than random)")
    assert scores(0.0, +0.1).verdict() == "inconclusive (deletion inconclusive, insertion better than random)"
    assert not scores(+0.1, +0.1).beats_random


# ---------------------------------------------------------------- issue 20: what a one-line bug would change
class _ChannelsLast:
    """A numpy 'model' in the Keras layout [N, H, W, C]: one logit, the mean of channel 0 over the top-left 2x2."""
    channel_axis = -1

    def image_size(self, x):
        return x.shape[1:3]

    def logits(self, batch):
        return (batch[:, :2, :2, 0].mean(axis=(1, 2)) * 8 - 4)[:, None]


def test_curves_in_the_channels_last_layout_by_hand_with_ties_and_one_image_per_chunk():
    from course_utils.xai.methods import target_probs

    x = np.zeros((3, 4, 4, 2), dtype=np.float32)
    x[:, :2, :2, 0] = 1.0                                       # evidence in the top-left 2x2
    maps = np.zeros((3, 4, 4))
    maps[:, :2, :2] = 1.0                                       # ties everywhere: the stable order decides
    maps[1] = 0.0                                               # image 1: all ties, raster order
    end = np.zeros_like(x)
    t = np.array([0, 0, 0])
    ad = _ChannelsLast()
    got = xai_faithfulness._perturbation_curves(ad, x, t, maps, 4, "deletion", end, chunk_images=1)
    both = xai_faithfulness._perturbation_curves(ad, x, t, maps, 4, "deletion", end, chunk_images=3)
    assert np.array_equal(got, both)
    p = lambda kept: target_probs(np.array([[kept / 4 * 8 - 4]]), np.array([0]))[0]   # noqa: E731
    # 0, 4, 8, 12, 16 pixels deleted: images 0 and 2 lose the 2x2 first; image 1 in raster order (2 of its 4 in
    # the first row of 4, the other 2 in the second)
    assert np.allclose(got[0], [p(4), p(0), p(0), p(0), p(0)]) and np.allclose(got[2], got[0])
    assert np.allclose(got[1], [p(4), p(2), p(0), p(0), p(0)])
    ins = xai_faithfulness._perturbation_curves(ad, x, t, maps, 4, "insertion", end, chunk_images=2)
    assert np.allclose(ins[0], [p(0), p(4), p(4), p(4), p(4)]) and np.allclose(ins[1], [p(0), p(2), p(4), p(4), p(4)])


def test_baselines_keep_the_images_dtype_and_layout():
    x = np.random.default_rng(0).random((2, 3, 6, 6)).astype(np.float32)
    for kind in ("zero", "mean", "blur"):
        b = xai_faithfulness._baseline_images(x, kind, (1, 2), 1.0)
        assert b.dtype == np.float32 and b.shape == x.shape
    mean = xai_faithfulness._baseline_images(x, "mean", (1, 2), 1.0)
    assert np.allclose(mean[0, 1], x[0, 1].mean())               # per image and channel, over H and W
    last = np.moveaxis(x, 1, -1)
    assert np.allclose(xai_faithfulness._baseline_images(last, "mean", (0, 1), 1.0)[0, 0, 0], x[0, :, 0, 0] * 0
                       + x[0].mean(axis=(1, 2)))


def test_defaults_target_preprocess_and_one_step(blob_model):
    model, x, _ = blob_model
    maps = xai.grad_cam(model, x[:6], target=1)
    res = xai_faithfulness.deletion_insertion(model, x[:6], maps, target=1, baseline="mean")
    assert res.fractions.shape == (21,) and res.deletion_curve.shape == (21,)            # steps=20 by default
    again = xai_faithfulness.deletion_insertion(model, x[:6], maps, target=1, baseline="mean", seed=0, steps=20)
    assert np.array_equal(res.deletion_random, again.deletion_random)                    # seed 0 by default
    other = xai_faithfulness.deletion_insertion(model, x[:6], maps, target=0, baseline="mean")
    assert np.allclose(other.deletion_curve, 1 - res.deletion_curve, atol=1e-6)          # the target is used
    one = xai_faithfulness.deletion_insertion(model, x[:6], maps, target=1, steps=1, baseline="mean")
    assert one.fractions.tolist() == [0.0, 1.0]
    halved = xai_faithfulness.deletion_insertion(model, x[:6] * 2, maps, target=1, baseline="mean",
                                                 preprocess=lambda im: im / 2)
    assert np.allclose(halved.deletion, res.deletion, atol=1e-6)                         # preprocess is applied


def test_the_interval_follows_the_confidence_asked_for():
    rng = np.random.default_rng(1)
    d = rng.uniform(0.4, 0.6, 12)
    shift = 0.02 + rng.normal(0, 0.05, 12)
    curve = np.zeros(3)
    s = xai_faithfulness.DeletionInsertion(d, d + shift, d + shift, d, np.linspace(0, 1, 3), curve, curve,
                                           curve, curve)
    wide = s.compare(confidence=0.99)["deletion"]["interval"]
    narrow = s.compare(confidence=0.5)["deletion"]["interval"]
    assert wide.high - wide.low > narrow.high - narrow.low
    assert s.compare()["deletion"]["interval"].high - s.compare()["deletion"]["interval"].low == pytest.approx(
        s.compare(confidence=0.95)["deletion"]["interval"].high - s.compare(confidence=0.95)["deletion"]["interval"].low)
    verdicts = {c: s.verdict(confidence=c) for c in (0.5, 0.999)}
    assert verdicts[0.5] != verdicts[0.999], verdicts                                      # passed through
    assert s.verdict(min_difference=10.0) == "inconclusive"


def test_the_random_map_can_be_drawn_at_the_heat_maps_resolution(blob_model):
    """Issue 22: a 2 x 2 Grad-CAM map deletes quadrants; its random baseline must delete blocks as coarse (a random
    2 x 2 map up-sampled the same way), else the comparison measures resolution, not where the map points."""
    model, x, _ = blob_model
    H, W = x.shape[-2:]
    coarse_random = xai.resize_maps(np.random.default_rng(3).random((12, 2, 2)), (H, W))   # what it draws
    scores = xai_faithfulness.deletion_insertion(model, x[:12], coarse_random, target=1, steps=8, seed=3,
                                                 baseline="mean", map_size=(2, 2))
    assert np.array_equal(scores.deletion, scores.deletion_random) and scores.verdict() == "inconclusive"
    per_pixel = xai_faithfulness.deletion_insertion(model, x[:12], coarse_random, target=1, steps=8, seed=3,
                                                    baseline="mean")
    assert not np.array_equal(per_pixel.deletion_random, scores.deletion_random)
    with pytest.raises(CourseError, match="map_size"):
        xai_faithfulness.deletion_insertion(model, x[:2], coarse_random[:2], target=1, map_size=(0, 2))


def _blob_masks(boxes, n):
    chosen = np.zeros((n, 16, 16), bool)
    for i, (c0, r0, c1, r1) in enumerate(boxes[:n]):
        chosen[i, r0:r1, c0:c1] = True
    region = np.zeros((16, 16), bool)
    region[:8, :8] = True                          # the quadrant where the blob always lies
    return chosen, region


def test_region_deletion_finds_the_pixels_that_carry_the_evidence(blob_model):
    model, x, boxes = blob_model
    chosen, region = _blob_masks(boxes, 12)
    res = xai_faithfulness.region_deletion(model, x[:12], chosen, region, target=1, draws=4)
    assert res.verdict() == "carry more evidence than random pixels of the region" and res.compare().high < 0
    assert len(res.kept) == 12 and (res.n_pixels == 16).all() and (res.intact > 0.9).all()
    # the rest of the quadrant (the blob kept) carries less than a random choice of the quadrant, which hits the blob
    rest = region[None] & ~chosen
    other = xai_faithfulness.region_deletion(model, x[:12], rest, region, target=1, draws=4)
    assert other.verdict() == "carry less evidence than random pixels of the region"


def test_region_deletion_equals_deleting_by_hand_and_skips_images_without_chosen_pixels(blob_model):
    import torch

    model, x, boxes = blob_model
    chosen, region = _blob_masks(boxes, 3)
    chosen[1] = False                                          # no chosen pixel: not scored
    res = xai_faithfulness.region_deletion(model, x[:3], chosen, region, target=1, draws=2, seed=5)
    assert list(res.kept) == [0, 2]
    for k, i in enumerate(res.kept):
        img = x[i].copy()
        img[:, chosen[i]] = img.mean(axis=(1, 2), keepdims=True)[:, 0]     # the image's mean grey, "mean" baseline
        with torch.no_grad():
            p = torch.softmax(model(torch.as_tensor(img[None])), 1)[0, 1].item()
        assert abs(res.chosen[k] - p) < 1e-5
    empty = xai_faithfulness.region_deletion(model, x[:1], np.zeros((1, 16, 16), bool), region, target=1)
    assert empty.verdict() == "no such pixels" and len(empty.kept) == 0


def test_region_deletion_bad_input(blob_model):
    model, x, boxes = blob_model
    chosen, region = _blob_masks(boxes, 2)
    with pytest.raises(CourseError, match="inside region"):
        xai_faithfulness.region_deletion(model, x[:2], chosen, np.zeros((16, 16), bool), target=1)
    with pytest.raises(CourseError, match=r"\[N, H, W\]"):
        xai_faithfulness.region_deletion(model, x[:2], chosen[:1], region, target=1)
    with pytest.raises(CourseError, match="baseline"):
        xai_faithfulness.region_deletion(model, x[:2], chosen, region, target=1, baseline="grey")
    with pytest.raises(CourseError, match="draws"):
        xai_faithfulness.region_deletion(model, x[:2], chosen, region, target=1, draws=0)


def test_pixels_a_sparse_map_ranks_equal_are_deleted_in_a_random_order_not_row_by_row(blob_model):
    model, x, boxes = blob_model
    top_rows_first = np.zeros((12, 16, 16))            # a map that is 0 everywhere: every pixel tied
    res = xai_faithfulness.deletion_insertion(model, x[:12], top_rows_first, target=1, steps=8, baseline="mean")
    # row by row, the first half of the steps would take the top half, where every blob lies: a clear "better than
    # random"; in a random order the all-zero map is as good as a random map
    assert res.compare()["deletion"]["verdict"] == "inconclusive"
    row_by_row = xai_faithfulness.deletion_insertion(model, x[:12], -np.arange(256.0).reshape(1, 16, 16).repeat(12, 0),
                                                     target=1, steps=8, baseline="mean")
    assert row_by_row.compare()["deletion"]["verdict"] == "better than random"


def test_a_baseline_given_as_images_replaces_the_pixels_by_theirs(blob_model):
    model, x, boxes = blob_model
    flat = np.broadcast_to(x[:6].mean(axis=(2, 3), keepdims=True), x[:6].shape).copy()
    maps = xai.grad_cam(model, x[:6], target=1)
    by_name = xai_faithfulness.deletion_insertion(model, x[:6], maps, target=1, steps=6, baseline="mean")
    by_images = xai_faithfulness.deletion_insertion(model, x[:6], maps, target=1, steps=6, baseline=flat)
    assert np.allclose(by_name.deletion, by_images.deletion) and np.allclose(by_name.insertion, by_images.insertion)
    assert by_images.baseline == "images"
    chosen, region = _blob_masks(boxes, 6)
    a = xai_faithfulness.region_deletion(model, x[:6], chosen, region, target=1, baseline="mean", draws=2)
    b = xai_faithfulness.region_deletion(model, x[:6], chosen, region, target=1, baseline=flat, draws=2)
    assert np.allclose(a.chosen, b.chosen) and np.allclose(a.random, b.random)
    with pytest.raises(CourseError, match="one baseline image per image"):
        xai_faithfulness.deletion_insertion(model, x[:6], maps, target=1, baseline=flat[:2])


def test_region_deletion_reads_its_verdict_as_a_finding(blob_model):
    model, x, boxes = blob_model
    chosen, region = _blob_masks(boxes, 12)
    res = xai_faithfulness.region_deletion(model, x[:12], chosen, region, target=1, draws=2)
    assert res.reading() == "the model uses what lies there: look at them"
    empty = xai_faithfulness.region_deletion(model, x[:1], np.zeros((1, 16, 16), bool), region, target=1)
    assert empty.reading() == "nothing to delete"
