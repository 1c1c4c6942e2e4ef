"""course_utils.project.folder: a labelling project on a folder of image files (issue 21, part 1): the scan
(recursive, any case, hidden and non-image files skipped and counted, copies stored once), relative paths,
the hold-out fixed by content hash, new images only on a second call, and the mode checked."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from course_utils import CourseError
from course_utils.active.labeller import Labeller
from course_utils.active.labels import LabelStore, label_bits
from course_utils.project import folder as P


def _write(path, value, fmt="PNG", size=(8, 8)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path, format=fmt)


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "my images"
    for i in range(12):
        _write(root / ("a" if i % 2 else "b/deeper") / f"img{i:02d}.png", 10 * i)
    _write(root / "UPPER.JPG", 200, fmt="JPEG")
    _write(root / "scan.TiF", 210, fmt="TIFF")
    _write(root / "old.bmp", 220, fmt="BMP")
    shutil.copy(root / "a" / "img01.png", root / "copy of img01.png")       # the same content, another name
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_text("junk")
    (root / ".hidden").mkdir()
    _write(root / ".hidden" / "secret.png", 99)
    return root


def test_scan_finds_every_image_once_and_says_what_it_skipped(images):
    s = P.scan(images)
    assert len(s.files) == 15 and len(s.sha256) == 15 and len(set(s.sha256)) == 15
    assert "UPPER.JPG" in s.files and "scan.TiF" in s.files and "old.bmp" in s.files and "b/deeper/img00.png" in s.files
    assert not any(f.startswith(".hidden") for f in s.files)
    ((kept, copies),) = s.duplicates.items()                      # the first found is kept (top level first)
    assert {kept, *copies} == {"a/img01.png", "copy of img01.png"} and kept in s.files
    assert s.skipped["hidden file(s)"] == [".DS_Store"] and len(s.skipped) == 2
    assert any(v == ["notes.txt"] for k, v in s.skipped.items() if "not images" in k)
    report = s.report()
    assert report.startswith(f"15 image(s) under {images}") and "1 duplicate(s) stored once" in report
    assert "skipped 1 hidden file(s) (e.g. .DS_Store)" in report and "notes.txt" in report


def test_a_missing_empty_or_image_less_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CourseError, match="does not exist"):
        P.scan(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(CourseError, match="is a file, not a folder"):
        P.scan(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CourseError, match="no image files under .*The folder is empty"):
        P.scan(empty)
    (empty / "readme.md").write_text("hi")
    with pytest.raises(CourseError, match="no image files under .*skipped 1 file"):
        P.scan(empty)


def test_the_hold_out_is_a_fixed_tenth_by_content_hash():
    import hashlib

    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20000)]
    share = np.mean([P.holdout_of(d) for d in digests])
    assert 0.09 < share < 0.11
    assert P.holdout_of("0" * 64) and not P.holdout_of("f" * 64)
    assert P.holdout_of("19999999" + "0" * 56) and not P.holdout_of("1a000000" + "0" * 56)   # 0.1 * 2**32


def test_combination_names_and_labels():
    assert P.combination_names(["tool"]) == ["none", "tool"]
    three = P.combination_names(["a", "b", "c"])
    assert len(three) == 8 and three[5] == "a + c" and three[7] == "a + b + c"
    assert P.labels_of(5, 3) == [1, 0, 1] and P.labels_of(2, 2) == [0, 1]
    for bad in ([], ["a", "b", "c", "d"], ["a", "a"]):
        with pytest.raises(CourseError):
            P.combination_names(bad)


def test_open_project_stores_relative_paths_keeps_splits_and_adds_only_new_images(images, tmp_path, capsys):
    store = P.open_project(images, ["benign", "malignant"])
    out = capsys.readouterr().out
    assert "new project" in out and (images / ".course" / "labels.db").exists()
    assert len(store) == 15 and store.mode == "single-label" and store.root == images.resolve()
    refs = store.refs(store.ids(None))
    assert all(not r.startswith("/") for r in refs) and "a/img03.png" in refs and "b/deeper/img00.png" in refs
    digests = store.sha256s()
    hold = set(store.ids("holdout").tolist())
    assert all((i in hold) == P.holdout_of(d) for i, d in digests.items())
    store.label(int(store.ids("pool")[0]), 1)
    store.close()

    moved = tmp_path / "moved"                                   # the folder moves: the project moves with it
    shutil.move(str(images), moved)
    _write(moved / "new" / "late.png", 123)
    shutil.copy(moved / "old.bmp", moved / "new" / "old again.bmp")          # a copy added later: not added
    again = P.open_project(moved, ["benign", "malignant"])
    assert "1 new image(s) added" in capsys.readouterr().out
    assert len(again) == 16 and len(again.labels()) == 1 and again.root == moved.resolve()
    assert {i: d for i, d in again.sha256s().items() if i in digests} == digests           # nothing moved
    assert set(again.ids("holdout").tolist()) >= hold
    lab = Labeller(again, strategy="random", batch_size=2)        # the labeller reads the files from the folder
    assert lab.view.state["image"].startswith("data:image/png") and not lab.view.state["error"]
    again.close()
    third = P.open_project(moved, ["benign", "malignant"], verbose=False)
    assert len(third) == 16
    third.close()


def test_a_multi_label_project_and_the_wrong_mode_or_classes_are_refused(images):
    store = P.open_project(images, label_names=["tool visible", "magnified"], verbose=False)
    assert store.mode == "multi-label" and store.label_names == ["tool visible", "magnified"]
    assert store.class_names == ["none", "tool visible", "magnified", "tool visible + magnified"]
    store.label(int(store.ids("pool")[0]), 3)                    # both yes: key 4
    store.close()
    with pytest.raises(CourseError, match="multi-label project .* not a single-label one"):
        P.open_project(images, ["benign", "malignant"], verbose=False)
    with pytest.raises(CourseError, match="labels are kept"):
        P.open_project(images, label_names=["tool visible", "blurred"], verbose=False)
    with pytest.raises(CourseError, match="not both"):
        P.open_project(images, ["a", "b"], label_names=["x"])
    kept = LabelStore(images / ".course" / "labels.db")
    assert len(kept.labels()) == 1
    kept.close()


def test_adding_refuses_images_already_in_the_store(tmp_path):
    store = LabelStore.create(tmp_path / "s.db", ["x.png"], ["a", "b"], holdout=[False], sha256=["d1"])
    with pytest.raises(CourseError, match="already in the store .*x.png"):
        store.add(["x.png"], holdout=[False], sha256=["d2"])
    with pytest.raises(CourseError, match="already in the store .*y.png"):
        store.add(["y.png"], holdout=[False], sha256=["d1"])
    with pytest.raises(CourseError, match="holdout has 1 entries for 2 images"):
        store.add(["y.png", "z.png"], holdout=[True])
    assert store.add(["y.png", "z.png"], holdout=[True, False], sha256=["d2", "d3"]) == [1, 2]
    assert store.add([], holdout=[]) == [] and store.ids("holdout").tolist() == [1]
    store.close()


def test_a_multi_label_store_takes_per_label_sigmoid_probabilities():
    """Issue 21: write_predictions refused sigmoid outputs; a multi-label store turns them into combinations."""
    from course_utils.active.labels import combination_probs, label_probs

    p = np.array([[0.9, 0.2], [0.5, 0.5], [0.0, 1.0]])
    c = combination_probs(p)
    assert c.shape == (3, 4) and np.allclose(c.sum(1), 1)
    assert np.allclose(c[0], [0.1 * 0.8, 0.9 * 0.8, 0.1 * 0.2, 0.9 * 0.2])   # none, a, b, a + b
    assert np.allclose(c[2], [0, 0, 1, 0]) and np.allclose(label_probs(c, 2), p)
    for bad in (np.array([[1.2, 0.0]]), np.array([[np.nan, 0.1]]), np.array([0.1, 0.2])):
        with pytest.raises(CourseError, match="per-label probabilities"):
            combination_probs(bad)


def test_a_multi_label_project_is_queried_by_the_uncertainty_of_its_labels(images):
    store = P.open_project(images, label_names=["tool", "magnified"], verbose=False)
    pool = store.ids("pool")
    sure = np.tile([[0.99, 0.01]], (len(pool), 1))
    sure[3] = [0.5, 0.5]                                            # the model cannot tell either label here
    assert store.write_predictions(pool, sure) == len(pool)
    assert store.confidences([pool[3]])[pool[3]] == [0.25, 0.25, 0.25, 0.25]
    assert store.next_batch("entropy", 1, random_state=0) == [int(pool[3])]
    assert int(pool[3]) not in store.next_batch("confident", 3, random_state=0)
    store.close()


def test_the_labeller_shows_each_labels_probability_for_a_multi_label_project(images):
    store = P.open_project(images, label_names=["tool", "magnified"], verbose=False)
    pool = store.ids("pool")
    store.write_predictions(pool, np.tile([[0.9, 0.2]], (len(pool), 1)))
    lab = Labeller(store, strategy="entropy", batch_size=2)
    state = lab.view.state
    assert state["class_names"] == ["none", "tool", "magnified", "tool + magnified"]
    assert state["label_confidences"] == [["tool", 0.9], ["magnified", 0.2]] and not state["error"]
    lab.handle({"action": "label", "label": 3})                   # key 4: both yes
    assert store.labels()[state["item"]] == 3 and P.labels_of(3, 2) == [1, 1]
    store.close()


def test_a_blind_hold_out_session_labels_the_hold_out_at_random_and_shows_no_model(images):
    """Issue 21: the hold-out could not be labelled at all; now in a blind session only."""
    for i in range(40):                                           # enough images for a few in the hold-out
        _write(images / "more" / f"m{i}.png", 0, size=(4 + i % 5, 4 + i // 5))
    store = P.open_project(images, ["benign", "malignant"], verbose=False)
    hold = store.ids("holdout").tolist()
    assert hold, "the fixture's folder has hold-out images"
    store.write_predictions(store.ids(None), np.tile([[0.3, 0.7]], (len(store), 1)))
    with pytest.raises(CourseError, match="blind, in random order"):
        store.next_batch("entropy", 2, split="holdout")
    with pytest.raises(CourseError, match="blind hold-out session"):
        store.label(hold[0], 1)
    with pytest.raises(CourseError, match="hold-out images only"):
        store.label(int(store.ids("pool")[0]), 1, holdout=True)
    lab = Labeller(store, blind=True, strategy="entropy", oracle=np.arange(len(store)) % 2)
    state = lab.view.state
    assert lab.strategy == "random" and state["item"] in hold and state["confidences"] == []
    assert state["reason"].startswith("blind hold-out session") and state["counter"].startswith("hold-out labelled: 0")
    assert lab.label_with_oracle(len(hold)) == len(hold)
    assert store.labels("holdout") == {i: i % 2 for i in hold} and store.labels() == {}
    lab.handle({"action": "undo"})
    assert len(store.labels("holdout")) == len(hold) - 1 and lab.current in hold
    store.close()


# ---------------------------------------------------------------- a round: train, then predict the pool
def _two_class_folder(root, n=24):
    """Bright images with a dark square (class 'spot') and plain ones ('plain'), in nested folders."""
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(n):
        a = rng.integers(150, 200, (20, 20, 3)).astype(np.uint8)
        spot = i % 2 == 1
        if spot:
            r, c = rng.integers(2, 10, 2)
            a[r:r + 8, c:c + 8] = 20
        rel = f"{'x' if i < n // 2 else 'y/z'}/img{i:02d}.png"
        from PIL import Image

        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / rel)
        truth[rel] = int(spot)
    return truth


def test_too_few_labels_say_how_many_more_each_class_needs(tmp_path):
    from course_utils.project import cycle as C

    truth = _two_class_folder(tmp_path / "imgs")
    store = P.open_project(tmp_path / "imgs", ["plain", "spot"], verbose=False)
    refs = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    for ref in [r for r in refs if truth[r] == 0][:4] + [r for r in refs if truth[r] == 1][:1]:
        store.label(refs[ref], truth[ref])
    with pytest.raises(CourseError, match="'spot' has 1, needs 3 more"):
        C.train_round(store, model="small_cnn")
    multi = LabelStore.create(tmp_path / "m.db", 10, P.combination_names(["a", "b"]), holdout_fraction=0.0,
                              label_names=["a", "b"])
    for i in range(10):
        multi.label(i, 1 if i < 5 else 3)                          # 'a' always yes: no 'no' examples
    with pytest.raises(CourseError, match="'a' needs 4 more labelled no\\b"):
        C.training_targets(multi, multi.labels())
    ids, bits, task = C.training_targets(multi, {i: i % 4 for i in range(16)})
    assert task == "multi-label" and bits[:4].tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]] and len(ids) == 16
    store.close()
    multi.close()


def test_a_round_trains_saves_and_predicts_the_pool_one_batch_at_a_time(tmp_path):
    from course_utils.models import final
    from course_utils.project import cycle as C

    truth = _two_class_folder(tmp_path / "imgs", n=32)
    store = P.open_project(tmp_path / "imgs", ["plain", "spot"], verbose=False)
    pool = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    for ref in list(pool)[:20]:
        store.label(pool[ref], truth[ref])
    result = C.train_round(store, model="small_cnn", epochs=3, image_size=20, batch_size=8, progress=False)
    assert result.round == 1 and result.task == "binary" and result.n_labels == 20
    assert result.model_path.name == "round1.pt" and result.history_path.read_text().startswith("epoch,")
    saved = final.load("round1", folder=result.model_path.parent, verbose=False)
    assert saved.meta["round"] == 1 and saved.meta["n_labels"] == 20 and saved.meta["image_size"] == 20
    writes = []
    real = store.write_predictions
    store.write_predictions = lambda ids, p, **kw: (writes.append(len(ids)), real(ids, p, **kw))[1]
    n = C.predict_pool(store, result, batch_size=5, progress=False)
    unlabelled = store.ids("pool", labelled=False)
    assert n == len(unlabelled) and sum(writes) == n and max(writes) == 5 and len(writes) == -(-n // 5)
    conf = store.confidences(unlabelled)
    # stored rounded to 6 decimals: two values sum to 1 within 2 x 5e-7
    assert all(c is not None and len(c) == 2 and abs(sum(c) - 1) <= 1e-6 + 1e-12 for c in conf.values()), conf
    assert set(store.prediction_rounds(unlabelled).values()) == {1}     # each prediction knows its round
    assert "from round 1's predictions" in Labeller(store, strategy="entropy").state()["reason"]
    real(unlabelled[:1], np.array([[0.5, 0.5]]))                        # written without a round: not a stale one
    assert store.prediction_rounds(unlabelled[:2]) == {int(unlabelled[0]): None, int(unlabelled[1]): 1}
    emb = np.load(C.project_dir(store) / "embeddings_round1.npz")
    labelled = store.ids("pool", labelled=True)
    assert emb["ids"].tolist() == unlabelled.tolist() + labelled.tolist()      # the labelled too: Coreset's centres
    ids, vectors = C.load_embeddings(store)
    assert vectors.shape == (n + len(labelled), emb["embeddings"].shape[1]) and ids.tolist() == emb["ids"].tolist()
    picked = store.next_batch("coreset", 3, random_state=0, claim=False, embeddings=(ids, vectors))
    assert len(set(picked)) == 3 and set(picked) <= set(unlabelled.tolist())
    assert len(store.next_batch("badge", 3, random_state=0, claim=False, embeddings=(ids, vectors))) == 3
    assert store.labels("holdout") == {}                            # the hold-out was never touched
    assert C.next_round(store) == 2
    store.close()


def test_a_multi_label_round_with_lite0_trains_both_phases_and_predicts_each_label(tmp_path):
    """The course's recipe end to end on a multi-label project: Lite0 (ImageNet weights, offline), two phases,
    sigmoid focal per label; predictions come back as the combinations' probabilities."""
    from course_utils.project import cycle as C

    truth = _two_class_folder(tmp_path / "imgs", n=24)
    store = P.open_project(tmp_path / "imgs", label_names=["spot", "lower half"], verbose=False)
    pool = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    for k, ref in enumerate(pool):
        store.label(pool[ref], truth[ref] + 2 * (k % 2))          # a second, arbitrary yes/no label
    result = C.train_round(store, model="lite0", epochs=2, image_size=32, batch_size=8, progress=False)
    assert result.task == "multi-label" and result.history.meta["phase_epochs"] == [1, 1]
    assert C.predict_pool(store, result, progress=False) == 0     # everything in the pool is labelled
    store.close()


