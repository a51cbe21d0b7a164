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


def live_children() -> set[int]:
    """PIDs of this process's descendants that are alive (zombies excluded).

    multiprocessing's resource tracker is left out: it is one helper per Python
    process, started by the first spawn/forkserver use and ending with the
    process by design, not a worker anything left behind.
    """
    alive = set()
    for child in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if "multiprocessing.resource_tracker" in " ".join(child.cmdline()):
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
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout)
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
