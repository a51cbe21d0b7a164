"""Compact HTML for a Scheduler, a Task and a History in a notebook: a view, not the widget skin.

Needs only `html` and `time` (nothing of ipywidgets or matplotlib), so the
engine's `_repr_html_` methods use it from below the notebook package:
`Scheduler._repr_html_`, `Task._repr_html_` and `History._repr_html_` call
[`scheduler_html`][byop_nb._html.scheduler_html], [`task_html`][byop_nb._html.task_html]
and [`history_html`][byop_nb._html.history_html]; the Dashboard reuses the same
counters and status text, so a table and a dashboard never disagree.

```python
from byop_nb.scheduling import Scheduler, Task
from byop_nb._html import scheduler_html, task_counters

scheduler = Scheduler.with_threads(1)
task = Task(abs, scheduler)
task_counters(task)["submitted"]    # 0
html = scheduler_html(scheduler)    # what a notebook shows for `scheduler`
```
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from byop_nb._status import Status
from byop_nb._text import bounded_repr, clipped

if TYPE_CHECKING:
    from byop_nb.events import EventManager

# This module sits below the history and the engine, whose `_repr_html_` import it (lazily): it reads
# them through their public read API, typed loosely here so that it imports neither of them back.
SchedulerView: TypeAlias = Any
TaskView: TypeAlias = Any
HistoryView: TypeAlias = Any

__all__ = [
    "COUNTER_NAMES",
    "TABLE_CSS",
    "scheduler_html",
    "task_html",
    "history_html",
    "callbacks_html",
    "task_counters",
    "limit_hits",
    "never_ran",
    "counters_table_html",
    "row_result",
    "row_error",
    "elapsed",
    "format_seconds",
    "short_error",
]

COUNTER_NAMES = ("submitted", "running", "succeeded", "failed", "cancelled", "limit hits")
"""The per-task counters, in the order tables show them."""

TABLE_CSS = (
    "<style>"
    ".byop-table{border-collapse:collapse;font-size:12px;margin:2px 0}"
    ".byop-table th,.byop-table td{padding:1px 8px;text-align:right;border-bottom:1px solid rgba(128,128,128,.25)}"
    ".byop-table th:first-child,.byop-table td:first-child{text-align:left}"
    ".byop-table td.byop-text{text-align:left;max-width:40em;overflow:hidden;text-overflow:ellipsis;"
    "white-space:nowrap}"
    ".byop-head{font-size:12px;margin:2px 0}"
    "</style>"
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_seconds(seconds: float | None) -> str:
    """`12.3 s`, `4 min 05 s`, `1 h 02 min`; an em dash for None."""
    if seconds is None:
        return "\u2014"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min"


def elapsed(scheduler: SchedulerView, now: float | None = None) -> float | None:
    """Seconds the latest run has taken so far (or took, once finished); None before the first run."""
    started = scheduler.started_at
    if started is None:
        return None
    finished = scheduler.finished_at
    if finished is not None and not scheduler.running():
        return finished - started
    return (time.time() if now is None else now) - started


def short_error(error: BaseException | str | None, limit: int = 160) -> str:
    """`TypeName: message` on one line, cut to `limit` characters."""
    if error is None:
        return ""
    if isinstance(error, str):
        text = error
    else:
        try:
            message = str(error)
        except Exception:  # a broken __str__ must not break the view
            message = "<str() raised>"
        text = f"{type(error).__name__}: {message}".rstrip(": ")
    return clipped(" ".join(text.split()), limit)  # the end kept: a message's advice is often there


def task_counters(task: TaskView, *, run: bool = False) -> dict[str, int]:
    """The task's counters: submitted, running, succeeded, failed, cancelled, limit hits.

    After `failed`, one counter for each of the class's other outcomes
    (`Task.OTHER_OUTCOMES`: `pruned` for a `Trial.Task`), which are neither a
    success nor a failure.

    `succeeded` and `failed` count the ended calls whose status the task's
    class calls a success or a failure (`Task.SUCCESSES` / `Task.FAILURES`: for
    a plain Task, returned / raised, resource-limit breaches included; for a
    `Trial.Task`, success reports / fail and crash reports); `cancelled` counts
    the calls that never ran: cancelled unrun (a `wait=False` stop) or refused
    (the run was ending, or `call_limit` / `concurrent_limit` said no), which
    is what an optimizer's study calls a cancelled trial (see `never_ran`);
    `limit hits` counts memory, CPU-time and wall-time breaches only (see
    `limit_hits`). With `run=True`, only the latest run's (since it started),
    as the Dashboard shows them.
    """
    counts, statuses = _counts(task, run)
    get = counts.get
    others = {name: statuses.get(status, 0) for status, name in task.OTHER_OUTCOMES.items()}
    return {
        "submitted": get(task.SUBMITTED, 0),
        "running": task.n_running,
        "succeeded": sum(statuses.get(status, 0) for status in task.SUCCESSES),
        "failed": sum(statuses.get(status, 0) for status in task.FAILURES),
        **others,
        "cancelled": sum(never_ran(task, run=run).values()),
        "limit hits": sum(limit_hits(task, run=run).values()),
    }


def _counts(task: TaskView, run: bool) -> tuple[dict[Any, int], dict[str, int]]:
    """The task's event counts and rows per status: all, or the latest run's."""
    counts, statuses = dict(task.event_manager.counts), task.history.status_counts
    if run:
        then = task.run_baseline
        counts_then, statuses_then = then.counts, then.statuses
        counts = {event: n - counts_then.get(event, 0) for event, n in counts.items()}
        statuses = {status: n - statuses_then.get(status, 0) for status, n in statuses.items()}
    return counts, statuses


def limit_hits(task: TaskView, *, run: bool = False) -> dict[str, int]:
    """The task's resource-limit hits by limit, those that happened: `{"wall_time_limit": 2}`.

    Only memory, CPU time and wall time: a call stopped by the limit it was given. A call
    refused by `call_limit` or `concurrent_limit` never ran; it counts as cancelled (`never_ran`).
    """
    counts = _counts(task, run)[0]
    hits = {
        "memory_limit": counts.get(task.MEMORY_LIMIT_REACHED, 0),
        "cpu_time_limit": counts.get(task.CPU_TIME_LIMIT_REACHED, 0),
        "wall_time_limit": counts.get(task.WALL_TIME_LIMIT_REACHED, 0),
    }
    return {limit: n for limit, n in hits.items() if n}


def never_ran(task: TaskView, *, run: bool = False) -> dict[str, int]:
    """The task's calls that never ran, by why, those that happened: `{"refused as the run ended": 2}`.

    Cancelled unrun (a `wait=False` stop, a timeout), refused because the run was
    ending (after Stop: an optimizer asked a trial that never ran), or refused by
    `call_limit` / `concurrent_limit`. An optimizer's study marks each such trial
    cancelled (`OptunaOptimizer.fail_pending`), so the two counts agree.
    """
    counts = _counts(task, run)[0]
    why = {
        "cancelled unrun": counts.get(task.CANCELLED, 0),
        "refused as the run ended": task.refused_in_run if run else task.n_refused,
        "refused by call_limit": counts.get(task.CALL_LIMIT_REACHED, 0),
        "refused by concurrent_limit": counts.get(task.CONCURRENT_LIMIT_REACHED, 0),
    }
    return {reason: n for reason, n in why.items() if n}


# A history's rows share a few key sequences: which of their keys are `result.<key>` fields, by sequence.
_SPREAD_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {}


def row_result(row: Mapping[str, Any]) -> Any:
    """A row's result: the `result` value, or the dict spread over `result.<key>` fields."""
    result = row.get("result")
    if result is not None:
        return result
    shape = tuple(row)
    spread = _SPREAD_KEYS.get(shape)
    if spread is None:
        if len(_SPREAD_KEYS) > 1024:
            _SPREAD_KEYS.clear()
        spread = _SPREAD_KEYS[shape] = tuple(key for key in shape if key.startswith("result."))
    return {key[7:]: row[key] for key in spread} if spread else None


