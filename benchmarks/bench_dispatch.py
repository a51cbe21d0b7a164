"""Dispatch throughput: byop_nb against a bare ProcessPoolExecutor driven by asyncio.

Both run the guide's "keep the workers busy" pattern: 2 process workers,
2 x workers calls in flight, a new call submitted as each one ends, N no-op
calls in all. Rounds alternate between the two so machine noise hits both;
the figure that counts is the median of the per-round throughput ratios.

    python benchmarks/bench_dispatch.py [--n 5000] [--rounds 7]

Target: ratio >= 1.0 with event counting and recording on.

A third run per round shows where the figure comes from: the bare pattern
again, but woken the way byop_nb's Scheduler is woken (finished futures
queued, a Doorbell rung once per batch instead of `call_soon_threadsafe` per
future; see byop_nb/scheduling/engine/_handoff.py). Against it, the ratio is what
byop_nb's own bookkeeping costs (events, counts, recording, checks), less what
its pool tuning (below) saves.

Each round also prints the main process's CPU time per call (all its threads:
the loop's, and the pool's manager and feeder threads). They share one GIL, so
with calls this short that time, not the workers, bounds throughput; it moves
far less with machine noise than the rates do. byop_nb runs a stdlib pool
tuned to hand each call between those threads fewer times
(byop_nb/scheduling/workers/_pool_tuning.py); the bare pool is the stdlib's as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _tasks import IN_FLIGHT, WORKERS, keep_busy, noop, with_cpu  # noqa: E402

from byop_nb.scheduling.engine._doorbell import Doorbell  # noqa: E402


def bare(n: int, doorbell: bool = False) -> float:
    """Tasks per second on a bare ProcessPoolExecutor with asyncio callbacks.

    With `doorbell`, finished futures are queued and the loop is woken by a
    Doorbell rung once per batch, as byop_nb's Scheduler does.
    """

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

        queued: collections.deque = collections.deque()
        rung = [False]
        bell = Doorbell() if doorbell else None

        def drain() -> None:  # in the loop thread, when the bell rang
            rung[0] = False
            while queued:
                on_done(queued.popleft())

        def queue(future) -> None:  # in the pool's thread
            queued.append(future)
            if not rung[0]:
                rung[0] = True
                bell.ring()  # type: ignore[union-attr]

        if bell is not None:
            bell.attach(loop, drain)

        def submit() -> None:
            nonlocal submitted
            submitted += 1
            executor.submit(noop).add_done_callback(lambda f: loop.call_soon_threadsafe(on_done, f))

        def submit_queued() -> None:
            nonlocal submitted
            submitted += 1
            executor.submit(noop).add_done_callback(queue)

        if bell is not None:
            submit = submit_queued  # noqa: F811

        start = time.perf_counter()
        for _ in range(IN_FLIGHT):
            submit()
        await finished
        elapsed = time.perf_counter() - start
        if bell is not None:
            bell.detach()
        executor.shutdown(wait=True)
        return n / elapsed

    return asyncio.run(main())


def byop(n: int) -> float:
    """Tasks per second through a byop_nb Scheduler and Task (counting and recording on)."""
    return keep_busy(n)[0]


def compare(n: int, rounds: int, variant: Callable[[int], float] = byop, label: str = "byop_nb") -> float:
    bare(200), bare(200, doorbell=True), variant(200)  # warm imports and caches
    ratios, own, control, cpu_bare, cpu_own = [], [], [], [], []
    for i in range(rounds):
        b, cb = with_cpu(bare, n)
        o, co = with_cpu(variant, n)
        d = bare(n, doorbell=True)
        again = bare(n)  # a control: the same code as `b`, so its ratio to it is the machine's noise
        ratios.append(o / b)
        own.append(o / d)
        control.append(again / b)
        cpu_bare.append(cb)
        cpu_own.append(co)
        print(
            f"round {i + 1}: bare {b:8.0f}/s  {label} {o:8.0f}/s  ratio {o / b:.3f}   "
            f"(bare woken like byop_nb {d:8.0f}/s, ratio {o / d:.3f}; "
            f"main-process CPU per call: bare {cb:.0f} µs, {label} {co:.0f} µs)",
            flush=True,
        )
    median = statistics.median(ratios)
    print(
        f"median ratio of the control (bare again)/bare: {statistics.median(control):.3f} "
        "(the same code: how far noise alone moves these ratios on this machine)"
    )
    print(
        f"median ratio of {label} to bare woken like byop_nb: {statistics.median(own):.3f} "
        "(byop_nb's bookkeeping costs less what its pool tuning saves)"
    )
    print(
        f"median main-process CPU per call (all its threads): bare {statistics.median(cpu_bare):.0f} µs, "
        f"{label} {statistics.median(cpu_own):.0f} µs (the main process's threads share one GIL, so with "
        "short calls this, not the workers, bounds throughput; it is steadier than the rates)"
    )
    print(f"median ratio {label}/bare: {median:.3f}  (n={n}, rounds={rounds}, workers={WORKERS}; target >= 1.0)")
    return median


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    compare(args.n, args.rounds)
