"""Picklable worker functions shared by the test files (importable by reference in every worker process)."""

from __future__ import annotations

import math
import time


def square(x: int) -> int:
    return x * x


def identity(x: int) -> int:
    return x


def nap(seconds: float) -> float:
    """Sleep `seconds`, then return them."""
    time.sleep(seconds)
    return seconds


def raise_in_worker(x: int) -> int:
    raise ValueError(f"x cannot be {x}")


def sleep_then_return(seconds: float, value: int = 0) -> int:
    time.sleep(seconds)
    return value


def learn(trial, steps: int = 8, delay: float = 0.0):  # type: ignore[no-untyped-def]
    """A multi-fidelity trial: loss `x + 1/(step + 1)` at each step, reported, pruned when the optimizer says.

    A trial with a large `x` is worse at every step, so a median pruner stops it early. It asks
    before each step but the last: a trial that ran every step is complete (with two trials in
    flight, the median may say "prune" at the last step, after all the work is done).
    """
    loss = math.inf
    for step in range(steps):
        loss = trial.config["x"] + 1.0 / (step + 1)
        trial.report_step(step, loss=loss, accuracy=1.0 - loss)
        if step < steps - 1 and trial.should_prune():
            return trial.prune(loss=loss)
        time.sleep(delay)
    return trial.success(loss=loss)
