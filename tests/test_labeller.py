"""The keyboard labeller driven headless: key messages label, advance, undo and skip; errors are shown in
the widget; a thread that is not the creator (JupyterLab's subshells) labels through the same path.
(In a real browser: tests/test_browser.py; under ipywidgets 7.7.1: tests/test_widgets_compat.py.)"""
import numpy as np
import pytest

import course_utils as cu
from course_utils import CourseError
from course_utils.active import labeller as cl


@pytest.fixture
def labeller_setup(tmp_path):
    import numpy as np

    from course_utils.active.labels import LabelStore

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 12, 12, 3), dtype=np.uint8)
    truth = rng.integers(0, 3, 40)
    store = LabelStore.create(tmp_path / "labels.db", 40, ["benign", "malignant", "normal tissue"], seed=1)
    yield store, images, truth
    store.close()


def test_labeller_keys_label_advance_undo_and_skip(labeller_setup):
    store, images, truth = labeller_setup
    lab = cl.Labeller(store, images, strategy="random", batch_size=4, oracle=truth)
    assert lab.view is not None and lab.view.state["image"].startswith("data:image/png;base64,")
    assert lab.view.state["class_names"] == ["benign", "malignant", "normal tissue"]   # full names
    assert len(lab.view.state["thumbs"]) == 3 and "picked by random" in lab.view.state["reason"]
    first = lab.current
    lab.handle({"action": "label", "label": 1, "item": first})                # key "2"
    assert store.labels() == {first: 1} and lab.current != first
    second = lab.current
    lab.handle({"action": "label", "label": 1, "item": first})                # a late second press: ignored
    assert store.labels() == {first: 1} and lab.current == second
    lab.handle({"action": "undo"})                                            # "u": the image comes back
    assert store.labels() == {} and lab.current == first
    lab.handle({"action": "label", "label": 0, "item": first})
    lab.handle({"action": "label", "label": 2, "item": lab.current})
    lab.handle({"action": "skip", "item": lab.current})                       # "n"
    assert len(store.labels()) == 2 and "this session: 2" in lab.view.state["counter"]
    # relabelling an image counts once
    lab.handle({"action": "undo"})
    lab.handle({"action": "label", "label": 1, "item": lab.current})
    assert "this session: 2" in lab.view.state["counter"] and lab.view.state["error"] == ""


def test_labeller_bad_key_and_store_errors_are_shown_in_the_widget(labeller_setup):
    import numpy as np

    store, images, truth = labeller_setup
    lab = cl.Labeller(store, images, strategy="random", batch_size=4)
    shown = lab.current
    lab.handle({"action": "label", "label": 5, "key": "6", "item": shown})
    state = lab.view.state
    assert "CourseError" in state["error"] and "press 1-3" in state["error"] and "Traceback" in state["error_detail"]
    assert store.labels() == {} and lab.current == shown                      # nothing half-done
    for suffix in ("", "-wal", "-shm"):                                       # the file vanishes mid-session
        type(store.path)(str(store.path) + suffix).unlink(missing_ok=True)
    lab.handle({"action": "label", "label": 0, "item": shown})
    assert "deleted or replaced" in lab.view.state["error"] and lab.current == shown
    with pytest.raises(cu.CourseError, match="no oracle"):
        lab.label_with_oracle(1)
    assert np.all(truth >= 0)


def test_labeller_oracle_and_a_thread_that_is_not_the_creator(labeller_setup):
    import threading

    store, images, truth = labeller_setup
    lab = cl.Labeller(store, images, strategy="random", batch_size=5, oracle=truth)
    t = threading.Thread(target=lab.label_with_oracle, args=(7,))             # as JupyterLab's subshell does
    t.start()
    t.join()
    labels = store.labels()
    assert len(labels) == 7 and all(labels[i] == truth[int(store.refs([i])[0])] for i in labels)
    assert not set(labels) & set(store.ids("holdout").tolist())
    assert "labelled: 7 of 36" in lab.view.state["counter"]


