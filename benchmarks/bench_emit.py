"""Emit cost: one emit to 3 plain handlers, byop_nb's EventManager against psygnal.

    python benchmarks/bench_emit.py [--number 200000] [--rounds 7]

Rounds alternate between the two; prints the median per-emit time of each and
the median ratio byop_nb/psygnal (target: <= 0.8).
"""

from __future__ import annotations

import argparse
import statistics
import timeit

from psygnal import Signal

from byop_nb.events import Event, EventManager


def handler_a(a: int, b: str) -> None:
    pass


def handler_b(a: int, b: str) -> None:
    pass


def handler_c(a: int, b: str) -> None:
    pass


class Emitter:
    changed = Signal(int, str)


def main(number: int, rounds: int) -> float:
    event: Event[int, str] = Event("changed")
    manager = EventManager(name="bench")
    for h in (handler_a, handler_b, handler_c):
        manager.on(event, h)

    emitter = Emitter()
    for h in (handler_a, handler_b, handler_c):
        emitter.changed.connect(h)

    def ours() -> None:
        manager.emit(event, 1, "x")

    def theirs() -> None:
        emitter.changed.emit(1, "x")

    ours_t, theirs_t, ratios = [], [], []
    for _ in range(rounds):
        o = min(timeit.repeat(ours, number=number, repeat=3)) / number
        t = min(timeit.repeat(theirs, number=number, repeat=3)) / number
        ours_t.append(o)
        theirs_t.append(t)
        ratios.append(o / t)
    median = statistics.median(ratios)
    ours_ns, theirs_ns = statistics.median(ours_t) * 1e9, statistics.median(theirs_t) * 1e9
    print(f"byop_nb emit: {ours_ns:7.0f} ns   psygnal emit: {theirs_ns:7.0f} ns")
    print(f"median ratio byop_nb/psygnal time: {median:.3f}  (3 handlers, {rounds} rounds)")
    return median


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    main(args.number, args.rounds)
