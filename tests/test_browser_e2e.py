"""End to end in a real browser: JupyterLab, headless Chromium, the Dashboard tutorial, Start/Stop.

The test starts JupyterLab on 127.0.0.1 with a token in a temporary root
holding a copy of `notebooks/06_dashboard.ipynb`, opens it in headless
Chromium (Debian's `chromium`, driven by playwright's Python API), runs all
cells, waits for the dashboard to render and its plot image to update, takes
screenshots, clicks Stop and waits for the status line to say the run
stopped. Screenshots go to `test-artifacts/`; with
`BYOP_NB_UPDATE_SCREENSHOT=1` (or when it is missing) the mid-run one also
becomes `docs/images/dashboard.png`.

Without Chromium the test is skipped with the command to install it, except
in CI (`CI=true`), where a missing browser is a failure. JupyterLab, its
kernels and their worker processes are shut down at the end, and the test
checks that none is left running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_dashboard.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "dashboard.png"
CHROMIUM = os.environ.get("BYOP_NB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def _missing(what: str, how: str) -> None:
    message = f"{what} is needed for the browser end-to-end test; install it with: {how}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing browser is a failure, not a skip)")
    pytest.skip(message)


def _require_browser() -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _missing(f"Chromium ({CHROMIUM})", "sudo apt-get install chromium  (or set BYOP_NB_CHROMIUM to its path)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("The playwright Python package", 'python -m pip install "byop_nb[test]"')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 with a token, in its own process group, with isolated settings."""

    def __init__(self, root: Path, home: Path) -> None:
        self.port = _free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        for name, sub in (
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
            ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
            ("IPYTHONDIR", "ipython"),
        ):
            env[name] = str(home / sub)
        env.pop("JUPYTER_TOKEN", None)
        # No "get notified about Jupyter news?" prompt, and so no request for news.
        settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.log_path = home / "jupyterlab.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.news_url=",
                "--LabApp.extension_manager=readonly",
                *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            ],
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout=90)

    def api(self, path: str, method: str = "GET") -> bytes:
        request = urllib.request.Request(f"{self.url}{path}", method=method)
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                json.loads(self.api("/api/status"))
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"JupyterLab did not answer within {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def processes(self) -> list[psutil.Process]:
        """The server and everything it started (kernels, their worker processes)."""
        try:
            server = psutil.Process(self.process.pid)
            return [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> list[str]:
        """Shut down kernels and server; returns descriptions of processes that had to be killed."""
        started = self.processes()
        try:
            self.api("/api/shutdown", method="POST")  # shuts down every kernel, then the server
        except OSError:
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        _, alive = psutil.wait_procs(started, timeout=10)
        killed = []
        for process in alive:
            try:
                killed.append(" ".join(process.cmdline())[:160])
                process.kill()
            except psutil.NoSuchProcess:
                pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.log.close()
        return killed


@pytest.fixture
def lab(tmp_path: Path, no_orphans: None) -> Iterator[JupyterLab]:
    _require_browser()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    server = JupyterLab(root, tmp_path / "home")
    try:
        yield server
    finally:
        killed = server.stop()
        assert not killed, f"processes still running after JupyterLab shut down, killed: {killed}"


def in_chromium(tmp_path: Path, drive: Callable[[Any], None], *, failure: str) -> None:
    """`drive(page)` in a fresh headless Chromium profile; on any error a full-page screenshot goes to
    ARTIFACTS / `failure` first."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1400},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            try:
                drive(page)
            except BaseException:
                page.screenshot(path=str(ARTIFACTS / failure), full_page=True)
                raise
        finally:
            context.close()


def test_dashboard_in_jupyterlab_renders_updates_and_stops(lab: JupyterLab, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    in_chromium(tmp_path, lambda page: _drive(page, lab, expect), failure="browser-failure.png")


def _drive(page, lab: JupyterLab, expect) -> None:
    page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
    # The kernel is up when the status bar shows it idle.
    expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=90_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=90_000)

    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    dashboard = page.locator(".byop-dashboard").first
    expect(dashboard).to_be_visible(timeout=90_000)
    status = dashboard.locator(".byop-status")
    expect(status).to_contain_text("running", timeout=60_000)
    expect(page.locator(".byop-dashboard")).to_have_count(2, timeout=60_000)  # the second one, made mid-run

    # The plot is a PNG in an <img>; each update gives it a new blob URL.
    image = dashboard.locator("img.byop-plot")
    sources = {image.get_attribute("src")}
    deadline = time.monotonic() + 60
    while len(sources) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        sources.add(image.get_attribute("src"))
    assert len(sources) >= 3, f"the plot image did not update while the run went on: {sources}"
    width = image.evaluate("img => img.naturalWidth")
    assert width > 100, f"the plot image did not load (naturalWidth {width})"
    progress = dashboard.locator(".byop-progress")
    expect(progress).to_be_visible()
    # Calls against call_limit with the time taken, the time left and the rate; the table of the best and latest.
    expect(dashboard.locator(".byop-progress-text")).to_contain_text(
        re.compile(r"^\d+/600 calls \[\d\d:\d\d<\d\d:\d\d, [\d.]+ calls/s\]$")
    )
    table = dashboard.locator("table.byop-trials")
    expect(table).to_be_visible()
    expect(table).to_contain_text("best (min)")
    for header in ("call", "x", "loss"):
        expect(table.locator("th", has_text=re.compile(f"^{header}$")).first).to_be_visible()

    dashboard.scroll_into_view_if_needed()
    dashboard.screenshot(path=str(ARTIFACTS / "dashboard-running.png"))
    page.screenshot(path=str(ARTIFACTS / "jupyterlab-running.png"))
    if os.environ.get("BYOP_NB_UPDATE_SCREENSHOT") == "1" or not DOCS_SCREENSHOT.exists():
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / "dashboard-running.png", DOCS_SCREENSHOT)

    stop = dashboard.locator("button.byop-stop")
    expect(stop).to_be_enabled()
    other = page.locator(".byop-dashboard").nth(1)
    images = [dashboard.locator("img.byop-plot"), other.locator("img.byop-plot")]
    before_stop = [image.get_attribute("src") for image in images]
    stop.click()
    expect(status).to_contain_text("finished", timeout=60_000)
    expect(status).to_contain_text("exit code: stopped")
    expect(stop).to_be_disabled()
    expect(dashboard.locator("button.byop-start")).to_be_enabled()
    # The other dashboard on the same scheduler shows the same end ...
    expect(other.locator(".byop-status")).to_contain_text("exit code: stopped")
    # ... and both draw their final picture once the run has finished.
    for image, source in zip(images, before_stop):
        expect(image).not_to_have_attribute("src", source or "", timeout=30_000)
    dashboard.screenshot(path=str(ARTIFACTS / "dashboard-stopped.png"))
    other.screenshot(path=str(ARTIFACTS / "dashboard-user-plot.png"))

    # The log pane: collapsed, its title counting what the tutorial's callback printed; opened, the lines.
    log = dashboard.locator(".byop-log")
    expect(log).to_contain_text(re.compile(r"log: \d+ lines?"))
    lines = log.get_by_text("new best loss").first
    expect(lines).to_be_hidden()
    log.get_by_text(re.compile(r"^\s*log: ")).first.click()
    expect(lines).to_be_visible(timeout=30_000)
    dashboard.screenshot(path=str(ARTIFACTS / "dashboard-log-open.png"))


TUNING_CELLS = [
    """import time
import optuna
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.svm import SVC

from byop_nb.notebook import Dashboard
from byop_nb.optimization import OptunaOptimizer, Trial
from byop_nb.scheduling import Scheduler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def evaluate(trial: Trial) -> Trial.Report:
    X, y = load_digits(return_X_y=True)
    config = trial.config
    if config["kernel"] == "poly":
        model = SVC(kernel="poly", C=config["C"], degree=config["degree"])  # a bug: no "degree" in the space
    else:
        model = SVC(kernel=config["kernel"], C=config["C"], gamma=config["gamma"])
    return trial.success(accuracy=cross_val_score(model, X, y, cv=5).mean())


optimizer = OptunaOptimizer(
    {"C": (1e-2, 1e2, "log"), "gamma": (1e-4, 1e-1, "log"), "kernel": ["rbf", "poly", "sigmoid"]},
    direction="maximize", metric="accuracy", sampler=optuna.samplers.RandomSampler(seed=4),
)
scheduler = Scheduler.with_processes(2)
task = Trial.Task(evaluate, scheduler, call_limit=80)


@scheduler.on_start(repeat=2)
def launch() -> None:
    task(optimizer.ask())


@task.on_report
def tell(report: Trial.Report) -> None:
    optimizer.tell(report)
    print(f"{report.trial.name}: {report.status} {report.results}")
    task(optimizer.ask())


scheduler.on_finished(optimizer.fail_pending);""",
    """dashboard = Dashboard(scheduler, task, optimizer=optimizer)
dashboard""",
    "handle = dashboard.start()",
]


def test_a_tuning_notebook_shows_trials_progress_rate_table_crashes_and_follows_the_log(
    lab: JupyterLab, tmp_path: Path
) -> None:
    """A fresh tuning notebook (scikit-learn on digits, Optuna, a Trial.Task with a bug for one kernel)."""
    import nbformat
    from playwright.sync_api import expect

    pytest.importorskip("sklearn")
    pytest.importorskip("optuna")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in TUNING_CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(notebook, str(tmp_path / "root" / "tuning.ipynb"))
    in_chromium(tmp_path, lambda page: _drive_tuning(page, lab, expect), failure="browser-tuning-failure.png")


def _plot_changes(image, seconds: float) -> list[float]:
    """The times (from now) at which the plot image's source changed, sampled every 50 ms for `seconds`."""
    began = time.monotonic()
    changes = []
    source = image.get_attribute("src")
    while time.monotonic() - began < seconds:
        time.sleep(0.05)
        now = image.get_attribute("src")
        if now != source:
            changes.append(time.monotonic() - began)
            source = now
    return changes


def _drive_tuning(page, lab: JupyterLab, expect) -> None:
    page.goto(f"{lab.url}/lab/tree/tuning.ipynb?token={lab.token}")
    expect(page.locator(".jp-Notebook .jp-Cell").first).to_be_visible(timeout=90_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=90_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    dashboard = page.locator(".byop-dashboard").first
    expect(dashboard.locator(".byop-status")).to_contain_text("running", timeout=90_000)
    # Progress in trials against call_limit, with the time taken, the time left and the rate (tqdm's way).
    progress = dashboard.locator(".byop-progress-text")
    expect(progress).to_contain_text(
        re.compile(r"^[1-9]\d*/80 trials \[\d\d:\d\d<\d\d:\d\d, [\d.]+ (trials/s|s/trial)\]$"), timeout=60_000
    )
    # The live plot changes at least once a second while trials end.
    changes = _plot_changes(dashboard.locator("img.byop-plot"), 6.0)
    gaps = [b - a for a, b in zip([0.0, *changes], changes)]
    assert len(changes) >= 5 and max(gaps) < 1.6, f"the plot changed at {changes}"
    # The table of trials: the best and the latest, with their parameters and metrics.
    table = dashboard.locator("table.byop-trials")
    expect(table).to_be_visible()
    for header in ("trial", "status", "C", "gamma", "kernel", "accuracy"):
        expect(table.locator("th", has_text=re.compile(f"^{header}$")).first).to_be_visible()
    expect(table).to_contain_text("best (max)")
    expect(dashboard.locator(".byop-best-text")).to_contain_text(
        re.compile(r"accuracy: best \(max\) 0\.\d+ in the study")
    )
    # Crashed trials show live, in red, with the first error.
    failures = dashboard.locator(".byop-failure-line")
    expect(failures).to_contain_text(re.compile(r"\d+ of \d+ trials of 'evaluate' crashed; first: KeyError: 'degree'"))
    assert "byop-failing" in (dashboard.get_attribute("class") or "")
    assert failures.evaluate("e => getComputedStyle(e).color") == "rgb(183, 28, 28)"
    dashboard.scroll_into_view_if_needed()
    dashboard.screenshot(path=str(ARTIFACTS / "tuning-running.png"))

    expect(dashboard.locator(".byop-status")).to_contain_text("exit code: exhausted", timeout=120_000)
    expect(progress).to_contain_text(re.compile(r"^80/80 trials \[\d\d:\d\d, [\d.]+ trials/s\]$"))
    # The static picture left in the cell's output hides while the live dashboard shows above it.
    snapshot = page.locator(".byop-snapshot").first
    expect(snapshot).to_be_attached()
    expect(snapshot).to_be_hidden()
    # The log pane, opened, shows its newest lines: it follows the end of the log.
    log = dashboard.locator(".byop-log")
    log.get_by_text(re.compile(r"^\s*log: ")).first.click()
    box = log.locator(".byop-log-output")
    expect(box).to_be_visible()
    time.sleep(0.5)
    scroll = box.evaluate(
        "e => { const a = e.getBoundingClientRect(), b = e.lastElementChild.getBoundingClientRect();"
        " return {overflows: e.scrollHeight > e.clientHeight + 10, gap: Math.abs(a.bottom - b.bottom)}; }"
    )
    assert scroll["overflows"] and scroll["gap"] < 20, scroll
    dashboard.screenshot(path=str(ARTIFACTS / "tuning-finished.png"))

    # Saved, the notebook keeps the picture of the ended run in the dashboard cell's outputs ...
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while True:
        saved = json.loads(lab.api("/api/contents/tuning.ipynb?content=1"))["content"]
        outputs = saved["cells"][1]["outputs"]
        pictures = [o["data"] for o in outputs if "image/png" in o.get("data", {})]
        if pictures and "exit code: exhausted" in "".join(pictures[-1]["text/html"]):
            break
        assert time.monotonic() < deadline, f"the saved notebook has no picture of the ended run: {outputs}"
        time.sleep(0.5)
    # ... which shows when it is opened again after its kernel has gone, without the widgets' state.
    for session in json.loads(lab.api("/api/sessions")):
        lab.api(f"/api/kernels/{session['kernel']['id']}", method="DELETE")
    page.reload()
    expect(page.get_by_text("Error displaying widget").first).to_be_visible(timeout=90_000)
    picture = page.locator(".byop-snapshot").first
    expect(picture).to_be_visible()
    expect(picture).to_contain_text("exit code: exhausted")
    expect(picture.locator("img.byop-snapshot-plot")).to_be_visible()
    picture.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "tuning-reopened.png"))
