"""The Dashboard's live plots: matplotlib figures drawn with Agg into PNG bytes.

No pyplot and no ipympl: a `Figure` with its own Agg canvas is drawn and
encoded to PNG, which an `ipywidgets.Image` shows. That works in any
frontend that renders widgets (JupyterLab, Notebook 7, VS Code, Binder) and
never touches matplotlib's global backend.

[`LiveData`][byop_nb.notebook.plots.LiveData] reads the tasks' histories
incrementally (only rows recorded since its last look), so a refresh costs
O(new calls), not O(all calls). It needs no matplotlib: only
[`PlotRenderer`][byop_nb.notebook.plots.PlotRenderer] imports it, when made.

```python
from byop_nb.notebook.plots import LiveData, PlotRenderer

data = LiveData()
renderer = PlotRenderer()
png = renderer.render(data)     # PNG bytes: an empty "ended calls" panel
assert png.startswith(b"\\x89PNG")
```
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from byop_nb._html import history_rows, row_error, row_result, short_error

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D

    from byop_nb.scheduling.task import Task

__all__ = ["LiveData", "PlotRenderer", "PlotFunction", "numeric_value"]

PlotFunction = Callable[["pd.DataFrame", "Axes"], Any]
"""A user plot: called as `plot(df, ax)` with the live DataFrame and a matplotlib Axes to draw on."""

_MAX_POINTS = 600  # a panel is a few hundred pixels wide: more points than pixels only cost drawing time


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
        self.values: list[float] = []
        self.best: list[float] = []  # best value so far, one per value
        self.low = math.inf  # the smallest and largest value
        self.high = -math.inf
        self.metric = metric

    def clear(self) -> None:
        self.ended.clear()
        self.value_times.clear()
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
    """

    def __init__(self, metric: str | None = None, best: Literal["min", "max"] = "min") -> None:
        if best not in ("min", "max"):
            raise ValueError(f"best= must be 'min' or 'max', got {best!r}")
        self.metric = metric
        self.best = best
        self.since: float | None = None
        self.last_error: tuple[float, str] | None = None
        """(finished time, "task: Type: message") of the latest failed call of the latest run."""
        self._series: dict[int, _Series] = {}

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
            for s in self._series.values():
                s.clear()
            changed = True
        start = since if since is not None else -math.inf
        better = min if self.best == "min" else max
        for task in tasks:
            key = id(task)
            series = self._series.get(key)
            if series is None or series.task is not task:
                series = self._series[key] = _Series(task, self.metric)
                changed = True
            n = len(task.history)
            if n == series.rows_read:
                continue
            for row in history_rows(task, series.rows_read, n):
                finished = row.get("finished")
                if not isinstance(finished, (int, float)) or finished < start:
                    continue
                series.ended.append(float(finished))
                status = row.get("status")
                if status in task.FAILURES:
                    series.failed += 1
                    series.failures[status] = series.failures.get(status, 0) + 1
                    if self.last_error is None or finished >= self.last_error[0]:
                        error = row_error(row) or str(status)
                        self.last_error = (float(finished), f"{task.name}: {error}")
                if status not in task.SUCCESSES:
                    continue
                value, key_used = numeric_value(row_result(row), series.metric)
                if series.metric is None and key_used is not None:
                    series.metric = key_used  # fixed from the first dict result on
                if value is None or not math.isfinite(value):
                    continue
                series.value_times.append(float(finished))
                series.values.append(value)
                series.low = min(series.low, value)
                series.high = max(series.high, value)
                series.best.append(better(series.best[-1], value) if series.best else value)
            series.rows_read = n
            changed = True
        return changed


def _step_up(value: float) -> float:
    """The next of 1, 1.5, 2, 3, 5, 7 times a power of ten above `value` * 1.2: limits that grow in steps."""
    target = value * 1.2
    power = 10.0 ** math.floor(math.log10(target))
    for factor in (1.0, 1.5, 2.0, 3.0, 5.0, 7.0, 10.0):
        if factor * power >= target:
            return factor * power
    return 10.0 * power


def _picks(n: int) -> range | list[int]:
    """The indices of at most about `_MAX_POINTS` of `n` points, evenly spaced, always with the last one."""
    if n <= _MAX_POINTS:
        return range(n)
    step = math.ceil(n / _MAX_POINTS)
    return [*range(0, n - 1, step), n - 1]


