"""Parsing the resource limits given to a Task, and telling which limit a failure hit.

Limits are validated where the Task is created, so a bad unit or value fails
at that line, never later inside a worker.
"""

from __future__ import annotations

import math
from typing import Any

from byop_nb.scheduling.workers._worker import Limits

__all__ = ["parse_limits", "limit_hit", "MEMORY_UNITS", "TIME_UNITS"]

MEMORY_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}
TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}

MemoryLimit = int | tuple[float, str]
TimeLimit = float | tuple[float, str]


def _amount(option: str, value: Any, units: dict[str, float] | dict[str, int], accepted: str) -> float:
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{option}={value!r} is not valid; accepted forms: {accepted}")
        amount, unit = value
        if not isinstance(unit, str) or not any(unit.lower() == u.lower() for u in units):
            raise ValueError(
                f"{option}={value!r} has an unknown unit {unit!r}; accepted units: {', '.join(map(repr, units))}"
            )
        scale = next(s for u, s in units.items() if u.lower() == unit.lower())
    else:
        amount, scale = value, 1
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"{option}={value!r} is not valid; accepted forms: {accepted}")
    if not math.isfinite(amount) or amount <= 0:
        raise ValueError(f"{option}={value!r} must be positive; accepted forms: {accepted}")
    return float(amount) * scale


def parse_limits(
    *,
    memory_limit: MemoryLimit | None,
    cpu_time_limit: TimeLimit | None,
    wall_time_limit: TimeLimit | None,
) -> Limits | None:
    """Validate and convert the three resource limits; None when no limit is set."""
    memory = cpu = wall = None
    if memory_limit is not None:
        memory = int(_amount("memory_limit", memory_limit, MEMORY_UNITS, "bytes as an int, or (n, 'B'|'KB'|'MB'|'GB')"))
    if cpu_time_limit is not None:
        seconds = _amount("cpu_time_limit", cpu_time_limit, TIME_UNITS, "seconds, or (n, 's'|'m'|'h')")
        if seconds < 1:
            raise ValueError(
                f"cpu_time_limit={cpu_time_limit!r} is below 1 second; CPU time is limited in whole seconds "
                "(RLIMIT_CPU). Use wall_time_limit for shorter limits."
            )
        cpu = max(1, round(seconds))
    if wall_time_limit is not None:
        wall = _amount("wall_time_limit", wall_time_limit, TIME_UNITS, "seconds, or (n, 's'|'m'|'h')")
    if memory is None and cpu is None and wall is None:
        return None
    return Limits(memory=memory, cpu_time=cpu, wall_time=wall)


def limit_hit(exception: BaseException) -> str | None:
    """Which limit `exception` reports: "memory", "cpu_time", "wall_time", or None.

    Matches pynisher's exception classes by name so that the main process need
    not import pynisher to classify a failure.
    """
    for cls in type(exception).__mro__:
        if cls.__module__.startswith("pynisher"):
            if cls.__name__ == "MemoryLimitException":
                return "memory"
            if cls.__name__ == "CpuTimeoutException":
                return "cpu_time"
            if cls.__name__ == "WallTimeoutException":
                return "wall_time"
    return None