# ---------------------------------------------------------------- whole-image inference
def test_windows_cover_every_pixel_and_end_at_the_edge():
    from course_utils.project import wholeimage as W

    assert W.window_starts(10, 4, 3) == [0, 3, 6]
    assert W.window_starts(11, 4, 3) == [0, 3, 6, 7]              # moved back to end at the edge
    assert W.window_starts(4, 4, 2) == [0]
    with pytest.raises(CourseError, match="larger than the image"):
        W.window_starts(3, 4, 2)
    with pytest.raises(CourseError, match="positive"):
        W.window_starts(10, 4, 0)


class _Darkness:
    """A stand-in patch classifier: two logits, 'spot' when the window is dark in the middle."""
    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def __call__(self, x):
        import torch

        mid = x[:, :, x.shape[2] // 4: 3 * x.shape[2] // 4, x.shape[3] // 4: 3 * x.shape[3] // 4].mean(dim=(1, 2, 3))
        return torch.stack([mid * 4, -mid * 4], dim=1)


def test_the_heat_map_finds_the_tiles_with_spots_in_a_mosaic():
    """A mosaic of 6 x 6 tiles, 9 with a dark spot: the map's AUC against the known tile mask clears the floor a
    map without skill reaches once in 100 (per tile: 9 positives, 27 negatives)."""
    from sklearn.metrics import roc_auc_score

    from course_utils import stats
    from course_utils.project import wholeimage as W

    rng = np.random.default_rng(0)
    tile = 16
    mosaic = rng.integers(150, 210, (6 * tile, 6 * tile, 3)).astype(np.uint8)
    mask = np.zeros((6, 6), bool)
    mask.flat[rng.choice(36, 9, replace=False)] = True
    for r, c in zip(*np.nonzero(mask)):
        mosaic[r * tile + 4:r * tile + 12, c * tile + 4:c * tile + 12] = 15
    heat = W.sliding_heatmap(_Darkness(), mosaic, patch=tile, stride=8, batch_size=7)
    assert heat.shape == mosaic.shape[:2] and 0 <= heat.min() and heat.max() <= 1
    per_tile = heat.reshape(6, tile, 6, tile).mean(axis=(1, 3))
    auc = roc_auc_score(mask.ravel(), per_tile.ravel())
    assert auc > stats.chance_auc_floor(9, 27), auc
    one = W.sliding_heatmap(_Darkness(), mosaic, patch=tile, stride=tile, batch_size=100)   # one window per tile
    blocks = one.reshape(6, tile, 6, tile)
    assert np.array_equal(blocks[:, 0, :, 0] > 0.5, mask)
    assert np.allclose(blocks, blocks[:, :1, :, :1])               # constant inside each tile: no window overlaps
    assert np.allclose(W.sliding_heatmap(_Darkness(), mosaic, patch=tile, stride=8, target=0), 1 - heat, atol=1e-5)


def test_the_overlay_is_labelled_and_refuses_a_map_of_another_size():
    import matplotlib

    matplotlib.use("Agg")
    from course_utils.project import wholeimage as W

    ax = W.overlay(np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 0.5))
    assert ax.get_title() and ax.get_xlabel() == "x (pixels)" and ax.get_ylabel() == "y (pixels)"
    with pytest.raises(CourseError, match="does not match"):
        W.overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4)))


