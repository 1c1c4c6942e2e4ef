"""The lazy faces (course_utils/_lazy.py): modules load on first use, and a group forwards its front's names."""
from __future__ import annotations

import subprocess
import sys

import pytest

import course_utils as cu
from course_utils._lazy import face


def test_a_face_forwards_its_fronts_names_at_each_access(monkeypatch):
    from course_utils.data import loaders

    assert cu.data.load_malaria is loaders.load_malaria
    monkeypatch.setattr(loaders, "load_malaria", "patched")   # e.g. the rehearsal's wrapper
    assert cu.data.load_malaria == "patched"


def test_the_notebooks_short_names_are_the_grouped_modules():
    from course_utils.train import torch_engine
    from course_utils.xai import faithfulness

    assert cu.train_torch is torch_engine and cu.xai_faithfulness is faithfulness
    assert cu.xai.grad_cam is cu.xai.methods.grad_cam and cu.active.simulate is cu.active.loop.simulate
    for name, path in cu.ALIASES.items():
        assert getattr(cu, name).__name__ == f"course_utils.{path}"


def test_an_unknown_name_is_an_attribute_error_that_names_the_package():
    getattr_, dir_ = face("course_utils.data", ["loaders"], fronts=["loaders"])
    with pytest.raises(AttributeError, match="'course_utils.data' has no attribute 'nope'"):
        getattr_("nope")
    assert "loaders" in dir_() and "load_malaria" in dir_()


def test_no_two_front_modules_of_a_group_name_different_things():
    import course_utils.train as train

    for front in ("torch_engine", "two_phase", "losses", "history"):
        module = getattr(train, front)
        for name in module.__all__:
            assert getattr(train, name) is getattr(module, name), (front, name)


def test_importing_the_package_and_every_group_loads_neither_framework():
    code = ("import sys, course_utils as cu\n"
            "for g in ('data', 'models', 'train', 'active', 'xai', 'teaching'): getattr(cu, g)\n"
            "print('torch' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_every_public_module_of_a_group_is_on_its_face():
    from pathlib import Path

    root = Path(cu.__file__).parent
    for group in ("data", "models", "train", "active", "xai", "teaching"):
        face_names = set(dir(getattr(cu, group)))
        modules = {p.stem for p in (root / group).glob("*.py") if not p.stem.startswith("_")}
        assert modules <= face_names, (group, sorted(modules - face_names))


def test_a_private_module_imports_without_waking_the_face():
    code = ("import sys, course_utils.data._drawing, course_utils.data.standins\n"
            "print('course_utils.data.loaders' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]
