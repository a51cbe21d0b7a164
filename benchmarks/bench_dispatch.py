"""Dispatch throughput: byop_nb against a bare ProcessPoolExecutor driven by asyncio.

Both run the guide's "keep the workers busy" pattern: 2 process workers,
2 x workers calls in flight, a new call submitted as each one ends, N no-op
calls in all. Rounds alternate between the two so machine noise hits both;
the figure that counts is the median of the per-round throughput ratios.

    python benchmarks/bench_dispatch.py [--n 5000] [--rounds 7]

Target: ratio >= 0.9 with event counting and recording on.
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

from _tasks import IN_FLIGHT, WORKERS, keep_busy, noop  # noqa: E402


def bare(n: int) -> float:
    """Tasks per second on a bare ProcessPoolExecutor with asyncio callbacks."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        executor = ProcessPoolExecutor(max_workers=WORKERS)
        finished = loop.create_future()
        submitted = 0
        ended = 0

        def on_done(future):  # in the loop thread
            nonlocal ended
            future.result()
            ended += 1
            if submitted < n:
                submit()
            elif ended == n:
                finished.set_result(None)

        def submit() -> None:
            nonlocal submitted
            submitted += 1
            executor.submit(noop).add_done_callback(lambda f: loop.call_soon_threadsafe(on_done, f))

        start = time.perf_counter()
        for _ in range(IN_FLIGHT):
            submit()
        await finished
        elapsed = time.perf_counter() - start
        executor.shutdown(wait=True)
        return n / elapsed

    return asyncio.run(main())


def byop(n: int) -> float:
    """Tasks per second through a byop_nb Scheduler and Task (counting and recording on)."""
    return keep_busy(n)[0]


def compare(n: int, rounds: int, variant=byop, label: str = "byop_nb") -> float:
    bare(200), variant(200)  # warm imports and caches
    ratios = []
    for i in range(rounds):
        b = bare(n)
        o = variant(n)
        ratios.append(o / b)
        print(f"round {i + 1}: bare {b:8.0f}/s  {label} {o:8.0f}/s  ratio {o / b:.3f}", flush=True)
    median = statistics.median(ratios)
    print(f"median ratio {label}/bare: {median:.3f}  (n={n}, rounds={rounds}, workers={WORKERS})")
    return median


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    compare(args.n, args.rounds)
