"""`task.map(inputs, in_flight=K)`: run a list of inputs, K at a time, as calls end."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from helpers import square

from byop_nb.notebook import Dashboard
from byop_nb.scheduling import ExitCode, Scheduler, Task, TaskMap


def add(x: int, y: int) -> int:
    return x + y


class Gauge:
    """Counts the calls running at once in a thread pool."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __call__(self, x: int) -> int:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.01)
        with self.lock:
            self.now -= 1
        return x


def test_map_calls_every_input_keeping_in_flight_calls_running(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(2)
    task = Task(square, scheduler)
    maps: list[TaskMap] = []
    most_running: list[int] = []
    task.on_submitted(lambda future: most_running.append(task.n_running))

    @scheduler.on_start
    def launch() -> None:
        maps.append(task.map(range(20), in_flight=3))

    assert scheduler.run() is ExitCode.EXHAUSTED
    (feed,) = maps
    assert sorted(task.df()["result"]) == sorted(x * x for x in range(20))
    assert (feed.total, feed.submitted, feed.ended, feed.done()) == (20, 20, 20, True)
    assert max(most_running) == 3


def test_map_takes_one_iterable_per_argument_and_reads_them_lazily() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(add, scheduler)
    read: list[int] = []

    def numbers() -> Any:
        for x in range(5):
            read.append(x)
            yield x

    @scheduler.on_start
    def launch() -> None:
        feed = task.map(numbers(), [10, 20, 30], in_flight=1)
        assert feed.total is None and read == [0]  # one call submitted, one input read

    scheduler.run()
    assert sorted(task.df()["result"]) == [10, 21, 32]  # pairwise, up to the shortest


def test_map_honours_the_concurrent_limit_and_stops_at_the_call_limit() -> None:
    gauge = Gauge()
    scheduler = Scheduler.with_threads(4)
    task = Task(gauge, scheduler, name="gauge", concurrent_limit=2, call_limit=7)
    refused: list[int] = []
    task.on_call_limit_reached(refused.append)

    @scheduler.on_start
    def launch() -> None:
        task.map(range(10), in_flight=4)

    scheduler.run()
    assert gauge.most <= 2 and len(task.df()) == 7 and refused == [7]


def test_map_stops_feeding_when_the_run_is_stopped() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task.map(range(1000), in_flight=2)

    task.on_returned(lambda result: scheduler.stop() if result >= 9 else None)
    assert scheduler.run() is ExitCode.STOPPED
    assert 4 <= len(task.df()) < 10


def test_map_outside_a_run_and_bad_arguments_are_refused() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    with pytest.raises(RuntimeError, match="submit from a callback"):
        task.map(range(3))
    with pytest.raises(ValueError, match="needs at least one iterable"):
        task.map()
    with pytest.raises(ValueError, match="in_flight= must be a positive int"):
        task.map(range(3), in_flight=0)


def test_the_dashboards_progress_counts_the_maps_calls_against_their_inputs() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(square, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task.map(range(12), in_flight=2)
        task.map([5, 6, 7])

    board = Dashboard(scheduler, task)
    scheduler.run()
    board.refresh()
    assert "15/15 calls [00:0" in board.progress_html.value and board.progress_bar.value == 1.0
    board.close()
