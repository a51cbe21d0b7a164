"""Resource limits: parsing and validation at Task creation, and memory/CPU/wall-time limits enforced by pynisher."""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path

import pynisher
import pytest
from conftest import run_script

from byop_nb.scheduling import ExitCode, Scheduler, Task
from byop_nb.scheduling.workers._limits import limit_hit, parse_limits
from byop_nb.scheduling.workers._worker import Limits


def hog(n_bytes: int) -> int:
    data = bytearray(n_bytes)
    return len(data)


def spin(cpu_seconds: float) -> str:
    start = time.process_time()
    while time.process_time() - start < cpu_seconds:
        pass
    return "spun"


def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "rested"


# -- parsing --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"memory_limit": 1024}, Limits(memory=1024)),
        ({"memory_limit": (2, "GB")}, Limits(memory=2 * 2**30)),
        ({"memory_limit": (2, "gb")}, Limits(memory=2 * 2**30)),
        ({"memory_limit": (300, "MB")}, Limits(memory=300 * 2**20)),
        ({"memory_limit": (1.5, "KB")}, Limits(memory=1536)),
        ({"memory_limit": (7, "B")}, Limits(memory=7)),
        ({"cpu_time_limit": 3}, Limits(cpu_time=3)),
        ({"cpu_time_limit": (60, "s")}, Limits(cpu_time=60)),
        ({"cpu_time_limit": (2, "m")}, Limits(cpu_time=120)),
        ({"wall_time_limit": 0.5}, Limits(wall_time=0.5)),
        ({"wall_time_limit": (5, "m")}, Limits(wall_time=300.0)),
        ({"wall_time_limit": (1, "h")}, Limits(wall_time=3600.0)),
        ({}, None),
    ],
)
def test_limits_are_converted_to_bytes_and_seconds(kwargs: dict, expected: Limits | None) -> None:
    full = {"memory_limit": None, "cpu_time_limit": None, "wall_time_limit": None, **kwargs}
    assert parse_limits(**full) == expected


@pytest.mark.parametrize(
    ("kwargs", "error", "shown"),
    [
        ({"wall_time_limit": (1, "parsec")}, ValueError, "'parsec'"),
        ({"memory_limit": (1, "parsec")}, ValueError, "'parsec'"),
        ({"cpu_time_limit": (1, "fortnight")}, ValueError, "'fortnight'"),
        ({"memory_limit": (1, "s")}, ValueError, "'s'"),
        ({"wall_time_limit": (1, "MB")}, ValueError, "'MB'"),
        ({"memory_limit": 0}, ValueError, "memory_limit=0"),
        ({"memory_limit": -5}, ValueError, "memory_limit=-5"),
        ({"memory_limit": (-1, "GB")}, ValueError, r"memory_limit=\(-1, 'GB'\)"),
        ({"wall_time_limit": 0}, ValueError, "wall_time_limit=0"),
        ({"wall_time_limit": -0.5}, ValueError, "wall_time_limit=-0.5"),
        ({"wall_time_limit": (0, "s")}, ValueError, r"wall_time_limit=\(0, 's'\)"),
        ({"wall_time_limit": float("inf")}, ValueError, "wall_time_limit=inf"),
        ({"wall_time_limit": float("nan")}, ValueError, "wall_time_limit=nan"),
        ({"cpu_time_limit": 0}, ValueError, "cpu_time_limit=0"),
        ({"cpu_time_limit": 0.5}, ValueError, "cpu_time_limit=0.5"),
        ({"cpu_time_limit": (1, 2, 3)}, ValueError, r"cpu_time_limit=\(1, 2, 3\)"),
        ({"wall_time_limit": "10"}, TypeError, "wall_time_limit='10'"),
        ({"memory_limit": True}, TypeError, "memory_limit=True"),
        ({"memory_limit": ("1", "GB")}, TypeError, r"memory_limit=\('1', 'GB'\)"),
    ],
)
def test_bad_limits_fail_when_the_task_is_created_naming_the_value(kwargs: dict, error: type, shown: str) -> None:
    scheduler = Scheduler.with_threads(1)
    with pytest.raises(error, match=shown):
        Task(nap, scheduler, **kwargs)
    assert scheduler.tasks == {}


def test_unknown_unit_message_lists_the_accepted_units() -> None:
    scheduler = Scheduler.with_threads(1)
    with pytest.raises(ValueError, match="'B', 'KB', 'MB', 'GB'"):
        Task(nap, scheduler, memory_limit=(1, "parsec"))
    with pytest.raises(ValueError, match="'s', 'm', 'h'"):
        Task(nap, scheduler, wall_time_limit=(1, "parsec"))


