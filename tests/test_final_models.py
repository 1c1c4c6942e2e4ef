"""Tests for course_utils.final_models: torch and Keras round trips (same outputs after loading), a torch file
that torch.load(weights_only=True) reads, and every unusable file answered with None and one line of why."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils import CourseError
from course_utils.models import final as final_models
from course_utils.models import torch_models as models_torch
from course_utils.models.info import ModelInfo
from course_utils.runtime import import_keras


def _torch_out(model, x):
    with torch.no_grad():
        return model.eval()(x).numpy()


def _trained_small_cnn(width=8, depth=2):
    torch.manual_seed(0)
    model, info = models_torch.small_cnn(1, in_chans=3, width=width, depth=depth)
    with torch.no_grad():                 # weights and BN statistics that differ from a fresh build
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model, info


def test_torch_round_trip_same_outputs_info_and_meta(tmp_path, capsys):
    model, info = _trained_small_cnn(width=8, depth=2)            # not the builder's default width/depth
    x = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    path = final_models.save(model, info, "04_breastmnist", folder=tmp_path, image_size=28, source="stand-in",
                             size=np.int64(3))
    assert path == tmp_path / "04_breastmnist.pt" and "saved the final model" in capsys.readouterr().out
    raw = torch.load(path, map_location="cpu", weights_only=True)    # no pickled code in the file
    assert raw["info"]["arch"] == "small_cnn" and raw["build"] == {"width": 8, "depth": 2}
    saved = final_models.load("04_breastmnist", folder=tmp_path)
    assert "loaded the saved model '04_breastmnist'" in capsys.readouterr().out
    assert saved.info == info and saved.meta == {"image_size": 28, "source": "stand-in", "size": 3}
    assert saved.framework == "torch" and not saved.model.training
    assert np.allclose(_torch_out(saved.model, x), _torch_out(model, x), atol=1e-6)


def test_torch_info_may_come_from_history_meta(tmp_path):
    model, info = _trained_small_cnn()
    final_models.save(model, info.to_dict(), "m", folder=tmp_path)     # History.meta["model"] is this dict
    assert final_models.load("m", folder=tmp_path, verbose=False).info == info


def test_torch_efficientnet_lite0_is_rebuilt_without_downloading(tmp_path):
    torch.manual_seed(0)
    model, info = models_torch.efficientnet_lite0(1, pretrained=False, verbose=False)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    final_models.save(model, info, "effnet", folder=tmp_path, image_size=32)
    saved = final_models.load("effnet", folder=tmp_path, verbose=False)
    assert saved.info.arch == "efficientnet_lite0"
    assert np.allclose(_torch_out(saved.model, x), _torch_out(model, x), atol=1e-5)


def test_keras_round_trip_with_its_info_beside_it(tmp_path):
    keras = import_keras()
    from course_utils.models import keras_models as models_keras

    model, info = models_keras.efficientnet_lite0((48, 48, 3), 2, pretrained=False)   # a nested base, like 03's
    x = np.random.default_rng(0).random((3, 48, 48, 3)).astype("float32")
    path = final_models.save(model, info, "03_malaria", folder=tmp_path, image_size=48, source="stand-in")
    assert path.suffix == ".keras" and path.with_suffix(".json").exists()
    saved = final_models.load("03_malaria", folder=tmp_path, verbose=False)
    assert isinstance(saved.model, keras.Model) and saved.framework == "keras"
    assert saved.info == info and saved.meta == {"image_size": 48, "source": "stand-in"}
    same = saved.model(x, training=False).numpy(), model(x, training=False).numpy()
    assert np.allclose(*same, atol=1e-5)
    # without the side file: the model still loads, without its description
    path.with_suffix(".json").unlink()
    again = final_models.load("03_malaria", folder=tmp_path, verbose=False)
    assert again.info is None and again.meta == {}


def test_missing_corrupt_foreign_and_mismatched_files_give_none_and_say_why(tmp_path, capsys):
    assert final_models.load("03_malaria", folder=tmp_path) is None
    assert "no saved model '03_malaria'" in capsys.readouterr().out

    (tmp_path / "broken.pt").write_bytes(b"not a torch file")
    assert final_models.load("broken", folder=tmp_path) is None
    assert "could not be read" in capsys.readouterr().out

    model, info = _trained_small_cnn()
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 1)), tmp_path / "pickled.pt")   # a whole model: refused
    assert final_models.load("pickled", folder=tmp_path) is None
    assert "could not be read" in capsys.readouterr().out

    torch.save({"epoch": 3, "model": model.state_dict()}, tmp_path / "ckpt.pt")    # a training checkpoint
    assert final_models.load("ckpt", folder=tmp_path) is None
    assert "not a final model" in capsys.readouterr().out

    final_models.save(model, info, "shapes", folder=tmp_path)
    raw = torch.load(tmp_path / "shapes.pt", weights_only=True)
    raw["build"] = {"width": 4, "depth": 2}                         # no longer fits the weights
    torch.save(raw, tmp_path / "shapes.pt")
    capsys.readouterr()
    assert final_models.load("shapes", folder=tmp_path) is None
    out = capsys.readouterr().out
    assert "does not fit a freshly built small_cnn" in out and len(out.strip().splitlines()) == 1

    (tmp_path / "k.keras").write_bytes(b"PK junk")
    assert final_models.load("k", folder=tmp_path) is None
    assert "could not be read" in capsys.readouterr().out


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    model, info = _trained_small_cnn()
    with pytest.raises(CourseError, match="name"):
        final_models.save(model, info, "../escape", folder=tmp_path)
    with pytest.raises(CourseError, match="name"):
        final_models.load("04.pt", folder=tmp_path)
    with pytest.raises(CourseError, match="ModelInfo"):
        final_models.save(model, None, "m", folder=tmp_path)
    with pytest.raises(CourseError, match="meta"):
        final_models.save(model, info, "m", folder=tmp_path, data=np.zeros(3))
    with pytest.raises(CourseError, match="keras"):
        final_models.save(model, ModelInfo("small_cnn", "keras", 1), "m", folder=tmp_path)
    with pytest.raises(CourseError, match="nn.Module or a Keras Model"):
        final_models.save("not a model", info, "m", folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model, info = _trained_small_cnn()
    path = final_models.save(model, info, "m", folder=tmp_path, image_size=28)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        final_models.save(model, info, "m", folder=tmp_path, image_size=64)
    assert path.read_bytes() == before
    assert final_models.load("m", folder=tmp_path, verbose=False).meta == {"image_size": 28}


def test_default_folder_is_git_ignored():
    root = Path(__file__).resolve().parents[1]
    target = root / "notebooks" / final_models.path_of("x", "torch")
    done = subprocess.run(["git", "check-ignore", "-q", str(target)], cwd=root, check=False)
    assert done.returncode == 0, f"{target} is not git-ignored"
    assert json.loads(json.dumps({"folder": str(final_models.FOLDER)}))["folder"] == "runs/final"
