"""The keyboard labeller driven headless: key messages label, advance, undo and skip; errors are shown in
the widget; a thread that is not the creator (JupyterLab's subshells) labels through the same path.
(In a real browser: tests/test_browser.py; under ipywidgets 7.7.1: tests/test_widgets_compat.py.)"""
import pytest

import course_utils as cu
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
    for p in paths:                                    # the files went missing: named, in red, never stuck
        p.unlink()
    lab.handle({"action": "undo"})
    state = lab.view.state
    assert "cannot read the image" in state["error"] and "img_" in state["error"], state["error"]
    assert store.labels() == {i: i % 2 for i in range(5)}    # the undo itself was saved
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
