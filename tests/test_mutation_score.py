"""scripts/mutation.py (make mutation): which mutants are scored, and the score."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "scripts" / "mutation.py")
mutation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation)

SEP = "\u01c1"   # mutmut 3 names a method's mutants x<SEP>Class<SEP>method__mutmut_<n>


def test_scope_patterns_match_functions_and_methods_only():
    pats = mutation.patterns({"metrics": ["roc_auc"], "active.labels": ["LabelStore.undo"],
                             "active.strategies": ["*.score"]})
    assert mutation.in_scope("course_utils.metrics.x_roc_auc__mutmut_3", pats)
    assert not mutation.in_scope("course_utils.metrics.x_roc_auc_extra__mutmut_3", pats)
    assert not mutation.in_scope("course_utils.metrics.x_summarize__mutmut_1", pats)
    assert mutation.in_scope(f"course_utils.active.labels.x{SEP}LabelStore{SEP}undo__mutmut_12", pats)
    assert not mutation.in_scope(f"course_utils.active.labels.x{SEP}LabelStore{SEP}label__mutmut_1", pats)
    assert mutation.in_scope(f"course_utils.active.strategies.x{SEP}BALD{SEP}score__mutmut_2", pats)


def test_every_scoped_function_exists():
    for module, functions in mutation.SCOPE.items():
        source = Path(ROOT, "course_utils", *module.split(".")).with_suffix(".py").read_text()
        for f in functions:
            name = f.split(".")[-1]
            assert f"def {name}(" in source, (module, f)


def test_collect_and_score_count_timeouts_as_detected(tmp_path):
    (tmp_path / "course_utils").mkdir()
    codes = {"course_utils.metrics.x_accuracy__mutmut_1": 1, "course_utils.metrics.x_accuracy__mutmut_2": 0,
             "course_utils.metrics.x_accuracy__mutmut_3": 36, "course_utils.metrics.x_accuracy__mutmut_4": 33,
             "course_utils.metrics.x_other__mutmut_1": 0,
             f"course_utils.metrics.x{SEP}A{SEP}b__mutmut_1": 1}
    (tmp_path / "course_utils" / "metrics.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    rows = mutation.collect(tmp_path, mutation.patterns({"metrics": ["accuracy", "A.b"]}))
    assert [r["status"] for r in rows] == ["killed", "survived", "timeout", "no tests", "killed"]
    assert {r["function"] for r in rows} == {"accuracy", "A.b"} and {r["module"] for r in rows} == {"metrics"}
    s = mutation.score(rows)
    assert s["total"] == 5 and s["detected"] == 3 and s["score"] == 0.6
    assert s["by_status"] == {"killed": 2, "no tests": 1, "survived": 1, "timeout": 1}


def test_collect_reads_the_modules_of_a_group(tmp_path):
    (tmp_path / "course_utils" / "active").mkdir(parents=True)
    codes = {f"course_utils.active.labels.x{SEP}LabelStore{SEP}undo__mutmut_1": 1,
             f"course_utils.active.labels.x{SEP}LabelStore{SEP}label__mutmut_1": 0}
    (tmp_path / "course_utils" / "active" / "labels.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    rows = mutation.collect(tmp_path, mutation.patterns({"active.labels": ["LabelStore.undo"]}))
    assert rows == [{"mutant": f"course_utils.active.labels.x{SEP}LabelStore{SEP}undo__mutmut_1",
                     "module": "active.labels", "function": "LabelStore.undo", "status": "killed"}]


def test_only_a_change_of_case_in_sql_text_is_equivalent():
    sql = ('-        row = c.execute("SELECT split FROM items WHERE id = ?", (i,))\n'
           '+        row = c.execute("select split from items where id = ?", (i,))')
    assert mutation.sql_case_only(sql)
    message = '-    raise_it("Image not found")\n+    raise_it("IMAGE NOT FOUND")'
    assert not mutation.sql_case_only(message)                  # not SQL: a person reads it
    mode = '-    elif mode.startswith("I;16"):\n+    elif mode.startswith("i;16"):'
    assert not mutation.sql_case_only(mode)                      # a real bug, not an equivalent
    value = ('-        c.execute("UPDATE claims SET until = ?", (now + 1,))\n'
             '+        c.execute("UPDATE claims SET until = ?", (now - 1,))')
    assert not mutation.sql_case_only(value)                     # the SQL line, but a changed value
    assert not mutation.sql_case_only("")