def test_limit_hit_names_the_pynisher_limit() -> None:
    assert limit_hit(pynisher.MemoryLimitException("m")) == "memory"
    assert limit_hit(pynisher.CpuTimeoutException("c")) == "cpu_time"
    assert limit_hit(pynisher.WallTimeoutException("w")) == "wall_time"
    assert limit_hit(MemoryError()) is None
    assert limit_hit(TimeoutError()) is None


# -- enforcement ------------------------------------------------------------------
def record_events(task: Task, log: list[tuple[str, str, tuple]]) -> None:
    names = ["done", "returned", "exception", "timeout", "memory_limit_reached"]
    names += ["cpu_time_limit_reached", "wall_time_limit_reached"]
    for name in names:
        getattr(task, f"on_{name}")(lambda *args, name=name: log.append((task.name, name, args)))


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_memory_cpu_and_wall_time_limits_emit_done_exception_the_limit_event_and_timeout(
    kind: str, no_orphans: None
) -> None:
    scheduler = Scheduler.with_processes(2) if kind == "processes" else Scheduler.with_threads(3)
    memory = Task(hog, scheduler, memory_limit=(300, "MB"))
    cpu = Task(spin, scheduler, cpu_time_limit=1)
    wall = Task(nap, scheduler, wall_time_limit=(0.5, "s"))
    log: list[tuple[str, str, tuple]] = []
    for task in (memory, cpu, wall):
        record_events(task, log)
    futures: dict[str, Future] = {}

    @scheduler.on_start
    def launch() -> None:
        futures["memory"] = memory(2**30)
        futures["cpu"] = cpu(30)
        futures["wall"] = wall(30)

    start = time.monotonic()
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert time.monotonic() - start < 20

    def events_of(name: str) -> list[tuple[str, tuple]]:
        return [(event, args) for task_name, event, args in log if task_name == name]

    memory_events = events_of("hog")
    assert [e for e, _ in memory_events] == ["done", "exception", "memory_limit_reached"]
    (future,), (exception,), (future2, exception2) = (args for _, args in memory_events)
    assert future is futures["memory"] is future2
    assert isinstance(exception, pynisher.MemoryLimitException) and exception2 is exception

    cpu_events = events_of("spin")
    assert [e for e, _ in cpu_events] == ["done", "exception", "cpu_time_limit_reached", "timeout"]
    assert cpu_events[2][1][0] is futures["cpu"]
    assert isinstance(cpu_events[1][1][0], pynisher.CpuTimeoutException)
    assert cpu_events[3][1] == cpu_events[2][1]

    wall_events = events_of("nap")
    assert [e for e, _ in wall_events] == ["done", "exception", "wall_time_limit_reached", "timeout"]
    assert wall_events[2][1][0] is futures["wall"]
    assert isinstance(wall_events[1][1][0], pynisher.WallTimeoutException)

    assert scheduler.counts == {
        Scheduler.STARTED: 1,
        Scheduler.FINISHING: 1,
        Scheduler.FINISHED: 1,
        (Task.SUBMITTED, "hog"): 1,
        (Task.DONE, "hog"): 1,
        (Task.EXCEPTION, "hog"): 1,
        (Task.MEMORY_LIMIT_REACHED, "hog"): 1,
        (Task.SUBMITTED, "spin"): 1,
        (Task.DONE, "spin"): 1,
        (Task.EXCEPTION, "spin"): 1,
        (Task.CPU_TIME_LIMIT_REACHED, "spin"): 1,
        (Task.TIMEOUT, "spin"): 1,
        (Task.SUBMITTED, "nap"): 1,
        (Task.DONE, "nap"): 1,
        (Task.EXCEPTION, "nap"): 1,
        (Task.WALL_TIME_LIMIT_REACHED, "nap"): 1,
        (Task.TIMEOUT, "nap"): 1,
    }
    assert [r["status"] for r in memory.history.rows] == ["memory_limit"]
    assert [r["status"] for r in cpu.history.rows] == ["cpu_time_limit"]
    assert [r["status"] for r in wall.history.rows] == ["wall_time_limit"]


