#!/usr/bin/env python
"""Write the repository named in pyproject.toml's ``[tool.course]`` into the README's Colab badges
and the notebooks' Colab setup cells. Run it after forking or moving the course:

    python scripts/set_repo.py            # rewrite in place
    python scripts/set_repo.py --check    # exit 1 if anything is out of date (used by the tests)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w./-]+?/notebooks/")
INSTALL = re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+@[\w./-]+")


def configured() -> tuple[str, str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["course"]
    return cfg["repository"], cfg["ref"]


def rewrite(text: str, repo: str, ref: str) -> str:
    text = BADGE.sub(f"https://colab.research.google.com/github/{repo}/blob/{ref}/notebooks/", text)
    return INSTALL.sub(f"git+https://github.com/{repo}@{ref}", text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = ap.parse_args(argv)
    repo, ref = configured()
    stale = []
    for path in [ROOT / "README.md", *sorted((ROOT / "notebooks").glob("*.ipynb"))]:
        old = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            nb = json.loads(old)
            for cell in nb["cells"]:
                if isinstance(cell["source"], list):
                    cell["source"] = rewrite("".join(cell["source"]), repo, ref).splitlines(keepends=True)
                else:
                    cell["source"] = rewrite(cell["source"], repo, ref)
            new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
            if json.loads(new) == json.loads(old):
                continue
        else:
            new = rewrite(old, repo, ref)
            if new == old:
                continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.write_text(new, encoding="utf-8")
    verb = "out of date" if args.check else "rewritten"
    for p in stale:
        print(f"{verb}: {p}")
    print(f"repository: {repo} @ {ref}; {len(stale)} file(s) {verb}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