def test_a_one_logit_patch_classifier_gives_its_sigmoid_and_its_complement():
    from course_utils.project import wholeimage as W

    class OneLogit(_Darkness):
        def __call__(self, x):
            return super().__call__(x)[:, 1:] * 2                  # 'spot' logit only

    img = np.random.default_rng(1).integers(0, 255, (20, 20, 3)).astype(np.uint8)
    two = W.sliding_heatmap(_Darkness(), img, patch=8, stride=4)
    one = W.sliding_heatmap(OneLogit(), img, patch=8, stride=4)
    assert np.allclose(one, two, atol=1e-5)                        # sigmoid(b - a) == softmax([a, b])[1]
    assert np.allclose(W.sliding_heatmap(OneLogit(), img, patch=8, stride=4, target=0), 1 - one, atol=1e-6)
    grey = W.sliding_heatmap(OneLogit(), img[..., 0], patch=8, stride=4, transform=lambda w: __import__(
        "torch").from_numpy(np.repeat(w, 3, -1).transpose(2, 0, 1).astype(np.float32) / 255))
    assert grey.shape == (20, 20)


# ---------------------------------------------------------------- files that go missing or cannot be read
def test_a_file_deleted_after_init_is_marked_skipped_counted_and_its_label_kept(images, capsys):
    store = P.open_project(images, ["benign", "malignant"], verbose=False)
    refs = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    first, second = [r for r in refs if r.startswith("a/")][:2]
    store.label(refs[first], 1)
    store.close()
    (images / first).unlink()
    (images / second).unlink()
    again = P.open_project(images, ["benign", "malignant"])
    assert "2 image file(s) of this project are missing" in capsys.readouterr().out
    gone = again.unreadable()
    assert set(gone) == {refs[first], refs[second]} and all(r.startswith("missing") for r in gone.values())
    assert again.labels()[refs[first]] == 1                             # the label is kept
    asked = set(again.next_batch("random", 100, random_state=0))
    assert not asked & set(gone) and len(asked) == again.counts()["pool"] - 1 - 1
    again.close()
    _write(images / second, 77)                                          # the file is back
    third = P.open_project(images, ["benign", "malignant"], verbose=False)
    assert set(third.unreadable()) == {refs[first]}
    third.close()


