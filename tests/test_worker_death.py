"""A worker killed from outside (as the OOM killer does), and a script killed under its workers:
nothing hangs and no process outlives the one that started it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="kills processes with Linux semantics")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_leftovers(pids: list[int]) -> None:
    """The test's own cleanup, whatever happened: no CPU burner may survive a failing test."""
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


def read_pids(path: Path) -> list[int]:
    try:
        return [int(pid) for pid in path.read_text().split()]
    except FileNotFoundError:
        return []


# The worker is SIGKILLed while its call runs in pynisher's limited child: a busy loop with a
# wall-time limit (the watchdog dies with the worker), a sleep, and a memory-limited call (whose
# child comes from a forkserver).
KILL_DURING_LIMITED_CALL = r"""
import json, os, signal, sys, threading, time
import psutil
from byop_nb.scheduling import Scheduler, Task

def busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds

def sleepy(seconds):
    time.sleep(seconds)
    return seconds

def forks(seconds):
    # a child forked by the call itself holds the worker's pipes, and nobody asked it to die with the worker
    import multiprocessing
    multiprocessing.get_context("fork").Process(target=time.sleep, args=(seconds,)).start()
    return busy(seconds)

if __name__ == "__main__":
    kind, pids_file = sys.argv[1], sys.argv[2]
    scheduler = Scheduler.with_processes(1)
    limits = {"memory_limit": (512, "MB")} if kind == "memory" else {} if kind == "forks" else {"wall_time_limit": 5}
    function = {"sleep": sleepy, "forks": forks}.get(kind, busy)
    task = Task(function, scheduler, name="limited", **limits)
    killed = {}

    def kill_the_worker():
        (worker,) = [psutil.Process(p.pid) for p in scheduler.executor._processes.values()]
        while True:  # until the limited child (a grandchild of this process) runs the call
            family = worker.children(recursive=True)
            # fork: the worker's child; memory: a child of the worker's forkserver
            if any(p.ppid() != worker.pid for p in family) if kind == "memory" else family:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        with open(pids_file, "w") as f:
            f.write(" ".join(str(p.pid) for p in [worker, *family]))
        killed["at"] = time.monotonic()
        worker.kill()

    task.on_submitted(lambda future: threading.Thread(target=kill_the_worker).start())
    scheduler.on_start(lambda: task(60))
    scheduler.run(timeout=20)
    row = task.history.rows[0]
    print(json.dumps({"noticed_after": time.monotonic() - killed["at"], "status": row["status"],
                      "message": row["exception_message"]}))
"""


@pytest.mark.parametrize("kind", ["busy", "sleep", "memory", "forks"])
def test_a_worker_killed_during_a_limited_call_is_noticed_at_once_and_leaves_no_process(
    kind: str, tmp_path: Path, no_orphans: None
) -> None:
    script = tmp_path / "kill_worker.py"
    script.write_text(KILL_DURING_LIMITED_CALL)
    pids_file = tmp_path / "pids"
    try:
        done = subprocess.run(
            [sys.executable, str(script), kind, str(pids_file)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"run(timeout=20) hung after the worker was killed during a {kind} call")
    finally:
        pids = read_pids(pids_file)
        time.sleep(0.5)
        left = [pid for pid in pids if alive(pid)]
        kill_leftovers(pids)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["noticed_after"] < 1.5, report
    assert report["status"] == "exception"
    assert "SIGKILL" in report["message"], report["message"]
    assert len(pids) >= 2
    assert left == [], f"processes of the killed worker outlived it: {left}"


# The script itself is killed while its workers run calls (plain and limited): they must end with it.
SCRIPT_UNDER_WORKERS = r"""
import os, sys, time
from byop_nb.scheduling import Scheduler, Task

def sleepy(seconds):
    time.sleep(seconds)
    return seconds

if __name__ == "__main__":
    start_method, pids_file = sys.argv[1], sys.argv[2]
    scheduler = Scheduler.with_processes(2, start_method=start_method)
    plain = Task(sleepy, scheduler, name="plain")
    limited = Task(sleepy, scheduler, name="limited", wall_time_limit=120)

    @limited.on_submitted
    def tell(future):
        time.sleep(1.0)  # the workers have started their calls
        with open(pids_file + ".tmp", "w") as f:
            f.write(" ".join(str(p.pid) for p in scheduler.executor._processes.values()))
        os.rename(pids_file + ".tmp", pids_file)

    scheduler.on_start(lambda: (plain(120), limited(120)))
    scheduler.run()
"""


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_workers_end_with_the_script_that_started_them(
    signal_name: str, start_method: str, tmp_path: Path, no_orphans: None
) -> None:
    script = tmp_path / "killed.py"
    script.write_text(SCRIPT_UNDER_WORKERS)
    pids_file = tmp_path / "pids"
    process = subprocess.Popen([sys.executable, str(script), start_method, str(pids_file)], stderr=subprocess.PIPE)
    family: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not pids_file.exists():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the script never started its calls"
            time.sleep(0.05)
        workers = read_pids(pids_file)
        family = [p.pid for pid in workers for p in [psutil.Process(pid), *psutil.Process(pid).children(True)]]
        assert len(family) >= 3  # two workers and the limited call's child at least
        os.kill(process.pid, getattr(signal, signal_name))
        process.wait(timeout=30)
        deadline = time.monotonic() + 3
        while any(alive(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [pid for pid in family if alive(pid)]
    finally:
        kill_leftovers(family)
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()  # type: ignore[union-attr]
    assert left == [], f"processes outlived the script killed by {signal_name}: {left}"
