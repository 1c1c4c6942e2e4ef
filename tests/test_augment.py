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