def test_a_corrupt_file_is_marked_and_skipped_by_a_round_never_a_crash(tmp_path, capsys):
    from course_utils.project import cycle as C

    truth = _two_class_folder(tmp_path / "imgs", n=32)
    store = P.open_project(tmp_path / "imgs", ["plain", "spot"], verbose=False)
    pool = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    names = list(pool)
    for ref in names[:20]:
        store.label(pool[ref], truth[ref])
    (tmp_path / "imgs" / names[0]).write_bytes(b"\x89PNG but broken")        # a labelled file breaks
    (tmp_path / "imgs" / names[25]).write_bytes(b"not an image at all")     # and an unlabelled one
    result = C.train_round(store, model="small_cnn", epochs=1, image_size=16, batch_size=8, progress=False)
    assert result.n_labels == 19 and "1 labelled image(s) cannot be read" in capsys.readouterr().out
    n = C.predict_pool(store, result, batch_size=4, progress=False)
    unlabelled = store.ids("pool", labelled=False).tolist()
    assert n == len(unlabelled) - 1 and "1 image(s) could not be read" in capsys.readouterr().out
    assert set(store.unreadable()) == {pool[names[0]], pool[names[25]]}
    _, why = C.readable(store, [pool[names[0]]])          # named by its path in the project, not the machine's
    assert names[0] in why[pool[names[0]]] and str(tmp_path) not in why[pool[names[0]]]
    assert store.confidences([pool[names[25]]])[pool[names[25]]] is None
    assert pool[names[25]] not in store.next_batch("entropy", 50, random_state=0)
    store.close()


