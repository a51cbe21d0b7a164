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
from collections.abc import Iterator
from pathlib import Path

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


def test_dashboard_in_jupyterlab_renders_updates_and_stops(lab: JupyterLab, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

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
                _drive(page, lab, expect)
            except BaseException:
                page.screenshot(path=str(ARTIFACTS / "browser-failure.png"), full_page=True)
                raise
        finally:
            context.close()


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
