"""course_utils.augment: uint8 HWC NumPy images in, normalised float CHW tensors out."""
import numpy as np
import pytest
import torch

from course_utils import CourseError
from course_utils.data import augment as A


def _grey(h=28, w=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 1), dtype=np.uint8)


@pytest.mark.parametrize("image", [_grey(), _grey()[..., 0], np.zeros((28, 28, 3), np.uint8) + 100])
def test_eval_transform_shape_dtype_and_exact_normalisation(image):
    out = A.eval_transform()(image)
    assert out.dtype == torch.float32 and out.shape == (3, 28, 28)
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image.reshape(28, 28, 1), 3, axis=2)
    expected = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - torch.tensor(A.IMAGENET_MEAN)[:, None, None]) \
        / torch.tensor(A.IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(out, expected)
    np.testing.assert_array_equal(A.denormalize(out), rgb)


def test_train_transform_is_random_but_keeps_format_and_size():
    tf = A.train_transform(32)
    img = _grey(seed=1)
    torch.manual_seed(0)
    outs = [tf(img) for _ in range(8)]
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.float32 for o in outs)
    assert not all(torch.equal(outs[0], o) for o in outs[1:]), "augmentation should vary"
    assert all(torch.isfinite(o).all() for o in outs)
    # values stay in the normalised range of 0..255 inputs (erasing writes 0)
    lo = min((0 - m) / s for m, s in zip(A.IMAGENET_MEAN, A.IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(A.IMAGENET_MEAN, A.IMAGENET_STD))
    assert all(o.min() >= lo - 1e-5 and o.max() <= hi + 1e-5 for o in outs)


def test_switching_everything_off_gives_the_eval_transform():
    tf = A.train_transform(None, crop_scale=None, flip=False, rotation=0, jitter=0, erase_p=0)
    img = _grey(seed=2)
    torch.testing.assert_close(tf(img), A.eval_transform()(img))


def test_resize_and_single_channel_output():
    out = A.eval_transform(64, rgb=False, mean=None, std=None)(_grey())
    assert out.shape == (1, 64, 64) and 0 <= out.min() and out.max() <= 1


def test_bad_images_raise_clear_errors():
    with pytest.raises(CourseError, match="uint8"):
        A.eval_transform()(np.zeros((28, 28, 3), np.float32))
    with pytest.raises(CourseError, match="single image"):
        A.eval_transform()(np.zeros((4, 28, 28, 3), np.uint8))
    with pytest.raises(CourseError, match="size"):
        A.train_transform(-3)


def test_works_inside_the_data_layers_torch_loader():
    data = pytest.importorskip("course_utils.data")
    images = np.stack([_grey(seed=i) for i in range(10)])
    labels = np.arange(10) % 2
    loader = data.to_torch_loader(images, labels, batch_size=4, transform=A.train_transform(32), num_workers=0)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    ev = data.to_torch_loader(images, labels, batch_size=10, transform=A.eval_transform())
    xe, _ = next(iter(ev))
    torch.testing.assert_close(xe[3], A.eval_transform()(images[3]))
    with pytest.raises(CourseError, match="uint8 image tensor"):
        A.eval_transform()(torch.zeros(3, 8, 8))


def test_transforms_run_single_threaded_and_restore_the_thread_count():
    seen = []
    tf = A.eval_transform()
    tf.compose.transforms.append(lambda x: seen.append(torch.get_num_threads()) or x)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tf(_grey())
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- the fused training transform
def _plain(**switches):
    """train_transform with everything off except the given switches, no normalisation (values in 0..1)."""
    kwargs = dict(crop_scale=None, flip=False, rotation=0, jitter=0, erase_p=0, mean=None, std=None)
    kwargs.update(switches)
    return A.train_transform(kwargs.pop("size", None), **kwargs)


def test_flip_alone_gives_the_image_or_its_mirror():
    img = _grey(seed=3)
    tf, ev = _plain(flip=True), A.eval_transform(mean=None, std=None)(img)
    torch.manual_seed(0)
    outs = [tf(img) for _ in range(20)]
    mirrored = [torch.allclose(o, ev.flip(-1), atol=1e-5) for o in outs]
    same = [torch.allclose(o, ev, atol=1e-5) for o in outs]
    assert all(a or b for a, b in zip(mirrored, same)) and any(mirrored) and any(same)


def test_rotation_keeps_the_centre_and_blackens_the_corners():
    white = np.full((32, 32, 1), 255, np.uint8)
    torch.manual_seed(0)
    outs = [_plain(rotation=15)(white) for _ in range(10)]
    assert all(o[:, 12:20, 12:20].min() > 0.99 for o in outs)              # the middle stays white
    assert all(o.min() < 0.99 for o in outs)                                # the corners come from outside: darker
    assert sum(float(o[:, 0, 0].max()) < 0.5 for o in outs) >= 5            # black, unless the angle is tiny
    assert len({round(float(o.mean()), 4) for o in outs}) > 5               # a different angle each time


def test_random_resized_crop_zooms_in_by_the_drawn_area():
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 1))   # 0..252 left to right
    torch.manual_seed(0)
    for _ in range(10):
        out = _plain(size=64, crop_scale=(0.25, 0.25))(ramp)[0]
        seen = float(out[32].max() - out[32].min())                         # the crop's share of the ramp
        assert 0.25 < seen < 0.8, seen                                       # width sqrt(0.25 * ratio) of 1
    whole = _plain(size=32, crop_scale=(1.0, 1.0))(ramp)     # area 1 with ratio != 1 cannot fit: whole image
    torch.testing.assert_close(whole, A.eval_transform(32, mean=None, std=None)(ramp), atol=0.02, rtol=0)