# --------------------------------------------------------------------------- the demo folder of notebook 07
def test_the_demo_folder_holds_what_a_real_folder_holds_and_its_truth(tmp_path):
    from course_utils.data.loaders import read_image
    from course_utils.project import demo

    d = demo.write_folder(tmp_path / "imgs", n=24, size=32, seed=0)
    suffixes = {p.suffix for p in d.root.rglob("*") if p.is_file()}
    assert {".png", ".jpg", ".JPG", ".tif", ".bmp", ".jpeg", ".txt"} <= suffixes
    assert (d.root / "slide_B" / "day 3").is_dir() and (d.root / d.corrupt).is_file()
    found = P.scan(d.root)
    assert d.corrupt in found.files and d.duplicate[0] in found.duplicates[d.duplicate[1]]
    assert set(found.files) | {d.duplicate[0]} == set(d.truth) | {d.corrupt}
    assert sum(len(v) for v in found.skipped.values()) == 2                   # .DS_Store and notes.txt
    with pytest.raises(CourseError, match="cannot read the image"):
        read_image(d.root / d.corrupt)
    upright = read_image(d.root / d.sideways)                                 # EXIF says: turn it back
    original = read_image(d.root / "slide_A" / "cell_0000.png")
    assert np.abs(upright.astype(int) - original).mean() < 6                  # JPEG's loss only
    images, classes = demo.cells(400, 24, seed=3)
    bits = label_bits(classes, 2)
    assert images.shape == (400, 24, 24, 3) and abs(bits[:, 0].mean() - 0.4) < 0.08 and abs(bits[:, 1].mean() - 0.3) < 0.08
    zoomed = images[bits[:, 1] == 1].astype(float)                            # a magnified cell fills the frame:
    plain = images[bits[:, 1] == 0].astype(float)                             # its corners are not background
    assert zoomed[:, :3, :3].mean() > plain[:, :3, :3].mean() + 20
    again = demo.write_folder(tmp_path / "imgs", n=24, size=32, seed=0)       # writing again changes nothing
    assert again.truth == d.truth and P.scan(d.root).sha256 == found.sha256


def test_the_demo_oracle_answers_each_store_id_with_its_files_truth(tmp_path):
    from course_utils.project import demo

    d = demo.write_folder(tmp_path / "imgs", n=20, size=24)
    store = P.open_project(d.root, label_names=list(demo.LABEL_NAMES), verbose=False)
    oracle = d.oracle(store)
    ids = store.ids(None)
    for i, ref in zip(ids.tolist(), store.refs(ids)):
        assert oracle[i] == d.truth.get(ref, -1)
    assert oracle[ids[store.refs(ids).index(d.corrupt)]] == -1
    assert d.info.is_stand_in and d.info.task == "multi-label"
    store.close()


def test_the_mosaic_has_one_infected_block_of_the_asked_share():
    from course_utils.project import demo

    image, mask = demo.mosaic(8, 8, 16, share=0.25, seed=2)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and mask.sum() == 16
    r, c = np.nonzero(mask)
    assert (r.max() - r.min() + 1) * (c.max() - c.min() + 1) == mask.sum()   # one rectangle


