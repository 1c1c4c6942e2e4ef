"""Real-browser tests: the widgets as a person meets them, in JupyterLab with its default settings.

A JupyterLab server (127.0.0.1, a free port, fresh settings, so kernel comms run over *subshells*, the
JupyterLab 4.6 default) serves a copy of the notebooks; headless Chromium from Debian's packages, driven by
Playwright (no browser download), runs them top to bottom in smoke mode and then presses keys and clicks.
Screenshots of each state go to ``build/browser/``. Without a browser these tests skip locally, but
fail under ``CI=true``: CI must never pass without them (``.ci/run`` installs the browser).
"""
from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from course_utils.runtime import in_ci

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "build" / "browser"
CHROMIUM = os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root needs --no-sandbox; the others keep it from calling home on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
KEY_LATENCY_MS = 150          # key press -> next image drawn, at most (issue 10)

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (make setup installs it)"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server with default settings over a copy of the notebooks; stopped by its process id."""
    why = _missing()
    if why:
        if in_ci():
            pytest.fail(f"browser tests cannot run under CI: {why}")
        pytest.skip(why)
    root = tmp_path_factory.mktemp("lab")
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, root / nb.name)
    home = Path(tempfile.mkdtemp(prefix="lab-settings-"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    token = secrets.token_hex(16)
    env = {**os.environ, "COURSE_MODE": "smoke", "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "COURSE_CACHE": os.environ.get("COURSE_CACHE", str(ROOT / "build" / "test_cache"))}
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--allow-root",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (root / "server.log").read_text()[-3000:])
                time.sleep(0.3)
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "root": root}
    finally:
        os.killpg(server.pid, signal.SIGTERM)           # the server and its kernels (same session)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()                                    # Playwright ends the browser process it started


def _open_and_run_all(browser, lab, name: str, timeout_s: float = 240):
    """Open a notebook, Run All Cells from the menu, wait for the kernel to settle, then save it and check
    on disk that every code cell ran without an error (JupyterLab 4 renders only the visible cells)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    # ?reset: a fresh workspace, so the notebook a previous test opened is not the active tab here
    page.goto(f"{lab['url']}/lab/tree/{name}?reset&token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_function("() => document.body.innerText.includes('Idle')")   # the kernel is up
    if page.get_by_role("button", name="No").count():                      # JupyterLab's news question
        page.get_by_role("button", name="No").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # Done when the saved file shows every code cell run, or an error. (The status bar is no guide: with
    # kernel subshells it can read "Idle" while the main shell still runs a cell.)
    deadline = time.time() + timeout_s
    while True:
        page.wait_for_timeout(2000)
        page.keyboard.press("Control+s")
        page.wait_for_timeout(500)
        nb = nbformat.read(lab["root"] / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        not_run = [i for i, c in enumerate(code) if c.execution_count is None]
        errors = [f"{o.get('ename')}: {o.get('evalue')}" for c in code for o in c.outputs if o.output_type == "error"]
        if errors or not not_run or time.time() > deadline:
            break
    if errors or not_run:
        page.screenshot(path=str(SHOTS / f"{Path(name).stem}_failed.png"))
        pytest.fail(f"{name} did not run to the end in the browser: errors {errors[:2]}, code cells not run "
                    f"{not_run[:5]}{' (timed out)' if not errors else ''}")
    page.wait_for_function("() => document.body.innerText.includes('Idle')")
    assert page.get_by_text("Loading widget...").count() == 0, "a widget view never rendered"
    assert "VBox(children" not in page.inner_text("body"), "a widget shown as its text repr"
    return page


def _shut_down_kernels(lab) -> None:
    """Stop the kernels a test started (they keep a CPU core busy otherwise)."""
    import json
    import urllib.request

    def call(method: str, path: str):
        req = urllib.request.Request(f"{lab['url']}{path}", method=method,
                                     headers={"Authorization": f"token {lab['token']}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read()

    for kernel in json.loads(call("GET", "/api/kernels")):
        call("DELETE", f"/api/kernels/{kernel['id']}")


@pytest.fixture
def stop_kernels(lab):
    """After each test, also a failed one: its kernels stop, so the next test has the CPU."""
    yield
    _shut_down_kernels(lab)


def _png_std(png: bytes) -> float:
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float).std())


# --------------------------------------------------------------------------- the labeller (notebook 05)
def _labels(db: Path) -> dict[int, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, label FROM items WHERE label IS NOT NULL AND split = 'pool'"))


def test_labeller_keys_and_clicks_reach_sqlite(browser, lab, stop_kernels):
    page = _open_and_run_all(browser, lab, "05_active_learning.ipynb")
    box = page.locator(".course-labeller")
    box.scroll_into_view_if_needed()
    # issue 22: without the keyboard it says so ("click here"); with it, a ring and a green line
    page.wait_for_function("() => (document.querySelector('.course-labeller').textContent || '').includes('Click here')")
    assert box.get_attribute("data-focused") == "false"
    box.screenshot(path=str(SHOTS / "05_labeller_unfocused.png"))
    box.click(position={"x": 8, "y": 8})                   # focus the widget (its corner: not a button)
    page.wait_for_function("() => document.querySelector('.course-labeller').dataset.focused === 'true'")
    assert "Keys go to the labeller" in box.inner_text()
    assert box.evaluate("r => getComputedStyle(r).boxShadow") != "none"
    box.screenshot(path=str(SHOTS / "05_labeller_ready.png"))
    db = next((lab["root"] / "runs").glob("05_labels_*.db"))
    before = _labels(db)

    def shown() -> int:
        return int(re.search(r"image id (\d+)", box.inner_text()).group(1))

    def press(key: str) -> tuple[int, float]:
        old_seq = page.evaluate("() => document.querySelector('.course-labeller img.course-labeller-image').src")
        page.keyboard.press(key)
        page.wait_for_function(
            "old => { const i = document.querySelector('.course-labeller img.course-labeller-image');"
            " const r = document.querySelector('.course-labeller'); return (i && i.src !== old)"
            " || (r && r.style.opacity === '1' && r.innerText.includes('nothing of yours')); }", arg=old_seq)
        in_page = float(box.get_attribute("data-latency-ms"))   # keydown -> next state drawn, timed by the page
        return shown(), in_page

    def session() -> int:
        return int(re.search(r"this session: (\d+)", box.inner_text()).group(1))

    a, in_session = shown(), session()
    b, t1 = press("1")
    c, t2 = press("2")
    d, t3 = press("3")
    back, _ = press("u")                                    # c comes back
    after_skip, _ = press("n")                              # and is skipped
    assert back == c and after_skip not in (a, b, c)
    box.screenshot(path=str(SHOTS / "05_labeller_after_keys.png"))
    page.locator(".course-labeller button.course-labeller-class[data-label='1']").click()   # the mouse
    page.wait_for_function("s => !document.querySelector('.course-labeller').innerText.includes('image id ' + s)",
                           arg=str(after_skip))
    box.screenshot(path=str(SHOTS / "05_labeller_after_click.png"))
    expected = {**before, a: 0, b: 1, after_skip: 1}
    assert _labels(db) == expected                         # exactly these, nothing lost, nothing twice
    assert session() == in_session + 3                     # the undone label is not counted
    assert box.locator(".course-labeller-error").count() == 0
    latency = sorted([t1, t2, t3])[1]
    print(f"\nlabeller: key press -> next image in {t1:.0f} / {t2:.0f} / {t3:.0f} ms (median {latency:.0f} ms)")
    assert latency <= KEY_LATENCY_MS, f"key press -> next image took {latency:.0f} ms (limit {KEY_LATENCY_MS})"
    page.close()


# --------------------------------------------------------------------------- the slider panel (notebook 03)
def _run_folders(lab) -> set[str]:
    base = lab["root"] / "runs" / "03_panel"
    return {p.name for p in base.iterdir()} if base.exists() else set()


def _set_slider(panel, label: str, value) -> None:
    """Type a value into a slider's readout, as a person can; it moves the slider."""
    readout = panel.locator(".widget-slider", has_text=label).locator(".widget-readout")
    readout.click()
    readout.press("Control+a")
    readout.type(str(value))
    readout.press("Enter")


def _board_rows(panel) -> int:
    return panel.locator(".course-board tbody tr").count()


def test_panel_trains_only_on_run_and_refuses_impossible_settings(browser, lab, stop_kernels):
    page = _open_and_run_all(browser, lab, "03_transfer_learning_malaria.ipynb")
    panel = page.locator(".widget-vbox", has=page.locator("h3", has_text="Transfer learning on malaria cells")).last
    panel.scroll_into_view_if_needed()
    assert panel.locator(".widget-slider").count() >= 4 and panel.get_by_role("button", name="Run").count() == 1
    panel.screenshot(path=str(SHOTS / "03_panel_after_run_all.png"))
    rows, folders = _board_rows(panel), _run_folders(lab)
    assert rows == 1 and "Could not run" not in panel.inner_text()   # the default run, no refusal on screen

    _set_slider(panel, "epochs", 2)                                   # a slider move trains nothing
    page.wait_for_timeout(1500)
    assert _run_folders(lab) == folders and _board_rows(panel) == rows
    assert "Idle" in " ".join(page.locator(".jp-StatusBar-Widget").all_inner_texts())   # the kernel did nothing

    panel.get_by_role("button", name="Run").click()                   # one click: exactly one new row
    page.wait_for_function("el => el.innerText.includes('run 2 done')", arg=panel.element_handle(), timeout=180_000)
    assert _board_rows(panel) == rows + 1 and len(_run_folders(lab)) == len(folders) + 1
    image = panel.locator("img").last
    image.scroll_into_view_if_needed()
    png = image.screenshot()
    assert _png_std(png) > 10, "the board's curve image is blank"
    panel.screenshot(path=str(SHOTS / "03_panel_after_click.png"))

    _set_slider(panel, "train_samples", 2000)                         # more images than the split holds
    panel.get_by_role("button", name="Run").click()
    page.wait_for_function("el => el.innerText.includes('Could not run')", arg=panel.element_handle(), timeout=60_000)
    assert _board_rows(panel) == rows + 1                              # refused: no row
    panel.screenshot(path=str(SHOTS / "03_panel_refused.png"))
    page.close()


# --------------------------------------------------------------------------- course-project label (issue 21)
def test_the_command_lines_labelling_notebook_labels_a_folder_of_files_with_the_keys(browser, lab, stop_kernels):
    """`course-project label` writes a notebook that opens the project's store; in JupyterLab its keys label files
    read from the folder (here: the store beside the notebook, the images in a sibling folder)."""
    from PIL import Image

    from course_utils.project import cli

    images = lab["root"] / "project_images"
    rng = np.random.default_rng(0)
    for i in range(20):
        (images / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(images / ("a" if i % 2 else "b")
                                                                                  / f"img{i:02d}.png")
    db = lab["root"] / "project" / "labels.db"
    assert cli.main(["init", str(images), "--classes", "plain", "spot", "--db", str(db)]) == 0
    assert cli.main(["label", str(images), "--db", str(db), "--no-launch"]) == 0
    page = _open_and_run_all(browser, lab, "project/label.ipynb")
    box = page.locator(".course-labeller")
    box.scroll_into_view_if_needed()
    box.click(position={"x": 8, "y": 8})
    first = int(re.search(r"image id (\d+)", box.inner_text()).group(1))
    assert _png_std(box.locator("img.course-labeller-image").screenshot()) > 5      # a real image, from its file

    def press(key: str) -> int:
        old = page.evaluate("() => document.querySelector('.course-labeller img.course-labeller-image').src")
        page.keyboard.press(key)
        page.wait_for_function("old => { const i = document.querySelector('.course-labeller img.course-labeller-image');"
                               " return i && i.src !== old; }", arg=old)
        return int(re.search(r"image id (\d+)", box.inner_text()).group(1))

    second = press("2")
    press("1")
    back = press("u")
    box.screenshot(path=str(SHOTS / "project_label_after_keys.png"))
    assert back == second and _labels(db) == {first: 1}
    assert box.locator(".course-labeller-error").count() == 0
    page.close()


# --------------------------------------------------------------------------- notebook 07 (issue 21)
def _entropy_order(db: Path) -> tuple[list[int], dict[int, float]]:
    """The project's unlabelled, readable pool images, most uncertain first (entropy of the stored confidences),
    and each one's entropy."""
    import json

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, confidences FROM items WHERE split = 'pool' AND label IS NULL AND "
                            "confidences IS NOT NULL AND id NOT IN (SELECT item_id FROM unreadable)").fetchall()
    p = np.array([json.loads(c) for _, c in rows])
    h = -(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=1)
    return [rows[k][0] for k in np.argsort(-h, kind="stable")], {r[0]: float(v) for r, v in zip(rows, h)}


def test_07_labels_files_with_the_keys_and_shows_the_most_uncertain_image_after_a_round(browser, lab, stop_kernels):
    """07's cycle on its demo folder of files (labels by the oracle, a smoke round of train + predict), then the
    labeller in JupyterLab (the notebook `course-project label` writes): it shows the image the round is least
    sure of; a key labels it in SQLite and the next most uncertain one comes up. (nbval runs 07 itself.)"""
    from course_utils.project import cli, cycle, demo, folder

    images = lab["root"] / "runs" / "07_browser_images"
    d = demo.write_folder(images, n=120, size=48)
    db = lab["root"] / "runs" / "07_oracle_project" / "labels.db"
    store = folder.open_project(images, label_names=list(d.label_names), db=db, verbose=False)
    oracle = d.oracle(store)
    for i in store.ids("pool").tolist()[:40]:
        if oracle[i] >= 0:
            store.label(i, int(oracle[i]))
    result = cycle.train_round(store, model="small_cnn", epochs=2, image_size=32, batch_size=16, progress=False)
    cycle.predict_pool(store, result, progress=False)
    cli.label_notebook(store, strategy="entropy")
    store.close()
    page = _open_and_run_all(browser, lab, "runs/07_oracle_project/label.ipynb")
    order, entropy = _entropy_order(db)
    box = page.locator(".course-labeller").first
    box.scroll_into_view_if_needed()
    box.click(position={"x": 8, "y": 8})
    shown = int(re.search(r"image id (\d+)", box.inner_text()).group(1))
    assert entropy[shown] >= entropy[order[0]] - 1e-9, (shown, order[:5])          # the top (or a tie for it)
    assert "picked by entropy" in box.inner_text()
    assert _png_std(box.locator("img.course-labeller-image").screenshot()) > 5      # a real image, from its file
    before = _labels(db)
    old = page.evaluate("() => document.querySelector('.course-labeller img.course-labeller-image').src")
    page.keyboard.press("2")                                                        # "parasite"
    page.wait_for_function("old => { const i = document.querySelector('.course-labeller img.course-labeller-image');"
                           " return i && i.src !== old; }", arg=old)
    box.screenshot(path=str(SHOTS / "07_labeller_after_a_round.png"))
    assert _labels(db) == {**before, shown: 1}
    second = int(re.search(r"image id (\d+)", box.inner_text()).group(1))
    assert entropy[second] >= entropy[[i for i in order if i != shown][0]] - 1e-9, (second, order[:5])
    assert box.locator(".course-labeller-error").count() == 0
    page.close()


# --------------------------------------------------------------------------- the instructor's dashboard (issue 22)
def test_the_dashboard_shows_every_notebook_with_its_figure_and_numbers(browser, tmp_path):
    """build/index.html in Chromium: not blank, every notebook's card, its key figure drawn, stand-in flagged."""
    import base64
    import importlib.util

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
    run_course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_course)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1, 2], [0.5, 0.8, 0.9], marker="o")
    ax.set(title="a key figure", xlabel="epoch", ylabel="accuracy")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    names = ["01_data", "02_cnn", "03_transfer"]
    for i, name in enumerate(names):
        nb = nbformat.v4.new_notebook()
        out = [nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(buf.getvalue()).decode()})]
        nb.cells = [nbformat.v4.new_code_cell("plot()", outputs=out if i != 2 else [])]
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    rows = [{"notebook": n, "mode": "lite", "data_source": "toy: stand-in", "wall_s": 12.5, "status": "ok" if i < 2
             else "failed", "error": "" if i < 2 else "boom", "headline": f"{n} accuracy=0.875 (stand-in)",
             "output_findings": 0, "findings": []} for i, n in enumerate(names)]
    run_course.write_summary(rows, tmp_path)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.goto((tmp_path / "index.html").as_uri())
        text = page.inner_text("body")
        assert all(n in text for n in names) and text.count("stand-in") >= 3 and "failed: boom" in text
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) == 2 and min(widths) > 100          # both figures decoded and drawn
        shot = page.screenshot(full_page=True)
        (SHOTS / "dashboard.png").write_bytes(shot)
        assert _png_std(shot) > 20, "the dashboard renders blank"
    finally:
        page.close()
