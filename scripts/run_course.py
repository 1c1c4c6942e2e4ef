#!/usr/bin/env python
"""The course's main job: execute every notebook headless and write ``build/``.

For each notebook in ``notebooks/`` (in order) it writes the executed notebook, an HTML page,
and collects the headline numbers the notebook reported with ``cu.report``. At the end it
writes ``build/summary.md``, ``build/summary.csv`` and ``build/index.html``: notebook, mode,
data source, wall time, status, headline numbers. A failing notebook is recorded and the
others still run; the exit code is non-zero if any failed.

    python scripts/run_course.py                 # auto mode (full with a GPU, lite without)
    python scripts/run_course.py --mode smoke    # or lite / full
    python scripts/run_course.py --only 01 03    # a subset, by number prefix
    python scripts/run_course.py --rehearse      # full mode on a CPU, training capped: memory, work, T4 estimate

``--rehearse`` (``make rehearse``) runs every notebook in full mode with ``COURSE_REHEARSAL=1``: full-size data,
every training and query loop capped (``course_utils.rehearsal.CAPS``). It samples each kernel's resident
memory (``scripts/rehearsal.py``), stops a kernel that passes ``--budget-gb`` (10 GB: Colab has about 12.7),
and writes ``build/rehearsal.csv`` and ``build/rehearsal.md`` (peak memory, wall time, data loaded, counted
full-mode work, T4 estimate); its executed notebooks, reports and the kernels' ``runs/`` go to ``build/rehearsal/``,
apart from the main job's.
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import output_scan  # noqa: E402  (scripts/output_scan.py: what must not reach a student, and frame folding)
import rehearsal  # noqa: E402  (scripts/rehearsal.py: the memory watch and the T4 estimate of --rehearse)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default=os.environ.get("COURSE_MODE", "auto"),
                   choices=["auto", "smoke", "lite", "full"], help="course mode (default: auto)")
    p.add_argument("--only", nargs="*", default=None, help="notebook number prefixes to run, e.g. 01 03")
    p.add_argument("--notebooks", default=str(ROOT / "notebooks"), help="folder of NN_*.ipynb notebooks")
    p.add_argument("--out", default=str(ROOT / "build"), help="output folder (default: build/)")
    p.add_argument("--cell-timeout", type=int, default=3600, help="seconds one cell may run")
    p.add_argument("--no-html", action="store_true", help="skip the HTML pages")
    p.add_argument("--rehearse", action="store_true",
                   help="full-mode rehearsal: full-size data, training capped; writes build/rehearsal.csv")
    p.add_argument("--workdir", default=None,
                   help="folder the kernels run in (their runs/ go there); default: notebooks/, "
                        "or build/rehearsal/work with --rehearse (never mixed with other runs' files)")
    p.add_argument("--budget-gb", type=float, default=10.0,
                   help="rehearsal: stop a notebook whose kernel passes this much resident memory (default 10)")
    return p.parse_args(argv)


def resolve_mode(requested: str) -> str:
    """The mode the notebooks will run in, decided once here and passed to every kernel."""
    from course_utils import runtime

    if requested != "auto":
        return requested
    os.environ.pop("COURSE_MODE", None)
    return runtime.get_mode()


def find_notebooks(folder: Path, only: list[str] | None) -> list[Path]:
    nbs = sorted(folder.glob("[0-9][0-9]*_*.ipynb"))     # 01_..., 04b_...
    if only:
        nbs = [nb for nb in nbs if any(nb.name.startswith(prefix) for prefix in only)]
    if not nbs:
        raise SystemExit(f"no notebooks matched {only or 'NN_*.ipynb'} in {folder}")
    return nbs


def read_reports(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def execute(nb_path: Path, out_dir: Path, mode: str, cell_timeout: int, html_pages: bool,
            budget_gb: float | None = None, workdir: Path | None = None) -> dict:
    """Run one notebook in a fresh kernel; returns its summary row. With ``budget_gb`` (a rehearsal) the kernel's
    memory is sampled and the kernel stopped when it passes the budget; the row gets the peak and the work."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from tqdm.auto import tqdm

    nb = nbformat.read(nb_path, as_version=4)
    report_file = out_dir / "reports" / f"{nb_path.stem}.jsonl"
    report_file.parent.mkdir(parents=True, exist_ok=True)
    report_file.unlink(missing_ok=True)
    os.environ["COURSE_MODE"] = mode
    os.environ["COURSE_REPORT"] = str(report_file)
    if os.environ.get("MPLBACKEND", "").lower() == "agg":
        del os.environ["MPLBACKEND"]  # kernels must use the inline backend, or figures never reach build/

    n_code = sum(1 for c in nb.cells if c.cell_type == "code")
    bar = tqdm(total=n_code, desc=nb_path.stem, unit="cell", leave=True)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir or nb_path.parent)}},
                            on_cell_executed=lambda **_: bar.update(1))
    status, error = "ok", ""
    watch = rehearsal.MemoryWatch(client, budget_gb * rehearsal.GB if budget_gb else None) if budget_gb else None
    if watch is not None:
        watch.start()
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        status = "failed"
        error = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else "cell error"
    except Exception as exc:  # a dead kernel or a timeout must not stop the other notebooks
        status = "failed"
        error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        bar.close()
        if watch is not None:
            watch.stop()
    wall = time.perf_counter() - start
    if watch is not None and watch.exceeded is not None:
        status, error = "failed", rehearsal.watch_note(watch, nb_path.stem, budget_gb)

    output_scan.fold_notebook(nb)             # progress frames folded to their last one, as Jupyter shows them
    findings = [f"cell {i}: {p}" for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                for p in output_scan.problems(cell.get("outputs", []))]
    for finding in findings:
        print(f"    output finding: {finding}")
    executed = out_dir / nb_path.name
    nbformat.write(nb, executed)
    if html_pages:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nb)
        (out_dir / f"{nb_path.stem}.html").write_text(body, encoding="utf-8")

    reports = read_reports(report_file)
    numbers = [r for r in reports if r.get("kind", "number") == "number"]
    loaded = {f"{r['name']}: {r['source']}" for r in reports if r.get("kind") == "source"}
    sources = sorted(loaded or {r["source"] for r in numbers if r.get("source")})
    row = {
        "notebook": nb_path.stem,
        "mode": mode,
        "data_source": ", ".join(sources) or "-",
        "wall_s": round(wall, 1),
        "status": status,
        "error": error,
        "headline": "; ".join(_fmt(r) for r in numbers),
        "output_findings": len(findings),
        "findings": findings,
    }
    if watch is not None:
        work = rehearsal.summarize(reports)
        row["rehearsal"] = {"peak_rss_gb": round(watch.peak / rehearsal.GB, 2), **work, **rehearsal.t4_estimate(work)}
    gpu = [r for r in reports if r.get("kind") == "gpu_memory"]
    if gpu:
        row["peak_gpu_gb"] = round(max(r["bytes"] for r in gpu) / rehearsal.GB, 2)
        row["gpu"] = gpu[-1].get("device", "")
    return row


