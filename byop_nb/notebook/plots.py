"""The Dashboard's live plots: matplotlib figures drawn with Agg into PNG bytes.

No pyplot and no ipympl: a `Figure` with its own Agg canvas is drawn and
encoded to PNG, which an `ipywidgets.Image` shows. That works in any
frontend that renders widgets (JupyterLab, Notebook 7, VS Code, Binder) and
never touches matplotlib's global backend.

[`LiveData`][byop_nb.notebook.plots.LiveData] reads the tasks' histories
incrementally (only rows recorded since its last look), so a refresh costs
O(new calls), not O(all calls). It needs no matplotlib: only
[`PlotRenderer`][byop_nb.notebook.plots.PlotRenderer] imports it, when made.
The renderer draws every panel here (`_draw_ended`, `_draw_values`,
`_draw_curves`, `_draw_user`); the learning curves' data, read from the steps
trials report, is `notebook/_curves.py`'s, and the axes' round ranges and tick
labels are `notebook/_axes.py`'s.

```python
from byop_nb.notebook.plots import LiveData, PlotRenderer

data = LiveData()
renderer = PlotRenderer()
png = renderer.render(data)     # PNG bytes: an empty "ended calls" panel
assert png.startswith(b"\\x89PNG")
```
"""

from __future__ import annotations

import bisect
import collections
import io
import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from byop_nb._html import row_error, row_result, short_error
from byop_nb.notebook._axes import X_TICKS, Y_TICKS, picks, round_range, tick_labels
from byop_nb.notebook._curves import Curve, LearningCurves

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D

    from byop_nb.scheduling.task import Task

__all__ = ["LiveData", "PlotRenderer", "PlotFunction", "numeric_value"]

PlotFunction = Callable[["pd.DataFrame", "Axes"], Any]
"""A user plot: called as `plot(df, ax)` with the live DataFrame and a matplotlib Axes to draw on."""

_TEXT = (34, 34, 34, 255)  # labels and titles: near black


def numeric_value(result: Any, metric: str | None = None) -> tuple[float | None, str | None]:
    """The number to plot for a call's result, and the dict key it came from.

    A real number (not a bool) is its own value; for a mapping, `metric` names
    the key, or else the first key holding a real number is used. Anything else
    gives `(None, None)`.

    ```python
    from byop_nb.notebook.plots import numeric_value
    assert numeric_value(2) == (2.0, None)
    assert numeric_value({"name": "a", "loss": 0.5}) == (0.5, "loss")
    assert numeric_value("text") == (None, None)
    ```
    """
    if result is None:
        return None, None
    kind = type(result)
    if kind is float or kind is int or (isinstance(result, numbers.Real) and kind is not bool):
        return float(result), None
    if isinstance(result, Mapping):
        if metric is not None:
            value = result.get(metric)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                return float(value), metric
            return None, metric
        for key, value in result.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                return float(value), str(key)
    return None, None


class _Series:
    """The latest run of one task, as read from its history so far."""

    __slots__ = (
        "best",
        "ended",
        "failed",
        "failures",
        "high",
        "low",
        "metric",
        "name",
        "rows_read",
        "task",
        "value_numbers",
        "value_times",
        "values",
    )

    def __init__(self, task: Task[Any, Any], metric: str | None) -> None:
        self.task = task
        self.name = task.name
        self.rows_read = 0
        self.ended: list[float] = []  # finished timestamps of every ended call
        self.failed = 0
        self.failures: dict[str, int] = {}  # ended calls per failure status
        self.value_times: list[float] = []
        self.value_numbers: list[float] = []  # the call (trial) number of each value
        self.values: list[float] = []
        self.best: list[float] = []  # best value so far, one per value
        self.low = math.inf  # the smallest and largest value
        self.high = -math.inf
        self.metric = metric

    def clear(self) -> None:
        self.ended.clear()
        self.value_times.clear()
        self.value_numbers.clear()
        self.values.clear()
        self.best.clear()
        self.low = math.inf
        self.high = -math.inf
        self.failed = 0
        self.failures.clear()


