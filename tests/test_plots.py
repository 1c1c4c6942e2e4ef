"""Plots render headless (Agg), return the Figure, and carry titles and axis labels."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

import course_utils as cu  # noqa: E402
from course_utils.teaching import plots  # noqa: E402


def _history(offset=0.0, val=True):
    h = cu.History()
    for e in range(3):
        row = {"loss": 1.0 - 0.2 * e + offset, "accuracy": 0.5 + 0.1 * e}
        if val:
            row.update(val_loss=1.1 - 0.1 * e + offset, val_accuracy=0.5 + 0.05 * e)
        h.append(**row)
    return h


def test_image_grid_and_class_balance_have_titles():
    imgs = np.random.default_rng(0).integers(0, 255, (10, 8, 8, 3), dtype=np.uint8)
    fig = plots.image_grid(imgs, np.arange(10) % 2, class_names=["a", "b"], source="stand-in")
    assert "stand-in" in fig._suptitle.get_text()
    fig = plots.class_balance({"a": 3, "b": 7}, title="Balance")
    ax = fig.axes[0]
    assert ax.get_title() == "Balance" and ax.get_xlabel() and ax.get_ylabel()


def test_training_curves_single_run_train_solid_val_dashed():
    fig = plots.training_curves(_history(), metrics=("loss", "accuracy"), source="stand-in")
    assert len(fig.axes) == 2
    for ax, metric in zip(fig.axes, ("loss", "accuracy")):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == metric and ax.get_title() == metric
        styles = sorted(line.get_linestyle() for line in ax.get_lines())
        assert styles == ["-", "--"]
        np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [1, 2, 3])
    assert "stand-in" in fig._suptitle.get_text()
    assert len(fig.legends) == 1  # one legend for the whole figure
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["training", "validation"]          # one run: no colour legend entry ("run", issue 22)


def test_training_curves_overlays_dict_list_and_csv(tmp_path):
    runs = {"frozen": _history(), "fine-tuned": _history(0.1)}
    fig = plots.training_curves(runs, metrics=("loss",))
    assert len(fig.axes[0].get_lines()) == 4
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["frozen", "fine-tuned"]
    path = _history().to_csv(tmp_path / "run_a" / "history.csv")
    fig = plots.training_curves([path, _history(0.2, val=False)], metrics="loss")
    assert len(fig.axes[0].get_lines()) == 3  # csv: train+val, second run: train only
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["run_a", "run 2"]


def test_training_curves_unknown_metric_is_clear():
    with pytest.raises(cu.CourseError, match="none of the metrics"):
        plots.training_curves(_history(), metrics=("auc",))


@pytest.mark.parametrize("normalize", [None, "true"])
def test_confusion_matrix_counts_match_sklearn(normalize):
    y_true = np.array([0, 0, 1, 1, 1, 0])
    y_pred = np.array([0, 1, 1, 1, 0, 0])
    fig = plots.confusion_matrix(y_true, y_pred, ["Parasitized", "Uninfected"], normalize=normalize,
                                 source="stand-in")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert "Confusion matrix" in ax.get_title() and "stand-in" in ax.get_title()
    cell_texts = [t.get_text() for t in ax.texts]
    expected = ["2", "1", "1", "2"] if normalize is None else ["0.67", "0.33", "0.33", "0.67"]
    assert cell_texts == expected
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Parasitized", "Uninfected"]


def test_confusion_matrix_length_mismatch():
    with pytest.raises(cu.CourseError, match="drop the last batch"):
        plots.confusion_matrix([0, 1, 1], [0, 1], ["a", "b"])


def test_roc_curve_auc_in_legend():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    fig = plots.roc_curve(y, np.stack([1 - s, s], axis=1), name="cnn")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == f"cnn (AUC = {roc_auc_score(y, s):.3f})"
    assert "chance" in legend[1]
    assert "false positive" in ax.get_xlabel() and "true positive" in ax.get_ylabel() and ax.get_title()
    fig = plots.roc_curve(y, {"a": s, "b": 1 - s})
    assert len(fig.axes[0].get_lines()) == 3


def test_roc_curve_one_class_is_clear():
    with pytest.raises(cu.CourseError, match="both classes"):
        plots.roc_curve([1, 1, 1], [0.2, 0.4, 0.9])


def test_training_curves_legend_names_only_the_line_styles_drawn():
    h = cu.History()
    for e in range(3):
        h.append(val_auc=0.6 + 0.1 * e)                     # a validation-only metric: no training line exists
    fig = plots.training_curves(h, metrics=("auc",))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["validation"]


def test_attribution_grid_draws_signed_maps_red_to_blue_scaled_by_their_largest_magnitude():
    images = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 1), dtype=np.uint8)
    maps = np.zeros((2, 8, 8))
    maps[:, 0, 0], maps[:, 7, 7] = 4.0, -2.0               # one pixel for the class, one against it
    fig = plots.attribution_grid(images, {"IG": maps}, n=2, signed=True, title="signed")
    overlay = fig.axes[1].images[1]
    assert overlay.get_cmap().name == "RdBu_r" and overlay.get_clim() == (-1, 1)
    drawn = np.asarray(overlay.get_array())
    assert drawn[0, 0] == 1.0 and drawn[7, 7] == -0.5
    assert "blue lowers" in fig._supxlabel.get_text() and "|value|" in fig.axes[-1].get_ylabel()
    plain = plots.attribution_grid(images, {"IG": np.abs(maps) / 4}, n=2)
    assert plain.axes[1].images[1].get_clim() == (0, 1)


def test_randomization_curve_draws_the_reference_line_in_its_legend():
    from types import SimpleNamespace

    r = SimpleNamespace(steps=["trained", "top", "all"], correlation=np.array([1.0, 0.2, 0.1]),
                        per_image=np.array([[1.0, 1.0], [0.1, 0.3], [0.0, 0.2]]))
    fig = plots.randomization_curve(r, reference=0.25, reference_label="edge map")
    ax = fig.axes[0]
    assert any(t.get_text() == "edge map (+0.25)" for t in ax.get_legend().get_texts())
    assert ax.get_ylabel() and ax.get_xlabel() and ax.get_title()
