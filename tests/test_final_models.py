"""Tests for course_utils.final_models: torch and Keras round trips (same outputs after loading), a torch file
that torch.load(weights_only=True) reads, and every unusable file answered with None and one line of why."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils import CourseError
from course_utils.integrity import seal, unseal
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
    outer = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code in the file, nor inside
    raw = torch.load(io.BytesIO(unseal(outer)), map_location="cpu", weights_only=True)
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
    # without the side file the .keras file cannot be checked (issue 20): refused with the reason
    path.with_suffix(".json").unlink()
    assert final_models.load("03_malaria", folder=tmp_path, verbose=False) is None


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
    outer = torch.load(tmp_path / "shapes.pt", weights_only=True)
    raw = torch.load(io.BytesIO(unseal(outer)), weights_only=True)
    raw["build"] = {"width": 4, "depth": 2}                         # no longer fits the weights
    torch.save(seal(raw, format=outer["format"]), tmp_path / "shapes.pt")
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
    three, _ = models_torch.small_cnn(3, in_chans=3, width=4)       # issue 20: was saved, only load refused it
    with pytest.raises(CourseError, match="3 outputs but its info says n_classes=1"):
        final_models.save(three, info, "m", folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model, info = _trained_small_cnn()
    path = final_models.save(model, info, "m", folder=tmp_path, image_size=28)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CourseError, match="disk is full.*previous file is unchanged"):
        final_models.save(model, info, "m", folder=tmp_path, image_size=64)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    monkeypatch.undo()
    assert final_models.load("m", folder=tmp_path, verbose=False).meta == {"image_size": 28}


def _flip_a_bit_of(path: Path, values: np.ndarray) -> None:
    """Flip one bit inside the stored bytes of ``values`` (a float32 tensor's data, found in the file)."""
    data, needle = bytearray(path.read_bytes()), values.astype("<f4").tobytes()
    at = data.find(needle)
    assert at >= 0, "the tensor's bytes are not stored verbatim in the file"
    data[at + 3] ^= 0x40                        # a high exponent bit of the first value: -0.13 becomes about -4e37
    path.write_bytes(bytes(data))


def test_one_flipped_bit_in_a_torch_final_model_is_refused(tmp_path, capsys):
    """Issue 20, BAD 2: a weight went from -0.13 to -4.5e37 and load said "loaded the saved model"."""
    model, info = _trained_small_cnn()
    path = final_models.save(model, info, "m", folder=tmp_path)
    _flip_a_bit_of(path, model.classifier[-1].weight.detach().numpy().ravel()[:4])
    capsys.readouterr()
    assert final_models.load("m", folder=tmp_path) is None
    out = capsys.readouterr().out
    assert "damaged" in out and "SHA-256" in out and "loaded the saved model" not in out, out


def test_one_flipped_bit_or_another_models_description_in_keras_is_refused(tmp_path, capsys):
    keras = import_keras()
    inputs = keras.Input((4,))
    a = keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs), name="a")
    b = keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs), name="b")
    info = ModelInfo("small_cnn", "keras", 2)
    path = final_models.save(a, info, "a", folder=tmp_path)
    final_models.save(b, info, "b", folder=tmp_path, image_size=99)
    good = path.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert final_models.load("a", folder=tmp_path) is None
    assert "no longer matches the SHA-256" in capsys.readouterr().out
    path.write_bytes(good)
    (tmp_path / "a.json").write_text((tmp_path / "b.json").read_text())   # b's description beside a's file
    assert final_models.load("a", folder=tmp_path) is None
    assert "no longer matches the SHA-256" in capsys.readouterr().out


def test_two_processes_saving_one_final_model_never_collide(tmp_path):
    """Issue 20: two processes saving the same model shared one temporary name (FileNotFoundError in 4-15 % of
    saves, and a reader found the file unreadable). Real processes, saving and loading at once."""
    code = textwrap.dedent(f'''
        import sys, torch
        from course_utils.models import final as F, torch_models as mt
        model, info = mt.small_cnn(1, in_chans=3, width=4, depth=2)
        bad = 0
        for i in range(80):
            F.save(model, info, "shared", folder={str(tmp_path)!r}, writer=sys.argv[1], i=i)
            if F.load("shared", folder={str(tmp_path)!r}, verbose=False) is None:
                bad += 1
        print("unreadable", bad)
    ''')
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for k in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert "unreadable 0" in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.pt"]    # no temporary file left behind


def test_a_full_disk_while_saving_a_final_model_is_a_clear_error_and_leaves_nothing(tiny_disk):
    """Issue 20: a real full disk (a 16 KiB tmpfs) gave a raw error and left a .tmp.pt behind."""
    done = tiny_disk('''
        from course_utils import CourseError
        from course_utils.models import final as F, torch_models as mt
        model, info = mt.small_cnn(1, in_chans=3, width=16, depth=3)
        try:
            F.save(model, info, "m", folder=DISK)
        except CourseError as exc:
            print("ERROR", exc)
        print("LEFT", sorted(p.name for p in DISK.iterdir()))
    ''', size_kb=16)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ERROR could not save the final model 'm'" in done.stdout and "disk is full" in done.stdout, done.stdout
    assert "Nothing was written" in done.stdout and "LEFT []" in done.stdout, done.stdout


def test_default_folder_is_git_ignored():
    root = Path(__file__).resolve().parents[1]
    target = root / "notebooks" / final_models.path_of("x", "torch")
    done = subprocess.run(["git", "check-ignore", "-q", str(target)], cwd=root, check=False)
    assert done.returncode == 0, f"{target} is not git-ignored"
    assert json.loads(json.dumps({"folder": str(final_models.FOLDER)}))["folder"] == "runs/final"


