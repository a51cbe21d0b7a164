"""Nothing in byop_nb imports the user's main script again; where Python itself would (spawn and
forkserver pools), a script without `if __name__ == "__main__":` fails at once with a message saying so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

UNGUARDED = """
import os
from byop_nb.scheduling import Scheduler, Task

print("top level of the script ran", flush=True)


def identity(x):
    return x


scheduler = {make}
task = Task(identity, scheduler, memory_limit=(2, "GB"))
plain = Task(identity, scheduler, name="plain")
scheduler.on_start(lambda: (task(1), plain(2)))
print("exit", scheduler.run(timeout=60).name, flush=True)
print("rows", sorted(task.df().status.tolist() + plain.df().status.tolist()), flush=True)
"""


@pytest.mark.parametrize(
    "make",
    ["Scheduler.with_processes(1)", "Scheduler.with_processes(1, start_method='fork')", "Scheduler.with_threads(1)"],
)
def test_a_script_without_a_main_guard_runs_once_with_a_memory_limit(
    make: str, tmp_path: Path, no_orphans: None
) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(UNGUARDED.format(make=make))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "top level of the script ran",
        "exit EXHAUSTED",
        "rows ['returned', 'returned']",
    ], done.stdout + done.stderr[-3000:]


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_script_without_a_main_guard_on_a_spawn_pool_fails_saying_so(
    start_method: str, tmp_path: Path, no_orphans: None
) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(UNGUARDED.format(make=f"Scheduler.with_processes(1, start_method={start_method!r})"))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["top level of the script ran"], done.stdout
    assert 'if __name__ == "__main__":' in done.stderr, done.stderr[-3000:]
    assert f"start_method={start_method!r}" in done.stderr or start_method in done.stderr, done.stderr[-3000:]
    assert done.stderr.count("Traceback") == 1, done.stderr[-3000:]  # the script's own error, no worker's


GUARDED_CALL_FROM_FUNCTION = """
import sys
from byop_nb.scheduling import Scheduler, Task


def identity(x):
    return x


def main():
    scheduler = Scheduler.with_processes(1, start_method=sys.argv[1])
    task = Task(identity, scheduler)
    scheduler.on_start(lambda: task(1))
    print("exit", scheduler.run(timeout=60).name)


if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_guarded_script_runs_on_a_spawn_pool(start_method: str, tmp_path: Path, no_orphans: None) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(GUARDED_CALL_FROM_FUNCTION)
    done = subprocess.run(
        [sys.executable, str(script), start_method], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["exit EXHAUSTED"]
