"""Notebook 02 in a real JupyterLab, clicked through in a real browser.

A JupyterLab server runs on a temporary copy of notebooks/ (the committed notebooks are never touched);
headless Chromium from Debian's packages (/usr/bin/chromium), driven by Playwright, opens notebook 02,
clicks Run -> Run All Cells, waits for every cell to finish, and checks what a reader would see: no
tracebacks, the matplotlib figures drawn. It then saves the notebook through File -> Save Notebook and
checks the saved file, and leaves a screenshot of the finished notebook in artifacts/jupyterlab_02.png.

Needs /usr/bin/chromium and the playwright package (bash scripts/install_browser.sh); skipped without them.
Playwright's own browser download (`playwright install`) is never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOK = "02_separable_convolution_theory.ipynb"
SCREENSHOT = ROOT / "artifacts" / "jupyterlab_02.png"
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused by a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT_S = 90
KERNEL_START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 240  # notebook 02 takes ~20 s alone on 2 cores; leave room for a busy machine
MIN_FIGURES = 5  # notebook 02 draws 7 matplotlib figures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (bash scripts/install_browser.sh)"),
]
pytest.importorskip("jupyterlab", reason="jupyterlab not installed")
nbformat = pytest.importorskip("nbformat", reason="nbformat not installed")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (bash scripts/install_browser.sh)"
)

# The open notebook (JupyterLab hides, but keeps, the panels of other tabs).
PANEL = "#jp-main-dock-panel .jp-NotebookPanel:not(.lm-mod-hidden)"
# JupyterLab renders both stderr streams and error outputs (tracebacks) with this mime type and the same
# classes; TensorFlow's log lines on stderr are harmless, so a traceback is told apart by its text.
STDERR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
TRACEBACK = re.compile(
    r"Traceback \(most recent call last\)"  # IPython's and Python's traceback header
    r"|^\s*Cell In\[\d+\], line \d+",  # IPython's header of a SyntaxError in a cell (no "Traceback" line)
    re.MULTILINE,
)

# Settings for a clean, quiet JupyterLab: no news or update checks (no network here, no toast over the
# screenshot), and no blank space after the last cell (so the screenshot ends with the notebook).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False, "fetchNews": "false"},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"scrollPastEnd": False},
}


# ---------------------------------------------------------------- the JupyterLab server


@dataclass
class Lab:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the server's root_dir: a temporary copy of notebooks/
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(lab: Lab, path: str, method: str = "GET", timeout: float = 5) -> bytes:
    """Call the server's REST API with the token; raise OSError (URLError, HTTPError) when it does not answer 2xx."""
    request = urllib.request.Request(
        f"{lab.url}{path}",
        method=method,
        headers={"Authorization": f"token {lab.token}"},
        data=b"" if method == "POST" else None,
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _clear_outputs(path: Path) -> None:
    """Strip outputs and execution counts, so whatever the browser shows later comes from this run."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    _clear_outputs(root / NOTEBOOK)
    settings = base / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(base / "runtime"))
    env.pop("MPLBACKEND", None)  # a non-inline backend would keep the figures out of the notebook
    log = base / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}",
        "--LabApp.extension_manager=readonly",  # no PyPI look-ups from the extension manager
    ]
    if os.geteuid() == 0:  # CI and containers run as root
        command.append("--allow-root")
    lab = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root, log=log)
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode}:\n{lab.log_tail()}")
            with contextlib.suppress(OSError):
                _api(lab, "/api/status")
                break
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_TIMEOUT_S} s:\n{lab.log_tail()}")
            time.sleep(0.5)
        yield lab
    finally:
        _stop_server(proc, lab)


def _stop_server(proc: subprocess.Popen, lab: Lab) -> None:
    """Stop the kernels and the server through the API; signal the server's own process group if it hangs.

    The kernels run in process groups of their own, so they are shut down first, one by one.
    """
    if proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            for kernel in json.loads(_api(lab, "/api/kernels")):
                _api(lab, f"/api/kernels/{kernel['id']}", method="DELETE", timeout=30)
        with contextlib.suppress(OSError):
            _api(lab, "/api/shutdown", method="POST")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                proc.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
        proc.wait(timeout=30)


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def open_notebook(page, lab: Lab, name: str, code_cells: int) -> None:
    """Open a notebook by its URL; wait until all its code cells are drawn and its kernel is idle.

    Each call gets a new, empty workspace: otherwise JupyterLab would restore the tabs of an earlier test,
    and Run All Cells might run one of those.
    """
    workspace = f"test-{secrets.token_hex(4)}"
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab.token}")
    cells = page.locator(f"{PANEL} .jp-CodeCell")
    try:
        page.wait_for_function(
            "([panel, n]) => document.querySelectorAll(`${panel} .jp-CodeCell`).length === n",
            arg=[PANEL, code_cells],
            timeout=KERNEL_START_TIMEOUT_S * 1000,
        )
        # The status bar reads "No Kernel | Initializing", then "Python 3 (ipykernel) | Idle".
        page.locator("#jp-main-statusbar").get_by_text(re.compile(r"^(?!No Kernel).+ \| Idle$")).wait_for(
            timeout=KERNEL_START_TIMEOUT_S * 1000
        )
    except sync_api.TimeoutError:
        status = page.locator("#jp-main-statusbar").inner_text().split()
        pytest.fail(f"{name}: {cells.count()} of {code_cells} code cells shown; status bar: {status}")
    assert page.locator("#jp-main-dock-panel .jp-NotebookPanel").count() == 1, "other notebooks are open"
    # More room for the notebook: fold the file browser away (click its tab in the left side bar).
    current_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if current_tab.count() == 1:
        current_tab.click()


def click_menu(page, menu: str, command: str) -> None:
    """Click a menu of the top menu bar, then its item for a JupyterLab command (Lumino sets data-command)."""
    page.locator("#jp-menu-panel .lm-MenuBar-item", has_text=re.compile(rf"^{menu}$")).click()
    page.locator(f".lm-Menu .lm-Menu-item[data-command='{command}']").click()


def run_all_cells(page, code_cells: int) -> None:
    """Run -> Run All Cells, then wait until every code cell shows an execution count and the kernel is idle."""
    click_menu(page, "Run", "runmenu:run-all")
    try:
        page.wait_for_function(
            """([panel, count]) => {
                const prompts = [...document.querySelectorAll(`${panel} .jp-CodeCell .jp-InputPrompt`)];
                const indicator = document.querySelector(`${panel} .jp-Notebook-ExecutionIndicator`);
                return prompts.length === count
                    && prompts.every((p) => /^\\[\\d+\\]:$/.test(p.textContent.trim()))
                    && indicator !== null && indicator.dataset.status === 'idle';
            }""",
            arg=[PANEL, code_cells],
            timeout=RUN_TIMEOUT_S * 1000,
            polling=500,
        )
    except sync_api.TimeoutError:
        prompts = page.locator(f"{PANEL} .jp-CodeCell .jp-InputPrompt").all_text_contents()
        pytest.fail(f"cells not all run after {RUN_TIMEOUT_S} s; prompts: {[p.strip() for p in prompts]}")


def stderr_outputs(page) -> list[tuple[int, str]]:
    """(cell number, text) of each output rendered as stderr: stderr streams and error tracebacks alike."""
    return [
        (cell, text)
        for cell, text in page.evaluate(
            """([panel, selector]) => [...document.querySelectorAll(`${panel} .jp-Cell`)].flatMap((cell, i) =>
                [...cell.querySelectorAll(selector)].map((output) => [i, output.textContent]))""",
            [PANEL, STDERR_OUTPUT],
        )
    ]


def tracebacks(page) -> list[tuple[int, str]]:
    return [(cell, text) for cell, text in stderr_outputs(page) if TRACEBACK.search(text)]


def save_full_screenshot(page, path: Path) -> None:
    """Grow the window until the notebook needs no scrolling, then take a full-page screenshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate(f"document.querySelector(`{PANEL} .jp-WindowedPanel-outer`)?.scrollTo(0, 0)")
    for _ in range(3):
        extra = page.evaluate(
            f"""() => {{
                const scroller = document.querySelector(`{PANEL} .jp-WindowedPanel-outer`);
                return scroller ? scroller.scrollHeight - scroller.clientHeight : 0;
            }}"""
        )
        if extra <= 1:
            break
        size = page.viewport_size
        page.set_viewport_size({"width": size["width"], "height": min(size["height"] + extra, 30_000)})
        page.wait_for_timeout(500)
    page.screenshot(path=str(path), full_page=True)


# ---------------------------------------------------------------- the tests


def test_notebook_02_runs_in_jupyterlab(lab, page):
    code_cells = sum(c.cell_type == "code" for c in nbformat.read(lab.root / NOTEBOOK, as_version=4).cells)
    try:
        open_notebook(page, lab, NOTEBOOK, code_cells)
        started = time.monotonic()
        run_all_cells(page, code_cells)
        print(f"Run All Cells took {time.monotonic() - started:.1f} s in the browser")

        # What a reader sees: no traceback under any cell (TensorFlow's stderr log lines are allowed) ...
        found = tracebacks(page)
        assert not found, "tracebacks in notebook 02:\n" + "\n\n".join(
            f"cell #{i} (0-based):\n{t[-2000:]}" for i, t in found
        )
        # ... and the matplotlib figures, decoded and drawn.
        page.wait_for_function(
            "(panel) => [...document.querySelectorAll(`${panel} .jp-OutputArea-output img`)].every((i) => i.complete)",
            arg=PANEL,
        )
        widths = page.eval_on_selector_all(
            f"{PANEL} .jp-OutputArea-output img", "(images) => images.map((i) => i.naturalWidth)"
        )
        assert len(widths) >= MIN_FIGURES, f"expected at least {MIN_FIGURES} figures, found {len(widths)}"
        assert all(w > 0 for w in widths), f"figures that did not render: natural widths {widths}"
        print(f"{len(widths)} figures drawn, natural widths {widths}")
    except BaseException:
        with contextlib.suppress(Exception):  # a picture of the failure, for the CI artifacts
            save_full_screenshot(page, SCREENSHOT)
        raise
    save_full_screenshot(page, SCREENSHOT)

    # File -> Save Notebook, then the saved file: every cell ran, no error output, the figures are in it.
    dirty_tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.jp-mod-dirty")  # the tab's "unsaved" dot
    dirty_tab.wait_for(state="attached")
    click_menu(page, "File", "docmanager:save")
    dirty_tab.wait_for(state="detached")
    saved = nbformat.read(lab.root / NOTEBOOK, as_version=4)
    cells = [c for c in saved.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in cells), [c.execution_count for c in cells]
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{o.ename}: {o.evalue}" for o in errors]
    figures = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= MIN_FIGURES


def test_tracebacks_are_found_and_stderr_logs_are_not(lab, page):
    """The traceback check itself: a TensorFlow-like stderr line passes, a raised exception is caught."""
    probe = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import sys\n"
                "print('E0000 00:00:1.0 1 cuda_executor.cc:1] failed call to cuInit: UNKNOWN ERROR (303)',"
                " file=sys.stderr)"
            ),
            nbformat.v4.new_code_cell("raise ValueError('probe failure')"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
    )
    nbformat.write(probe, lab.root / "probe_errors.ipynb")
    open_notebook(page, lab, "probe_errors.ipynb", 2)
    run_all_cells(page, 2)
    outputs = stderr_outputs(page)
    assert [cell for cell, _ in outputs] == [0, 1], outputs
    found = tracebacks(page)
    assert [cell for cell, _ in found] == [1], outputs
    assert "ValueError" in found[0][1] and "probe failure" in found[0][1]


def test_keras_progress_bars_render_in_place(lab, page):
    """Keras progress bars redraw one line per epoch in JupyterLab, not one line per step."""
    fit = (
        "import keras, numpy as np\n"
        "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10, activation='softmax')])\n"
        "model.compile('sgd', 'sparse_categorical_crossentropy')\n"
        "x, y = np.random.rand(64, 4), np.random.randint(0, 10, 64)\n"
        "_ = model.fit(x, y, batch_size=8, epochs=2, verbose=1)"
    )
    probe = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(fit)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
    )
    nbformat.write(probe, lab.root / "probe_progress.ipynb")
    open_notebook(page, lab, "probe_progress.ipynb", 1)
    run_all_cells(page, 1)
    text = "\n".join(page.locator(f"{PANEL} .jp-OutputArea-output").all_text_contents())
    bars = [line for line in text.splitlines() if "━" in line]
    assert len(bars) == 2, text  # one redrawn bar per epoch
    assert all("8/8" in line and "loss" in line for line in bars), text
