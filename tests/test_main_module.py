"""Nothing in byop_nb imports the user's main script again, under every start method: a script without
`if __name__ == "__main__":` runs its experiment once. Where Python itself would import it again (a
pool whose context byop_nb cannot replace), such a script fails at once with a message saying why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import python_command

from byop_nb.scheduling import ExitCode, Scheduler, Task

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
    done = subprocess.run(python_command(script), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "top level of the script ran",
        "exit EXHAUSTED",
        "rows ['returned', 'returned']",
    ], done.stdout + done.stderr[-3000:]


UNGUARDED_WITH_MAIN_VALUES = """
import os
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

from byop_nb.scheduling import Scheduler, Task

print("top level of the script ran", flush=True)


class Point:
    def __init__(self, x):
        self.x = x


def set_offset(offset):
    os.environ["OFFSET"] = str(offset)


def shift(point):
    return Point(point.x + int(os.environ["OFFSET"]))


context = multiprocessing.get_context({start_method!r})
pool = ProcessPoolExecutor(2, mp_context=context, initializer=set_offset, initargs=(10,))
scheduler = Scheduler(pool)
plain = Task(shift, scheduler, name="plain")
limited = Task(shift, scheduler, name="limited", wall_time_limit=60)
got = []
plain.on_returned(lambda point: got.append(point.x))
limited.on_returned(lambda point: got.append(point.x))
scheduler.on_start(lambda: (plain(Point(1)), limited(Point(2))))
print("exit", scheduler.run(timeout=60).name, sorted(got), flush=True)
scheduler.on_start(lambda: plain(Point(3)))  # a second run (both starts), on a fresh pool of the same settings
print("again", scheduler.run(timeout=60).name, sorted(got), flush=True)
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_script_without_a_main_guard_runs_once_on_a_spawn_or_forkserver_pool(
    start_method: str, tmp_path: Path, no_orphans: None
) -> None:
    """The experiment runs once, in the main process; the function, its pool's initializer and the
    values of classes defined in the script travel by value, also on a second run's fresh pool."""
    for source in (
        UNGUARDED.format(make=f"Scheduler.with_processes(2, start_method={start_method!r})"),
        UNGUARDED_WITH_MAIN_VALUES.format(start_method=start_method),
    ):
        script = tmp_path / "experiment.py"
        script.write_text(source)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("top level of the script ran") == 1, done.stdout + done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.splitlines()[1:] == ["exit EXHAUSTED [11, 12]", "again EXHAUSTED [11, 11, 12, 12, 13]"]


UNGUARDED_OWN_CONTEXT = """
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from byop_nb.scheduling import Scheduler, Task

print("top level of the script ran", flush=True)


class MyContext(type(multiprocessing.get_context({start_method!r}))):
    pass


def identity(x):
    return x


scheduler = Scheduler(ProcessPoolExecutor(1, mp_context=MyContext()))
task = Task(identity, scheduler)
scheduler.on_start(lambda: task(1))
print("exit", scheduler.run(timeout=60).name, flush=True)
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_pool_whose_workers_would_import_the_script_again_fails_saying_why(
    start_method: str, tmp_path: Path, no_orphans: None
) -> None:
    """A context of the user's own kind is left alone: its workers import the main script, so an
    unguarded script is refused at once, in the main process, with the reason and the ways out."""
    script = tmp_path / "experiment.py"
    script.write_text(UNGUARDED_OWN_CONTEXT.format(start_method=start_method))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["top level of the script ran"], done.stdout
    assert 'if __name__ == "__main__":' in done.stderr, done.stderr[-3000:]
    assert "MyContext" in done.stderr and "import the main script again" in done.stderr, done.stderr[-3000:]
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


def test_the_orphan_check_leaves_out_forkservers_but_not_their_children() -> None:
    """A forkserver (multiprocessing's own, or the one byop_nb's pools fork from) is a per-interpreter
    helper like the resource tracker, not an orphan; a process it forked and nobody ended still is."""
    import multiprocessing
    import time

    from conftest import assert_no_new_children, live_children

    before = live_children()
    scheduler = Scheduler.with_processes(1, start_method="forkserver")
    task = Task(time.sleep, scheduler)
    scheduler.on_start(lambda: task(0))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    leftover = multiprocessing.get_context("forkserver").Process(target=time.sleep, args=(60,))
    leftover.start()
    try:
        with pytest.raises(AssertionError, match=rf"orphan processes left behind: \[{leftover.pid}\]"):
            assert_no_new_children(before, grace=0.5)
    finally:
        leftover.kill()
        leftover.join()
    assert_no_new_children(before)
