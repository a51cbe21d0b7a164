"""Cost per trial call: a `Trial.Task` of a no-op trial against a plain `Task` of a no-op function.

Measures calls per second and the main process's CPU time per call on
`Scheduler.with_processes(2)` and `Scheduler.with_threads(2)`, 8 in flight
(`task.map`), for both tasks in the same round, and prints the trial's figures
as ratios against the plain task's. What the ratio shows is a Trial.Task's own
bookkeeping per call: its trial and report, its comm's hub registration (a
Trial.Task is a CommTask; a trial that never uses `trial.comm` never
connects), its steps and its history row with the trial's columns.
With threads the CPU time includes the worker threads' (one process).

    python benchmarks/bench_trial_calls.py [--n 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from byop_nb.optimization import Trial
from byop_nb.scheduling import Scheduler, Task


def noop_trial(trial: Trial) -> Trial.Report:
    return trial.success(loss=0.0)


def noop(x: int) -> float:
    return 0.0


def one_round(kind: str, n: int, trials: bool) -> tuple[float, float]:
    """(calls per second, main-process CPU µs per call) of one run of n calls."""
    scheduler = Scheduler.with_processes(2) if kind == "processes" else Scheduler.with_threads(2)
    task: Any
    if trials:
        task = Trial.Task(noop_trial, scheduler)
        items: list[Any] = [Trial(name=f"t-{i}", config={"x": i}) for i in range(n)]
    else:
        task = Task(noop, scheduler)
        items = list(range(n))

    @scheduler.on_start
    def launch() -> None:
        task.map(items, in_flight=8)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    scheduler.run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert len(task.history) == n, len(task.history)
    return n / wall, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for kind in ("processes", "threads"):
        rate_ratios, cpu_ratios = [], []
        for r in range(args.rounds):
            plain_rate, plain_cpu = one_round(kind, args.n, trials=False)  # the baseline, in the same round
            rate, cpu = one_round(kind, args.n, trials=True)
            rate_ratios.append(rate / plain_rate)
            cpu_ratios.append(cpu / plain_cpu)
            print(
                f"{kind:9} round {r + 1}: Trial.Task {rate:7.0f} calls/s, {cpu:5.1f} µs CPU per call; "
                f"Task {plain_rate:7.0f} calls/s, {plain_cpu:5.1f} µs; "
                f"ratio rate {rate / plain_rate:4.2f}, CPU {cpu / plain_cpu:4.2f}"
            )
        print(
            f"{kind:9} median ratio, Trial.Task / Task: rate {statistics.median(rate_ratios):4.2f}, "
            f"main-process CPU per call {statistics.median(cpu_ratios):4.2f} (n={args.n})"
        )


if __name__ == "__main__":
    main()
