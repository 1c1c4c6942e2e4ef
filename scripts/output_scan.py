#!/usr/bin/env python
"""What must not reach a student in an executed notebook's outputs, and the folding of progress frames.

Used three ways: ``tests`` (a hook in ``conftest.py`` scans every cell nbval executes in smoke mode and
fails that cell on a finding), ``scripts/run_course.py`` (folds and scans ``build/``), and by hand:

    python scripts/output_scan.py build/*.ipynb        # lists findings; exit code 1 if any

Rules (each with why): anything on stderr that is not on the short allow-list below; framework start-up
noise; download attempts and retries; deprecation and future warnings; numpy scalar reprs such as
``np.float64(0.118)`` in printed text; tqdm widget bars, whose static fallback is their first frame.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable

# Text that must never appear in any output (stdout, stderr, text/plain, text/html), with why.
FORBIDDEN: dict[str, str] = {
    r"cuInit|CUDA_ERROR|Unable to register cu(DNN|FFT|BLAS) factory|computation placer":
        "TensorFlow's CUDA start-up noise (log level set too late, or the native-stderr filter missing)",
    r"oneDNN custom operations|TF_ENABLE_ONEDNN_OPTS|This TensorFlow binary is optimized":
        "TensorFlow's CPU start-up noise",
    r"Downloading and preparing dataset|Dl Completed|Dl Size|Extraction completed":
        "a tfds download attempt shown to the student (offline it must be quiet or not tried)",
    r"Retrying \(Retry\(": "urllib3 retry warnings",
    r"NameResolutionError\(|HTTPSConnectionPool\(": "a raw network exception shown to the student (say it in words)",
    r"DeprecationWarning|FutureWarning|PendingDeprecationWarning": "a deprecation warning from course or notebook code",
    r"np\.(float|int|uint|bool_)\d*\(": "a numpy scalar repr in printed text: print plain rounded numbers",
    r"Variant folder .* has no": "tfds warning about an empty data set folder",
}

# Text that must not appear in printed text (streams, text/plain; HTML tables have their own formatting).
FORBIDDEN_IN_TEXT: dict[str, str] = {
    r"(?<![\w.])-?\d+\.\d{9,}(?![\w.])": "an unrounded number (print it rounded, e.g. f'{x:.3f}')",
}

# stderr lines that may appear (each with why it is acceptable). Anything else on stderr is a finding.
STDERR_ALLOWED: dict[str, str] = {
    r"^\s*$": "blank",
    r"UserWarning: the hold-out of .* has now been evaluated \d+ times":
        "deliberate (labels.LabelStore): reusing the hold-out is the mistake notebook 05 warns about; "
        "it appears when the notebook is run again on the same label database",
}

_TQDM_FRAME = re.compile(r"\d+%\|")
_CR = re.compile(r".*\r(?=[^\n])")
_BS = re.compile("[^\n]\x08")  # a character, then a backspace


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def fold(outputs: Iterable[dict]) -> list[dict]:
    """Adjacent stream outputs of one name merged, and carriage-return frames folded to the last one
    (what Jupyter shows live). Order relative to figures and other outputs is kept."""
    folded: list[dict] = []
    for out in outputs:
        out = dict(out)
        if out.get("output_type") == "stream":
            out["text"] = _text(out.get("text"))
            if folded and folded[-1].get("output_type") == "stream" and folded[-1].get("name") == out.get("name"):
                folded[-1]["text"] += out["text"]
                continue
        folded.append(out)
    for out in folded:
        if out.get("output_type") == "stream":
            text = out["text"]
            while True:
                shorter = _BS.sub("", text)
                if shorter == text:
                    break
                text = shorter
            out["text"] = _CR.sub("", text)
    return folded


def problems(outputs: Iterable[dict]) -> list[str]:
    """Findings in one cell's outputs (after :func:`fold`), each one line: what, why, and the text."""
    found: list[str] = []
    for out in fold(outputs):
        kind = out.get("output_type")
        texts: list[str] = []
        plain_texts: list[str] = []
        if kind == "stream":
            texts.append(out["text"])
            plain_texts.append(out["text"])
            if out.get("name") == "stderr":
                allowed_block = False
                for line in out["text"].splitlines():
                    if allowed_block and line.startswith((" ", "\t")):
                        continue  # the source line Python's warnings module prints under an allowed warning
                    allowed_block = any(re.search(rx, line) for rx in STDERR_ALLOWED)
                    if not allowed_block:
                        found.append(f"stderr output (not on the allow-list): {line.strip()[:160]}")
                        break
        elif kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            plain = _text(data.get("text/plain"))
            if "application/vnd.jupyter.widget-view+json" in data and _TQDM_FRAME.search(plain):
                found.append(f"a tqdm widget bar: a static notebook shows its first frame: {plain.strip()[:100]}")
            texts += [plain, _text(data.get("text/html"))]
            if "application/vnd.jupyter.widget-view+json" not in data:
                plain_texts.append(plain)
        elif kind == "error":
            continue  # a failing cell fails on its own
        checks = [(t, FORBIDDEN) for t in texts] + [(t, FORBIDDEN_IN_TEXT) for t in plain_texts]
        for text, rules in checks:
            for rx, why in rules.items():
                m = re.search(rx, text)
                if m:
                    line = text[max(0, text.rfind("\n", 0, m.start()) + 1):].split("\n", 1)[0]
                    found.append(f"{why}: {line.strip()[:160]}")
    return found


def scan_notebook(path: str | Path) -> list[str]:
    """Findings in every code cell of an executed notebook, prefixed with the cell number."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code":
            found += [f"{Path(path).name} cell {i}: {p}" for p in problems(cell.get("outputs", []))]
    return found


def fold_notebook(nb: Any) -> None:
    """Fold every code cell's outputs in place (an ``nbformat`` notebook)."""
    import nbformat  # noqa: PLC0415

    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("outputs"):
            cell.outputs = [nbformat.from_dict(o) for o in fold(cell.outputs)]


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        print(__doc__)
        return 2
    found = [p for path in paths for p in scan_notebook(path)]
    print("\n".join(found) if found else f"no findings in {len(paths)} notebook(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