def test_random_erasing_blanks_a_rectangle_of_the_asked_area():
    white = np.full((40, 40, 3), 255, np.uint8)
    torch.manual_seed(0)
    for _ in range(10):
        out = _plain(erase_p=1.0, erase_scale=(0.05, 0.1))(white)
        zero = (out == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero(), zero.any(dim=0).nonzero()
        assert int(zero.sum()) == len(rows) * len(cols)                       # one rectangle
        assert 0.04 * 1600 <= int(zero.sum()) <= 0.11 * 1600


def test_jitter_changes_brightness_and_stays_in_range():
    img = _grey(seed=4)
    torch.manual_seed(0)
    outs = [_plain(jitter=0.4)(img) for _ in range(10)]
    assert all(o.min() >= 0 and o.max() <= 1 for o in outs)
    assert max(float(o.mean()) for o in outs) - min(float(o.mean()) for o in outs) > 0.05


def test_the_training_transform_is_repeatable_with_a_seed():
    tf, img = A.train_transform(32), _grey(seed=5)
    torch.manual_seed(7)
    a = [tf(img) for _ in range(5)]
    torch.manual_seed(7)
    b = [tf(img) for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert "RandomResizedCrop" in repr(tf) and "RandomErasing" in repr(tf)
    with pytest.raises(CourseError, match="crop_scale"):
        A.train_transform(32, crop_scale=(0.5, 1.5))


def test_flip_can_be_forced_for_a_figure():
    img = _grey(seed=6)
    ev = A.eval_transform(mean=None, std=None)(img)
    assert all(torch.allclose(_plain(flip=1.0)(img), ev.flip(-1), atol=1e-5) for _ in range(5))


def test_a_crop_that_touches_the_border_keeps_the_border_as_bright_as_the_image():
    """Issue 20: a random resized crop that touched the image border darkened the border row by up to 26 %
    (grid_sample read half a pixel past the edge and padded with zeros)."""
    import torch

    flat = np.full((32, 32, 3), 128, np.uint8)
    t = A.train_transform(32, crop_scale=(0.8, 1.0), flip=True, rotation=0, jitter=0, erase_p=0, mean=None, std=None)
    torch.manual_seed(0)
    outs = torch.stack([t(flat) for _ in range(40)])
    assert torch.allclose(outs, torch.full_like(outs, 128 / 255), atol=1e-5), float(outs.min())
    rotated = A.train_transform(32, crop_scale=None, flip=False, rotation=15, jitter=0, erase_p=0, mean=None,
                                std=None)
    torch.manual_seed(1)
    out = torch.stack([rotated(flat) for _ in range(10)])
    assert float(out.max()) <= 128 / 255 + 1e-5 and float(out.min()) == 0.0    # corners outside: black, as before


# ---------------------------------------------------------------- issue 20: each step against its formula
def _fixed(values):
    """A _uniform that returns lo + (hi - lo) * u for the next u of ``values``: the draws, chosen."""
    it = iter(values)
    return staticmethod(lambda lo, hi: lo + (hi - lo) * next(it))


def _aug(**k):
    args = dict(rgb=True, crop_scale=None, flip=0.0, rotation=0.0, jitter=0.0, erase_p=0.0, erase_scale=(0.02, 0.1),
                mean=None, std=None)
    args.update(k)
    return A._TrainAugment(k.pop("size", None), **{a: v for a, v in args.items() if a != "size"})


def test_denormalize_inverts_the_normalisation_for_one_image_a_batch_and_grey():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    x = A.eval_transform()(img)
    assert np.array_equal(A.denormalize(x), img)                          # C x H x W -> H x W x C
    batch = torch.stack([x, x.flip(-1)])
    back = A.denormalize(batch)
    assert back.shape == (2, 5, 6, 3) and np.array_equal(back[1], img[:, ::-1])
    grey = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    g = A.eval_transform(rgb=False)(grey)
    assert g.shape == (1, 4, 4) and np.array_equal(A.denormalize(g)[..., 0], grey)   # one channel: mean of means
    m, s = float(np.mean(A.IMAGENET_MEAN)), float(np.mean(A.IMAGENET_STD))
    assert torch.allclose(g[0], (torch.from_numpy(grey).float() / 255 - m) / s, atol=1e-6)
    custom = A.denormalize(torch.zeros(3, 1, 1), mean=(0.5, 0.25, 1.0), std=(1, 1, 1))
    assert custom[0, 0].tolist() == [128, 64, 255]                         # rounded, and clipped at 1
    assert A.denormalize(torch.full((3, 1, 1), -10.0))[0, 0].tolist() == [0, 0, 0]
    assert A.denormalize(x).dtype == np.uint8
    with pytest.raises(CourseError, match="C x H x W"):
        A.denormalize(torch.zeros(4, 4))


def test_the_training_transform_normalises_each_channel_like_the_eval_transform():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    aug = _aug(mean=A.IMAGENET_MEAN, std=A.IMAGENET_STD)
    assert torch.allclose(aug(img), A.eval_transform()(img), atol=1e-6)
    grey = rng.integers(0, 256, (6, 6, 1), dtype=np.uint8)
    g = _aug(rgb=False, mean=A.IMAGENET_MEAN, std=A.IMAGENET_STD)(grey)
    assert g.shape == (1, 6, 6) and torch.allclose(g, A.eval_transform(rgb=False)(grey), atol=1e-6)
    rgb = _aug()(grey)                                                      # rgb=True: grey repeated to 3
    assert rgb.shape == (3, 6, 6) and torch.equal(rgb[0], rgb[2]) and rgb.max() <= 1.0
    assert torch.allclose(rgb[1], torch.from_numpy(grey[..., 0]).float() / 255)
    sized = _aug(size=3)(img)                                              # nothing random: a plain resize
    assert sized.shape == (3, 3, 3)


def test_brightness_and_contrast_follow_colorjitter(monkeypatch):
    x = torch.tensor([[[0.2, 0.9]], [[0.4, 0.1]], [[0.6, 0.5]]])            # 3 x 1 x 2
    aug = _aug(jitter=0.5)
    monkeypatch.setattr(A._TrainAugment, "_uniform", _fixed([0.75, 0.25]))   # brightness 1.25, contrast 0.75
    got = aug._brightness_contrast(x.clone())
    b = (x * 1.25).clamp(0, 1)
    grey = (0.299 * b[0] + 0.587 * b[1] + 0.114 * b[2]).mean()
    assert torch.allclose(got, ((b - grey) * 0.75 + grey).clamp(0, 1))
    monkeypatch.setattr(A._TrainAugment, "_uniform", _fixed([0.0, 1.0]))     # the range's two ends
    one = torch.tensor([[[0.2, 0.6]]])
    got1 = aug._brightness_contrast(one.clone())                            # brightness 0.5, contrast 1.5
    b1 = one * 0.5
    assert torch.allclose(got1, ((b1 - b1.mean()) * 1.5 + b1.mean()).clamp(0, 1))
    big = _aug(jitter=2.0)                                                  # never below 0
    monkeypatch.setattr(A._TrainAugment, "_uniform", _fixed([0.0, 0.0]))
    assert torch.equal(big._brightness_contrast(x.clone()), torch.zeros_like(x))


def test_erasing_blanks_the_drawn_rectangle_and_nothing_else(monkeypatch):
    x = torch.ones(3, 20, 10)
    aug = _aug(erase_p=1.0, erase_scale=(0.1, 0.3))
    monkeypatch.setattr(A._TrainAugment, "_uniform", _fixed([0.5, 0.5]))     # area 0.2 * 200 = 40, ratio 1
    torch.manual_seed(0)
    out = aug._erase(x)
    zero = (out == 0).all(0)
    rows, cols = zero.any(1).nonzero().ravel(), zero.any(0).nonzero().ravel()
    assert zero.sum() == 36 and len(rows) == 6 and len(cols) == 6          # round(sqrt(40)) = 6 each way
    assert rows.max() - rows.min() == 5 and bool((out[:, ~zero] == 1).all()) and torch.equal(x, torch.ones(3, 20, 10))
    monkeypatch.setattr(A._TrainAugment, "_uniform", _fixed([1.0, 1.0] * 10))   # too large every time: unchanged
    tiny = _aug(erase_p=1.0, erase_scale=(0.99, 0.99))
    assert torch.equal(tiny._erase(torch.ones(3, 4, 4)), torch.ones(3, 4, 4))


def test_the_erase_probability_is_obeyed():
    img = np.full((8, 8, 3), 200, dtype=np.uint8)
    never = _aug(erase_p=0.0)
    always = _aug(erase_p=1.0, erase_scale=(0.2, 0.3))
    torch.manual_seed(0)
    assert all(bool((never(img) > 0).all()) for _ in range(20))
    assert all(bool((always(img) == 0).any()) for _ in range(20))


def test_the_warp_mirrors_rotates_and_crops_exactly(monkeypatch):
    img = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8) / 64
    mirrored = _aug(flip=1.0)._warp(img)
    assert torch.allclose(mirrored, img.flip(-1), atol=1e-6)               # pixels keep their values exactly
    monkeypatch.setattr(A._TrainAugment, "_uniform", _fixed([1.0]))        # +90 degrees
    turned = _aug(rotation=90.0)._warp(img)
    assert torch.allclose(turned, torch.rot90(img, 1, (1, 2)), atol=1e-5) or \
        torch.allclose(turned, torch.rot90(img, -1, (1, 2)), atol=1e-5)
    crop = _aug(size=4)
    monkeypatch.setattr(A._TrainAugment, "_crop_box", lambda self, h, w: (0.5, 0.5, -0.5, -0.5))
    assert torch.allclose(crop._warp(img), img[:, :4, :4], atol=1e-6)       # the top-left quarter, 1:1
    monkeypatch.setattr(A._TrainAugment, "_crop_box", lambda self, h, w: (0.5, 0.5, 0.5, -0.5))
    assert torch.allclose(crop._warp(img), img[:, :4, 4:], atol=1e-6)       # x is the first coordinate
    wide = torch.arange(16 * 32, dtype=torch.float32).reshape(1, 16, 32)
    monkeypatch.setattr(A._TrainAugment, "_crop_box", lambda self, h, w: (1.0, 1.0, 0.0, 0.0))
    small = _aug(size=4)._warp(wide)                                        # 8x larger: shrunk first, antialiased
    assert small.shape == (1, 4, 4) and small.mean().item() == pytest.approx(wide.mean().item(), rel=0.02)


def test_the_crop_draw_has_the_asked_area_ratio_and_stays_inside():
    aug = _aug(size=8, crop_scale=(0.3, 0.6))
    torch.manual_seed(0)
    for h, w in ((8, 8), (10, 20)):
        for _ in range(50):
            sx, sy, cx, cy = aug._crop_box(h, w)
            assert 0.3 - 1e-9 <= sx * sy <= 0.6 + 1e-9                     # the area share drawn
            assert 3 / 4 - 1e-9 <= (sx * w) / (sy * h) <= 4 / 3 + 1e-9     # the aspect ratio, in pixels
            assert abs(cx) <= 1 - sx + 1e-9 and abs(cy) <= 1 - sy + 1e-9   # the box lies on the image
    assert _aug(size=8)._crop_box(8, 8) == (1.0, 1.0, 0.0, 0.0)           # no crop asked
    thin = _aug(size=8, crop_scale=(1.0, 1.0))
    assert thin._crop_box(1, 100) == (1.0, 1.0, 0.0, 0.0)                  # impossible: the whole image
