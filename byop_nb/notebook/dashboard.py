"""The Dashboard: Start/Stop buttons, live status, counters, progress, plots and a log pane for a Scheduler.

A thin skin over the engine, in the manner of `tqdm.notebook`: it reads the
scheduler's state, the tasks' event counts and their histories, and never
adds work to the hot path. It listens only to the scheduler's STARTED,
FINISHING and FINISHED events (a few per run); while a run goes on, a timer
on the run's event loop refreshes the widgets every `interval` seconds, and
redraws the plot when new calls have ended and the redraw is due. Its log
pane gets what a background run's callbacks write from the scheduler, one
batch of callbacks at a time (`byop_nb.scheduling.engine._output`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

import ipywidgets as widgets

from byop_nb import _html
from byop_nb.notebook._log import scheduler_log
from byop_nb.notebook._panes import DashboardPanes
from byop_nb.notebook._table import trials_table_html
from byop_nb.notebook._texts import (
    DASHBOARD_CSS,
    metric_and_best,
    progress_text,
)
from byop_nb.notebook.plots import LiveData, PlotFunction, PlotRenderer
from byop_nb.optimization.trial import TrialTask
from byop_nb.scheduling.engine._run import RunOptions
from byop_nb.scheduling.scheduler import ExitCode, RunHandle, Scheduler
from byop_nb.scheduling.task import Task

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Dashboard", "progress_text"]

logger = logging.getLogger(__name__)

MAX_REDRAW_PAUSE = 10.0
"""However slow drawing is, a run's plot is redrawn at least every 10 seconds while calls end."""

SNAPSHOT_EVERY = 5.0
"""While a run goes on, the static picture in the cell's output is brought up to date every 5 seconds
(and when the run ends): a kernel that dies mid-run leaves a picture at most that old."""