class LiveData:
    """Ended-call times and numeric results of the latest run, read incrementally from task histories.

    Args:
        metric: the key to plot for dict results (default: the first key holding a number).
        best: "min" or "max": which values count as better for the best-so-far line.
        x: what the values are plotted against: "time" (seconds since the run started) or
            "number" (a trial's number from its optimizer, `info.number` or
            `info.optuna_trial`, or else the call's number).
        keep: how many rows `latest` and `top` keep (the live table's latest and best).
    """

    def __init__(
        self,
        metric: str | None = None,
        best: Literal["min", "max"] = "min",
        *,
        x: Literal["time", "number"] = "time",
        keep: int = 5,
    ) -> None:
        if best not in ("min", "max"):
            raise ValueError(f"best= must be 'min' or 'max', got {best!r}")
        if x not in ("time", "number"):
            raise ValueError(f"x= must be 'time' or 'number', got {x!r}")
        self.metric = metric
        self.best = best
        self.x = x
        self.keep = keep
        self.latest: collections.deque[Mapping[str, Any]] = collections.deque(maxlen=keep)
        """The latest ended rows of the latest run (the history's own, newest last), all tasks together."""
        self.overall_best: tuple[float, str] | None = None
        """A best value from elsewhere, and where it is from (an optimizer's study: "in the study"), that the
        values panel shows instead of the latest run's own."""
        self.trials = False
        """Whether the rows are trials (a `Trial.Task`'s): the plot says "trial" for a call."""
        self.top: list[tuple[float, int, Mapping[str, Any]]] = []
        """The `keep` best rows of the latest run by their value, best first: (value, order, row)."""
        self._order = 0
        self.since: float | None = None
        self.last_error: tuple[float, str] | None = None
        """(finished time, "task: Type: message") of the latest failed call of the latest run."""
        self.outcomes: dict[str, str] = {}
        """What each status of the tasks read means ("success" or "failure"), as their classes say
        (`Task.SUCCESSES`, `Task.FAILURES`); a status in neither (cancelled, pruned) is not here."""
        self._series: dict[int, _Series] = {}
        self._learning_curves = LearningCurves(metric)  # from the steps trials reported (`_curves.py`)

    @property
    def curves(self) -> dict[str, Curve]:
        """The learning curves of the latest run: trial name -> the steps it reported (`trial.report_step`)."""
        return self._learning_curves.by_trial

    @property
    def curve_metric(self) -> str | None:
        """The metric the curves show: `metric`, or the optimizer's metric of the first trial that reported."""
        return self._learning_curves.metric

    @property
    def has_curves(self) -> bool:
        """Whether a trial of the latest run reported a step with the curves' metric."""
        return self._learning_curves.has_steps

    @property
    def series(self) -> list[_Series]:
        """One entry per task, in the order tasks were first seen."""
        return list(self._series.values())

    @property
    def has_values(self) -> bool:
        """Whether any task returned a number (or a dict with a number) in the latest run."""
        return any(s.values for s in self._series.values())

    @property
    def n_ended(self) -> int:
        """Calls ended in the latest run, all tasks together."""
        return sum(len(s.ended) for s in self._series.values())

    def update(self, tasks: Sequence[Task[Any, Any]], since: float | None) -> bool:
        """Read the rows recorded since the last update; returns whether anything new was read.

        `since` is the latest run's start time: rows that finished before it
        belong to an earlier run and are skipped; a new `since` starts the
        series afresh.
        """
        changed = False
        if since != self.since:
            self.since = since
            self.last_error = None
            self.latest.clear()
            self.top.clear()
            for s in self._series.values():
                s.clear()
            self._learning_curves.clear()
            changed = True
        start = since if since is not None else -math.inf
        better = min if self.best == "min" else max
        for task in tasks:
            key = id(task)
            series = self._series.get(key)
            if series is None or series.task is not task:
                series = self._series[key] = _Series(task, self.metric)
                self.outcomes.update(
                    {**dict.fromkeys(task.SUCCESSES, "success"), **dict.fromkeys(task.FAILURES, "failure")}
                )
                changed = True
            changed = self._learning_curves.read(task, start) or changed  # a Trial.Task's reported steps
            n = len(task.history)
            if n == series.rows_read:
                continue
            self._read(task, series, task.history.stored_rows(series.rows_read, n), start, better)
            series.rows_read = n
            changed = True
        return changed

    def _read(
        self,
        task: Task[Any, Any],
        series: _Series,
        rows: Sequence[Mapping[str, Any]],
        start: float,
        better: Callable[[float, float], float],
    ) -> None:
        """Add `rows` (the history's own, read only) to `series`: the dashboard's cost per ended call.

        Kept to a few dictionary reads per row: a busy run ends thousands of calls a second.
        """
        ended = series.ended
        successes, failures = task.SUCCESSES, task.FAILURES
        latest, top, keep, sign = self.latest, self.top, self.keep, (1.0 if self.best == "min" else -1.0)
        for row in rows:
            finished = row.get("finished")
            if finished is None or finished < start or not isinstance(finished, (int, float)):
                continue
            ended.append(finished)
            latest.append(row)
            status = row.get("status")
            if status == "pruned":
                name = row.get("trial")
                if isinstance(name, str):
                    self._learning_curves.mark_pruned(name)
                continue
            if status in failures:
                series.failed += 1
                series.failures[status] = series.failures.get(status, 0) + 1
                if self.last_error is None or finished >= self.last_error[0]:
                    error = row_error(row) or str(status)
                    self.last_error = (float(finished), f"{task.name}: {error}")
                continue
            if status not in successes:
                continue
            result = row.get("result")
            if result is None:
                result = row_result(row)  # a dict result is spread over `result.<key>` fields
                if result is None:  # no value (a no-op, a procedure): the common case costs no more
                    continue
            value, key_used = numeric_value(result, series.metric)
            if series.metric is None and key_used is not None:
                series.metric = key_used  # fixed from the first dict result on
            if value is None or not math.isfinite(value):
                continue
            series.value_times.append(float(finished))
            # A trial's own number (an optimizer's: "trial-7" is 7, a resumed study's go on), else the call's.
            number = row.get("info.number", row.get("info.optuna_trial", row.get("call")))
            series.value_numbers.append(float(number) if isinstance(number, int) else float(len(ended)))
            series.values.append(value)
            self._order += 1
            if len(top) < keep or sign * value < sign * top[-1][0]:
                # a few rows, kept sorted: best first, the earlier of equal values first
                bisect.insort(top, (value, self._order, row), key=lambda item: (sign * item[0], item[1]))
                del top[keep:]
            if value < series.low:
                series.low = value
            if value > series.high:
                series.high = value
            series.best.append(better(series.best[-1], value) if series.best else value)


