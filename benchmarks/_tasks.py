"""What the benchmarks share: the no-op function (importable, so workers pickle it by
reference) and the dispatch pattern they all measure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from byop_nb.scheduling import Scheduler, Task

WORKERS = 2
IN_FLIGHT = 2 * WORKERS


def noop() -> None:
    return None


def keep_busy(
    n: int,
    *,
    setup: Callable[[Scheduler, Task[Any, Any]], None] | None = None,
    mark: Callable[[str], None] | None = None,
) -> tuple[float, Task[Any, Any]]:
    """The guide's "keep the workers busy" pattern through byop_nb; returns (calls per second, task).

    `Scheduler.with_processes(2)`, a no-op task, 2 x workers calls in flight, a
    new call submitted from `on_done` as each one ends, `n` calls in all. The
    clock runs from the first submission to the last result. `setup(scheduler,
    task)` runs before the run; `mark("start")` and `mark("end")` run at the
    clock's two ends, for measurements of one's own.
    """
    scheduler = Scheduler.with_processes(WORKERS)
    task = Task(noop, scheduler)
    if setup is not None:
        setup(scheduler, task)
    times: dict[str, float] = {}

    @scheduler.on_start(repeat=IN_FLIGHT)
    def first() -> None:
        if "start" not in times:
            times["start"] = time.perf_counter()
            if mark is not None:
                mark("start")
        task()

    @task.on_done
    def again(_future: Any) -> None:
        if task.n_called < n:
            task()

    @task.on_returned
    def last(_result: Any) -> None:
        times["end"] = time.perf_counter()
        if mark is not None and task.n_called == n and task.n_running == 0:
            mark("end")

    scheduler.run()
    assert task.n_called == n and task.n_running == 0, (task.n_called, task.n_running)
    return n / (times["end"] - times["start"]), task


def with_cpu(run: Callable[[int], float], n: int) -> tuple[float, float]:
    """`run(n)`'s calls per second, and this process's CPU time per call in µs (all its threads).

    The main process's threads (the loop's, a process pool's manager and feeder threads) share one
    GIL, so with short calls that time, not the workers, bounds throughput; it moves less with
    machine noise than the rate does.
    """
    cpu = time.process_time()
    rate = run(n)
    return rate, (time.process_time() - cpu) / n * 1e6


def median_ci(values: list[float], confidence: float = 0.95, resamples: int = 2000) -> tuple[float, float, float]:
    """The median of `values` and a bootstrap confidence interval for it: (median, low, high).

    On 2 shared cores one round's throughput ratio moves by ±20 % or more, so a median over tens
    of rounds is itself uncertain by several percent: the interval says whether a run tells a
    5 % target apart from noise at all. Resampling is seeded: the same values give the same interval.
    """
    import random

    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = medians[int(tail * resamples)]
    high = medians[min(resamples - 1, int((1 - tail) * resamples))]
    return statistics.median(values), low, high


def verdict(cost: tuple[float, float, float], target: float) -> str:
    """Whether a cost (median, low, high, in %) meets `target` % for sure, misses it for sure, or neither."""
    _median, low, high = cost
    if high <= target:
        return "ok"
    if low > target:
        return "MISSED"
    return "not resolved at this noise: run more rounds"