class Dashboard(DashboardPanes, widgets.VBox):
    """Start/Stop buttons, a status line, per-task counters, a progress bar, live plots and a log pane.

    Args:
        scheduler: the [`Scheduler`][byop_nb.scheduling.Scheduler] to watch and drive.
        *tasks: the tasks to show (default: every task of the scheduler, including
            ones created later).
        plot: None for the default plots (ended calls over time and, when results
            are numbers or dicts of numbers, their values and the best so far);
            a function `plot(df, ax)` to draw your own plot of the live DataFrame
            (`task.df()`, or all shown tasks' frames concatenated) next to the
            ended calls; False for no plot (and no matplotlib at all).
        timeout: the run's timeout when Start (or `start()`) starts it: passed to
            [`scheduler.start()`][byop_nb.scheduling.Scheduler.start].
        end_on_empty: passed to `scheduler.start()` the same way.
        wait: passed to `scheduler.start()` the same way.
        end_after_failures: passed to `scheduler.start()` the same way: end the
            run once one task failed this many calls in a row (None: never).
        interval: seconds between refreshes while a run goes on; the plot is
            redrawn at most once per interval (default 0.5: at most 2 redraws a
            second), and less often when drawing is slow (see `draw_budget`).
        draw_budget: the largest share of the event loop's time the dashboard takes
            while it follows a run (default 0.02: 2 %): reading the calls that
            ended and refreshing the widgets take their share first, and redraws
            are spaced so that drawing takes the rest. A redraw that took `r`
            seconds of the loop thread's CPU time is followed by the next one no
            sooner than `r / (what is left of the budget)` seconds later (and no
            later than 10 s, while calls end), so a slow machine gets fewer
            redraws, not a slower run; a machine busy with other processes does
            not (their load lengthens a redraw's wall time, not its work).
            Most redraws draw only the lines over a kept background (a few
            milliseconds); the whole figure is drawn when the data outgrow the
            axes or a title changes.
        metric: the key to plot for dict results (default: the first numeric key).
        best: "min" or "max": what the best-so-far line tracks, and which calls
            the table ranks first. The plot's title and the best line say it:
            "loss: best (min) 0.012".
        optimizer: an optimizer with a `metric` and a `direction` (`RandomSearch`,
            `OptunaOptimizer`): the plot shows its metric, and the best so far in
            its direction ("minimize" -> min); it sets `metric` and `best`. For a
            multi-objective study, the first metric. The best shown is then the
            optimizer's own `best_value`: over the whole study, trials of earlier
            runs, kernels and processes included (a resumed study's best).
        log_lines: how many lines the log pane keeps (the latest; default 500).
        x: what the values are plotted against: "number" (the call's number, a
            trial's number for a `Trial.Task`) or "time" (seconds since the run
            started). Default: "number" when a shown task is a `Trial.Task`, else "time".
        total: how many calls the run is meant to end (a target count): the
            progress bar's bound, before any `task.map(...)` length or `call_limit`.
        table_rows: how many of the best and of the latest calls the live table
            shows (default 5 each; 0 for no table).

    Start is enabled when the scheduler is not running, Stop while it runs.
    Start calls `scheduler.start(...)` with the options above and keeps the
    handle in `dashboard.handle` (an error that ends that run shows in the
    status line, and `dashboard.handle.result()` raises it). Stop calls
    `scheduler.stop()`.

    The status line shows the state (idle, running, finishing, finished), the
    elapsed time, the exit code and the last error: a call that raised in the
    latest run, a callback that raised (which stops the run), or Start failing.
    The progress line shows ended calls (trials for a `Trial.Task`) against
    a known budget, with the time taken, the time left and the rate, as tqdm
    does: `12/50 trials [00:07<00:22, 1.71 trials/s]`. The budget is `total=`,
    or else the inputs of the run's `task.map(...)` calls, or else the tasks'
    `call_limit`; without one, the elapsed time against the run's `timeout`;
    with neither, the bar hides.

    When calls of the latest run fail (crashed or failed trials, exceptions,
    limit hits), a red line says so while the run goes on, with the first
    error: "3 of 5 trials of 'evaluate' crashed; first: KeyError: 'lr'", and
    the dashboard gets a red edge (CSS class `byop-failing`).

    The table below the counters lists the best `table_rows` calls of the
    latest run (by the plotted metric, in the `best` direction) and the latest
    ones, with their parameters (`config.<key>` of a trial, `arg.<name>` of a
    call), status, metrics and seconds, as Ray Tune's trial table does.

    A dashboard shown in a notebook also leaves a static picture of itself
    in the cell's output (status, progress, counters and table as HTML, the
    plot as a PNG, also as `image/png`), updated when a run ends or is
    stopped, and every 5 seconds while it goes on: a saved notebook shows it
    when opened again (on GitHub, nbviewer, in the docs, or in JupyterLab
    without the widgets' saved state), whatever the "save widget state"
    setting, even after a kernel that died mid-run. While the live dashboard
    shows above it (JupyterLab, Notebook 7), the picture hides.

    Updates render during a blocking `scheduler.run()` as well: the widgets'
    state is sent to the browser as it changes, while the cell still runs.
    The buttons, however, act only after that cell has finished: the kernel
    handles a click once it is done with the running cell, so a Stop clicked
    during `run()` comes too late. Use `scheduler.start()` (or the Start
    button) for a run you want to stop from the dashboard.

    The log pane (`log_output`, an `ipywidgets.Output` in the collapsed
    `log_pane`, whose title counts the lines) collects what the callbacks of
    a background run write while the dashboard is open: a run started by
    Start, `dashboard.start()` or `scheduler.start()`. That is their `print`s
    and other writes to `sys.stdout` and `sys.stderr` (warnings too), byop_nb's
    own warnings, and the traceback of a callback error that ended the run;
    without a dashboard they would reach the cell that started the run after
    it finished, or no cell at all. The text is the widget's kernel-side state
    (`log_output.outputs`, saved with the notebook's widget state; `log_text`
    reads it), updated at most every `interval`, and bounded: the last
    `log_lines` lines, each cut at 2000 characters. A blocking `run()` is not
    captured (its cell shows what it prints), nor are the task's functions (they
    run in workers), nor the cells that run meanwhile. All dashboards of one
    scheduler share the text: one made later shows the lines written before it.
    The pane follows the newest lines (it is scrolled to the bottom).

    Every dashboard is a view of the scheduler's own state, so several
    dashboards on one scheduler, or one made after the run started, show the
    same. `close()` detaches the dashboard from the scheduler and closes its
    widgets.

    Example:
        ```python
        import random
        import time
        from byop_nb import Scheduler, Task
        from byop_nb.notebook import Dashboard

        def objective(x: float) -> dict[str, float]:
            time.sleep(0.1)
            return {"loss": (x - 0.3) ** 2}

        scheduler = Scheduler.with_processes(2)
        task = Task(objective, scheduler, call_limit=200)

        @scheduler.on_start(repeat=2)
        @task.on_done
        def submit_next() -> None:
            task(random.random())

        @task.on_returned
        def report(result: dict[str, float]) -> None:
            if result["loss"] < 0.001:
                print(f"close: {result}")   # into the dashboard's log pane

        dashboard = Dashboard(scheduler, task, timeout=60)
        dashboard        # shows the widgets; click Start, or:
        handle = dashboard.start()
        ```

        and in a later cell:

        ```python
        await handle
        print(dashboard.log_text)   # the "close: ..." lines, also saved with the notebook
        ```
    """

    def __init__(
        self,
        scheduler: Scheduler,
        *tasks: Task[Any, Any],
        plot: PlotFunction | bool | None = None,
        timeout: float | None = None,
        end_on_empty: bool = True,
        wait: bool = True,
        end_after_failures: int | None = None,
        interval: float = 0.5,
        draw_budget: float = 0.02,
        metric: str | None = None,
        best: Literal["min", "max"] = "min",
        optimizer: Any = None,
        log_lines: int = 500,
        x: Literal["number", "time"] | None = None,
        total: int | None = None,
        table_rows: int = 5,
    ) -> None:
        if optimizer is not None:
            metric, best = metric_and_best(optimizer)
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"Dashboard needs a byop_nb Scheduler as its first argument, got {scheduler!r}")
        for task in tasks:
            if not isinstance(task, Task):
                raise TypeError(f"Dashboard(scheduler, *tasks) takes Task objects after the scheduler, got {task!r}")
            if task.scheduler is not scheduler:
                raise ValueError(f"{task!r} belongs to another scheduler; a dashboard shows the tasks of one scheduler")
        if plot is True:
            plot = None
        if plot is not None and plot is not False and not callable(plot):
            raise TypeError(f"plot= must be None, False or a function plot(df, ax), got {plot!r}")
        RunOptions(timeout, end_on_empty, wait, end_after_failures=end_after_failures)  # checked at the call
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval >= 0.05:
            raise ValueError(f"interval= must be a number of seconds, at least 0.05, got {interval!r}")
        if isinstance(draw_budget, bool) or not isinstance(draw_budget, (int, float)) or not 0 < draw_budget <= 1:
            raise ValueError(f"draw_budget= must be a share of the time, above 0 and at most 1, got {draw_budget!r}")
        if metric is not None and not isinstance(metric, str):
            raise TypeError(f"metric= must be a dict key (str) or None, got {metric!r}")
        if isinstance(log_lines, bool) or not isinstance(log_lines, int) or log_lines < 1:
            raise ValueError(f"log_lines= must be a number of lines to keep, at least 1, got {log_lines!r}")
        if x not in (None, "number", "time"):
            raise ValueError(f"x= must be 'number', 'time' or None, got {x!r}")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 1):
            raise ValueError(f"total= must be a number of calls, at least 1, or None; got {total!r}")
        if isinstance(table_rows, bool) or not isinstance(table_rows, int) or table_rows < 0:
            raise ValueError(f"table_rows= must be a number of rows, 0 or more, got {table_rows!r}")

        self.scheduler = scheduler
        self.timeout = timeout
        self.end_on_empty = end_on_empty
        self.wait = wait
        self.end_after_failures = end_after_failures
        self.interval = float(interval)
        self.draw_budget = float(draw_budget)
        self.handle: RunHandle | None = None
        """The handle of the latest run this dashboard started (Start, or `start()`)."""
        self.n_redraws = 0
        self.redraw_seconds = 0.0
        """Seconds spent drawing the plot, all redraws together (`n_redraws` of them)."""
        """How many times the plot was drawn."""
        self.busy_seconds = 0.0
        """Seconds spent following runs (refreshing and redrawing on the scheduler's events and timer):
        time the run's event loop could not dispatch work."""
        self._tasks = tasks
        self._user_plot: PlotFunction | None = plot if callable(plot) else None
        self.optimizer = optimizer
        """The optimizer given (its `best_value` is the best shown), or None."""
        self.total = total
        self._x = x
        self._table_rows = table_rows
        self._data = LiveData(metric=metric, best=best, keep=max(table_rows, 1))
        self._study_checked = -math.inf  # when the optimizer's best was read last (perf_counter)
        self._study_stale = True  # calls ended since
        self._drawn_ended = 0  # calls ended, and whether values were there, at the latest redraw
        self._drawn_values = False
        self._snapshots: list[Any] = []  # the IPython DisplayHandles of the static pictures in cell outputs
        self._snapshot_at = -math.inf  # when they were last updated (perf_counter)
        self._renderer = None if plot is False else PlotRenderer()
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._stop_clicked = False
        self._dirty = True
        self._last_redraw = -math.inf
        self._redraw_due: float | None = None  # when a throttled redraw is due (perf_counter), if one waits
        self._redraw_costs: collections.deque[float] = collections.deque(maxlen=8)  # the latest redraws' seconds
        self._follow_from_now()
        self._own_error: tuple[float, str] | None = None
        self._callback_error: tuple[float, str] | None = None
        # A callback error ends its run as STOPPED: one already there while a run goes on, or after a
        # run that ended otherwise, is an earlier run's.
        stale = scheduler.state == "running" or (
            scheduler.state == "finished" and scheduler.exit_code is not ExitCode.STOPPED
        )
        self._callback_error_seen = scheduler.last_error if stale else None
        self.log_lines = log_lines
        self._log = scheduler_log(scheduler)  # shared by the scheduler's dashboards
        self._log_shown = -1  # the log version the pane shows

        self.start_button = widgets.Button(description="Start", icon="play", button_style="success")
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger")
        self.start_button.tooltip = "scheduler.start() with the dashboard's run options"
        self.stop_button.tooltip = "scheduler.stop()"
        self.status_html = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))
        self.progress_bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="")
        self.progress_html = widgets.HTML()
        self.best_html = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))
        """The best value so far ("loss: best (min) 0.012 in the study"), next to the progress bar."""
        self.failures_html = widgets.HTML()
        """One red line while calls of the latest run fail: how many of how many, and the first error."""
        self.counters_html = widgets.HTML()
        self.trials_html = widgets.HTML()
        """The live table: the best and the latest calls with their parameters and metrics."""
        self._css = widgets.HTML(DASHBOARD_CSS, layout=widgets.Layout(display="none"))
        self.plot_image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        # A scroll box laid out bottom up starts at its end and stays there as lines come in: the pane
        # follows the newest lines (unless the reader scrolled up), with no script in the page.
        self.log_output = widgets.Output(
            layout=widgets.Layout(max_height="16em", overflow="auto", display="flex", flex_flow="column-reverse")
        )
        """The log pane's Output widget: what a background run's callbacks wrote, in its `outputs`."""
        self.log_pane = widgets.Accordion(children=[self.log_output], selected_index=None)
        """The collapsible box around `log_output`; its title counts the lines."""
        for widget, css in (
            (self.start_button, "byop-start"),
            (self.stop_button, "byop-stop"),
            (self.status_html, "byop-status"),
            (self.progress_bar, "byop-progress"),
            (self.counters_html, "byop-counters"),
            (self.best_html, "byop-best"),
            (self.failures_html, "byop-failures"),
            (self.trials_html, "byop-trials-pane"),
            (self.plot_image, "byop-plot"),
            (self.log_pane, "byop-log"),
            (self.log_output, "byop-log-output"),
        ):
            widget.add_class(css)
        self.start_button.on_click(self._on_start_click)
        self.stop_button.on_click(self._on_stop_click)
        self._progress_row = widgets.HBox([self.progress_bar, self.progress_html])
        children: list[widgets.Widget] = [
            self._css,
            widgets.HBox([self.start_button, self.stop_button, self.status_html]),
            widgets.HBox([self._progress_row, self.best_html]),
            self.failures_html,
            self.counters_html,
        ]
        if self._renderer is not None:
            children.append(self.plot_image)
        if table_rows:
            children.append(self.trials_html)
        children.append(self.log_pane)
        super().__init__(children=children)
        self.add_class("byop-dashboard")

        # Named registrations: unique to this dashboard, removed by close().
        self._registration = f"byop_nb.Dashboard[{id(self):x}]"
        manager = scheduler.event_manager
        manager.on(scheduler.STARTED, self._on_started, name=self._registration)
        manager.on(scheduler.FINISHING, self._on_finishing, name=self._registration)
        manager.on(scheduler.FINISHED, self._on_finished, name=self._registration)
        self._log.open(self._registration, log_lines, self._on_log)

        self.refresh(redraw=True)
        self._calibrate()
        if scheduler.running():  # made during a run: follow it from now on
            self._follow_from_now()
            self._start_timer()

    # -- what is shown -------------------------------------------------------
    @property
    def tasks(self) -> list[Task[Any, Any]]:
        """The tasks shown: those given, or else every task the scheduler has now."""
        return list(self._tasks) if self._tasks else list(self.scheduler.tasks.values())

    @property
    def last_error(self) -> str | None:
        """The error the status line shows, as `source: Type: message`, or None."""
        candidates = [e for e in (self._data.last_error, self._callback_error, self._own_error) if e is not None]
        return max(candidates, key=lambda e: e[0])[1] if candidates else None

    @property
    def log_text(self) -> str:
        """The text the log pane keeps: the last `log_lines` lines the callbacks of background runs wrote."""
        return self._log.lines.text(self.log_lines)

    def clear_log(self) -> None:
        """Empty the log pane (of every dashboard of the scheduler: they share it)."""
        self._log.clear()
        self._show_log()

    @property
    def plot_error(self) -> BaseException | None:
        """The exception your `plot=` function raised at the latest redraw, if any."""
        return None if self._renderer is None else self._renderer.plot_error

    def refresh(self, *, redraw: bool | None = None) -> None:
        """Bring every widget up to date now.

        The plot is redrawn when new calls ended and a redraw is due
        (`redraw=None`), always (`True`) or never (`False`).
        """
        if self._closed:
            return
        tasks = self.tasks
        data = self._data
        data.trials = bool(tasks) and all(isinstance(task, TrialTask) for task in tasks)
        data.x = self._x or ("number" if data.trials else "time")
        changed = data.update(tasks, self.scheduler.started_at)
        if changed:
            self._dirty = True
            self._study_stale = True
        if self._study_stale:
            self._read_study_best(force=redraw is True)
        self._note_callback_error()
        self._update_buttons()
        self._update_status()
        self._update_progress(tasks)
        self._update_best()
        self._update_failures(tasks)
        self.counters_html.value = _html.TABLE_CSS + _html.counters_table_html(tasks, run=True)
        if self._table_rows and (changed or not self.trials_html.value):
            self.trials_html.value = trials_table_html(data, metric=self._metric())
        self._show_log()
        if redraw is not False:
            # The first ended call and the first value are drawn at once, whatever the throttle says.
            first = (data.n_ended and not self._drawn_ended) or (data.has_values and not self._drawn_values)
            self._maybe_redraw(force=bool(redraw) or bool(first))

    def redraw(self, *, throttle: bool = True) -> None:
        """Draw the plot now, whatever the throttle says, and show it.

        With `throttle=True` the time the drawing took spaces the next
        throttled redraw (see `draw_budget`); the one-off redraws when a
        dashboard is made and when a run finishes pass False.
        """
        renderer = self._renderer
        if renderer is None or self._closed:
            return
        began, began_cpu = time.perf_counter(), time.thread_time()
        frame = self._frame if self._user_plot is not None else None
        self.plot_image.value = renderer.render(self._data, self._user_plot, frame)
        if renderer.plot_error is not None:
            self._own_error = (time.time(), f"plot: {_html.short_error(renderer.plot_error)}")
        self.redraw_seconds += time.perf_counter() - began
        if throttle:
            # The loop's own work (its thread's CPU time): on a machine that other processes keep busy
            # (the run's workers, a browser), the wall time of a redraw grows with their load, not with
            # what the dashboard takes from the loop; spacing redraws by it would starve the plot.
            self._redraw_costs.append(time.thread_time() - began_cpu)
        self._last_redraw = time.perf_counter()
        self._dirty = False
        self._drawn_ended, self._drawn_values = self._data.n_ended, self._data.has_values
        self.n_redraws += 1

    def _calibrate(self) -> None:
        """Time one more drawing of the plot just shown: the first one of a figure (fonts, layout) is
        slower than those that follow, and the throttle spaces redraws by what drawing costs."""
        if self._renderer is None:
            return
        began = time.thread_time()
        self._renderer.render(self._data, self._user_plot, self._frame if self._user_plot is not None else None)
        self._redraw_costs.append(time.thread_time() - began)

    def _maybe_redraw(self, *, force: bool = False) -> None:
        if self._renderer is None:
            return
        if not (self._dirty or force):
            return
        if force:
            self.redraw(throttle=False)
            return
        # The budget holds for everything the dashboard does on the loop since it began to follow the
        # run: reading the ended calls and refreshing the widgets take their share first, drawing gets
        # the rest. Most redraws draw only the lines; now and then the labels or the whole figure are
        # drawn too: the budget holds for the latest redraws' average, so one of those does not stall it.
        costs = self._redraw_costs
        cost = sum(costs) / len(costs) if costs else 0.0
        now = time.perf_counter()
        began, busy, drawing = self._followed_from
        elapsed = now - began
        other = (self.busy_seconds - busy) - (self.redraw_seconds - drawing)
        share = self.draw_budget - other / elapsed if elapsed > 0 else self.draw_budget
        pause = min(max(self.interval, cost / max(share, self.draw_budget / 20)), MAX_REDRAW_PAUSE)
        if now >= self._last_redraw + pause:
            self._redraw_due = None
            self.redraw()
        else:  # the timer wakes when it is due, not at the next whole interval (a 0.6 s pause is not 1 s)
            self._redraw_due = self._last_redraw + pause

    def _follow_from_now(self) -> None:
        """The drawing budget counts from now: when the dashboard began to follow the current run,
        with `busy_seconds` and `redraw_seconds` then."""
        self._followed_from = (time.perf_counter(), self.busy_seconds, self.redraw_seconds)

    def _frame(self) -> pd.DataFrame:
        tasks = self.tasks
        if len(tasks) == 1:
            return tasks[0].df()
        import pandas as pd

        frames = [task.df() for task in tasks]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _on_log(self) -> None:
        """Lines came into the scheduler's log (the scheduler calls this in its loop, via the shared log)."""
        if self._closed:
            return
        if self._timer is None:  # no refresh is coming (the run ended): show it now
            self._safely(self._show_log)

    def _show_log(self) -> None:
        """Bring the log pane up to date: its outputs (the kernel-side state a notebook saves) and its title."""
        log = self._log.lines
        if log.version == self._log_shown:
            return
        self._log_shown = log.version
        self.log_output.outputs = log.outputs(self.log_lines)
        self.log_pane.titles = (log.title(self.log_lines),)

    def _note_callback_error(self) -> None:
        error = self.scheduler.last_error
        if error is not None and error is not self._callback_error_seen:
            self._callback_error_seen = error
            self._callback_error = (time.time(), f"callback: {_html.short_error(error)}")

    # -- buttons -----------------------------------------------------------
    def start(self) -> RunHandle:
        """Start the scheduler in the background with the dashboard's run options (what Start does).

        Returns the [`RunHandle`][byop_nb.scheduling.RunHandle], also kept as `dashboard.handle`.

        During a background run (one `start()` began) it starts nothing: it writes one line
        saying so and returns that run's handle.

        Raises:
            RuntimeError: no event loop is running (outside Jupyter: use `scheduler.run()`),
                or a blocking `run()` is going on.
        """
        scheduler = self.scheduler
        running = scheduler.handle if scheduler.running() else None
        if running is not None:
            # Not an error a traceback helps with: say it in one line, and give the run's handle.
            began = _html.format_seconds(_html.elapsed(scheduler))
            print(f"byop_nb: the run is going on already (for {began}); this returns its handle", file=sys.stderr)
            return running
        options = RunOptions(self.timeout, self.end_on_empty, self.wait, end_after_failures=self.end_after_failures)
        handle = scheduler.start(**options.as_kwargs())
        self.handle = handle
        self.refresh(redraw=False)
        return handle

    def stop(self) -> None:
        """Ask the scheduler to stop (what Stop does); see `Scheduler.stop`."""
        if self.scheduler.state == "running":
            self._stop_clicked = True
        self.scheduler.stop()
        self.refresh(redraw=False)

    def _on_start_click(self, _button: widgets.Button) -> None:
        try:
            self.start()
        except Exception as error:
            self._own_error = (time.time(), f"Start: {_html.short_error(error, 400)}")
            self._safely(self.refresh)

    def _on_stop_click(self, _button: widgets.Button) -> None:
        self.stop()

    # -- following a run -----------------------------------------------------
    def _safely(self, update: Any) -> None:
        """Run `update()`; a dashboard failure is shown and logged, never raised into the run."""
        began = time.perf_counter()
        try:
            update()
        except Exception as error:
            logger.exception("byop_nb Dashboard: refreshing failed")
            self._own_error = (time.time(), f"dashboard: {_html.short_error(error)}")
        finally:
            self.busy_seconds += time.perf_counter() - began

    def _start_timer(self) -> None:
        if self._timer is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop here: the scheduler's events still refresh the widgets
            return
        delay = self.interval
        due = self._redraw_due
        if due is not None and self._dirty:
            delay = min(delay, max(0.05, due - time.perf_counter()))
        self._timer = loop.call_later(delay, self._tick)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        self._safely(self.refresh)
        if self._snapshots and time.perf_counter() - self._snapshot_at >= SNAPSHOT_EVERY:
            self._safely(self._update_snapshots)
        if self.scheduler.running():
            self._start_timer()

    def _on_started(self) -> None:
        self._stop_clicked = False
        self._callback_error_seen = self.scheduler.last_error  # an error of an earlier run is old news
        self._callback_error = None
        self._own_error = None
        self._follow_from_now()
        self._drawn_ended, self._drawn_values = 0, False  # the new run's first call is drawn at once too
        self._safely(lambda: self.refresh(redraw=False))
        self._start_timer()

    def _on_finishing(self) -> None:
        self._safely(lambda: self.refresh(redraw=False))

    def _on_finished(self) -> None:
        self._stop_timer()
        self._stop_clicked = False
        self._safely(lambda: self.refresh(redraw=True))
        self._safely(self._update_snapshots)

    # -- the static picture in the cell's output -----------------------------------
    def _ipython_display_(self) -> None:
        """Show the widget, and below it its static picture (hidden while the widget shows; see the class doc)."""
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        self._snapshots.append(display(self.snapshot_bundle(), raw=True, display_id=True))

    # -- closing -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed

    def close(self) -> None:
        """Detach from the scheduler (its events no longer reach this dashboard) and close the widgets.

        The scheduler and its run are not affected.
        """
        if not getattr(self, "_closed", True):  # (also called by Widget.__del__ after a failed __init__)
            self._closed = True
            self._stop_timer()
            scheduler = self.scheduler
            for event in (scheduler.STARTED, scheduler.FINISHING, scheduler.FINISHED):
                scheduler.event_manager.remove(self._registration, event)
            self._log.close(self._registration)
            if self._renderer is not None:
                self._renderer.close()
            for widget in (
                self.start_button,
                self.stop_button,
                self.status_html,
                self.progress_bar,
                self.progress_html,
                self.counters_html,
                self.best_html,
                self.failures_html,
                self.trials_html,
                self._css,
                self.plot_image,
                self.log_output,
                self.log_pane,
                *self.children,
            ):
                widget.close()
        super().close()

    def __del__(self) -> None:
        # ipywidgets keeps every open widget, and the scheduler its dashboards: an open Dashboard is
        # collected only at interpreter exit (Python 3.12 and later do collect it then), when imports
        # fail ("sys.meta_path is None") and the figure's clearing would print "Exception ignored in
        # Widget.__del__". There is nothing left to close then: the process is ending.
        try:
            finalizing = sys.is_finalizing()
        except Exception:  # the sys module itself is torn down
            finalizing = True
        if not finalizing:
            self.close()

    def __repr__(self) -> str:
        return f"Dashboard(scheduler={self.scheduler.state}, tasks={[t.name for t in self.tasks]})"