class PlotRenderer:
    """Draws the dashboard's panels on one Agg figure and returns PNG bytes.

    Panels: "ended calls over time" (one step line per task), then either
    the results' values with their best so far (when there are numeric
    results), or the user's plot `plot(df, ax)` when one is given.

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
        self._animated: list[Artist] = []  # drawn over the kept background at every render
        self._bounds: dict[Axes, tuple[float, float, float]] = {}  # each axes' limits: x max, y low, y high
        self._legend_names: tuple[str, ...] = ()
        self._background: Any = None
        self.n_full_draws = 0
        """How many renders drew the whole figure (the others drew only what changes)."""
        self.plot_error: BaseException | None = None
        """The exception the user's plot raised at the latest render, if any."""

    def _set_layout(self, layout: tuple[str, ...]) -> None:
        if layout == self._layout:
            return
        self.figure.clear()
        self._lines.clear()
        self._animated.clear()
        self._bounds.clear()
        self._legend_names = ()
        self._background = None
        axes = self.figure.subplots(1, len(layout), squeeze=False)[0]
        self._axes = dict(zip(layout, axes, strict=True))
        self._layout = layout
        self.figure.subplots_adjust(left=0.05, right=0.99, bottom=0.1, top=0.9, wspace=0.15)
        for name, ax in self._axes.items():
            if name != "user":
                self._style(ax)

    @staticmethod
    def _style(ax: Axes) -> None:
        from matplotlib.ticker import MaxNLocator

        # Few tick labels: text is most of the drawing time.
        ax.tick_params(labelsize=7, length=2, pad=1)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.grid(True, alpha=0.3)

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

        layout = ("ended", "user") if plot is not None else ("ended", "values") if data.has_values else ("ended",)
        self._set_layout(layout)
        since = data.since or 0.0
        stale = self._draw_ended(self._axes["ended"], data, since)
        if "values" in self._axes:
            stale = self._draw_values(self._axes["values"], data, since) or stale
        if plot is not None and frame is not None:
            self._draw_user(self._axes["user"], plot, frame)
            stale = True
        if stale or self._background is None:
            self.canvas.draw()  # everything but the animated artists
            self._background = np.array(self.canvas.buffer_rgba())  # every pixel, copied
            self.n_full_draws += 1
        else:
            np.asarray(self.canvas.buffer_rgba())[...] = self._background
        renderer = self.canvas.get_renderer()
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

    def _limits(self, ax: Axes, x: float, y_low: float, y_high: float, *, y_from_zero: bool) -> bool:
        """Grow `ax`'s limits in steps to hold x in [0, x] and y in [y_low, y_high]; whether they changed."""
        old = self._bounds.get(ax)
        if old is not None:
            x_max, low, high = old
            if x <= x_max and low <= y_low and y_high <= high:
                return False
        x_max = _step_up(max(x, 1.0))
        if y_from_zero:
            low, high = 0.0, _step_up(max(y_high, 10.0))
        else:
            span = max(y_high - y_low, abs(y_high) * 1e-3, 1e-9)
            low, high = y_low - 0.25 * span, y_high + 0.25 * span
            if old is not None:  # only ever widen: a value range that jitters would redraw each time
                low, high = min(low, old[1]), max(high, old[2])
        self._bounds[ax] = (x_max, low, high)
        ax.set_xlim(0, x_max)
        ax.set_ylim(low, high)
        return True

    def _title(self, ax: Axes, text: str) -> None:
        # y fixed: an automatic title position is worked out only when the whole figure is drawn.
        title = ax.set_title(text, fontsize=8, loc="left", y=1.0)  # the left title's Text, the same each time
        if title not in self._animated:
            title.set_animated(True)
            self._animated.append(title)

    def _draw_ended(self, ax: Axes, data: LiveData, since: float) -> bool:
        total = 0
        failed = 0
        x_end = 0.0
        for i, series in enumerate(data.series):
            (line,) = self._line(ax, "ended", i, 1, drawstyle="steps-post", linewidth=1.5)
            times = series.ended
            picked = _picks(len(times))
            xs = [0.0, *(times[i] - since for i in picked)]
            ys = [0.0, *(i + 1 for i in picked)]
            line.set_data(xs, ys)
            line.set_label(series.name)
            total = max(total, len(series.ended))
            failed += series.failed
            x_end = max(x_end, xs[-1])
        ended = sum(len(series.ended) for series in data.series)
        title = f"ended calls: {ended}"
        if failed:
            failures: dict[str, int] = {}
            for series in data.series:
                for status, n in series.failures.items():
                    failures[status] = failures.get(status, 0) + n
            title += " (" + ", ".join(f"{n} {status}" for status, n in failures.items()) + ")"
        self._title(ax, f"{title}  \u00b7  x: seconds since start")
        names = tuple(series.name for series in data.series)
        legend_changed = names != self._legend_names
        if legend_changed:
            self._legend_names = names
            legend = ax.get_legend()
            if legend is not None:
                legend.remove()
            if len(names) > 1:
                ax.legend(fontsize=7, loc="upper left", frameon=False)
        return self._limits(ax, x_end, 0.0, float(total), y_from_zero=True) or legend_changed

    def _draw_values(self, ax: Axes, data: LiveData, since: float) -> bool:
        titles = []
        x_end = 0.0
        low, high = math.inf, -math.inf
        for i, series in enumerate(data.series):
            points, best = self._line(ax, "values", i, 2)
            points.set_linestyle("none")
            points.set_marker(".")
            points.set_markersize(3)
            points.set_alpha(0.45)
            best.set_linewidth(1.5)
            best.set_drawstyle("steps-post")
            picked = _picks(len(series.values))
            times, values, bests = series.value_times, series.values, series.best
            xs = [times[i] - since for i in picked]
            points.set_data(xs, [values[i] for i in picked])
            best.set_data(xs, [bests[i] for i in picked])
            if series.values:
                x_end = max(x_end, xs[-1])
                low, high = min(low, series.low), max(high, series.high)
            if series.best:
                label = series.metric or "result"
                prefix = f"{series.name} " if len(data.series) > 1 else ""
                titles.append(f"{prefix}{label}: best {series.best[-1]:.4g}")
        self._title(ax, " \u00b7 ".join(titles) or "results")
        if not math.isfinite(low):
            return False
        return self._limits(ax, x_end, low, high, y_from_zero=False)

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
        self._bounds.clear()
        self._background = None
        self._layout = ()