# ---------------------------------------------------------------- issue 20: the labeller never leaves the page busy
def test_a_closed_store_is_shown_in_red_and_the_page_is_not_left_busy(labeller_setup):
    store, images, _ = labeller_setup
    lab = cl.Labeller(store, images, strategy="random", batch_size=4)
    seq = lab.view.state["seq"]
    store.close()
    for msg in ({"action": "label", "label": 0, "item": lab.current}, {"action": "undo"}, {"action": "skip"}):
        lab.handle(msg)                                # raised out of handle before: the page waited forever
        state = lab.view.state
        assert state["seq"] > seq and "was closed" in state["error"] and "LabelStore(path)" in state["error"]
        seq = state["seq"]


def test_an_image_array_shorter_than_the_store_is_refused_at_once(labeller_setup):
    store, images, _ = labeller_setup
    with pytest.raises(cu.CourseError, match=r"do not index the 30 images given \(e\.g\. '30'\)"):
        cl.Labeller(store, images[:30])
    with pytest.raises(cu.CourseError, match="pass the images array"):
        cl.Labeller(store)


def test_a_store_of_image_files_is_labelled_from_the_files(tmp_path):
    import numpy as np
    from PIL import Image

    from course_utils.active.labels import LabelStore

    paths = []
    for i in range(6):
        p = tmp_path / f"img_{i}.png"
        Image.fromarray(np.full((10, 14, 3), 40 * i, dtype=np.uint8)).save(p)
        paths.append(p)
    store = LabelStore.create(tmp_path / "files.db", paths, ["a", "b"], holdout_fraction=0.0)
    lab = cl.Labeller(store, strategy="random", batch_size=3, oracle=[0, 1, 0, 1, 0, 1])
    assert lab.view.state["image"].startswith("data:image/png;base64,") and not lab.view.state["error"]
    assert lab.label_with_oracle(6) == 6 and store.labels() == {i: i % 2 for i in range(6)}
    for p in paths:                                    # the files went missing: named, skipped, never stuck
        p.unlink()
    lab.handle({"action": "undo"})
    state = lab.view.state
    assert "cannot read the image" in state["message"] and "img_5" in state["message"], state["message"]
    assert state["item"] is None and not state["error"]
    assert store.labels() == {i: i % 2 for i in range(5)}    # the undo itself was saved
    assert list(store.unreadable()) == [5]                   # marked: no queue offers it again
    store.close()


def test_a_corrupt_file_in_the_queue_is_skipped_marked_and_named_never_a_crash(tmp_path):
    """A corrupt file (e.g. a scanner's half-written PNG) in the queue or among the thumbnails: the labeller
    takes it off the queue, marks it in the store (no later queue offers it) and says so; labelling goes on."""
    from PIL import Image

    from course_utils.active.labels import LabelStore

    paths = []
    for i in range(6):
        p = tmp_path / f"img_{i}.png"
        Image.fromarray(np.full((10, 14, 3), 40 * i, dtype=np.uint8)).save(p)
        paths.append(p)
    paths[1].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))           # a PNG header, then nothing
    store = LabelStore.create(tmp_path / "files.db", paths, ["a", "b"], holdout_fraction=0.0)
    lab = cl.Labeller(store, strategy="random", batch_size=6, n_thumbs=5, oracle=[0, 1, 0, 1, 0, 1])
    state = lab.view.state
    assert not state["error"] and "img_1.png" in state["message"] and "cannot be read" in state["message"]
    assert 1 not in lab.queue and store.unreadable().keys() == {1}
    assert lab.label_with_oracle(10) == 5 and store.labels() == {0: 0, 2: 0, 3: 1, 4: 0, 5: 1}
    assert lab.current is None
    store.close()


