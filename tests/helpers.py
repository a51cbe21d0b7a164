"""Picklable worker functions shared by the test files (importable by reference in every worker process)."""

from __future__ import annotations

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
