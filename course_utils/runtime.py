"""Where are we running, and how big should things be?

One place decides the *mode* (``smoke`` for CI, ``lite`` for a CPU, ``full`` for a GPU),
the device, and seeding, so that every notebook scales the same way. Nothing here imports
TensorFlow or torch at import time: frameworks are looked up only when a function needs them.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

MODES = ("smoke", "lite", "full")
_TRUTHY = {"1", "true", "yes", "on"}


class CourseError(ValueError):
    """A problem the user can fix; the message says what was wrong and how to fix it."""


# --------------------------------------------------------------------------- environment
def in_colab() -> bool:
    """True inside Google Colab (the notebook's setup cell installs packages only there)."""
    return "google.colab" in sys.modules


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Notebook, VS Code, Colab); False in a script or plain IPython."""
    try:
        from IPython import get_ipython  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def in_ci() -> bool:
    """True when the environment variable ``CI`` says we run under continuous integration."""
    return os.environ.get("CI", "").strip().lower() in _TRUTHY


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def gpu_available() -> bool:
    """True if torch or TensorFlow sees a GPU.

    Asks only a framework that is already imported, then torch (cheap and safe to import first),
    and never imports TensorFlow just to ask: that import costs seconds and, after it, importing
    torchvision can crash (see :func:`import_tensorflow`).
    """
    if "torch" in sys.modules or has_module("torch"):
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            return True
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        return bool(tf.config.list_physical_devices("GPU"))
    return False


# --------------------------------------------------------------------------- mode
def get_mode() -> str:
    """The active mode: ``smoke``, ``lite`` or ``full``.

    ``COURSE_MODE`` wins when set (``auto`` means "decide for me"); otherwise ``CI=true`` means
    ``smoke``; otherwise ``full`` with a GPU and ``lite`` without.
    """
    raw = os.environ.get("COURSE_MODE", "").strip().lower()
    if raw in MODES:
        return raw
    if raw not in ("", "auto"):
        raise CourseError(
            f"COURSE_MODE={raw!r} is not a mode. Use one of {', '.join(MODES)} or 'auto' "
            "(full with a GPU, lite without), e.g. `export COURSE_MODE=lite`."
        )
    if not raw and in_ci():
        return "smoke"
    return "full" if gpu_available() else "lite"


def set_mode(mode: str) -> str:
    """Set the mode for this process (and the kernels it starts); returns the mode now active."""
    if mode not in (*MODES, "auto"):
        raise CourseError(f"mode must be one of {', '.join(MODES)} or 'auto', not {mode!r}")
    os.environ["COURSE_MODE"] = mode
    return get_mode()


def pick(*, full: T, lite: T, smoke: T, mode: str | None = None) -> T:
    """Choose a value by mode, e.g. ``epochs = pick(full=25, lite=5, smoke=1)``."""
    mode = mode or get_mode()
    if mode not in MODES:
        raise CourseError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return {"full": full, "lite": lite, "smoke": smoke}[mode]


# --------------------------------------------------------------------------- the rehearsal switch
REHEARSAL_ENV = "COURSE_REHEARSAL"


def rehearsal() -> bool:
    """True during a full-mode rehearsal: env ``COURSE_REHEARSAL`` is ``1`` (``0`` or unset: off).

    A rehearsal (``make rehearse``, a maintainer's tool) runs full mode with every training and query loop capped
    by :mod:`course_utils.rehearsal`, which ``import course_utils`` loads only then and which wraps the engines
    from outside. Any other value is a :class:`CourseError`; so is a rehearsal in a mode other than ``full``.
    """
    raw = os.environ.get(REHEARSAL_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw not in _TRUTHY:
        raise CourseError(f"{REHEARSAL_ENV}={raw!r} is not understood: use 1 (a full-mode rehearsal: full-size data, "
                          "training capped) or 0 / unset (no cap).")
    mode = os.environ.get("COURSE_MODE", "").strip().lower()
    if mode != "full":
        raise CourseError(f"{REHEARSAL_ENV}=1 rehearses full mode, but COURSE_MODE={mode or 'unset'!s}: set "
                          "COURSE_MODE=full too (`make rehearse` does both).")
    return True


# --------------------------------------------------------------------------- frameworks
def import_torch():
    """Import and return torch (a clear error if it is not installed)."""
    if not has_module("torch"):
        raise CourseError("PyTorch is not installed. Run `make setup` (or `pip install torch torchvision`).")
    return importlib.import_module("torch")


def framework_of(model: Any) -> str | None:
    """``"torch"`` for an ``nn.Module``, ``"keras"`` for a Keras ``Model``, else ``None`` (imports neither)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return "keras"
    return None


def import_tensorflow():
    """Import TensorFlow safely and return it.

    With the PyPI torch build, ``triton`` is installed, and importing TensorFlow *before*
    torchvision or timm segfaults (triton's LLVM clashes with TensorFlow's). Importing torch
    first is safe, so when torch is installed we import it before TensorFlow. The course's
    local setup also removes triton on machines without a CUDA GPU, where it does nothing.
    """
    if "tensorflow" in sys.modules:
        _after_import("tensorflow")
        return sys.modules["tensorflow"]
    guard_import_order()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not has_module("tensorflow"):
        raise CourseError("TensorFlow is not installed. Run `make setup` (or `pip install tensorflow`).")
    # TensorFlow's C++ side prints start-up lines straight to file descriptor 2 (TF_CPP_MIN_LOG_LEVEL no
    # longer reaches them); they land in red in the notebook. Keep back the known ones, pass on the rest.
    with native_stderr_filtered(_tf_startup_noise()):
        tf = importlib.import_module("tensorflow")
        if has_module("keras"):
            importlib.import_module("keras")            # loads more of TensorFlow's libraries (more lines)
        tf.config.list_physical_devices()              # initialises CUDA: its line comes now, not mid-lesson
    _after_import("tensorflow")
    return tf


AFTER_IMPORT: dict[str, list[Callable[[], None]]] = {"tensorflow": []}


def _after_import(name: str) -> None:
    """Run the callbacks registered in :data:`AFTER_IMPORT` for ``name``, once it is imported (a tool that must
    wrap a framework, such as the rehearsal, registers one; a normal run has none)."""
    for callback in AFTER_IMPORT.get(name, []):
        callback()


def _tf_startup_noise() -> tuple[str, ...]:
    """Lines TensorFlow prints at start-up that ask nothing of the user (CUDA ones only without a GPU)."""
    lines = ("All log messages before absl::InitializeLog", "oneDNN custom operations are on",
             "This TensorFlow binary is optimized", "To enable the following instructions",
             "Unable to register cu", "computation placer already registered", "TF-TRT Warning")
    if shutil.which("nvidia-smi") is None:                # on a GPU machine a CUDA failure must be seen
        lines += ("Could not find cuda drivers", "failed call to cuInit", "Cannot dlopen some GPU libraries")
    return lines


@contextlib.contextmanager
def native_stderr_filtered(known: tuple[str, ...]):
    """Capture what native code writes to file descriptor 2; afterwards print every line not in ``known``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                if line.strip() and not any(k in line for k in known):
                    print(line, file=sys.stderr)


def guard_import_order() -> bool:
    """Make ``import tensorflow`` then ``import torchvision`` safe; returns True if it acted.

    The segfault needs triton (shipped with PyPI's CUDA torch), so where triton is installed and
    TensorFlow is not imported yet, torchvision (and timm) are imported first. Where TensorFlow is
    already imported, importing torchvision could crash, so we only warn.
    """
    if not has_module("triton") or not has_module("torchvision"):
        return False
    if "tensorflow" in sys.modules:
        if "torchvision" not in sys.modules:
            warnings.warn("TensorFlow was imported before course_utils.setup() and triton is installed: "
                          "importing torchvision or timm now may crash the kernel. Restart the kernel and run "
                          "the setup cell first (see README, Troubleshooting).", stacklevel=3)
        return False
    for name in ("torchvision", "timm"):
        if has_module(name):
            importlib.import_module(name)
    return True


def import_keras():
    """Import and return Keras 3, after TensorFlow (through :func:`import_tensorflow`, so safely)."""
    import_tensorflow()
    return importlib.import_module("keras")


class torch_threads:
    """``with torch_threads(1): ...`` runs the block with that many torch CPU threads, then restores.

    Tiny models and per-image transforms run much faster on one thread when the cores are busy.
    ``None`` or 0 leaves the setting alone.
    """

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> "torch_threads":
        torch = import_torch()
        self.old = torch.get_num_threads()
        if self.n and self.n != self.old:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        torch = import_torch()
        if torch.get_num_threads() != self.old:
            torch.set_num_threads(self.old)


# --------------------------------------------------------------------------- network
def progress(iterable: Any = None, *, total: int | None = None, desc: str = "", leave: bool = False,
             disable: bool = False, mininterval: float = 0.5):
    """The course's progress bar: tqdm's text bar on stdout, redrawn in place with carriage returns.

    Not ``tqdm.auto``: its notebook widget keeps its *first* frame ("0%") in an executed notebook
    viewed without widget state; text frames fold to the last one (``scripts/run_course.py`` does it
    for ``build/``; Jupyter, Colab and terminals do it live). It also never iterates the loader early.
    """
    from tqdm.std import tqdm  # noqa: PLC0415

    return tqdm(iterable, total=total, desc=desc, leave=leave, disable=disable, mininterval=mininterval,
                file=sys.stdout, ncols=None if sys.stdout.isatty() else 90)


def offline_reason() -> str | None:
    """Why no download may be attempted (``COURSE_OFFLINE=1``, as the README promises), else None."""
    if os.environ.get("COURSE_OFFLINE", "").strip().lower() in _TRUTHY:
        return "COURSE_OFFLINE is set: no download attempted"
    return None


def network_problem(host: str, port: int = 443, timeout: float = 3.0) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout`` s, else the reason it did not.

    Lets a loader fail in seconds offline instead of retrying a download for minutes. Runs in a
    thread, because the DNS lookup inside ``socket.create_connection`` ignores the timeout.
    ``COURSE_OFFLINE=1`` answers "offline" without trying.
    """
    import socket  # noqa: PLC0415
    import threading  # noqa: PLC0415

    if offline_reason():
        return "COURSE_OFFLINE is set"
    result: dict[str, str | None] = {"error": f"no answer within {timeout:.0f} s"}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["error"] = None
        except socket.gaierror:              # "[Errno -2] Name or service not known": say it in words
            result["error"] = f"the name {host} does not resolve (no network, or no DNS)"
        except OSError as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return result["error"]


def can_reach(*hosts: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True when any of ``hosts`` answers (see :func:`network_problem`)."""
    return any(network_problem(h, port, timeout) is None for h in hosts)


def torch_device(prefer: str | None = None) -> str:
    """``"cuda"`` when a CUDA GPU is visible, else ``"cpu"`` (``prefer`` overrides)."""
    if prefer:
        return prefer
    torch = import_torch()
    return "cuda" if torch.cuda.is_available() else "cpu"


def tf_device() -> str:
    """``"GPU"`` when TensorFlow sees a GPU, else ``"CPU"``."""
    tf = import_tensorflow()
    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


# --------------------------------------------------------------------------- seeding
def seed_everything(seed: int = 0, *, deterministic: bool = False) -> int:
    """Seed Python, NumPy and any framework that is already imported (or installed, for torch).

    ``deterministic=True`` also asks torch and TensorFlow for deterministic kernels (slower).
    Returns the seed so it can be logged.
    """
    import numpy as np  # noqa: PLC0415

    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        tf.random.set_seed(seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
    if "keras" in sys.modules:
        keras = sys.modules["keras"]
        if hasattr(keras, "utils") and hasattr(keras.utils, "set_random_seed"):
            keras.utils.set_random_seed(seed)
    return seed


# --------------------------------------------------------------------------- banner
def versions() -> dict[str, str]:
    """Versions of the packages the course uses, read from metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "tensorflow", "keras", "torch", "torchvision", "timm", "medmnist",
                "tensorflow-datasets", "ipywidgets", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def setup(seed: int = 0, *, data_sources: dict[str, str] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Seed everything and print one banner: versions, device, mode, where data comes from.

    Returns the same facts as a dict, so a notebook can show or assert them.
    """
    mode = get_mode()
    guard_import_order()
    seed_everything(seed)
    _watch_gpu_memory()
    gpu = gpu_available()
    info: dict[str, Any] = {
        "mode": mode,
        "device": "GPU" if gpu else "CPU",
        "colab": in_colab(),
        "ci": in_ci(),
        "seed": seed,
        "versions": versions(),
        "data_sources": data_sources or {},
        "rehearsal": rehearsal(),
    }
    if not quiet:
        v = info["versions"]
        shown = ", ".join(f"{k} {val}" for k, val in v.items() if val != "-")
        print(f"course_utils | mode: {mode} | device: {info['device']}"
              f"{' (Colab)' if info['colab'] else ''} | seed: {seed}")
        print(f"  versions: {shown}")
        if mode != "full" and not gpu:
            print("  no GPU: running the smaller 'lite' settings" if mode == "lite" else
                  "  smoke mode: tiny sizes, just checking that everything runs")
        if rehearsal():
            print("  REHEARSAL of full mode (make rehearse): full-size data, every training and query loop capped; "
                  "the numbers are not results, and checks that need a trained model are skipped")
        if data_sources:
            print("  data: " + ", ".join(f"{k} <- {s}" for k, s in data_sources.items()))
    return info


# --------------------------------------------------------------------------- reporting
def report(name: str, value: Any, *, source: str | None = None, fmt: str = ".3f") -> Any:
    """Print a headline number and record it for the course summary table.

    ``source`` is the data source behind the number; a stand-in result is labelled as such.
    When ``COURSE_REPORT`` names a file (the main job sets it), the number is appended there.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        value = value.item()
    stand_in = source == "stand-in"
    shown = format(value, fmt) if isinstance(value, float) else str(value)
    print(f"{name}: {shown}" + ("  [stand-in data: not a real result]" if stand_in else ""))
    append_report({"kind": "number", "name": name,
             "value": value if isinstance(value, (int, float, str)) else str(value),
             "source": source or "", "mode": get_mode()})
    return value


def gpu_memory_peak() -> dict[str, Any] | None:
    """The GPU memory peak so far in this process: ``torch.cuda.max_memory_allocated`` and TensorFlow's
    ``get_memory_info("GPU:0")["peak"]`` (each only if that framework is imported), the larger one in ``bytes``,
    and the device's name. ``None`` without a GPU."""
    peaks, name = {}, ""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        peaks["torch"] = int(torch.cuda.max_memory_allocated())
        name = torch.cuda.get_device_name(0)
    tf = sys.modules.get("tensorflow")
    if tf is not None and tf.config.list_physical_devices("GPU"):
        try:
            peaks["tensorflow"] = int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        except (ValueError, RuntimeError):
            pass
    if not peaks:
        return None
    return {"bytes": max(peaks.values()), **{f"{k}_bytes": v for k, v in peaks.items()}, "device": name}


def _record_gpu_memory(*_: Any) -> None:
    peak = gpu_memory_peak()
    if peak is not None:
        append_report({"kind": "gpu_memory", **peak})


def _watch_gpu_memory() -> bool:
    """With ``COURSE_GPU_REPORT=1`` (``make gpu-check``), record the GPU memory peak after every cell."""
    if os.environ.get("COURSE_GPU_REPORT", "").strip().lower() not in _TRUTHY or not in_notebook():
        return False
    from IPython import get_ipython  # noqa: PLC0415

    shell = get_ipython()
    if _record_gpu_memory not in shell.events.callbacks.get("post_run_cell", []):
        shell.events.register("post_run_cell", _record_gpu_memory)
    return True


def record_data_source(dataset: str, source: str) -> None:
    """Note which source a loader used (``tfds``, ``medmnist``, ``folder``, ``stand-in``) for the summary."""
    append_report({"kind": "source", "name": dataset, "source": source})


def append_report(rec: dict[str, Any]) -> None:
    """Append one JSON line to the file named by ``COURSE_REPORT`` (set by the main job), if any."""
    path = os.environ.get("COURSE_REPORT")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
    except OSError as exc:  # reporting must never break a lesson
        warnings.warn(f"could not record {rec.get('name')!r} in {path}: {exc}", stacklevel=3)


def cache_dir(sub: str = "", base: str | os.PathLike | None = None) -> Path:
    """A writable cache folder: ``base``, else ``COURSE_CACHE``, else ``~/.cache/course_utils``.

    Falls back, with a warning, to a temporary folder when the preferred one cannot be written,
    so a read-only home or a typo never stops a lesson.
    """
    import tempfile  # noqa: PLC0415

    if base is None:
        base = os.environ.get("COURSE_CACHE") or Path.home() / ".cache" / "course_utils"
    base = Path(base).expanduser()
    target = base / sub if sub else base
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write_test", delete=True):
            pass                    # a probe of its own per caller: concurrent callers never trip over each other
        return target
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / "course_utils_cache" / sub
        fallback.mkdir(parents=True, exist_ok=True)
        warnings.warn(f"cache folder {target} is not writable ({exc.strerror or exc}); "
                      f"using {fallback} instead. Set COURSE_CACHE to a writable folder to keep the cache.",
                      stacklevel=2)
        return fallback