def row_error(row: Mapping[str, Any]) -> str | None:
    """`Type: message` of a row's exception, or None when the call did not raise."""
    exception = row.get("exception")
    if isinstance(exception, BaseException):
        return short_error(exception)
    kind, message = row.get("exception_type"), row.get("exception_message")
    if kind is None and message is None:
        return None
    return short_error(f"{kind or 'Exception'}: {message or ''}")


def counters_table_html(tasks: Sequence[TaskView], *, run: bool = False) -> str:
    """An HTML table with one row of counters per task (and a total row for several tasks).

    With `run=True` the latest run's counters (see `task_counters`). The cancelled
    and limit hits cells say why in their tooltips.
    """
    rows = [(task, task_counters(task, run=run)) for task in tasks]
    names = list(COUNTER_NAMES)  # and, after "failed", each other outcome a task's class has ("pruned")
    for _, counters in rows:
        for name in counters:
            if name not in names:
                names.insert(names.index("cancelled"), name)
    head = "".join(f"<th>{_e(name)}</th>" for name in ("task", *names, "call limit"))
    body = []
    totals = dict.fromkeys(names, 0)
    for task, counters in rows:
        for name, value in counters.items():
            totals[name] += value
        cells = ""
        for name in names:
            if name not in counters:  # an outcome this task's class does not have
                cells += "<td></td>"
                continue
            value = counters[name]
            parts = (
                never_ran(task, run=run)
                if name == "cancelled"
                else limit_hits(task, run=run)
                if name == "limit hits"
                else {}
            )
            which = ", ".join(f"{n} {why}" for why, n in parts.items())
            cells += f'<td title="{_e(which)}">{value}</td>' if which else f"<td>{value}</td>"
        limit = "" if task.call_limit is None else str(task.call_limit)
        body.append(f"<tr><td>{_e(task.name)}</td>{cells}<td>{limit}</td></tr>")
    if len(tasks) > 1:
        cells = "".join(f"<td>{value}</td>" for value in totals.values())
        body.append(f"<tr><th>all</th>{cells}<td></td></tr>")
    if not tasks:
        body.append(f'<tr><td colspan="{len(names) + 2}">no tasks yet</td></tr>')
    return f'<table class="byop-table byop-counters-table"><tr>{head}</tr>{"".join(body)}</table>'


