"""Mutation testing of the core numeric and state code (``make mutation``; issue 14).

    python scripts/mutation.py          # fresh mutmut run over SCOPE, then the score (exit 1 under 90 %)
    python scripts/mutation.py --score  # only the score of the last run (mutants/ must exist)
    python scripts/mutation.py --modules data.splits train.losses   # only these modules (while writing tests)

mutmut (configured in pyproject.toml, ``[tool.mutmut]``: the modules and their unit tests) plants one
small change at a time in a function and runs the unit tests that call it; a mutant is *killed* when a
test fails (or the change makes the tests hang: a timeout). SCOPE names the functions that are scored:
the numeric and state logic of each module, not its argument checks, messages, plots or file
formats. Writes build/mutation.csv (one row per mutant) and build/mutation.md (the score and every
survivor with its diff), and prints the score.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 0.90

# module (its path under course_utils/, dotted) -> the functions whose mutants are scored ("Class.method" for a method, "Class*.method" for
# every class whose name starts so). Everything else in these files is mutated by mutmut but not run.
SCOPE: dict[str, list[str]] = {
    "active.diversity": ["sqnorms", "k_center_greedy", "kmeans_pp"],
    "active.strategies": ["_entropy", "_least_confidence", "_margin", "entropy", "least_confidence", "margin",
                   "predictive_entropy", "bald", "gradient_embedding", "_ranked", "*.score", "_ScoreStrategy._select",
                   "BADGE._select", "Coreset._select"],
    "metrics": ["probabilities", "_binary_scores", "to_predictions", "accuracy", "per_label_accuracy",
                "macro_f1", "roc_auc", "average_precision", "confusion_matrix", "class_recall",
                "best_threshold", "summarize"],
    "train.history": ["History.append", "History.n_epochs", "History.epochs", "History.last", "History.best",
                "History.summary"],
    "active.labels": ["LabelStore.counts", "LabelStore.ids", "LabelStore.labels", "LabelStore.label",
               "LabelStore.undo", "LabelStore.set_holdout_labels", "LabelStore.next_batch",
               "LabelStore.evaluate_holdout"],
    "active.loop": ["_test_scores", "ALResult.label_efficiency", "labels_to_reach", "paired_differences",
               "distillation_loss", "simulate"],
    "xai.methods": ["cam_from_gradients", "cam_plus_plus_from_gradients", "normalize_maps", "_class_scores",
            "_occlusion_raw", "spearman", "heatmap_box", "box_iou", "peak_location", "center_of_mass"],
    "data.pipelines": ["nchw_float", "to_torch_loader"],   # tf.data: TensorFlow deadlocks in forked workers
    "train.torch_engine": ["_optimization", "_cosine"],
    "train._records": ["EpochSums.add", "EpochSums.result"],
    "stats": ["verdict", "PairedInterval.sign", "PairedInterval.verdict", "paired_t_interval", "paired_bootstrap",
              "detectable_difference", "auc_se", "auc_floor", "chance_auc_floor", "proportion_se",
              "chance_proportion_floor"],
    # issue 20: the modules that hand-written bugs slipped through
    "xai.faithfulness": ["DeletionInsertion.summary", "DeletionInsertion.compare", "DeletionInsertion.verdict",
                         "DeletionInsertion.beats_random", "_baseline_images", "_perturbation_curves",
                         "deletion_insertion"],
    # the torch side: the Keras side (_write_keras, _keras_outputs, _load_keras) needs TensorFlow (README)
    "models.final": ["_torch_build_kwargs", "_torch_outputs", "_plain", "save", "_write_torch", "_load_torch",
                     "_rebuild_torch", "load"],
    "train._checkpoint": ["_plain", "run_settings", "settings_key", "keyed_path", "settings_diff", "_rng_state",
                          "_set_rng_state", "save_checkpoint", "_read", "load_checkpoint", "resume_run",
                          "set_aside", "checkpoint_lock", "RunProgress.save", "RunProgress.keep"],
    "active.labeller": ["_png_data_url", "Labeller._check_refs", "Labeller._act", "Labeller._advance",
                        "Labeller._fill_queue", "Labeller.label_with_oracle", "Labeller.state"],
    "train.losses": ["_reduce", "sigmoid_focal_loss", "softmax_focal_loss", "prior_bias", "init_prior_bias"],
    "data.augment": ["_tail", "denormalize", "_CheckImage.__call__", "_TrainAugment.__call__",
                     "_TrainAugment._to_tensor", "_TrainAugment._crop_box", "_TrainAugment._warp",
                     "_TrainAugment._brightness_contrast", "_TrainAugment._erase"],
    "data.splits": ["strata", "stratified_subset", "stratified_indices", "stratified_split", "class_counts",
                    "allocate"],
    "data.loaders": ["_resize_one", "resize_images", "_to_8_bit", "_bit_depth", "_decode", "read_image",
                     "_decode_subset", "_find_class_dir", "load_malaria_folder"],
    # Keras' numpy side only: TensorFlow deadlocks in a forked worker, so what needs it is not scored (README)
    "train.keras_fit": ["_two_columns", "_class_indices"],
}

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "killed",
          -11: "segfault", -9: "segfault", None: "not checked"}
DETECTED = {"killed", "timeout", "segfault"}


def mangled(module: str, function: str) -> str:
    """mutmut 3's name of a function's mutants, as an fnmatch pattern."""
    if "." in function:
        cls, meth = function.split(".", 1)
        return f"course_utils.{module}.x\u01c1{cls}\u01c1{meth}__mutmut_*"
    return f"course_utils.{module}.x_{function}__mutmut_*"


def patterns(scope: dict[str, list[str]] = SCOPE) -> list[str]:
    return [mangled(m, f) for m, fs in scope.items() for f in fs]


def in_scope(name: str, pats: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in pats)


def status_of(code) -> str:
    return STATUS.get(code, "suspicious")


def collect(mutants_dir: Path, pats: list[str]) -> list[dict]:
    """One row per scored mutant: name, module, function, status (from mutmut's .meta files)."""
    rows = []
    for meta in sorted(mutants_dir.glob("course_utils/**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in sorted(codes.items()):
            if in_scope(name, pats):
                module = ".".join(meta.relative_to(mutants_dir / "course_utils").parts)[:-len(".py.meta")]
                func = name[len(f"course_utils.{module}."):].rsplit("__mutmut_", 1)[0]
                rows.append({"mutant": name, "module": module,
                             "function": func[2:].replace("\u01c1", ".") if func.startswith("x_") else
                             func[1:].strip("\u01c1").replace("\u01c1", "."),
                             "status": status_of(code)})
    return rows


_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|VALUES|ORDER BY|WHERE|FROM|SUM\(|COUNT\()", re.I)


def sql_case_only(diff: str) -> bool:
    """Does the mutant only change the letter case of SQL text? SQL keywords and identifiers are case-insensitive,
    so such a mutant behaves exactly like the original: it is equivalent, and no test can kill it."""
    old = [ln[1:] for ln in diff.splitlines() if ln.startswith("-")]
    new = [ln[1:] for ln in diff.splitlines() if ln.startswith("+")]
    return (bool(old) and len(old) == len(new) and all(a != b and a.lower() == b.lower() for a, b in zip(old, new))
            and all(_SQL.search(a) for a in old))


def drop_equivalent(rows: list[dict]) -> list[dict]:
    """Rows of surviving mutants that only change the case of SQL text become 'equivalent' (not scored)."""
    for r in rows:
        if r["status"] == "survived" and sql_case_only(_diff(r["mutant"], r["module"])):
            r["status"] = "equivalent"
    return rows


def score(rows: list[dict]) -> dict:
    rows = [r for r in rows if r["status"] != "equivalent"]
    n = len(rows)
    by = {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})}
    detected = sum(r["status"] in DETECTED for r in rows)
    return {"total": n, "detected": detected, "by_status": by, "score": detected / n if n else 0.0}


def _diff(name: str, module: str) -> str:
    """The mutant's changed lines (mutmut's own diff, read in this process: no `mutmut show` per mutant)."""
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant  # noqa: PLC0415
        text = get_diff_for_mutant(name, path=Path("course_utils", *module.split(".")).with_suffix(".py"))
    except Exception as e:  # noqa: BLE001 - a report line, never a failed run
        return f"(no diff: {e})"
    return "\n".join(ln for ln in text.splitlines()[2:] if ln.startswith(("+", "-")))


def write_reports(rows: list[dict], s: dict, wall_s: float | None, build: Path) -> None:
    build.mkdir(exist_ok=True)
    with open(build / "mutation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["mutant", "module", "function", "status"])
        w.writeheader()
        w.writerows(rows)
    md = [f"# Mutation testing: {s['detected']} of {s['total']} mutants detected ({s['score']:.1%})", ""]
    if wall_s is not None:
        md.append(f"Wall time of the run: {wall_s / 60:.1f} min.")
    md += ["", "| status | mutants |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s["by_status"].items()]
    n_eq = sum(r["status"] == "equivalent" for r in rows)
    if n_eq:
        md += ["", f"Not scored: {n_eq} equivalent mutants that only change the letter case of SQL text (SQL is "
                   "case-insensitive, so they behave exactly like the original)."]
    md += ["", "## Not detected", ""]
    for r in rows:
        if r["status"] not in DETECTED and r["status"] != "equivalent":
            md += [f"### {r['mutant']} ({r['status']})", "", "```diff", _diff(r["mutant"], r["module"]), "```", ""]
    (build / "mutation.md").write_text("\n".join(md) + "\n")


def run_mutmut(pats: list[str]) -> int:
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)   # a fresh run: no result kept from older code
    env = dict(os.environ, COURSE_MODE="smoke", COURSE_OFFLINE="1",
               # mutmut forks a worker per mutant from a process that has run the tests: with one
               # thread, torch has no OpenMP pool that a forked child could deadlock on
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mutmut", "run", *pats], cwd=ROOT, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--score", action="store_true", help="only score the last run")
    ap.add_argument("--modules", nargs="+", metavar="MODULE", choices=sorted(SCOPE),
                    help="mutate and score only these SCOPE modules (a quick look while writing tests)")
    args = ap.parse_args(argv)
    pats = patterns({m: SCOPE[m] for m in args.modules} if args.modules else SCOPE)
    wall = None
    if not args.score:
        t0 = time.perf_counter()
        rc = run_mutmut(pats)
        wall = time.perf_counter() - t0
        if rc != 0:  # e.g. the unmutated tests fail
            print(f"mutmut failed (exit {rc})")
            return rc
    os.chdir(ROOT)    # mutmut reads its configuration and mutants/ from here
    rows = drop_equivalent(collect(ROOT / "mutants", pats))
    if not rows:
        print("no mutants found: run `make mutation` first")
        return 2
    s = score(rows)
    write_reports(rows, s, wall, ROOT / "build")
    print(f"mutation score: {s['detected']}/{s['total']} detected = {s['score']:.1%} "
          f"({', '.join(f'{k} {v}' for k, v in s['by_status'].items())})"
          + (f"; {wall / 60:.1f} min" if wall is not None else "") + "; survivors in build/mutation.md")
    if s["score"] < THRESHOLD:
        print(f"FAILED: under {THRESHOLD:.0%} of the mutants detected")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
