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