def test_checking_a_final_models_digest_is_not_felt(tmp_path, monkeypatch):
    """Issue 20: hashing a final model costs under 5 % of its load time. EfficientNet-B0 (16 MB): load() with the
    SHA-256 check against load() whose hash is skipped (the digest computed in a thread while the model is rebuilt)."""
    import time

    model, info = models_torch.efficientnet_b0(2, pretrained=False, verbose=False)
    final_models.save(model, info, "b0", folder=tmp_path)

    outer = torch.load(tmp_path / "b0.pt", weights_only=True)
    real_hash = final_models.sha256_bytes

    def timed(hashing) -> float:
        monkeypatch.setattr(final_models, "sha256_bytes", hashing)
        t0 = time.perf_counter()
        assert final_models.load("b0", folder=tmp_path, verbose=False) is not None
        return time.perf_counter() - t0

    # Checked and unchecked loads interleaved, so a busy moment of a shared 2-core runner hits both loads of a pair
    # alike; the median of the pairs' ratios is judged (best against best failed CI once, 228 vs 216 ms, in the full
    # suite), and another series is measured only if this one is over (timing noise, not a fault).
    for _ in range(3):
        pairs = [(timed(real_hash), timed(lambda data: outer["sha256"])) for _ in range(12)]
        ratio = sorted(c / u for c, u in pairs)[len(pairs) // 2]
        if ratio < 1.05:
            break
    assert ratio < 1.05, f"median load with the check / without: {ratio:.3f} ({len(pairs)} interleaved pairs)"


def test_meta_values_are_made_plain_or_refused_by_name():
    import numpy as np
    import torch

    assert final_models._plain(np.float32(0.5), "lr") == 0.5 and final_models._plain(torch.tensor(3), "n") == 3
    assert final_models._plain((1, np.int64(2), [np.float64(0.25)]), "xs") == [1, 2, [0.25]]
    with pytest.raises(CourseError, match=r"meta xs=\{'a': 1\} is a dict"):
        final_models._plain([1, {"a": 1}], "xs")                   # the key of the outer value is named
    with pytest.raises(CourseError, match="meta arr="):
        final_models._plain(np.zeros(2), "arr")                    # an array is not a scalar


def _reseal(path, change):
    outer = torch.load(path, weights_only=True)
    raw = torch.load(io.BytesIO(unseal(outer)), weights_only=True)
    change(raw)
    torch.save(seal(raw, format=outer["format"]), path)


def test_what_load_and_save_print_and_keep(tmp_path, capsys):
    """Each line a person reads, and each field a later notebook reads back."""
    model, info = _trained_small_cnn()
    n = sum(p.numel() for p in model.state_dict().values())
    nested = tmp_path / "a" / "b"                                        # folders that do not exist yet
    path = final_models.save(model, info, "m", folder=nested, acc=0.123456, rounds=2, tag="x")
    assert path == nested / "m.pt"
    assert capsys.readouterr().out.strip() == f"saved the final model 'm': {path} (small_cnn, {n:,} parameters)"
    loaded = final_models.load("m", folder=nested)
    assert capsys.readouterr().out.strip() == (f"loaded the saved model 'm' from {path} (small_cnn, acc 0.123, "
                                               "rounds 2, tag x)")
    assert loaded.path == path and loaded.meta == {"acc": 0.123456, "rounds": 2, "tag": "x"}
    assert final_models.load("nothing", folder=nested) is None
    assert capsys.readouterr().out.strip() == (f"no saved model 'nothing' in {nested}/ (the notebook that saves it "
                                               "has not run to its end here)")
    assert final_models.load("m", folder=nested, verbose=False) is not None and capsys.readouterr().out == ""
    with pytest.raises(CourseError, match=r"meta bad=\{'a': 1\}"):
        final_models.save(model, info, "m2", folder=nested, bad={"a": 1})


def test_a_payload_without_build_or_meta_still_loads_and_a_missing_weight_does_not(tmp_path, capsys):
    model, info = models_torch.small_cnn(1, width=16, depth=3)           # the builder's own defaults
    x = torch.rand(2, 3, 28, 28)
    path = final_models.save(model, info, "d", folder=tmp_path)
    _reseal(path, lambda raw: (raw.pop("build"), raw.pop("meta")))
    loaded = final_models.load("d", folder=tmp_path, verbose=False)
    assert loaded is not None and loaded.meta == {} and np.allclose(_torch_out(loaded.model, x), _torch_out(model, x))
    _reseal(path, lambda raw: raw["state_dict"].pop(next(iter(raw["state_dict"]))))
    assert final_models.load("d", folder=tmp_path) is None                # strict: every weight must be there
    assert "does not fit a freshly built small_cnn" in capsys.readouterr().out


def test_the_newest_file_wins_and_a_torch_file_is_read_on_the_cpu(tmp_path):
    import os

    model, info = _trained_small_cnn()
    path = final_models.save(model, info, "n", folder=tmp_path)
    older = tmp_path / "n.keras"
    older.write_bytes(b"an older Keras file")
    os.utime(older, (path.stat().st_mtime - 100,) * 2)
    loaded = final_models.load("n", folder=tmp_path, verbose=False)
    assert loaded is not None and loaded.path == path
    assert all(p.device.type == "cpu" for p in loaded.model.parameters()) and not loaded.model.training
    assert final_models._torch_outputs(model) == info.n_classes and final_models._torch_outputs(torch.nn.ReLU()) is None