def test_a_multi_label_patch_classifier_maps_the_sigmoid_of_the_asked_label():
    import torch

    from course_utils.project import wholeimage as W

    class TwoLabels(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([m, -2 * m], dim=1) + self.w

    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    tf = lambda a: torch.from_numpy(a.astype(np.float32).transpose(2, 0, 1) / 255)  # noqa: E731
    second = W.sliding_heatmap(TwoLabels(), img, patch=16, stride=16, target=1, multilabel=True, transform=tf)
    block = img[:16, :16].astype(np.float32).mean() / 255
    assert np.isclose(second[0, 0], 1 / (1 + np.exp(2 * block)), atol=1e-6)    # sigmoid(-2m): not a softmax


def test_label_bits_is_the_one_rule_for_combination_indices():
    from course_utils.active.labels import combination_probs, label_bits, label_probs

    assert label_bits([0, 1, 2, 3], 2).tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]
    assert P.labels_of(5, 3) == [1, 0, 1] and P.combination_names(["a", "b"])[3] == "a + b"
    p = np.array([[0.2, 0.7], [0.9, 0.1]])
    assert np.allclose(label_probs(combination_probs(p), 2), p)


def test_predictions_read_by_worker_processes_equal_those_read_in_the_kernel(tmp_path):
    from course_utils.project import cycle as C

    truth = _two_class_folder(tmp_path / "imgs", n=40)
    store = P.open_project(tmp_path / "imgs", ["plain", "spot"], verbose=False)
    pool = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    for ref in list(pool)[:12]:
        store.label(pool[ref], truth[ref])
    result = C.train_round(store, model="small_cnn", epochs=1, image_size=20, batch_size=8, progress=False)
    ids = store.ids("pool", labelled=False)
    alone = list(C.stream_probabilities(store, result, ids, batch_size=4, workers=0, features=True))
    helped = list(C.stream_probabilities(store, result, ids, batch_size=4, workers=2, features=True))
    assert [a[0].tolist() for a in alone] == [h[0].tolist() for h in helped]
    assert all(np.allclose(a[1], h[1]) and np.allclose(a[3], h[3]) for a, h in zip(alone, helped))
    assert C._workers(10, 8) == 0 and C._workers(1000, 8) >= 1
    store.close()


# --------------------------------------------------------------------------- kills and a full disk (issue 21)
def _trained_project(tmp_path, n=80):
    from course_utils.project import cycle as C

    truth = _two_class_folder(tmp_path / "imgs", n=n)
    store = P.open_project(tmp_path / "imgs", ["plain", "spot"], verbose=False)
    pool = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    for ref in list(pool)[:16]:
        store.label(pool[ref], truth[ref])
    C.train_round(store, model="small_cnn", epochs=1, image_size=20, batch_size=8, progress=False)
    return store


def _child(tmp_path, code):
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)


@pytest.mark.processes
def test_a_kill_during_predict_leaves_whole_batches_and_a_rerun_completes(tmp_path):
    import os
    import signal
    import sqlite3
    import time

    from course_utils.project import cycle as C

    store = _trained_project(tmp_path)
    db = store.path
    store.close()
    child = _child(tmp_path, f'''
        import time
        from course_utils.active.labels import LabelStore
        from course_utils.project import cycle
        store = LabelStore({str(db)!r})
        result = cycle.load_round(store)
        real = result.model.forward
        result.model.forward = lambda x: (time.sleep(0.2), real(x))[1]      # slow enough to be killed mid-pass
        print("go", flush=True)
        cycle.predict_pool(store, result, batch_size=4, progress=False, workers=0)
    ''')
    assert child.stdout.readline().strip() == "go"
    deadline = time.time() + 60
    while time.time() < deadline:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            if conn.execute("SELECT COUNT(*) FROM items WHERE confidences IS NOT NULL").fetchone()[0] >= 8:
                break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    store = LabelStore(db)
    unlabelled = store.ids("pool", labelled=False)
    written = {i: c for i, c in store.confidences(unlabelled).items() if c is not None}
    assert 8 <= len(written) < len(unlabelled) and len(written) % 4 == 0          # whole batches only
    assert all(abs(sum(c) - 1) < 1e-5 for c in written.values())
    assert set(store.prediction_rounds(written).values()) == {1}                    # each with its round
    assert store.next_batch("entropy", 3, random_state=0, claim=False)             # and its scores
    result = C.load_round(store)
    assert C.predict_pool(store, result, batch_size=4, progress=False) == len(unlabelled)   # the rerun completes
    assert all(c is not None for c in store.confidences(unlabelled).values())
    assert (C.project_dir(store) / "embeddings_round1.npz").exists()
    store.close()


@pytest.mark.processes
def test_a_kill_during_training_keeps_the_last_round_and_a_rerun_trains_the_next(tmp_path):
    import hashlib
    import os
    import signal
    import time

    from course_utils.models import final
    from course_utils.project import cycle as C

    store = _trained_project(tmp_path)
    models = C.project_dir(store) / "models"
    before = hashlib.sha256((models / "round1.pt").read_bytes()).hexdigest()
    rounds_csv = (C.project_dir(store) / "rounds.csv").read_text()
    db = store.path
    store.close()
    child = _child(tmp_path, f'''
        from course_utils.active.labels import LabelStore
        from course_utils.project import cycle
        store = LabelStore({str(db)!r})
        print("go", flush=True)
        cycle.train_round(store, model="small_cnn", epochs=500, image_size=20, batch_size=4, progress=False)
    ''')
    assert child.stdout.readline().strip() == "go"
    time.sleep(3)
    assert child.poll() is None, "the round finished before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    assert hashlib.sha256((models / "round1.pt").read_bytes()).hexdigest() == before       # the old model intact
    assert final.load("round1", folder=models, verbose=False) is not None
    assert sorted(p.name for p in models.iterdir()) == ["round1.pt"]                       # nothing half-written
    assert (C.project_dir(store) / "rounds.csv").read_text() == rounds_csv
    store = LabelStore(db)
    assert C.train_round(store, model="small_cnn", epochs=1, image_size=20, batch_size=8, progress=False).round == 2
    store.close()


