#!/usr/bin/env python
"""One source for the per-notebook times: the README's notebook table, filled from the last measured run.

    python scripts/update_times.py              # README table <- build/summary.csv (lite run of `make course`)
                                                #   and build/rehearsal.csv (T4 estimate of `make rehearse`),
                                                #   then every notebook header's **Time:** line <- README
    python scripts/update_times.py --check      # exit 1 when a header disagrees with the README (the tests)

A CSV that is missing, or has no row for a notebook, leaves that cell as it is. The header line reads
``**Time:** <T4 cell> on a Colab T4 (`full` mode); <CPU cell> on a 2-core CPU (`lite` mode, measured by
`make course`).`` so a student sees the same figures as the README.

Only the table and the headers are written here; the fuller figures of the same runs (memory, work counted,
benchmarks, CI) are kept by hand, each with its command, in docs/MEASURED.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| (?P<num>\d\d[a-z]?) \| (?P<title>\[[^\]]+\]\(notebooks/(?P<stem>\d\d[a-z]?_\w+)\.ipynb\)) \| "
                 r"(?P<fw>[^|]+) \| (?P<t4>[^|]+) \| (?P<cpu>[^|]+) \| (?P<colab>.*)$", re.M)
TIME_PARAGRAPH = re.compile(r"\*\*Time:?\*\*:?.*?(?=\*\*Prerequisites)", re.S)
TOLERANCE = 0.35   # measured times on a shared 2-core machine vary; a header is stale beyond this


def fmt_seconds(s: float) -> str:
    """``42 s``, ``3 min 05 s``: how the README and the headers write a measured time."""
    s = int(round(s))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


def parse_seconds(text: str) -> float | None:
    """The seconds in a cell written by :func:`fmt_seconds` (None for anything else)."""
    m = re.fullmatch(r"\s*(?:(\d+) min )?(\d+) s\s*", text)
    return None if not m else int(m.group(1) or 0) * 60 + int(m.group(2))


def fmt_estimate(s: float) -> str:
    return f"about {max(1, math.ceil(s / 60))} min (estimate)"


def readme_rows(readme: str) -> dict[str, dict[str, str]]:
    return {m["stem"]: m.groupdict() for m in ROW.finditer(readme)}


def read_csv(path: Path, **where: str) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["notebook"]: r for r in csv.DictReader(fh) if all(r.get(k) == v for k, v in where.items())}


def update_readme(readme: str, build: Path) -> str:
    lite = read_csv(build / "summary.csv", mode="lite", status="ok")
    rehearsal = read_csv(build / "rehearsal.csv")

    def row(m: re.Match) -> str:
        d = m.groupdict()
        cpu = fmt_seconds(float(lite[d["stem"]]["wall_s"])) if d["stem"] in lite else d["cpu"]
        est = rehearsal.get(d["stem"], {}).get("t4_estimate_s")
        t4 = fmt_estimate(float(est)) if est not in (None, "") else d["t4"]
        return f"| {d['num']} | {d['title']} | {d['fw']} | {t4} | {cpu} | {d['colab']}"

    return ROW.sub(row, readme)


def header_line(t4: str, cpu: str) -> str:
    return (f"**Time:** {t4.strip()} on a Colab T4 (`full` mode); {cpu.strip()} on a 2-core CPU "
            "(`lite` mode, measured by `make course`).\n")


def update_notebook(path: Path, rows: dict[str, dict[str, str]]) -> tuple[str, str]:
    """(old, new) text of the notebook with its header's Time paragraph written from the README row."""
    old = path.read_text(encoding="utf-8")
    r = rows.get(path.stem)
    if r is None:
        return old, old
    nb = json.loads(old)
    src = "".join(nb["cells"][0]["source"])
    new_src = TIME_PARAGRAPH.sub(lambda _: header_line(r["t4"], r["cpu"]), src, count=1)
    if new_src == src:
        return old, old
    nb["cells"][0]["source"] = new_src.splitlines(keepends=True)
    return old, json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only report headers that disagree with the README")
    ap.add_argument("--build", default=str(ROOT / "build"), help="folder with summary.csv / rehearsal.csv")
    args = ap.parse_args(argv)
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    if not args.check:
        readme = update_readme(readme, Path(args.build))
        readme_path.write_text(readme, encoding="utf-8")
    rows = readme_rows(readme)
    stale = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        old, new = update_notebook(path, rows)
        if old != new:
            stale.append(path.name)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("headers whose **Time:** line disagrees with the README table: " + ", ".join(stale)
              + "\nrun: python scripts/update_times.py")
        return 1
    print("up to date" if not stale else "updated: " + ", ".join(stale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