def _fmt(rec: dict) -> str:
    value = rec.get("value")
    if isinstance(value, float):
        shown = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3f}"
    else:
        shown = str(value)
    mark = " (stand-in)" if rec.get("source") == "stand-in" else ""
    return f"{rec.get('name')}={shown}{mark}"


REHEARSAL_COLS = ["notebook", "status", "wall_s", "peak_rss_gb", "data_images", "data_gb", "train_images",
                  "forward_images", "steps", "tflops", "t4_compute_s", "t4_overhead_s", "t4_data_setup_s",
                  "t4_estimate_s", "error"]


def _number(text: str):
    """A CSV cell back as int or float when it is one (the Markdown table formats numbers)."""
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            continue
    return text


def write_rehearsal(rows: list[dict], out_dir: Path, budget_gb: float) -> str:
    """``build/rehearsal.csv`` and the same as a Markdown table (returned, to print)."""
    flat = [{"notebook": r["notebook"], "status": r["status"], "wall_s": r["wall_s"],
             "error": re.sub(r"\x1b\[[0-9;]*m", "", r["error"]),     # no terminal colours in a CSV
             **{k: v for k, v in r.get("rehearsal", {}).items() if k in REHEARSAL_COLS}} for r in rows]
    path = out_dir / "rehearsal.csv"
    if path.exists():  # a partial rehearsal (--only) replaces its notebooks' rows and keeps the others
        with open(path, newline="", encoding="utf-8") as fh:
            kept = {r["notebook"]: {k: _number(v) for k, v in r.items()} for r in csv.DictReader(fh)}
        kept.update({f["notebook"]: f for f in flat})
        flat = [kept[name] for name in sorted(kept)]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=REHEARSAL_COLS, extrasaction="ignore")
        w.writeheader()
        w.writerows(flat)
    md = ["| notebook | status | peak RSS (GB) | wall (s) | data loaded (images, GB) | train / forward image passes "
          "| steps | TFLOPs | T4 estimate (s) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for f in flat:
        md.append(f"| {f['notebook']} | {f['status']} | {f.get('peak_rss_gb', '-')} | {f['wall_s']} | "
                  f"{f.get('data_images', '-'):,} ({f.get('data_gb', '-')}) | "
                  f"{f.get('train_images', 0):,} / {f.get('forward_images', 0):,} | {f.get('steps', 0):,} | "
                  f"{f.get('tflops', '-')} | {f.get('t4_estimate_s', '-')} |")
    note = (f"\nBudget: {budget_gb:g} GB resident memory per notebook. T4 estimate = counted FLOPs / "
            f"{rehearsal.T4_SUSTAINED_FLOPS / 1e12:g} TFLOP/s + {rehearsal.STEP_OVERHEAD_S * 1e3:g} ms per step "
            f"({rehearsal.HEAD_TRAIN_STEP_S * 1e3:g} / {rehearsal.HEAD_FORWARD_STEP_S * 1e3:g} ms for a head on features) "
            f"+ {rehearsal.KERAS_FIT_OVERHEAD_S:g} s per Keras fit + data download/preparation and "
            f"{rehearsal.SETUP_S:g} s setup (scripts/rehearsal.py says where each figure comes from).\n")
    text = "\n".join(md) + "\n" + note
    (out_dir / "rehearsal.md").write_text("# Full-mode rehearsal\n\n" + text, encoding="utf-8")
    return text


def write_summary(rows: list[dict], out_dir: Path) -> None:
    cols = ["notebook", "mode", "data_source", "wall_s", "status", "headline", "error", "output_findings"]
    if any("peak_gpu_gb" in r for r in rows):
        cols += ["peak_gpu_gb", "gpu"]
    with open(out_dir / "summary.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    md = ["| notebook | mode | data source | wall time (s) | status | headline numbers |",
          "|---|---|---|---:|---|---|"]
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"**{r['status']}**: {r['error']}"
        md.append(f"| [{r['notebook']}]({r['notebook']}.html) | {r['mode']} | {r['data_source']} | "
                  f"{r['wall_s']} | {status} | {r['headline'] or '-'} |")
    note = ("\nNumbers marked (stand-in) come from generated stand-in data, not the real data set: "
            "they show the code works, not how well the method does.\n")
    (out_dir / "summary.md").write_text("# Course run\n\n" + "\n".join(md) + "\n" + note, encoding="utf-8")
    (out_dir / "index.html").write_text(dashboard(rows, out_dir, note), encoding="utf-8")


def key_figure(executed: Path) -> str | None:
    """The base64 PNG of an executed notebook's key figure: the output of a cell tagged ``key-figure``, else
    its first figure; None when it has none (or was not executed)."""
    import json

    try:
        cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return None
    code = [c for c in cells if c.get("cell_type") == "code"]
    tagged = [c for c in code if "key-figure" in c.get("metadata", {}).get("tags", [])]
    for cell in tagged + code:
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                return "".join(png).replace("\n", "")
    return None


def dashboard(rows: list[dict], out_dir: Path, note: str) -> str:
    """The instructor's page: per notebook a card with its key figure, headline numbers (stand-in flagged), wall
    time, status, output-scan findings and a link to its HTML page."""
    cards = []
    for r in rows:
        name = html.escape(r["notebook"])
        png = key_figure(out_dir / f"{r['notebook']}.ipynb")
        thumb = (f"<img alt='key figure of {name}' src='data:image/png;base64,{png}'>" if png
                 else "<div class='none'>no figure</div>")
        numbers = []
        for item in filter(None, str(r.get("headline") or "").split("; ")):
            label, _, value = item.rpartition("=")
            standin = value.endswith(" (stand-in)")
            value = value.removesuffix(" (stand-in)")
            numbers.append(f"<tr><td>{html.escape(label)}</td><td class='v'>{html.escape(value)}</td>"
                           f"<td>{'<span class=si>stand-in</span>' if standin else ''}</td></tr>")
        findings = r.get("findings") or []
        status = "ok" if r["status"] == "ok" else f"{r['status']}: {r.get('error', '')}"
        cards.append(
            f"<section class='card {'bad' if r['status'] != 'ok' else ''}'><h2><a href='{name}.html'>{name}</a></h2>"
            f"<div class='meta'>{html.escape(str(r['mode']))} mode · {r['wall_s']} s · data: "
            f"{html.escape(str(r['data_source']))} · <b>{html.escape(status)}</b></div>{thumb}"
            f"<table>{''.join(numbers) or '<tr><td>no headline numbers</td></tr>'}</table>"
            + (f"<details><summary>{len(findings)} output finding(s)</summary><ul>"
               + "".join(f"<li>{html.escape(f)}</li>" for f in findings) + "</ul></details>" if findings
               else f"<div class='meta'>output findings: {r.get('output_findings', 0)}</div>")
            + "</section>")
    style = ("body{font-family:sans-serif;margin:16px;background:#f6f6f6}main{display:grid;"
             "grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}.card{background:#fff;padding:10px;"
             "border:1px solid #ccc;border-radius:6px}.card.bad{border-color:#c00}.card img{width:100%;"
             "border:1px solid #eee}h2{font-size:16px;margin:0 0 4px}.meta{font-size:12px;color:#555;margin:4px 0}"
             "table{font-size:12px;border-collapse:collapse;width:100%}td{border-top:1px solid #eee;padding:2px 4px}"
             "td.v{text-align:right;font-variant-numeric:tabular-nums}.si{background:#fde68a;font-size:10px;"
             "padding:0 4px;border-radius:3px;white-space:nowrap}.none{height:60px;color:#999}")
    return ("<!doctype html><meta charset='utf-8'><title>Course run</title>"
            f"<style>{style}</style><h1>Course run: {len(rows)} notebook(s)</h1>"
            f"<p>{html.escape(note.strip())}</p><main>{''.join(cards)}</main>")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rehearse:
        os.environ["COURSE_REHEARSAL"] = "1"
        os.environ["COURSE_MODE"] = args.mode = "full"   # before course_utils is imported: a rehearsal is full mode
    else:
        os.environ.pop("COURSE_REHEARSAL", None)
    mode = resolve_mode(args.mode)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = find_notebooks(Path(args.notebooks), args.only)
    what = "a full-mode rehearsal (training capped)" if args.rehearse else f"{mode} mode"
    print(f"Running {len(notebooks)} notebook(s) in {what} -> {out_dir}")
    # a rehearsal keeps its executed notebooks, reports and the kernels' runs/ apart from the main job's
    nb_dir = out_dir / "rehearsal" if args.rehearse else out_dir
    workdir = Path(args.workdir) if args.workdir else (nb_dir / "work" if args.rehearse else None)
    for folder in (nb_dir, workdir):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    rows, start = [], time.perf_counter()
    for nb in notebooks:
        row = execute(nb, nb_dir, mode, args.cell_timeout, not args.no_html,
                      budget_gb=args.budget_gb if args.rehearse else None, workdir=workdir)
        rows.append(row)
        peak = f", peak {row['rehearsal']['peak_rss_gb']} GB" if "rehearsal" in row else ""
        print(f"  {row['notebook']}: {row['status']} in {row['wall_s']} s{peak}"
              + (f" ({row['error']})" if row["error"] else ""))
        write_summary(rows, nb_dir)  # keep a partial summary if a later notebook hangs
        if args.rehearse:
            table = write_rehearsal(rows, out_dir, args.budget_gb)
    print((nb_dir / "summary.md").read_text(encoding="utf-8"))
    if args.rehearse:
        print(f"Full-mode rehearsal ({time.perf_counter() - start:.0f} s in all):\n" + table)
        over = [r for r in rows if r.get("rehearsal", {}).get("peak_rss_gb", 0) > args.budget_gb]
        for r in over:
            print(f"OVER BUDGET: {r['notebook']} peaked at {r['rehearsal']['peak_rss_gb']} GB resident memory; "
                  f"the budget is {args.budget_gb:g} GB", file=sys.stderr)
    failed = [r["notebook"] for r in rows if r["status"] != "ok"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