def test_calls_within_their_limits_return_normally(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    task = Task(hog, scheduler, memory_limit=(1, "GB"), cpu_time_limit=(1, "m"), wall_time_limit=(1, "m"))
    results: list[int] = []
    task.on_returned(results.append)
    task.on_exception(lambda e: pytest.fail(f"unexpected {e!r}"))
    scheduler.on_start(lambda: [task(1000 * i) for i in range(1, 4)])
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert sorted(results) == [1000, 2000, 3000]
    assert task.counts == {Task.SUBMITTED: 3, Task.DONE: 3, Task.RETURNED: 3}


def test_the_guides_alias_spellings_subscribe_to_the_limit_events(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    cpu = Task(spin, scheduler, cpu_time_limit=(1, "s"))
    wall = Task(nap, scheduler, wall_time_limit=0.3)
    seen: list[tuple[str, Future, BaseException]] = []

    @cpu.on_cpu_limit_reached
    def print_cpu(future: Future, exception: BaseException) -> None:
        seen.append(("cpu", future, exception))

    @wall.on_walltime_limit_reached
    def print_wall(future: Future, exception: BaseException) -> None:
        seen.append(("wall", future, exception))

    scheduler.on_start(lambda: (cpu(30), wall(30)))
    scheduler.run(timeout=60)
    assert sorted(kind for kind, _, _ in seen) == ["cpu", "wall"]
    for kind, future, exception in seen:
        assert future.exception() is exception
        expected = pynisher.CpuTimeoutException if kind == "cpu" else pynisher.WallTimeoutException
        assert isinstance(exception, expected)


def test_many_wall_time_kills_in_a_row_never_hang(no_orphans: None) -> None:
    """Each kill races pynisher's own wait for its child; a reaped child made the call hang forever."""
    scheduler = Scheduler.with_processes(2)
    task = Task(nap, scheduler, wall_time_limit=0.1)
    ends: list[str] = []
    task.on_wall_time_limit_reached(lambda f, e: ends.append("wall"))

    @scheduler.on_start(repeat=2)
    @task.on_done
    def again() -> None:
        if task.n_called < 16:
            task(30)

    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert ends == ["wall"] * 16


def starts_a_sleeper(seconds: float) -> int:
    """Start a grandchild that would outlive the call, and return its pid."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"]).pid


@pytest.mark.parametrize(
    "limit",
    [{"memory_limit": (2, "GB")}, {"cpu_time_limit": 30}, {"wall_time_limit": 30}],
    ids=["memory", "cpu", "wall"],
)
def test_what_a_limited_call_started_ends_with_the_call(limit: dict, no_orphans: None) -> None:
    import psutil

    scheduler = Scheduler.with_processes(1)
    task = Task(starts_a_sleeper, scheduler, **limit)

    @scheduler.on_start
    def launch() -> None:
        task(60)

    scheduler.run(timeout=60)
    (pid,) = task.df()["result"].tolist()
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"the call's grandchild {pid} outlived the call"
        time.sleep(0.05)


def test_many_quick_memory_limited_calls_all_return(no_orphans: None) -> None:
    # A forkserver's child is reaped by the forkserver as soon as it ends: ending the call must
    # not fail when the child is gone already (it did, about once in 150 calls).
    scheduler = Scheduler.with_processes(2)
    task = Task(abs, scheduler, name="quick", memory_limit=(2, "GB"))

    @scheduler.on_start
    def launch() -> None:
        task.map(range(-200, 0), in_flight=4)

    scheduler.run(timeout=120)
    df = task.df()
    assert len(df) == 200 and set(df["status"]) == {"returned"}, df[df["status"] != "returned"]["traceback"].tolist()[
        :1
    ]


def test_a_limit_hit_is_expected_and_ends_the_run_without_a_failure_warning(
    no_orphans: None, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = Scheduler.with_processes(1)
    task = Task(nap, scheduler, wall_time_limit=0.3)
    scheduler.on_start(lambda: task(5))
    with caplog.at_level("WARNING", logger="byop_nb"):
        scheduler.run(timeout=60)
    assert task.df()["status"].tolist() == ["wall_time_limit"]
    assert not [r for r in caplog.records if r.name.startswith("byop_nb")]


def test_a_result_sent_as_the_child_exits_is_read_not_lost(tmp_path: Path) -> None:
    """pynisher polls the result pipe for 10 ms, then asks whether the child is alive: a child that
    sends its result and exits between the two was taken for one that ended without a result
    ("Function ended properly but no result was recieved"), and the call's result was lost. Seen
    under load in the full suite; here the gap is widened to 0.2 s so that the child always ends in it."""
    out = run_script(
        tmp_path,
        """
import time
from multiprocessing.process import BaseProcess

from byop_nb.scheduling.workers._worker import Limits, _call_limited

alive = BaseProcess.is_alive

def slowly_alive(self):
    time.sleep(0.2)  # the parent descheduled between pynisher's poll and this check
    return alive(self)

BaseProcess.is_alive = slowly_alive

def value(seconds):
    time.sleep(seconds)
    return 42

if __name__ == "__main__":
    for limits in (Limits(memory=2**30), Limits(cpu_time=60)):  # children of the warm server, each limit
        print([_call_limited(value, limits, (0.05,), {}) for _ in range(3)])
""",
        timeout=120,
    )
    assert out.split() == ["[42,", "42,", "42]"] * 2