class PlotRenderer:
    """Draws the dashboard's panels on one Agg figure and returns PNG bytes.

    Panels: "ended calls over time" (one step line per task), then either
    the results' values with their best so far (when there are numeric
    results), or the user's plot `plot(df, ax)` when one is given; then,
    once a trial reported a step (`trial.report_step`), the learning curves:
    the metric against the step, a line per trial, pruned trials in grey.

    Args:
        width: figure width in inches.
        height: figure height in inches.
        dpi: pixels per inch of the PNG.
    """

    def __init__(self, *, width: float = 9.0, height: float = 2.6, dpi: int = 80) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
        self.canvas = FigureCanvasAgg(self.figure)
        self._layout: tuple[str, ...] = ()
        self._axes: dict[str, Axes] = {}
        self._lines: dict[tuple[str, int], list[Line2D]] = {}
        self._animated: list[Artist] = []  # the lines: drawn over the kept background at every render
        # Each axes' tick labels (x, y) and title: drawn into the background when they change.
        self._ticks: dict[Axes, tuple[list[str], list[str]]] = {}
        self._titles: dict[Axes, str] = {}
        self._fonts: dict[float, Any] = {}
        self._bounds: dict[Axes, tuple[float, float, float, float]] = {}  # each axes' limits: x, y low and high
        self._legend_names: tuple[str, ...] = ()
        self._frame: Any = None  # the pixels of the axes, grid and legend (no text that changes)
        self._background: Any = None  # the frame with the tick labels and titles
        self.n_full_draws = 0
        """How many renders drew the whole figure: the panels changed (or a user plot is shown)."""
        self.n_relabels = 0
        """How many renders drew the tick labels and titles anew over the kept frame: the data outgrew
        the axes or a title changed. Other renders draw only the lines."""
        self.plot_error: BaseException | None = None
        """The exception the user's plot raised at the latest render, if any."""

    def _set_layout(self, layout: tuple[str, ...]) -> None:
        if layout == self._layout:
            return
        self.figure.clear()
        self._lines.clear()
        self._animated.clear()
        self._ticks.clear()
        self._titles.clear()
        self._bounds.clear()
        self._legend_names = ()
        self._frame = self._background = None
        axes = self.figure.subplots(1, len(layout), squeeze=False)[0]
        self._axes = dict(zip(layout, axes, strict=True))
        self._layout = layout
        self.figure.subplots_adjust(left=0.05, right=0.975, bottom=0.1, top=0.9, wspace=0.15)
        for name, ax in self._axes.items():
            if name != "user":
                self._style(ax)

    def _style(self, ax: Axes) -> None:
        """Ticks at fixed fractions of the axes, so that the frame's pixels never depend on the limits;
        the tick labels and the title are drawn into the background when they change (`_labelled`)."""
        from matplotlib.ticker import LinearLocator

        ax.tick_params(length=2, labelbottom=False, labelleft=False)
        ax.xaxis.set_major_locator(LinearLocator(X_TICKS))
        ax.yaxis.set_major_locator(LinearLocator(Y_TICKS))
        ax.grid(True, alpha=0.3)
        self._ticks[ax] = ([""] * X_TICKS, [""] * Y_TICKS)
        self._titles[ax] = ""

    def _font(self, points: float) -> Any:
        """Matplotlib's own sans-serif face at `points`, as a PIL font (loaded once per size)."""
        font = self._fonts.get(points)
        if font is None:
            from matplotlib.font_manager import FontProperties, findfont
            from PIL import ImageFont

            path = findfont(FontProperties())  # the default family of rcParams
            font = self._fonts[points] = ImageFont.truetype(path, points * self.figure.dpi / 72)
        return font

    def _labelled(self, frame: Any) -> Any:
        """`frame` with every panel's tick labels and title drawn on it, as a new array.

        Drawn with PIL, whose glyph cache makes a short label cost tens of microseconds
        (matplotlib's Text costs about a millisecond each): the data outgrowing the axes
        costs a few labels, not a drawing of the figure.
        """
        import numpy as np
        from PIL import Image, ImageDraw

        image = Image.fromarray(frame, "RGBA")
        draw = ImageDraw.Draw(image)
        height = frame.shape[0]
        small, title_font = self._font(7), self._font(8)
        for ax, (xs, ys) in self._ticks.items():
            to_pixels = ax.transAxes.transform
            for i, text in enumerate(xs):
                x, y = to_pixels((i / (X_TICKS - 1), 0.0))
                draw.text((x, height - y + 3), text, fill=_TEXT, font=small, anchor="mt")
            for i, text in enumerate(ys):
                x, y = to_pixels((0.0, i / (Y_TICKS - 1)))
                draw.text((x - 4, height - y), text, fill=_TEXT, font=small, anchor="rm")
            x, y = to_pixels((0.0, 1.0))
            room = frame.shape[1] - x - 2  # a title may run past its axes, not past the picture
            title, font = _fitted(draw, self._titles[ax], room, (title_font, small))
            draw.text((x, height - y - 5), title, fill=_TEXT, font=font, anchor="ls")
        return np.asarray(image).copy()

    def render(
        self,
        data: LiveData,
        plot: PlotFunction | None = None,
        frame: Callable[[], pd.DataFrame] | None = None,
    ) -> bytes:
        """Draw the panels for `data` (and `plot(frame(), ax)` if given) and return a PNG.

        Most redraws are cheap: the axes, ticks and grid are drawn once into a
        background that is kept, and only the changing artists (lines and
        titles) are drawn over it. The axes' limits grow in steps ahead of the
        data, so the background is drawn anew only when the data outgrows them,
        the panels change, or a user plot is shown (that one is drawn in full).
        """
        import numpy as np

        layout: tuple[str, ...] = (
            ("ended", "user") if plot is not None else ("ended", "values") if data.has_values else ("ended",)
        )
        if data.has_curves:
            layout += ("curves",)
        self._set_layout(layout)
        since = data.since or 0.0
        relabel = self._draw_ended(self._axes["ended"], data, since)
        if "values" in self._axes:
            relabel = self._draw_values(self._axes["values"], data, since) or relabel
        if "curves" in self._axes:
            relabel = self._draw_curves(self._axes["curves"], data) or relabel
        if plot is not None and frame is not None:
            self._draw_user(self._axes["user"], plot, frame)
            self._frame = None  # a user plot is drawn in full each time
        renderer = self.canvas.get_renderer()  # the same one while the figure's size stays
        buffer = np.asarray(renderer.buffer_rgba())
        if self._frame is None:
            self.canvas.draw()  # everything but the animated artists: axes, grid, legend, a user plot
            self._frame = buffer.copy()
            self.n_full_draws += 1
            relabel = True
        if relabel or self._background is None:
            self._background = self._labelled(self._frame)
            self.n_relabels += 1
        buffer[...] = self._background
        for artist in self._animated:
            artist.draw(renderer)
        return self._png()

    def _png(self) -> bytes:
        from PIL import Image

        width, height = self.canvas.get_width_height()
        image = Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="png", compress_level=1)
        return buffer.getvalue()

    def _line(self, ax: Axes, kind: str, index: int, n: int, **style: Any) -> list[Line2D]:
        key = (kind, index)
        lines = self._lines.get(key)
        if lines is None:
            lines = self._lines[key] = [ax.plot([], [], color=f"C{index % 10}", **style)[0] for _ in range(n)]
            for line in lines:
                line.set_animated(True)
                self._animated.append(line)
        return lines

    def _limits(self, ax: Axes, x_low: float, x: float, y_low: float, y_high: float, *, y_from_zero: bool) -> bool:
        """Grow `ax`'s limits in steps to hold x in [x_low, x] and y in [y_low, y_high]; whether they changed.

        The axes follow the data: the y range is the values' own with a narrow margin, rounded
        out to round ticks (see `round_range`), made anew when a value falls outside it; x grows
        a fifth ahead of the data, so that a new point seldom needs new labels."""
        old = self._bounds.get(ax)
        if old is not None:
            x_min, x_max, low, high = old
            if x_min <= x_low and x < x_max and low <= y_low and y_high <= high:  # (a point on the edge: grow)
                return False
        x_min = 0.0 if x_low <= 1.0 else x_low - 1.0
        x_min, x_max = round_range(x_min, x_min + max(x - x_min, 1.0) * 1.2, X_TICKS - 1)
        if y_from_zero:
            low, high = round_range(0.0, max(y_high * 1.2, 8.0))
        else:
            span = y_high - y_low
            margin = span * 0.01 if span > 0 else max(abs(y_high) * 0.05, 1e-6)
            # From the values' own range (all of the run's so far), not from the old limits: those were
            # rounded out already, and rounding them again would widen the axis beyond what the data need
            # (an accuracy from 0.1 to 0.97 on 0 to 1.2). New limits come only when a value falls outside.
            low, high = round_range(y_low - margin, y_high + margin)
        self._bounds[ax] = (x_min, x_max, low, high)
        ax.set_xlim(x_min, x_max)
        ax.set_ylim(low, high)
        xs, ys = self._ticks[ax]
        xs[:] = tick_labels(x_min, x_max, X_TICKS)
        ys[:] = tick_labels(low, high, Y_TICKS)
        return True

    def _title(self, ax: Axes, text: str) -> bool:
        """Set `ax`'s title; whether it changed. Titles say what changes seldom (the numbers that
        change at every call are in the counters): a new title costs a new background."""
        if self._titles.get(ax) == text:
            return False
        self._titles[ax] = text
        return True

    def _draw_ended(self, ax: Axes, data: LiveData, since: float) -> bool:
        total = 0
        failed = 0
        x_end = 0.0
        for i, series in enumerate(data.series):
            (line,) = self._line(ax, "ended", i, 1, drawstyle="steps-post", linewidth=1.5)
            times = series.ended
            picked = picks(len(times))
            xs = [0.0, *(times[i] - since for i in picked)]
            ys = [0.0, *(i + 1 for i in picked)]
            line.set_data(xs, ys)
            line.set_label(series.name)
            total = max(total, len(series.ended))
            failed += series.failed
            x_end = max(x_end, xs[-1])
        title = "ended calls"
        if failed:
            statuses: dict[str, None] = {}
            for series in data.series:
                statuses.update(dict.fromkeys(series.failures))
            title += " (failed: " + ", ".join(statuses) + ")"
        retitled = self._title(ax, f"{title}  \u00b7  x: seconds since start")
        names = tuple(series.name for series in data.series)
        if names != self._legend_names:  # the legend is part of the frame
            self._legend_names = names
            legend = ax.get_legend()
            if legend is not None:
                legend.remove()
            if len(names) > 1:
                ax.legend(fontsize=7, loc="upper left", frameon=False)
            self._frame = None
        return self._limits(ax, 0.0, x_end, 0.0, float(total), y_from_zero=True) or retitled

    def _draw_values(self, ax: Axes, data: LiveData, since: float) -> bool:
        titles = []
        by_number = data.x == "number"
        x_start, x_end = math.inf, 0.0
        low, high = math.inf, -math.inf
        for i, series in enumerate(data.series):
            points, best = self._line(ax, "values", i, 2)
            points.set_linestyle("none")
            points.set_marker(".")
            points.set_markersize(4 if by_number else 3)
            points.set_alpha(0.55 if by_number else 0.45)
            best.set_linewidth(1.5)
            best.set_drawstyle("steps-post")
            values, bests = series.values, series.best
            if by_number:
                # Calls end out of order (trial 7 before trial 6): the best so far is taken in the order
                # of their numbers, so that its line never steps back. The numbers are nearly sorted
                # already, which sorting uses.
                numbers = series.value_numbers
                order = sorted(range(len(numbers)), key=numbers.__getitem__)
                better = min if data.best == "min" else max
                bests = list(itertools.accumulate((values[i] for i in order), better))
                values = [values[i] for i in order]
                all_xs = [numbers[i] for i in order]
                picked = picks(len(values))
                xs = [all_xs[i] for i in picked]
            else:
                picked = picks(len(values))
                times = series.value_times
                xs = [times[i] - since for i in picked]
            points.set_data(xs, [values[i] for i in picked])
            best.set_data(xs, [bests[i] for i in picked])
            if series.values:
                x_start, x_end = min(x_start, xs[0]), max(x_end, xs[-1])
                low, high = min(low, series.low), max(high, series.high)
            if series.best:
                label = series.metric or "result"
                prefix = f"{series.name} " if len(data.series) > 1 else ""
                titles.append(f"{prefix}{label}: best ({data.best}) {series.best[-1]:.4g}")
        if data.overall_best is not None:
            value, where = data.overall_best
            titles = [f"{data.metric or 'result'}: best ({data.best}) {value:.4g} {where}"]
        x_text = "x: trial" if by_number and data.trials else "x: call" if by_number else "x: seconds"
        title = " \u00b7 ".join(titles) or "results"
        retitled = self._title(ax, f"{title}  \u00b7  {x_text}")
        if not math.isfinite(low):
            return retitled
        return self._limits(ax, x_start if by_number else 0.0, x_end, low, high, y_from_zero=False) or retitled

    def _draw_curves(self, ax: Axes, data: LiveData) -> bool:
        """The learning curves: the metric against the step, a line per trial, pruned trials in grey."""
        x_end, low, high = 0.0, math.inf, -math.inf
        n_pruned = 0
        for curve in data.curves.values():
            (line,) = self._line(ax, "curves", curve.index, 1, linewidth=1.0, marker=".", markersize=2.5)
            if curve.pruned:
                n_pruned += 1
                line.set_color("0.72")
                line.set_zorder(1)  # under the curves that went on
            picked = picks(len(curve.steps))
            line.set_data([curve.steps[i] for i in picked], [curve.values[i] for i in picked])
            if curve.steps:
                x_end = max(x_end, curve.steps[-1])
                low, high = min(low, curve.low), max(high, curve.high)
        # Short enough for a third of the Dashboard's width: the x axis is named in the title ("by step").
        title = f"{data.curve_metric or 'metric'} by step: {len(data.curves)} trials"
        if n_pruned:
            title += f", {n_pruned} pruned (grey)"
        highs = sorted(curve.high for curve in data.curves.values() if curve.steps)
        if len(highs) >= 10:
            # A few wild curves (a diverged learning rate) would squash the others into a line at the
            # bottom: the axis holds 90 % of the curves whole, and the rest go off the top.
            clipped = highs[(len(highs) * 9) // 10 - 1]
            if low < clipped < high:
                high = clipped
                title += ", y clipped"
        retitled = self._title(ax, title)
        if not math.isfinite(low):
            return retitled
        old = self._bounds.get(ax)
        if old is not None and old[3] - old[2] > 2 * (high - low):
            del self._bounds[ax]  # the axis may shrink too: a wild curve fell out of the 90 % kept whole
        return self._limits(ax, 0.0, x_end, low, high, y_from_zero=False) or retitled

    def _draw_user(self, ax: Axes, plot: PlotFunction, frame: Callable[[], pd.DataFrame]) -> None:
        ax.clear()
        self.plot_error = None
        try:
            df = frame()
            if len(df):
                plot(df, ax)
            else:
                ax.text(0.5, 0.5, "waiting for results", ha="center", va="center", transform=ax.transAxes)
        except Exception as error:  # the user's plot must never break the run it watches
            self.plot_error = error
            ax.clear()
            ax.text(
                0.5,
                0.5,
                f"plot= raised {short_error(error, 80)}",
                ha="center",
                va="center",
                color="firebrick",
                fontsize=8,
                wrap=True,
                transform=ax.transAxes,
            )

    def close(self) -> None:
        """Release the figure."""
        self.figure.clear()
        self._axes.clear()
        self._lines.clear()
        self._animated.clear()
        self._ticks.clear()
        self._titles.clear()
        self._bounds.clear()
        self._frame = self._background = None
        self._layout = ()


def _fitted(draw: Any, text: str, room: float, fonts: tuple[Any, ...]) -> tuple[str, Any]:
    """`text` in the first of `fonts` it fits `room` pixels in; else in the last, cut short with an ellipsis."""
    for font in fonts:
        if draw.textlength(text, font=font) <= room:
            return text, font
    font = fonts[-1]
    while len(text) > 1 and draw.textlength(text + "\u2026", font=font) > room:
        text = text[:-1]
    return text.rstrip() + "\u2026", font