def _result_text(row: Mapping[str, Any]) -> str:
    error = row_error(row)
    if error is not None:
        return short_error(error, 120)
    result = row_result(row)
    return (
        "" if result is None and row.get("status") != Status.RETURNED else short_error(bounded_repr(result, 200), 120)
    )


def _rows_html(history: HistoryView, n: int) -> str:
    total = len(history)
    if not total:
        return ""
    lines = []
    for row in reversed([history.row(i) for i in range(max(0, total - n), total)]):
        finished = row.get("finished")
        when = time.strftime("%H:%M:%S", time.localtime(finished)) if isinstance(finished, (int, float)) else ""
        lines.append(
            f'<tr><td>{_e(row.get("call", ""))}</td><td class="byop-text">{_e(row.get("status", ""))}</td>'
            f'<td class="byop-text">{_e(_result_text(row))}</td><td>{_e(when)}</td></tr>'
        )
    return (
        f'<table class="byop-table byop-last-results"><tr><th>call</th><th>status</th>'
        f"<th>result</th><th>finished</th></tr>{''.join(lines)}</table>"
    )


def _state_text(scheduler: SchedulerView) -> str:
    parts = [scheduler.state, format_seconds(elapsed(scheduler))]
    if scheduler.exit_code is not None:
        parts.append(f"exit code {scheduler.exit_code.value}")
    return " \u00b7 ".join(parts)


