"""Resource-limited calls: byop_nb against a bare process pool running `pynisher.limit` per call (and amltk).

Each variant runs N no-op calls under one limit on 2 process workers, 4 in flight
(a new call as each ends), in one process:

* **bare**: a `ProcessPoolExecutor(2)` whose worker calls
  `pynisher.limit(noop, memory=...)()` for each call, driven by asyncio the way
  `bench_dispatch.py` drives its bare pool;
* **byop_nb**: `Scheduler.with_processes(2)` and a `Task(noop, ..., memory_limit=...)`
  (or `wall_time_limit` / `cpu_time_limit`), resubmitted from `on_done`;
* **amltk** (when it is importable): amltk's own Scheduler with its pynisher plugin.

Rounds alternate the order of the variants, so machine noise hits all alike; the
figures that count are the medians of the per-round ratios byop_nb/bare and
byop_nb/amltk. Target: >= 0.9x bare and >= 1.0x amltk, for each limit.

    python benchmarks/bench_limits.py [--n 200] [--rounds 7] [--limit memory|wall|cpu|all]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from byop_nb.scheduling import Scheduler, Task  # noqa: E402

WORKERS = 2
IN_FLIGHT = 4
LIMITS = {
    "memory": {"memory_limit": (1, "GB")},
    "wall": {"wall_time_limit": 30},
    "cpu": {"cpu_time_limit": 30},
}
PYNISHER = {"memory": {"memory": (1, "GB")}, "wall": {"wall_time": 30}, "cpu": {"cpu_time": 30}}


def noop() -> None:
    return None


def limited_noop(limit: str) -> None:
    import pynisher

    return pynisher.limit(noop, **PYNISHER[limit])()


def bare(n: int, limit: str) -> float:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(WORKERS) as pool:
            for _ in range(WORKERS):  # start the workers before the clock
                pool.submit(noop).result()
            done = 0
            submitted = 0
            finished = asyncio.Event()

            def submit() -> None:
                nonlocal submitted
                submitted += 1
                pool.submit(limited_noop, limit).add_done_callback(lambda f: loop.call_soon_threadsafe(ended, f))

            def ended(future: object) -> None:
                nonlocal done
                done += 1
                if submitted < n:
                    submit()
                elif done == n:
                    finished.set()

            start = time.perf_counter()
            for _ in range(IN_FLIGHT):
                submit()
            await finished.wait()
            return n / (time.perf_counter() - start)

    return asyncio.run(main())


def byop(n: int, limit: str) -> float:
    scheduler = Scheduler.with_processes(WORKERS)
    task = Task(noop, scheduler, **LIMITS[limit])  # type: ignore[arg-type]
    marks: dict[str, float] = {}

    @scheduler.on_start
    def launch() -> None:
        marks["start"] = time.perf_counter()
        for _ in range(IN_FLIGHT):
            task()

    @task.on_done
    def again() -> None:
        if task.n_called < n:
            task()

    @scheduler.on_finishing
    def end() -> None:
        marks["end"] = time.perf_counter()

    scheduler.run()
    assert len(task.df()) == n and set(task.df()["status"]) == {"returned"}, task.df()["status"].value_counts()
    return n / (marks["end"] - marks["start"])


def amltk_rate(n: int, limit: str) -> float | None:
    try:
        from amltk.scheduling import Scheduler as AScheduler
        from amltk.scheduling.plugins.pynisher import PynisherPlugin
    except ImportError:
        return None
    scheduler = AScheduler.with_processes(WORKERS)
    option = {"memory": "memory_limit", "wall": "walltime_limit", "cpu": "cputime_limit"}[limit]
    plugin = PynisherPlugin(**{option: {"memory": (1, "GB"), "wall": 30, "cpu": 30}[limit]})
    task = scheduler.task(noop, plugins=plugin)
    count = {"n": 0}
    marks: dict[str, float] = {}

    @scheduler.on_start(repeat=IN_FLIGHT)
    def launch() -> None:
        marks.setdefault("start", time.perf_counter())
        count["n"] += 1
        task.submit()

    @task.on_result
    def again(_future: object, _result: object) -> None:
        if count["n"] < n:
            count["n"] += 1
            task.submit()

    @scheduler.on_finishing
    def end() -> None:
        marks["end"] = time.perf_counter()

    scheduler.run(display=False)
    return n / (marks["end"] - marks["start"])


def compare(n: int, rounds: int, limit: str) -> None:
    bare(20, limit), byop(20, limit), amltk_rate(20, limit)  # warm imports and caches
    to_bare, to_amltk = [], []
    for i in range(rounds):
        order = [bare, byop, amltk_rate] if i % 2 == 0 else [amltk_rate, byop, bare]
        rates = {f.__name__: f(n, limit) for f in order}
        ours, theirs, base = rates["byop"], rates["amltk_rate"], rates["bare"]
        to_bare.append(ours / base)
        line = f"[{limit}] round {i + 1}: bare {base:6.1f}/s  byop_nb {ours:6.1f}/s  ratio {ours / base:.3f}"
        if theirs is not None:
            to_amltk.append(ours / theirs)
            line += f"  amltk {theirs:6.1f}/s  ratio {ours / theirs:.3f}"
        print(line, flush=True)
    print(f"[{limit}] median ratio byop_nb/bare: {statistics.median(to_bare):.3f}  (target >= 0.9)")
    if to_amltk:
        print(f"[{limit}] median ratio byop_nb/amltk: {statistics.median(to_amltk):.3f}  (target >= 1.0)")
    else:
        print(f"[{limit}] amltk is not importable here: no amltk figure")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--limit", choices=[*LIMITS, "all"], default="all")
    args = parser.parse_args()
    for limit in LIMITS if args.limit == "all" else [args.limit]:
        compare(args.n, args.rounds, limit)
