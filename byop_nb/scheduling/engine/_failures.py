"""What failed among a task's calls in one run: [`FailureSummary`][byop_nb.scheduling.FailureSummary].

`summarize` makes it from the task's rows since the run began (its
[`TaskBaseline`][byop_nb.scheduling.engine._run.TaskBaseline]): the counts are kept per
status, the first failure is found once per run (a cache the task keeps), and
the failures in a row are counted back from the last call only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from byop_nb._status import Status
from byop_nb._text import bounded_repr, clipped

if TYPE_CHECKING:
    from byop_nb.scheduling.engine._call import TaskLike

__all__ = ["FailureSummary", "summarize"]

_CANCELLED = Status.CANCELLED

# The first failed row of a run, as a task caches it: (the run's first row, rows scanned so far, the row or None).
FirstFailure = tuple[int, int, "dict[str, Any] | None"]


def summarize(task: TaskLike, baseline: Any, cache: FirstFailure) -> tuple[FailureSummary, FirstFailure]:
    """The task's FailureSummary for the run that began at `baseline` (a `_run.TaskBaseline`: its
    `statuses` and `rows`), and the first-failure cache updated."""
    statuses_then, rows_then = baseline.statuses, baseline.rows
    statuses = task.history.status_counts
    ran = {s: n - statuses_then.get(s, 0) for s, n in statuses.items() if s != _CANCELLED}
    failures = {s: n for s, n in ran.items() if n > 0 and s in task.FAILURES}
    first = None
    if failures:
        cache = _first_failure(task, rows_then, cache)
        first = cache[2]
    in_a_row = _failures_in_a_row(task, rows_then) if failures else 0
    error = None
    if first is not None:
        kind, message = first.get("exception_type"), first.get("exception_message")
        error = f"{kind}: {message}" if kind and message else kind or message or _without_exception(first)
    summary = FailureSummary(
        task=task.name,
        noun=task.NOUN,
        ended=sum(ran.values()),
        failed=sum(failures.values()),
        statuses=dict(sorted(failures.items(), key=lambda item: -item[1])),
        first_error=error,
        first_call=first.get("call") if first is not None else None,
        first_trial=first.get("trial") if first is not None else None,
        in_a_row=in_a_row,
    )
    return summary, cache


def _failures_in_a_row(task: TaskLike, rows_then: int) -> int:
    """Failed rows since the last row of the run that began at `rows_then` that did not fail (cancelled
    rows skipped), counted back from the end in chunks: no copy of the run's rows."""
    failing, history = task.FAILURES, task.history
    in_a_row, end = 0, len(history)
    while end > rows_then:
        start = max(rows_then, end - 256)
        for row in reversed(history.stored_rows(start, end)):
            status = row.get("status")
            if status in failing:
                in_a_row += 1
            elif status != _CANCELLED:
                return in_a_row
        end = start
    return in_a_row


def _first_failure(task: TaskLike, rows_then: int, cache: FirstFailure) -> FirstFailure:
    """The first failed row of the run that began at row `rows_then`; rows are scanned once per run."""
    since, scanned, found = cache
    if since != rows_then:
        scanned, found = rows_then, None
    if found is None:
        failing = task.FAILURES
        end = len(task.history)
        for row in task.history.stored_rows(scanned, end):
            if row.get("status") in failing:
                found = row
                break
        scanned = end
    return (rows_then, scanned, found)


_VERBS = {
    Status.EXCEPTION: "raised",
    Status.MEMORY_LIMIT: "hit their memory limit",
    Status.CPU_TIME_LIMIT: "hit their CPU-time limit",
    Status.WALL_TIME_LIMIT: "hit their wall-time limit",
    Status.FAIL: "failed",
    Status.CRASHED: "crashed",
}


@dataclass(frozen=True)
class FailureSummary:
    """What failed among a task's calls in one run: [`task.failure_summary()`][byop_nb.scheduling.Task.failure_summary].

    True when a call failed (`if task.failure_summary(): ...`); `line` (also
    `str(summary)`) says it in one sentence, e.g.
    `6 of 6 trials of 'evaluate' crashed; first: KeyError: 'learning_rate' (trial trial-0, call 1)`.

    Attributes:
        task: the task's name.
        noun: "calls", or "trials" for a Trial.Task.
        ended: calls of the run that ended, failed or not (cancelled ones left out).
        failed: of those, the ones whose status is one of the task's `FAILURES`
            (an exception, a resource-limit hit; a trial's fail or crash).
        statuses: failed calls per status, most frequent first, e.g. `{"crashed": 6}`.
        first_error: the first failed call's error, "Type: message" (its
            message whole, as bounded in the history), or None when none failed.
        first_call: that call's number (the `call` column), or None.
        first_trial: that call's trial name for a Trial.Task, else None.
        in_a_row: failed calls since the last call that did not fail (what
            `run(end_after_failures=N)` compares with N).
    """

    task: str
    noun: str
    ended: int
    failed: int
    statuses: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    first_call: int | None = None
    first_trial: str | None = None
    in_a_row: int = 0

    def __bool__(self) -> bool:
        return self.failed > 0

    @property
    def only_limit_hits(self) -> bool:
        """Whether every failure is a plain Task's resource-limit hit (`memory_limit`, `cpu_time_limit`,
        `wall_time_limit`): the limits were set, so the run's end does not call them out. A Trial.Task's
        limit hits are crashes, and are."""
        return bool(self.statuses) and all(_LIMIT_STATUSES.get(status, False) for status in self.statuses)

    @property
    def line(self) -> str:
        """One sentence: how many failed, how, and the first error; "" when none failed."""
        if not self.failed:
            return ""
        if len(self.statuses) == 1:
            verb = _VERBS.get(next(iter(self.statuses)), "failed")  # type: ignore[call-overload]
        else:
            verb = "failed (" + ", ".join(f"{n} {status}" for status, n in self.statuses.items()) + ")"
        where = f"call {self.first_call}" if self.first_call is not None else ""
        if self.first_trial is not None:
            where = f"trial {self.first_trial}, {where}" if where else f"trial {self.first_trial}"
        first = clipped(self.first_error or "", _FIRST_ERROR_WIDTH)
        return f"{self.failed} of {self.ended} {self.noun} of {self.task!r} {verb}; first: {first}" + (
            f" ({where})" if where else ""
        )

    def __str__(self) -> str:
        return self.line


def _without_exception(row: dict[str, Any]) -> str:
    """What a failed row without an exception says (a trial's fail report): its status and results."""
    results = ", ".join(f"{key[7:]}={bounded_repr(value, 60)}" for key, value in row.items() if key[:7] == "result.")
    return f"{row.get('status')} ({results})" if results else str(row.get("status"))


_LIMIT_STATUSES = {status.value: status.limit is not None for status in Status}
_FIRST_ERROR_WIDTH = 500  # characters of the first error in a summary's line (the row keeps it whole)
