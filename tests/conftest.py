"""Shared fixtures: every test that starts workers must leave no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

# -- the default start method ------------------------------------------------------------

START_METHOD_VARIABLE = "BYOP_NB_TEST_START_METHOD"
"""Run the suite with this multiprocessing start method as the default ("fork", "spawn" or "forkserver"):
set in this process when the session starts, and in the scripts the tests run (`python_command`)."""


def _start_method_wanted() -> str | None:
    import multiprocessing

    wanted = os.environ.get(START_METHOD_VARIABLE) or None
    accepted = multiprocessing.get_all_start_methods()
    if wanted is not None and wanted not in accepted:
        raise pytest.UsageError(f"{START_METHOD_VARIABLE}={wanted!r} is not a start method here; accepted: {accepted}")
    return wanted


def pytest_configure(config: pytest.Config) -> None:
    import multiprocessing

    wanted = _start_method_wanted()
    if wanted is not None:
        multiprocessing.set_start_method(wanted, force=True)


def pytest_report_header(config: pytest.Config) -> str:
    import multiprocessing

    return f"multiprocessing start method: {multiprocessing.get_start_method()} (set with {START_METHOD_VARIABLE})"


_LAUNCHER = (
    "import multiprocessing, os, runpy, sys; multiprocessing.set_start_method(sys.argv[1], force=True); "
    "path = sys.argv[2]; sys.argv[:] = sys.argv[2:]; sys.path[0] = os.path.dirname(os.path.abspath(path)); "
    "runpy.run_path(path, run_name='__main__')"
)


def python_command(script: Path | str, *args: str) -> list[str]:
    """The command that runs `script` as `python script args...`, with the suite's default start method.

    Python has no setting for the default start method outside the program, so with
    BYOP_NB_TEST_START_METHOD set the script runs through a two-line launcher that sets it
    and then runs the file as `__main__` (`runpy.run_path`, which multiprocessing treats as a
    script: a spawn/forkserver child would import it again, as for `python script.py`).
    """
    wanted = _start_method_wanted()
    if wanted is None:
        return [sys.executable, str(script), *args]
    return [sys.executable, "-c", _LAUNCHER, wanted, str(script), *args]


# -- processes left behind ------------------------------------------------------------------


def helper_of_the_interpreter(process: psutil.Process) -> bool:
    """Whether a child process is one of multiprocessing's per-interpreter helpers.

    The resource tracker, and a forkserver that forks pool workers (multiprocessing's own, or
    byop_nb's pools' server, see `scheduling.workers._mainless`): each is one per Python process,
    started by the first spawn/forkserver use and ending with the process by design, not a
    worker anything left behind. A *warm server* (the forkserver of limited calls, which
    preloads `byop_nb.scheduling.workers._warm`) is not: a run ends it. What a forkserver forked (a
    worker, with the server's command line) is always counted.
    """
    command = " ".join(process.cmdline())
    if "multiprocessing.resource_tracker" in command:
        return True
    if "from multiprocessing.forkserver import main" not in command or "byop_nb.scheduling.workers._warm" in command:
        return False
    parent = process.parent()
    return parent is not None and parent.cmdline() != process.cmdline()  # started by a client, not forked by a server


def live_children() -> set[int]:
    """PIDs of this process's descendants that are alive (zombies and the interpreter's helpers excluded)."""
    alive = set()
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if helper_of_the_interpreter(child):
                continue
            alive.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def assert_no_new_children(before: set[int], *, grace: float = 5.0) -> None:
    """Fail when a descendant started after `before` is still alive after `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        extra = live_children() - before
        if not extra:
            return
        if time.monotonic() > deadline:
            details = []
            for pid in extra:
                try:
                    details.append(" ".join(psutil.Process(pid).cmdline())[:200])
                except psutil.NoSuchProcess:
                    pass
            raise AssertionError(f"orphan processes left behind: {sorted(extra)} {details}")
        time.sleep(0.05)


@pytest.fixture
def no_orphans() -> Iterator[None]:
    """Assert that the test leaves no child process alive."""
    before = live_children()
    yield
    assert_no_new_children(before)


def run_script(directory: Path, source: str, *, timeout: float = 240) -> str:
    """Run `source` as a script file's `__main__` in a new Python; return its stdout, failing on a non-zero exit."""
    script = directory / "script.py"
    script.write_text(source)
    result = subprocess.run(python_command(script), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# -- Slurm ------------------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@pytest.fixture(scope="session")
def slurm_daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A throwaway single-node Slurm cluster for the whole session: a `slurm_cluster.SlurmDaemons`.

    munged, slurmctld and slurmd run from a config in a temporary folder, on loopback, with
    their own munge key and ports, until the session ends, when each is ended by its pid.
    Slurm's commands reach it with `daemons.environment()` (SLURM_CONF); the `slurm` fixture
    sets that for one test.

    Without the Slurm or munge programs the tests that use it skip; in CI (CI=true) they
    fail instead: `.ci/run` installs Slurm, so a skip there would hide a break.
    """
    from slurm_cluster import SlurmDaemons, missing_binaries

    missing = missing_binaries()
    if missing:
        problem = f"the Slurm test cluster needs {', '.join(missing)} (Debian: apt-get install slurm-wlm munge)"
        if _in_ci():
            pytest.fail(f"{problem}; CI=true, where the slurm tests must run, not skip", pytrace=False)
        pytest.skip(problem)
    with SlurmDaemons(tmp_path_factory.mktemp("slurm")) as daemons:
        yield daemons


@pytest.fixture
def slurm(slurm_daemons: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's Slurm cluster (`slurm_daemons`), with SLURM_CONF pointing at it during the test,
    so that sbatch, squeue and scancel (dask-jobqueue's too) and a kernel started now reach it."""
    for name, value in slurm_daemons.environment().items():
        monkeypatch.setenv(name, value)
    return slurm_daemons
