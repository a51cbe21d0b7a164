"""The Dashboard's texts: its status line, progress (as tqdm shows it), best value and failure lines, and CSS.

Functions of what the engine tells (a scheduler's state, a task's failure
summary, the live data's best values), with no widget: the
[`Dashboard`][byop_nb.notebook.Dashboard] puts what they return in its widgets.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Literal

from byop_nb import _html

if TYPE_CHECKING:
    from byop_nb.notebook.plots import LiveData
    from byop_nb.scheduling.scheduler import Scheduler

__all__ = ["progress_text", "status_line_html", "spent_call_limits", "best_html", "failure_lines_html"]

DASHBOARD_CSS = (
    "<style>"
    ".byop-dashboard.byop-failing{border-left:4px solid #d32f2f;padding-left:6px}"
    ".byop-failures .byop-failure-line{color:#b71c1c;font-weight:bold;font-size:12px}"
    ".byop-progress-text{font-family:var(--jp-code-font-family,monospace);font-size:12px;white-space:nowrap}"
    ".byop-best-text{font-size:12px}"
    # the log's scroll box is a column laid out bottom up; its one child keeps its height (a flex item
    # would shrink to the box and clip its own last lines)
    ".byop-log-output>*{flex-shrink:0}"
    "</style>"
)

# The static picture hides while the live dashboard shows above it, in JupyterLab / Notebook 7 and in the
# classic notebook; where the widget cannot show (a reopened notebook without widget state, nbviewer,
# GitHub, which also drops the <style>), the picture shows.
SNAPSHOT_CSS = (
    "<style>"
    ".jp-OutputArea-child:has(.byop-dashboard) ~ .jp-OutputArea-child:has(.byop-snapshot),"
    ".output_area:has(.byop-dashboard) ~ .output_area:has(.byop-snapshot){display:none}"
    ".byop-snapshot{font-size:12px}"
    ".byop-snapshot.byop-failing{border-left:4px solid #d32f2f;padding-left:6px}"
    ".byop-snapshot .byop-failure-line{color:#b71c1c;font-weight:bold}"
    ".byop-snapshot-plot{max-width:100%}"
    "</style>"
)


def progress_text(
    done: int, bound: int, ended_in_run: int, seconds: float | None, *, unit: str = "calls", ended: bool = False
) -> str:
    """Progress as tqdm shows it: `12/50 trials [00:07<00:22, 1.71 trials/s]`.

    `done` of `bound` are done (earlier runs' calls included when the budget spans them);
    the rate is the latest run's: `ended_in_run` calls in `seconds`; the time left is what
    the rest takes at that rate (`?` until a call ended). Once the run `ended`, the time
    left is left out, as tqdm does for a closed bar: `30/50 calls [00:12, 2.5 calls/s]`.

    ```python
    from byop_nb.notebook.dashboard import progress_text
    assert progress_text(12, 50, 12, 7.0, unit="trials") == "12/50 trials [00:07<00:22, 1.71 trials/s]"
    assert progress_text(1, 50, 1, 4.0) == "1/50 calls [00:04<03:16, 4.00 s/call]"
    assert progress_text(30, 50, 30, 12.0, ended=True) == "30/50 calls [00:12, 2.5 calls/s]"
    ```
    """
    seconds = max(seconds or 0.0, 0.0)
    rate = ended_in_run / seconds if seconds > 0 and ended_in_run else None
    left = "?" if rate is None else _clock(max(bound - done, 0) / rate)
    one = unit[:-1] if unit.endswith("s") else unit
    if rate is None:
        speed = f"? {unit}/s"
    elif rate >= 100:
        speed = f"{rate:.0f} {unit}/s"
    elif rate >= 1:
        speed = f"{rate:.3g} {unit}/s"
    else:
        speed = f"{1 / rate:.2f} s/{one}"
    if ended:
        return f"{done}/{bound} {unit} [{_clock(seconds)}, {speed}]"
    return f"{done}/{bound} {unit} [{_clock(seconds)}<{left}, {speed}]"


def _clock(seconds: float) -> str:
    """`00:07`, `12:05`, `1:02:03`: tqdm's clock."""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def spent_call_limits(tasks: list[Any]) -> str:
    """Why a new run would end at once: every task shown has spent its call_limit (else "")."""
    if not tasks or any(task.call_limit is None or task.n_called < task.call_limit for task in tasks):
        return ""
    return "; ".join(f"{task.name!r} spent its call_limit={task.call_limit}" for task in tasks)


def status_line_html(scheduler: Scheduler, stop_clicked: bool, error: str | None, spent: str) -> str:
    """The status line: state, time, exit code, last error, and why nothing is left to run."""
    state = scheduler.state
    shown = "running (stop requested)" if state == "running" and stop_clicked else state
    exit_code = "\u2014" if scheduler.exit_code is None else scheduler.exit_code.value
    parts = [
        f'<b class="byop-state byop-state-{state}">{html.escape(shown)}</b>',
        _html.format_seconds(_html.elapsed(scheduler)),
        f"exit code: {html.escape(exit_code)}",
    ]
    if error:
        parts.append(
            f'last error: <code class="byop-error" title="{html.escape(error)}">'
            f"{html.escape(_html.short_error(error, 90))}</code>"
        )
    if spent:
        parts.append(f'<span class="byop-spent">nothing left to run: {html.escape(spent, quote=False)}</span>')
    return f'<span class="byop-status-line">{" &middot; ".join(parts)}</span>'


def best_html(data: LiveData, metric: str) -> str:
    """The best value so far: the optimizer's study's when known, else the latest run's ("" before one)."""
    if data.overall_best is not None:
        value, where = data.overall_best
        text = f"{metric}: best ({data.best}) <b>{value:.6g}</b> {html.escape(where)}"
    else:
        bests = [series.best[-1] for series in data.series if series.best]
        if not bests:
            return ""
        best = min(bests) if data.best == "min" else max(bests)
        text = f"{html.escape(metric)}: best ({data.best}) <b>{best:.6g}</b>"
    return f'<span class="byop-best-text">{text}</span>'


def failure_lines_html(lines: list[str]) -> str:
    """The latest run's failure lines (one per task, as `FailureSummary.line` says them)."""
    return "".join(f'<div class="byop-failure-line">{html.escape(line)}</div>' for line in lines)


def metric_and_best(optimizer: Any) -> tuple[str, Literal["min", "max"]]:
    """The metric and best-so-far direction of an optimizer (its first, when it has several)."""
    metric, direction = getattr(optimizer, "metric", None), getattr(optimizer, "direction", None)
    if isinstance(metric, list) and metric:
        metric = metric[0]
    if isinstance(direction, list) and direction:
        direction = direction[0]
    if not isinstance(metric, str) or direction not in ("minimize", "maximize"):
        raise TypeError(
            f"optimizer= needs an optimizer with a `metric` (str) and a `direction` ('minimize' or 'maximize'), "
            f"such as RandomSearch or OptunaOptimizer; got {optimizer!r}"
        )
    return metric, "min" if direction == "minimize" else "max"
