"""course_utils.augment: uint8 HWC NumPy images in, normalised float CHW tensors out."""
import numpy as np
import pytest
import torch

from course_utils import CourseError
from course_utils import augment as A


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
