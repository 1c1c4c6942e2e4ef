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