@pytest.mark.processes
def test_ctrl_c_during_training_exits_130_and_keeps_the_last_round(tmp_path):
    """A real SIGINT to a real `course-project train` process: exit code 130 with one line (no traceback), the
    last round's model byte for byte, no half-written file, and the next `train` makes round 2."""
    import hashlib
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    from course_utils.project import cycle as C

    store = _trained_project(tmp_path)
    models = C.project_dir(store) / "models"
    before = hashlib.sha256((models / "round1.pt").read_bytes()).hexdigest()
    rounds_csv = (C.project_dir(store) / "rounds.csv").read_text()
    db, folder = store.path, tmp_path / "imgs"
    store.close()
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent(f'''
        import sys
        from course_utils.project import cli
        print("go", flush=True)
        sys.exit(cli.main(["train", {str(folder)!r}, "--model", "small_cnn", "--epochs", "500", "--image-size", "20",
                           "--batch-size", "4"]))
    '''))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "go"
    time.sleep(3)
    assert child.poll() is None, "the round finished before Ctrl-C"
    os.kill(child.pid, signal.SIGINT)
    _out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err[-2000:]
    assert "interrupted; labels and finished rounds are kept" in err and "Traceback" not in err, err[-2000:]
    assert hashlib.sha256((models / "round1.pt").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in models.iterdir()) == ["round1.pt"]
    assert (C.project_dir(store) / "rounds.csv").read_text() == rounds_csv
    store = LabelStore(db)
    assert C.train_round(store, model="small_cnn", epochs=1, image_size=20, batch_size=8, progress=False).round == 2
    store.close()


def test_a_full_disk_while_writing_embeddings_keeps_the_predictions_and_no_half_file(tmp_path, tiny_disk):
    truth_root = tmp_path / "imgs"
    _two_class_folder(truth_root, n=40)
    done = tiny_disk(f'''
        from course_utils import CourseError
        from course_utils.project import cycle, folder
        store = folder.open_project({str(truth_root)!r}, ["plain", "spot"], verbose=False)
        for k, i in enumerate(store.ids("pool").tolist()[:16]):
            store.label(i, k % 2)
        result = cycle.train_round(store, model="small_cnn", epochs=1, image_size=20, progress=False)
        filler = DISK / "filler"
        free = __import__("shutil").disk_usage(DISK).free
        filler.write_bytes(b"x" * max(free - 2048, 0))             # a couple of KB left: not enough for the npz
        try:
            cycle.predict_pool(store, result, batch_size=8, progress=False, output_dir=DISK)
        except CourseError as exc:
            print("ERROR", exc)
        print("FILES", sorted(p.name for p in DISK.iterdir() if p.name != "filler"))
        print("PREDICTED", store.counts()["predicted"], "OF", len(store.ids("pool", labelled=False)))
        filler.unlink()
        cycle.predict_pool(store, result, batch_size=8, progress=False, output_dir=DISK)
        print("RETRY", sorted(p.name for p in DISK.iterdir()))
        for k, i in enumerate(store.ids("holdout").tolist()):           # the hold-out's scores, the same way
            store.label(i, k % 2, holdout=True)
        filler.write_bytes(b"x" * max(__import__("shutil").disk_usage(DISK).free - 2048, 0))
        try:
            cycle.evaluate_holdout(store, result, output_dir=DISK)
        except CourseError as exc:
            print("HOLDOUT", exc)
        print("AFTER", sorted(p.name for p in DISK.iterdir() if p.name != "filler"))
    ''', size_kb=256)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ERROR could not write embeddings_round1.npz" in done.stdout and "course-project predict" in done.stdout
    assert "FILES []" in done.stdout, done.stdout                                  # no half-written npz left
    n = re.search(r"PREDICTED (\d+) OF (\d+)", done.stdout)
    assert n and n.group(1) == n.group(2) != "0", done.stdout                      # predictions were saved
    assert "RETRY ['embeddings_round1.npz']" in done.stdout, done.stdout
    assert "HOLDOUT could not write holdout_round1.npz" in done.stdout and "--again" in done.stdout, done.stdout
    assert "AFTER ['embeddings_round1.npz']" in done.stdout, done.stdout           # no half-written hold-out file


