"""Cost per trial call: a `Trial.Task` of a no-op trial function, `task.map` over N trials.

Measures trials per second and the main process's CPU time per trial on
`Scheduler.with_processes(2)` and `Scheduler.with_threads(2)`, 8 in flight.
It shows what a Trial.Task's bookkeeping costs per call (its comm's hub
registration included since Trial.Task became a CommTask; a trial that
never uses `trial.comm` never connects).

    python benchmarks/bench_trial_calls.py [--n 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from byop_nb.optimization import Trial
from byop_nb.scheduling import Scheduler


def noop(trial: Trial) -> Trial.Report:
    return trial.success(loss=0.0)


def one_round(kind: str, n: int) -> tuple[float, float]:
    scheduler = Scheduler.with_processes(2) if kind == "processes" else Scheduler.with_threads(2)
    task = Trial.Task(noop, scheduler)
    trials = [Trial(name=f"t-{i}", config={"x": i}) for i in range(n)]

    @scheduler.on_start
    def launch() -> None:
        task.map(trials, in_flight=8)

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
        rates, cpus = [], []
        for r in range(args.rounds):
            rate, cpu = one_round(kind, args.n)
            rates.append(rate)
            cpus.append(cpu)
            print(f"{kind:9} round {r + 1}: {rate:8.0f} trials/s, main-process CPU {cpu:6.1f} µs per trial")
        print(
            f"{kind:9} median: {statistics.median(rates):8.0f} trials/s, "
            f"main-process CPU {statistics.median(cpus):6.1f} µs per trial (n={args.n})"
        )


if __name__ == "__main__":
    main()