def test_refresh_asks_the_store_for_a_new_queue_with_the_new_predictions(tmp_path):
    from course_utils.active.labels import LabelStore

    store = LabelStore.create(tmp_path / "s.db", 10, ["a", "b"], holdout_fraction=0.0)
    lab = cl.Labeller(store, np.zeros((10, 4, 4, 3), np.uint8), strategy="random", batch_size=3)
    p = np.linspace(0.01, 0.99, 10)
    store.write_predictions(range(10), np.stack([p, 1 - p], axis=1))
    lab.refresh("entropy")                               # the most uncertain first: p closest to 0.5
    assert lab.strategy == "entropy" and {4, 5} < set(lab.queue) <= {3, 4, 5, 6}     # 3 and 6 tie: either
    assert len(lab.queue) == 3 and lab.view.state["item"] == lab.queue[0]
    lab.refresh("confident")                             # the surest: p at either end
    assert set(lab.queue) <= {0, 1, 8, 9} and len(lab.queue) == 3
    blind = cl.Labeller(LabelStore.create(tmp_path / "h.db", 10, ["a", "b"], seed=1), np.zeros((10, 4, 4, 3), np.uint8),
                        blind=True)
    with pytest.raises(CourseError, match="random order only"):
        blind.refresh("entropy")
    store.close()


def test_undo_in_a_new_kernel_takes_back_the_last_label_of_the_same_person(labeller_setup):
    from course_utils.active.labels import LabelStore

    store, images, truth = labeller_setup
    lab = cl.Labeller(store, images, strategy="random", batch_size=4)
    first = lab.current
    lab.handle({"action": "label", "label": 1, "item": first})
    store.close()                                      # the kernel restarts
    again = LabelStore(store.path)
    lab2 = cl.Labeller(again, images, strategy="random", batch_size=4)
    lab2.handle({"action": "undo"})
    assert lab2.current == first and again.labels() == {} and "undone" in lab2.view.state["message"]
    again.close()


# ---------------------------------------------------------------- issue 20: the page's content, value by value
def _decode_png(url):
    import base64
    import io

    import numpy as np
    from PIL import Image

    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_images_are_drawn_with_their_values_scaled_up_by_whole_pixels():
    import numpy as np

    grey = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    big = _decode_png(cl._png_data_url(grey, 8))                       # 2 px -> 8 px: each pixel a 4x4 block
    assert big.shape == (8, 8) and big[0, 0] == 0 and big[0, 7] == 64 and big[7, 0] == 128 and big[7, 7] == 255
    assert (big[:4, 4:] == 64).all()                                    # nearest, not smoothed
    unit = _decode_png(cl._png_data_url(np.array([[0.0, 0.5], [1.0, 0.25]])[..., None], 2))   # float in [0, 1], 1 ch
    assert unit.shape == (2, 2) and unit.tolist() == [[0, 127], [255, 63]]
    wide = _decode_png(cl._png_data_url(np.array([[0.0, 300.0, -5.0, 2.0]]), 8))   # floats beyond 1: clipped as is
    assert wide.shape == (2, 8) and wide[0, ::2].tolist() == [0, 255, 0, 2]
    rgb = _decode_png(cl._png_data_url(np.zeros((3, 2, 3), dtype=np.uint8) + [10, 20, 30], 5))
    assert rgb.shape == (3, 2, 3) and rgb[0, 0].tolist() == [10, 20, 30]  # too large to scale: as it is


