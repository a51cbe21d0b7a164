"""The Dashboard's panes brought up to date: buttons, status line, progress, best value, failures, snapshot.

[`Dashboard`][byop_nb.notebook.Dashboard] inherits these from `DashboardPanes`
(a mixin of the one class, split off to keep each module short); the texts
themselves come from `_texts`.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from byop_nb import _html
from byop_nb.notebook._texts import (
    SNAPSHOT_CSS,
    best_html,
    failure_lines_html,
    progress_text,
    spent_call_limits,
    status_line_html,
)

if TYPE_CHECKING:
    import ipywidgets as widgets

    from byop_nb.notebook.plots import LiveData, PlotRenderer
    from byop_nb.scheduling.scheduler import Scheduler
    from byop_nb.scheduling.task import Task

__all__ = ["DashboardPanes"]

logger = logging.getLogger("byop_nb.notebook.dashboard")


class DashboardPanes:
    """The panes' updates of [`Dashboard`][byop_nb.notebook.Dashboard] (a mixin)."""

    if TYPE_CHECKING:  # the Dashboard's, set in its __init__
        scheduler: Scheduler
        optimizer: Any
        total: int | None
        start_button: widgets.Button
        stop_button: widgets.Button
        status_html: widgets.HTML
        progress_bar: widgets.FloatProgress
        progress_html: widgets.HTML
        best_html: widgets.HTML
        failures_html: widgets.HTML
        counters_html: widgets.HTML
        trials_html: widgets.HTML
        plot_image: widgets.Image
        _progress_row: widgets.HBox
        _data: LiveData
        _renderer: PlotRenderer | None
        _stop_clicked: bool
        _study_checked: float
        _study_stale: bool
        _table_rows: int
        _snapshots: list[Any]
        _snapshot_at: float

        @property
        def tasks(self) -> list[Task[Any, Any]]: ...

        @property
        def last_error(self) -> str | None: ...

        def add_class(self, name: str) -> Any: ...

        def remove_class(self, name: str) -> Any: ...

    def _update_buttons(self) -> None:
        scheduler = self.scheduler
        spent = self._spent_call_limits()
        self.start_button.disabled = scheduler.running() or bool(spent)
        self.start_button.tooltip = (
            f"Nothing to run: {spent}. Make a new Task, or give it a larger call_limit."
            if spent and not scheduler.running()
            else "scheduler.start() with the dashboard's run options"
        )
        self.stop_button.disabled = scheduler.state != "running" or self._stop_clicked

    def _spent_call_limits(self) -> str:
        return spent_call_limits(self.tasks)

    def _update_status(self) -> None:
        spent = self._spent_call_limits() if not self.scheduler.running() else ""
        self.status_html.value = status_line_html(self.scheduler, self._stop_clicked, self.last_error, spent)

    def _update_progress(self, tasks: list[Task[Any, Any]]) -> None:
        scheduler = self.scheduler
        limited = [task for task in tasks if task.call_limit is not None]
        maps = [m for task in tasks for m in task.maps]  # the latest run's
        timeout = getattr(scheduler, "timeout", None)
        seconds = _html.elapsed(scheduler)
        unit = "trials" if self._data.trials else "calls"
        ended_in_run = self._data.n_ended
        if self.total is not None:
            done, bound = ended_in_run, self.total
        elif maps and all(m.total is not None for m in maps):
            done, bound = sum(m.ended for m in maps), sum(m.total or 0 for m in maps)
        elif limited:
            # The budget is the whole call_limit, earlier runs' calls included (they spent it too).
            done = sum(task.counts.get(task.DONE, 0) + task.counts.get(task.CANCELLED, 0) for task in limited)
            bound = sum(task.call_limit or 0 for task in limited)
        elif timeout is not None and seconds is not None:
            self._progress_row.layout.display = None
            self.progress_bar.value = min(1.0, max(0.0, seconds / timeout))
            self.progress_bar.description = "time"
            self.progress_html.value = f"{_html.format_seconds(seconds)} / {_html.format_seconds(timeout)}"
            self.progress_bar.bar_style = "info" if scheduler.running() else "success"
            return
        else:
            self._progress_row.layout.display = "none"
            return
        self._progress_row.layout.display = None
        self.progress_bar.description = unit
        self.progress_bar.value = min(1.0, max(0.0, done / bound if bound else 1.0))
        self.progress_bar.bar_style = "info" if scheduler.running() else "success"
        text = progress_text(done, bound, ended_in_run, seconds, unit=unit, ended=not scheduler.running())
        self.progress_html.value = f'<span class="byop-progress-text">{html.escape(text)}</span>'

    def _metric(self) -> str | None:
        """The metric plotted and ranked: the one given, or the first numeric key the results had."""
        if self._data.metric is not None:
            return self._data.metric
        return next((series.metric for series in self._data.series if series.metric), None)

    def _update_best(self) -> None:
        self.best_html.value = best_html(self._data, self._metric() or "result")

    def _read_study_best(self, *, force: bool = False) -> None:
        """Read the optimizer's best (its whole study's): at most once a second, when calls ended.

        Reading it may query a database (an Optuna storage), so not at every refresh."""
        optimizer = self.optimizer
        if optimizer is None:
            return
        now = time.perf_counter()
        if not force and now - self._study_checked < 1.0:
            return  # read at a later refresh
        self._study_checked = now
        self._study_stale = False
        try:
            value = getattr(optimizer, "best_value", None)
        except Exception:  # a storage hiccup must not break the view; the run's own best shows meanwhile
            logger.debug("reading the optimizer's best_value failed", exc_info=True)
            value = None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            self._data.overall_best = (float(value), "in the study")
        else:
            self._data.overall_best = None

    def _update_failures(self, tasks: list[Task[Any, Any]]) -> None:
        lines = [line for task in tasks if (line := task.failure_summary().line)]
        self.failures_html.value = failure_lines_html(lines)
        if lines:
            self.add_class("byop-failing")
        else:
            self.remove_class("byop-failing")

    def snapshot_html(self) -> str:
        """The dashboard as static HTML: status, progress, best, failures, counters, the plot (an embedded
        PNG) and the trials table, as they are now: what a notebook keeps in the cell's output."""
        parts = [
            SNAPSHOT_CSS,
            f'<div class="byop-snapshot-row">{self.status_html.value}</div>',
        ]
        if self._progress_row.layout.display != "none" or self.best_html.value:
            progress = self.progress_html.value if self._progress_row.layout.display != "none" else ""
            parts.append(f'<div class="byop-snapshot-row">{progress} &nbsp; {self.best_html.value}</div>')
        if self.failures_html.value:
            parts.append(f'<div class="byop-failures">{self.failures_html.value}</div>')
        parts.append(self.counters_html.value)
        png = bytes(self.plot_image.value) if self._renderer is not None else b""
        if png:
            encoded = base64.b64encode(png).decode("ascii")
            parts.append(f'<img class="byop-snapshot-plot" src="data:image/png;base64,{encoded}" alt="the plot"/>')
        if self._table_rows:
            parts.append(self.trials_html.value)
        failing = " byop-failing" if self.failures_html.value else ""
        return f'<div class="byop-snapshot{failing}">{"".join(parts)}</div>'

    def snapshot_bundle(self) -> dict[str, Any]:
        """The static picture as a display bundle: `text/html` (everything), `image/png` (the plot) and
        `text/plain`."""
        bundle: dict[str, Any] = {
            "text/html": self.snapshot_html(),
            "text/plain": f"byop_nb Dashboard: {self.scheduler.state}",
        }
        png = bytes(self.plot_image.value) if self._renderer is not None else b""
        if png:
            bundle["image/png"] = base64.b64encode(png).decode("ascii")
        return bundle

    def _update_snapshots(self) -> None:
        if not self._snapshots:
            return
        self._snapshot_at = time.perf_counter()
        bundle = self.snapshot_bundle()
        for handle in self._snapshots:
            handle.update(bundle, raw=True)