def scheduler_html(scheduler: SchedulerView) -> str:
    """The scheduler as compact HTML: state, elapsed time, exit code, last error, executor,
    a counters row per task, and the scheduler's own event counts."""
    executor = type(scheduler.executor).__name__
    head = f"<b>Scheduler</b> \u00b7 {_e(_state_text(scheduler))} \u00b7 {_e(executor)}"
    if scheduler.running():
        head += f" \u00b7 {scheduler.n_running} in flight"
    if scheduler.last_error is not None:
        head += f" \u00b7 last error: <code>{_e(short_error(scheduler.last_error))}</code>"
    events = ", ".join(f"{_e(event)}={n}" for event, n in scheduler.event_manager.counts.items())
    parts = [
        TABLE_CSS,
        f'<div class="byop-head">{head}</div>',
        counters_table_html(list(scheduler.tasks.values())),
        callbacks_html(scheduler.event_manager),
    ]
    if events:
        parts.append(f'<div class="byop-head">events: {events}</div>')
    return f'<div class="byop-scheduler">{"".join(parts)}</div>'


def task_html(task: TaskView, last: int = 5) -> str:
    """The task as compact HTML: its counters and limits, then its `last` ended calls, newest first."""
    limits = []
    if task.call_limit is not None:
        limits.append(f"call_limit={task.call_limit}")
    if task.concurrent_limit is not None:
        limits.append(f"concurrent_limit={task.concurrent_limit}")
    head = f"<b>Task</b> {_e(task.name)} \u00b7 scheduler {_e(task.scheduler.state)}"
    if limits:
        head += " \u00b7 " + _e(", ".join(limits))
    return (
        f'<div class="byop-task">{TABLE_CSS}<div class="byop-head">{head}</div>'
        f"{counters_table_html([task])}{callbacks_html(task.event_manager)}{_rows_html(task.history, last)}</div>"
    )


def callbacks_html(manager: EventManager) -> str:
    """The callbacks registered on `manager`, per event, in call order, with their options set.

    byop_nb's own registrations (named `byop_nb...`, e.g. a Dashboard's) are left out: a doubled or
    stale callback of the user's stands out.
    """
    lines = []
    for event, names in manager.registrations().items():
        shown = [name for name in names if not name.startswith("byop_nb")]
        if shown:
            lines.append(f'<tr><td>{_e(event)}</td><td class="byop-text">{_e(", ".join(shown))}</td></tr>')
    if not lines:
        return ""
    return f'<table class="byop-table byop-callbacks"><tr><th>event</th><th>callbacks</th></tr>{"".join(lines)}</table>'


def history_html(history: HistoryView, last: int = 5) -> str:
    """The history as compact HTML: rows per status, the journal, and its `last` rows (oldest first)."""
    counts = " \u00b7 ".join(f"{_e(status)} {n}" for status, n in history.status_counts.items())
    head = f"<b>History</b> {_e(repr(history.name))}: {len(history)} rows"
    if counts:
        head += f" ({counts})"
    if history.journal is not None:
        head += f" \u2192 <code>{_e(history.journal)}</code>"
    total = len(history)
    lines = []
    for row in (history.row(i) for i in range(max(0, total - last), total)):
        result = row_result(row)
        if isinstance(result, dict):  # spread over result.<key> columns: shown as key=value
            result = ", ".join(f"{key}={value!r}" for key, value in result.items())
        cells = (row.get("call"), row.get("args"), row.get("status"), result)
        shown = [_cell(v) for v in cells] + [row_error(row) or "", _cell(_duration(row))]
        lines.append("<tr>" + "".join(f'<td class="byop-text">{_e(v)}</td>' for v in shown) + "</tr>")
    table = ""
    if lines:
        names = "".join(f"<th>{name}</th>" for name in ("call", "args", "status", "result", "exception", "duration"))
        table = f'<table class="byop-table byop-history-rows"><tr>{names}</tr>{"".join(lines)}</table>'
    return f'<div class="byop-history">{TABLE_CSS}<div class="byop-head">{head}</div>{table}</div>'


def _cell(value: Any, width: int = 60) -> str:
    text = "" if value is None else value if isinstance(value, str) else bounded_repr(value, 200)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _duration(row: Mapping[str, Any]) -> str | None:
    submitted, finished = row.get("submitted"), row.get("finished")
    if not isinstance(submitted, (int, float)) or not isinstance(finished, (int, float)):
        return None
    return f"{finished - submitted:.3g} s"
