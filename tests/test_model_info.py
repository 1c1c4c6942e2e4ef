"""ModelInfo: the explicit record every builder returns, framework-free."""
import dataclasses
import subprocess
import sys

import pytest

from course_utils.models.info import ModelInfo


def test_pretrained_means_the_weights_it_has_not_the_ones_asked_for():
    asked = ModelInfo(arch="efficientnet_b0", framework="keras", n_classes=2, requested="imagenet", weights="random",
                      note="random weights (ImageNet download failed)")
    assert not asked.pretrained
    assert ModelInfo(arch="efficientnet_lite0", framework="torch", n_classes=2, weights="imagenet").pretrained


def test_it_is_frozen_and_becomes_a_plain_dict():
    info = ModelInfo(arch="small_cnn", framework="torch", n_classes=3, mean=(0.5,), std=(0.25,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.weights = "imagenet"
    d = info.to_dict()
    assert d["arch"] == "small_cnn" and d["n_classes"] == 3 and d["mean"] == (0.5,) and d["weights"] == "random"


def test_importing_it_imports_no_framework():
    code = "import sys, course_utils.models.info; print([m for m in ('torch', 'tensorflow') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == "[]"
