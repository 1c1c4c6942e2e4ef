"""course_utils.history: one record type for Keras and torch runs."""
import math
from types import SimpleNamespace

import pytest

from course_utils import History


def test_append_keeps_metrics_aligned():
    h = History()
    h.append(loss=1.0, accuracy=0.5)
    h.append(loss=0.5, accuracy=0.7, val_loss=0.6)
    assert h.n_epochs == 2 and h.epochs == [1, 2]
    assert math.isnan(h["val_loss"][0]) and h["val_loss"][1] == 0.6
    assert h.last("loss") == 0.5
    assert h.best("loss") == 0.5 and h.best("accuracy") == 0.7
    assert h.summary() == {"loss": 0.5, "accuracy": 0.7, "val_loss": 0.6}


def test_unknown_metric_lists_the_known_ones():
    h = History()
    h.append(loss=1.0)
    with pytest.raises(KeyError, match="it has: loss"):
        h["val_auc"]


def test_csv_round_trip(tmp_path):
    h = History(meta={"run": "a"})
    for i in range(3):
        h.append(loss=1.0 / (i + 1), val_accuracy=0.5 + 0.1 * i)
    path = h.to_csv(tmp_path / "runs" / "h.csv")
    back = History.from_csv(path)
    assert back.metrics.keys() == h.metrics.keys()
    for key in h.metrics:
        assert back[key] == pytest.approx(h[key])
    assert list(back.to_frame().columns) == ["epoch", "loss", "val_accuracy"]


def test_from_keras_history_object():
    fake = SimpleNamespace(history={"loss": [0.9, 0.4], "val_loss": [1.0, 0.7]})
    h = History.from_keras(fake, model="cnn")
    assert h["loss"] == [0.9, 0.4] and h.meta == {"model": "cnn"}


def test_missing_csv_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no history file"):
        History.from_csv(tmp_path / "nope.csv")


def test_last_best_and_summary_over_three_epochs_by_hand():
    h = History()
    h.append(loss=0.9, accuracy=0.6)
    h.append(loss=0.4, accuracy=0.8, val_loss=0.7)
    h.append(loss=0.5, accuracy=None, val_loss=0.6)                  # None is a missing value
    assert h.n_epochs == 3 and h.epochs == [1, 2, 3] and History().n_epochs == 0 and History().epochs == []
    assert h["val_loss"][1:] == [0.7, 0.6] and math.isnan(h["accuracy"][2])
    assert h.last("loss") == 0.5 and h.last("val_loss") == 0.6
    assert h.best("loss") == 0.4 and h.best("val_loss") == 0.6 and h.best("accuracy") == 0.8   # NaN skipped
    assert h.best("loss", mode="max") == 0.9 and h.best("accuracy", mode="min") == 0.6
    s = h.summary()
    assert s["loss"] == 0.5 and s["val_loss"] == 0.6 and math.isnan(s["accuracy"])
    h.metrics["empty"] = []
    assert "empty" not in h.summary() and "empty" in h and "nope" not in h
    with pytest.raises(ValueError, match="no values"):
        h.last("empty")
    h.append(auc=float("nan"))
    with pytest.raises(ValueError, match="no finite values"):
        h.best("auc")
