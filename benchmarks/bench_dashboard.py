"""Dashboard overhead: the dispatch benchmark with and without a Dashboard attached.

Both variants run the "keep the workers busy" pattern through byop_nb:
`Scheduler.with_processes(2)`, a no-op task, a new call submitted from
`on_done` as each one ends, 4 calls in flight, N calls in all. The
"dashboard" variant attaches a default `Dashboard` (status, counters and the
live plot, redrawn as it would be in a notebook) before the run. Rounds
alternate between the two so machine noise hits both; the figure that counts
is the median of the per-round throughput ratios.

    python benchmarks/bench_dashboard.py [--n 10000] [--rounds 7]

Target: median ratio dashboard/plain >= 0.95 (attaching a dashboard costs
at most 5 % of dispatch throughput).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _tasks import noop  # noqa: E402

from byop_nb.notebook import Dashboard  # noqa: E402
from byop_nb.scheduling import Scheduler, Task  # noqa: E402

WORKERS = 2
IN_FLIGHT = 4


def dispatch(n: int, dashboard: bool) -> tuple[float, int]:
    """Calls per second through a Scheduler and Task, and how many times the plot was drawn."""
    scheduler = Scheduler.with_processes(WORKERS)
    task = Task(noop, scheduler)
    board = Dashboard(scheduler, task) if dashboard else None
    times: dict[str, float] = {}

    @scheduler.on_start(repeat=IN_FLIGHT)
    def first() -> None:
        times.setdefault("start", time.perf_counter())
        task()

    @task.on_done
    def again(_future) -> None:
        if task.n_called < n:
            task()

    @task.on_returned
    def last(_result) -> None:
        times["end"] = time.perf_counter()

    scheduler.run()
    assert len(task.history) == n, len(task.history)
    redraws = 0
    if board is not None:
        redraws = board.n_redraws
        assert "finished" in board.status_html.value and f"<td>{n}</td>" in board.counters_html.value
        board.close()
    return n / (times["end"] - times["start"]), redraws


def compare(n: int, rounds: int) -> float:
    dispatch(300, False), dispatch(300, True)  # warm imports, caches and matplotlib's fonts
    ratios = []
    for i in range(rounds):
        plain, _ = dispatch(n, False)
        with_board, redraws = dispatch(n, True)
        ratios.append(with_board / plain)
        print(
            f"round {i + 1}: plain {plain:8.0f}/s  dashboard {with_board:8.0f}/s  "
            f"ratio {with_board / plain:.3f}  ({redraws} redraws)",
            flush=True,
        )
    median = statistics.median(ratios)
    setting = f"n={n}, rounds={rounds}, {WORKERS} workers, {IN_FLIGHT} in flight"
    print(f"median ratio dashboard/plain: {median:.3f}  ({setting})")
    return median


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.n < 3000:
        parser.error("--n must be at least 3000 (shorter runs measure start-up, not dispatch)")
    compare(args.n, args.rounds)