def test_the_page_state_holds_the_image_thumbnails_confidences_and_why(labeller_setup):
    import numpy as np

    store, images, _ = labeller_setup
    pool = store.ids("pool")
    probs = np.tile([[0.8, 0.1, 0.1]], (len(pool), 1))
    store.write_predictions(pool, probs)
    lab = cl.Labeller(store, images, strategy="entropy", batch_size=6, n_thumbs=3, image_px=24)
    state = lab.view.state
    item = state["item"]
    assert item == lab.current and state["class_names"] == ["benign", "malignant", "normal tissue"]
    assert state["confidences"] == [0.8, 0.1, 0.1] and state["error"] == "" and state["error_detail"] == ""
    assert state["reason"].startswith("picked by entropy (score ") and state["reason"].endswith(")")
    ref = int(store.refs([item])[0])
    assert np.array_equal(_decode_png(state["image"]), np.kron(images[ref], np.ones((2, 2, 1), dtype=np.uint8)))
    assert len(state["thumbs"]) == 3
    thumb_ref = int(store.refs([lab.queue[1]])[0])
    assert np.array_equal(_decode_png(state["thumbs"][0]), np.kron(images[thumb_ref], np.ones((4, 4, 1), np.uint8)))
    c = store.counts()
    assert state["counter"] == f"labelled: 0 of {c['pool']} pool images · remaining: {c['pool']} · this session: 0"
    lab.handle({"action": "label", "label": 2, "item": item})
    assert lab.view.state["message"] == f"image {item}: normal tissue"
    assert lab.view.state["counter"].endswith(f"remaining: {c['pool'] - 1} · this session: 1")
    lab.scores.clear()                                                  # no score known: the reason says only who
    lab._publish()
    assert lab.view.state["reason"] == "picked by entropy"
    store.write_predictions([lab.current], [[0.2, 0.3, 0.5]])
    lab._publish()
    assert lab.view.state["confidences"] == [0.2, 0.3, 0.5]


def test_skip_stale_keys_last_class_and_undo_put_the_right_image_on_screen(labeller_setup):
    store, images, _ = labeller_setup
    lab = cl.Labeller(store, images, strategy="random", batch_size=4)
    first, second = lab.queue[:2]
    lab.handle({"action": "skip"})                                     # no item given: the one on screen
    assert lab.current == second and lab.skipped == {first} and lab.view.state["message"] == f"skipped image {first}"
    lab.handle({"action": "skip", "item": first})                      # a stale skip: ignored
    assert lab.current == second and lab.skipped == {first}
    lab.handle({"action": "label", "label": 1, "item": first})         # a stale key: nothing labelled
    assert store.labels() == {} and "arrived after the image changed" in lab.view.state["message"]
    lab.handle({"action": "label", "label": 3, "item": second})        # 3 classes: 3 is not one
    assert "press 1-3" in lab.view.state["error"] and store.labels() == {}
    lab.handle({"action": "label", "label": 2})                        # the last class, no item: the one shown
    assert store.labels() == {second: 2} and lab.labelled_this_session == {second}
    third = lab.current
    lab.handle({"action": "label", "label": 0, "item": third})
    lab.handle({"action": "undo"})
    assert lab.current == third and lab.queue.count(third) == 1 and lab.labelled_this_session == {second}
    assert lab.view.state["message"] == f"undone: image {third} is back"
    lab.handle({"action": "undo"})
    assert lab.current == second and lab.labelled_this_session == set() and store.labels() == {}
    lab.handle({"action": "undo"})
    assert lab.view.state["message"] == f"nothing of yours ({store.labeller}) to undo in this file"


def test_skipped_images_come_back_only_when_nothing_else_is_left(tmp_path):
    import numpy as np

    from course_utils.active.labels import LabelStore

    store = LabelStore.create(tmp_path / "s.db", 5, ["a", "b"], holdout_fraction=0.0)
    lab = cl.Labeller(store, np.zeros((5, 4, 4), np.uint8), strategy="random", batch_size=2, oracle=[0, 1, 0, 1, 0])
    skipped = lab.current
    lab.handle({"action": "skip"})
    assert lab.label_with_oracle(10) == 5 - 1 + 1                       # the 4 others, then the skipped one
    assert len(store.labels()) == 5 and skipped in store.labels()
    assert "every pool image is labelled" in lab.view.state["message"] and lab.current is None
    assert lab.label_with_oracle() == 0                                 # nothing left: stops, no error
    store.close()


def test_label_with_oracle_labels_eight_by_default_through_the_key_path(labeller_setup):
    store, images, truth = labeller_setup
    lab = cl.Labeller(store, images, strategy="random", batch_size=3, oracle=truth)
    assert lab.label_with_oracle() == 8
    labels = store.labels()
    assert len(labels) == 8 and all(labels[i] == truth[int(store.refs([i])[0])] for i in labels)
    assert lab.labelled_this_session == set(labels)
