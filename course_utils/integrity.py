"""Integrity of the files the course trusts: a SHA-256 of the content, stored with it and checked before use.

A flipped bit on a disk or in a copy is not an error any reader raises: a weight quietly becomes 1e37. So every
file the course reads back (training checkpoints, final models, converted weights) carries the SHA-256 of its
content and is refused, with a reason, when the two no longer agree. Hashing runs at about 1 GB/s, far below the
cost of loading the same file.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["sha256_bytes", "sha256_file", "seal", "unseal", "sealed_bytes", "check_file", "disk_full",
           "remove_orphans"]


def sha256_bytes(data: bytes | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (memory stays small however large the file is)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def seal(obj: Any, **fields: Any) -> dict:
    """``obj`` serialised by ``torch.save`` into a uint8 tensor, with its SHA-256 and ``fields`` beside it: a dict
    that ``torch.save`` writes and ``torch.load(weights_only=True)`` reads back safely."""
    import torch  # noqa: PLC0415

    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getbuffer()
    return {**fields, "sha256": sha256_bytes(payload), "payload": torch.frombuffer(payload, dtype=torch.uint8)}


def sealed_bytes(outer: Any) -> tuple[memoryview, str] | None:
    """The payload of a :func:`seal` ed dict as a view (no copy) and the SHA-256 stored with it (None: not sealed).
    For checking while something else runs: ``hashlib`` releases the GIL, so a thread can hash a large payload
    while the caller rebuilds the model (the check then costs no waiting)."""
    import torch  # noqa: PLC0415

    payload = outer.get("payload") if isinstance(outer, dict) else None
    if not isinstance(payload, torch.Tensor) or not isinstance(outer.get("sha256"), str):
        return None
    return memoryview(payload.numpy()), outer["sha256"]


def unseal(outer: Any) -> bytes | None:
    """The payload bytes of a :func:`seal` ed dict, or None when they do not match the SHA-256 stored with them
    (or the dict is not sealed). Load them with ``torch.load(io.BytesIO(data), weights_only=True)``."""
    sealed = sealed_bytes(outer)
    if sealed is None or not sealed[0].nbytes or sha256_bytes(sealed[0]) != sealed[1]:
        return None
    return sealed[0].tobytes()


def disk_full(exc: BaseException) -> bool:
    """Did a write fail because the disk (or the user's quota) is full? ``errno`` says so for Python's own writes;
    torch's C++ writer raises a RuntimeError whose text does (``unexpected pos`` when a write came up short)."""
    text = str(exc).lower()
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "space" in text or "unexpected pos" in text


def check_file(path: str | os.PathLike, expected: str | None) -> str | None:
    """Why ``path`` cannot be trusted (None: its SHA-256 is ``expected``)."""
    if not expected:
        return f"{Path(path).name} has no SHA-256 on record"
    actual = sha256_file(path)
    return None if actual == expected else (f"{Path(path).name} no longer matches the SHA-256 recorded when it was "
                                            "written (a changed byte, or a partial copy)")


def remove_orphans(folder: str | os.PathLike, pattern: str) -> list[Path]:
    """Remove temporary files whose writer died mid-write (a killed kernel): names in ``folder`` that match the
    regular expression ``pattern``, whose group ``pid`` names a process that no longer exists. A living writer's
    file (this process's too) is left alone. Returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.iterdir():
        match = re.fullmatch(pattern, tmp.name)
        if match is None or int(match["pid"]) == os.getpid():
            continue
        try:
            os.kill(int(match["pid"]), 0)     # signal 0: only asks whether the process exists
        except ProcessLookupError:
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
        except OSError:                       # it exists but is someone else's: leave it
            pass
    return removed
