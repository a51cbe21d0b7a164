"""A local Ray for the Ray tests, and the check that a test left no Ray task (nor any process) of ours running.

Ray keeps processes of its own while it runs: the GCS, the raylet, its agents, and a
pool of idle workers (`ray::IDLE`) that grows and shrinks as it likes (a cancelled
call's worker is ended and replaced). Those are not leftovers; a worker still running
a task (`ray::_run`), a limited call still alive under a worker's warm server, or any
other new process is. The Ray itself must leave nothing behind when it is shut down.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from conftest import assert_no_new_children, live_children

TESTS = Path(__file__).resolve().parent

RAY_CORE = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "ray::DashboardAgent")
RAY_CORE += ("ray::RuntimeEnvAgent",)


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def leftovers(before: set[int]) -> list[str]:
    """What of ours still runs beyond Ray's own processes: descendants of this process started after `before`."""
    found = []
    for pid in live_children() - before:
        try:
            process = psutil.Process(pid)
            parent = process.parent()
        except psutil.NoSuchProcess:
            continue
        line, parent_line = _cmdline(process), _cmdline(parent) if parent is not None else ""
        if not line:
            continue
        if line.startswith("ray::IDLE") or any(core in line for core in RAY_CORE):
            continue
        if "resource_tracker" in line:
            continue
        # A Ray worker's warm server (multiprocessing's forkserver) ends with its worker; its children are
        # limited calls, which must not outlive their call.
        if "forkserver" in line and "forkserver" not in parent_line and parent_line.startswith("ray::"):
            continue
        found.append(f"{pid}: {line[:120]}")
    return found


def cpus_free() -> bool:
    import ray

    return ray.available_resources().get("CPU", 0) >= ray.cluster_resources().get("CPU", 0)


def assert_nothing_of_ours_runs(before: set[int], *, grace: float = 20.0) -> None:
    """Fail when, after `grace` seconds, a Ray task of ours still holds a CPU or a process of ours still runs."""
    deadline = time.monotonic() + grace
    while True:
        left = leftovers(before)
        free = cpus_free()
        if not left and free:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left running after the test: processes {left}, all Ray CPUs free: {free}")
        time.sleep(0.1)


@contextlib.contextmanager
def local_ray(num_cpus: int = 2) -> Iterator[Any]:
    """One local Ray (no dashboard) whose workers import this folder's modules; nothing of it left afterwards."""
    import ray

    assert not ray.is_initialized(), "a Ray is running in this process already"
    before = live_children()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(TESTS.parent), old) if p)
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, address="local", log_to_driver=False)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    try:
        yield ray
    finally:
        ray.shutdown()
        assert_no_new_children(before, grace=15)


@contextlib.contextmanager
def workers_import_tests() -> Iterator[None]:
    """PYTHONPATH, for a Ray started within, includes this folder (the workers import its modules by name)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(TESTS.parent), old) if p)
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
