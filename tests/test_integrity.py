"""Tests for course_utils.integrity: what a seal catches, and that checking costs little next to loading."""
from __future__ import annotations

import hashlib
import io

import pytest
import torch

from course_utils.integrity import check_file, seal, sha256_file, unseal


def test_a_sealed_payload_round_trips_and_keeps_its_fields():
    obj = {"w": torch.arange(6, dtype=torch.float32), "meta": {"a": 1}}
    outer = seal(obj, format="x", version=3)
    buf = io.BytesIO()
    torch.save(outer, buf)
    back = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert back["format"] == "x" and back["version"] == 3
    inner = torch.load(io.BytesIO(unseal(back)), weights_only=True)
    assert torch.equal(inner["w"], obj["w"]) and inner["meta"] == {"a": 1}


@pytest.mark.parametrize("where", [0, 100, -1])
def test_any_flipped_bit_of_the_payload_is_caught(where):
    outer = seal({"w": torch.randn(64)})
    outer["payload"][where] ^= 1
    assert unseal(outer) is None


def test_unseal_refuses_what_is_not_sealed():
    assert unseal({"payload": torch.zeros(3, dtype=torch.uint8)}) is None     # no digest
    assert unseal({"sha256": "0" * 64}) is None and unseal([1, 2]) is None and unseal(None) is None


def test_file_digests_agree_with_hashlib_and_say_what_is_wrong(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 5000)          # more than one chunk
    digest = sha256_file(path, chunk=4096)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert check_file(path, digest) is None
    assert "no SHA-256 on record" in check_file(path, None)
    data = bytearray(path.read_bytes())
    data[777] ^= 0x10
    path.write_bytes(bytes(data))
    assert "no longer matches the SHA-256" in check_file(path, digest)


def test_disk_full_reads_pythons_errno_and_torchs_writer_message():
    from course_utils.integrity import disk_full

    assert disk_full(OSError(28, "No space left on device")) and disk_full(OSError(122, "Disk quota exceeded"))
    assert disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 5184 vs 5080"))
    assert not disk_full(PermissionError(13, "Permission denied")) and not disk_full(RuntimeError("bad shape"))
