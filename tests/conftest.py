"""Fixtures shared by more than one test module: the blob model that test_xai.py and
test_xai_faithfulness.py both explain (trained once per module, as before the split)."""
import functools

import numpy as np
import pytest

BLOB = 4       # blob side, pixels
SIZE = 16      # image side; the evidence (class 1) always lies in the top-left quadrant


def _blob_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.3, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    y = np.arange(n) % 2
    boxes = []
    for i in range(n):
        r, c = rng.integers(0, SIZE // 2 - BLOB + 1, size=2)
        if y[i] == 1:
            x[i, 0, r:r + BLOB, c:c + BLOB] = 1.0
        boxes.append((c, r, c + BLOB, r + BLOB))
    return x, y, boxes


@pytest.fixture(scope="module")
def blob_model():
    """A tiny torch CNN that has learnt "class 1 = a bright blob in the top-left quadrant" (eval mode),
    with positive validation images and their blob boxes."""
    import torch
    from torch import nn

    from course_utils.runtime import torch_threads

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    x, y, _ = _blob_data(256, seed=0)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    with torch_threads(1):  # a model this small trains faster on one thread (and on a busy CPU, much faster)
        for _ in range(60):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt), yt)
            loss.backward()
            opt.step()
    model.eval()
    xv, yv, boxes = _blob_data(64, seed=1)
    acc = (model(torch.as_tensor(xv)).argmax(1).numpy() == yv).mean()
    assert acc > 0.95, f"the blob model did not learn (accuracy {acc:.2f})"
    pos = yv == 1
    return model, xv[pos], [b for b, p in zip(boxes, pos) if p]


@functools.lru_cache(maxsize=1)
def _tiny_disk_allowed() -> str | None:
    """Why a tmpfs cannot be mounted in a private mount namespace here (None: it can)."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return "no `unshare` on this machine"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a mount namespace ({probe.stderr.strip()})"


@pytest.fixture
def tiny_disk(tmp_path):
    """``run(code, size_kb)``: run Python ``code`` in a fresh process whose ``DISK`` (a Path) is a real tmpfs of
    ``size_kb`` KiB, mounted in a private mount namespace (``unshare -m``, root only): a full disk for real, not a
    faked OSError. Returns the CompletedProcess (text output). Skips, with the reason, where that is not allowed."""
    import subprocess
    import sys
    import textwrap

    reason = _tiny_disk_allowed()
    if reason:
        pytest.skip(reason)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "on_tiny_disk.py"

    def run(code: str, size_kb: int = 64) -> subprocess.CompletedProcess:
        script.write_text("from pathlib import Path\nDISK = Path(%r)\n" % str(disk) + textwrap.dedent(code))
        shell = f"mount -t tmpfs -o size={int(size_kb)}k tmpfs {disk} && {sys.executable} {script}"
        return subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture
def unprivileged(tmp_path):
    """``run(code)``: run Python ``code`` in a fresh process that file permissions bind. As root (CI) it drops
    ``CAP_DAC_OVERRIDE`` / ``CAP_DAC_READ_SEARCH`` with ``setpriv``, so a read-only folder is read-only for real;
    as any other user it runs as it is. ``TMP`` (a Path) is the test's tmp_path. Skips where root cannot drop them."""
    import os
    import shutil
    import subprocess
    import sys
    import textwrap

    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without `setpriv`: a read-only folder cannot be made read-only for root")
        prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]
    script = tmp_path / "unprivileged.py"

    def run(code: str) -> subprocess.CompletedProcess:
        script.write_text("from pathlib import Path\nTMP = Path(%r)\n" % str(tmp_path) + textwrap.dedent(code))
        return subprocess.run([*prefix, sys.executable, str(script)], capture_output=True, text=True, timeout=300)

    return run
