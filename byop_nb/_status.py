"""How a call ended: the one vocabulary of statuses, [`Status`][byop_nb._status.Status].

Every status a row of a task's history can hold is a member of `Status`, and
nowhere else is one spelled. Which statuses are successes and which are
failures is decided by the Task class (`Task.SUCCESSES`, `Task.FAILURES`; a
`Trial.Task` has its own): tables, counters and plots ask the task.

This module imports nothing (the history, the HTML views and the engine all use it).

```python
from byop_nb.scheduling import Status

df = task.df()
df[df.status == Status.EXCEPTION]           # a Status is a str: "exception"
```
"""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(enum.StrEnum):
    """How a call ended: the `status` column of a task's rows.

    A `StrEnum`: each member equals its text, so `df.status == "returned"` and
    `df.status == Status.RETURNED` select the same rows.
    """

    RETURNED = "returned"
    """The function returned (a plain Task's success)."""
    EXCEPTION = "exception"
    """The function raised, or its worker died."""
    CANCELLED = "cancelled"
    """The call was cancelled before it ended (`wait=False`, or a Future cancelled by the user)."""
    MEMORY_LIMIT = "memory_limit"
    """The call hit its `memory_limit`."""
    CPU_TIME_LIMIT = "cpu_time_limit"
    """The call hit its `cpu_time_limit`."""
    WALL_TIME_LIMIT = "wall_time_limit"
    """The call hit its `wall_time_limit`."""
    SUCCESS = "success"
    """A `Trial.Task` call returned a `SuccessReport`."""
    FAIL = "fail"
    """A `Trial.Task` call returned a `FailReport`."""
    CRASHED = "crashed"
    """A `Trial.Task` call crashed: a `CrashReport`, an exception, a limit hit, or no report."""
    PRUNED = "pruned"
    """A `Trial.Task` call was stopped early by its optimizer's pruner: a `PrunedReport` (`trial.prune()`)."""

    @property
    def limit(self) -> str | None:
        """The resource limit this status reports ("memory", "cpu_time", "wall_time"), or None."""
        return _LIMIT_OF.get(self)

    @classmethod
    def of_limit(cls, limit: str) -> Status:
        """The status of a call that hit `limit` ("memory", "cpu_time" or "wall_time")."""
        return _STATUS_OF_LIMIT[limit]


_LIMIT_OF = {
    Status.MEMORY_LIMIT: "memory",
    Status.CPU_TIME_LIMIT: "cpu_time",
    Status.WALL_TIME_LIMIT: "wall_time",
}
_STATUS_OF_LIMIT = {limit: status for status, limit in _LIMIT_OF.items()}