def test_a_full_disk_while_saving_a_round_is_a_clear_error_and_a_retry_saves_it(tmp_path, tiny_disk):
    truth_root = tmp_path / "imgs"
    _two_class_folder(truth_root, n=40)
    done = tiny_disk(f'''
        from course_utils import CourseError
        from course_utils.project import cycle, folder
        store = folder.open_project({str(truth_root)!r}, ["plain", "spot"], verbose=False)
        pool = store.ids("pool").tolist()
        for k, i in enumerate(pool[:16]):
            store.label(i, k % 2)
        filler = DISK / "filler"
        filler.write_bytes(b"x" * 1024 * 200)             # leaves too little for the model
        try:
            cycle.train_round(store, model="small_cnn", epochs=1, image_size=20, progress=False, output_dir=DISK)
        except CourseError as exc:
            print("ERROR", exc)
        print("MODELS", sorted(p.name for p in (DISK / "models").glob("*")) if (DISK / "models").exists() else [])
        print("ROUNDS", (DISK / "rounds.csv").exists(), "LABELS", len(store.labels()))
        filler.unlink()
        r = cycle.train_round(store, model="small_cnn", epochs=1, image_size=20, progress=False, output_dir=DISK)
        print("RETRY", r.round, r.model_path.name)
    ''', size_kb=256)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ERROR" in done.stdout and "disk is full" in done.stdout, done.stdout
    assert "MODELS []" in done.stdout and "ROUNDS False LABELS 16" in done.stdout, done.stdout
    assert "RETRY 1 round1.pt" in done.stdout, done.stdout


def test_a_multi_label_hold_out_gets_sklearns_report_and_a_confusion_matrix_per_label(tmp_path):
    from sklearn.metrics import multilabel_confusion_matrix

    from course_utils.project import cycle as C

    truth = _two_class_folder(tmp_path / "imgs", n=60)
    store = P.open_project(tmp_path / "imgs", label_names=["spot", "second"], verbose=False)
    pool = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    for k, ref in enumerate(pool):
        store.label(pool[ref], truth[ref] + 2 * (k % 2))
    held = store.ids("holdout").tolist()
    for k, (i, ref) in enumerate(zip(held, store.refs(held))):
        store.label(i, truth[ref] + 2 * (k % 2), holdout=True)
    result = C.train_round(store, model="small_cnn", epochs=1, image_size=20, batch_size=8, progress=False)
    report = C.evaluate_holdout(store, result)
    assert set(report["confusion_matrix"]) == {"spot", "second"}
    data = np.load(C.project_dir(store) / "holdout_round1.npz")
    bits = label_bits(data["labels"], 2)
    want = multilabel_confusion_matrix(bits, (data["probs"] >= 0.5).astype(int))
    assert report["confusion_matrix"]["spot"] == want[0].tolist() and "second" in report["classification_report"]
    store.close()


def test_b0_offline_says_so_and_trains_the_lite0_it_falls_back_to(tmp_path, capsys):
    from course_utils.project import cycle as C

    truth = _two_class_folder(tmp_path / "imgs", n=24)
    store = P.open_project(tmp_path / "imgs", ["plain", "spot"], verbose=False)
    pool = dict(zip(store.refs(store.ids("pool")), store.ids("pool").tolist()))
    for ref in pool:
        store.label(pool[ref], truth[ref])
    result = C.train_round(store, model="b0", epochs=2, image_size=32, batch_size=8, progress=False)
    said = capsys.readouterr().out
    assert result.info.arch in ("efficientnet_lite0", "efficientnet_b0") and result.history.meta["two_phase"]
    if result.info.arch == "efficientnet_lite0":                      # offline (CI): the fallback is named
        assert "could not be downloaded" in said or "Lite0" in said, said
    store.close()


def test_near_duplicates_finds_resaved_and_resized_copies_and_says_which_straddle_the_split(tmp_path):
    from PIL import Image

    from course_utils.project import demo as demo_folder
    from course_utils.project.folder import near_duplicates

    cells, _ = demo_folder.cells(12, 64, seed=3)
    for k, cell in enumerate(cells):
        Image.fromarray(cell).save(tmp_path / f"cell_{k:02d}.png")
    Image.fromarray(cells[0]).save(tmp_path / "again.jpg", quality=85)                 # re-saved: other bytes
    Image.fromarray(cells[5]).resize((100, 100), Image.BICUBIC).save(tmp_path / "bigger.png")   # resized
    store = P.open_project(tmp_path, label_names=["parasite", "magnified"], verbose=False)
    pairs = near_duplicates(store)
    assert {frozenset((p["a"], p["b"])) for p in pairs} == {frozenset(("again.jpg", "cell_00.png")),
                                                            frozenset(("bigger.png", "cell_05.png"))}
    held = set(store.refs(store.ids("holdout")))
    for p in pairs:
        assert p["straddles"] == ((p["a"] in held) != (p["b"] in held)) and p["rms"] < 3
    assert near_duplicates(store, max_rms=0.0) == []


def test_a_renamed_or_moved_file_keeps_its_label_split_and_is_not_added_again(tmp_path, capsys):
    from PIL import Image

    from course_utils.project import demo as demo_folder

    for k, cell in enumerate(demo_folder.cells(6, 32, seed=2)[0]):
        Image.fromarray(cell).save(tmp_path / f"cell_{k}.png")
    store = P.open_project(tmp_path, label_names=["parasite", "magnified"], verbose=False)
    i = int(store.ids(None)[0])
    ref, split = store.refs([i])[0], ("holdout" if i in store.ids("holdout") else "pool")
    store.label(i, 3) if split == "pool" else store.label(i, 3, holdout=True)
    store.close()
    (tmp_path / "moved").mkdir()
    (tmp_path / ref).rename(tmp_path / "moved" / "new name.png")
    store = P.open_project(tmp_path, label_names=["parasite", "magnified"])
    assert "renamed or moved" in capsys.readouterr().out
    assert store.refs([i]) == ["moved/new name.png"] and len(store) == 6 and not store.unreadable()
    assert store.labels(split)[i] == 3 and i in store.ids(split)
