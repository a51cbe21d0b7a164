"""The Dashboard's learning curves: the steps the latest run's trials reported, a curve per trial.

A Trial.Task records each step a trial reports (`trial.report_step`, see
`optimization/_steps.py`) as a row of `task.step_rows`. `LiveData.update`
(`plots.py`) hands each task to `LearningCurves.read`, which reads only the
rows added since its last look; `LiveData._read` marks a trial whose history
row says "pruned" with `mark_pruned`. `PlotRenderer._draw_curves` (`plots.py`)
draws them: the metric against the step, a line per trial, pruned trials in grey.
"""

from __future__ import annotations

import itertools
import math
from typing import Any


class Curve:
    """One trial's learning curve: the steps it reported and its metric at each."""

    __slots__ = ("high", "index", "low", "pruned", "steps", "values")

    def __init__(self, index: int) -> None:
        self.index = index  # the order the trial was first seen in: its colour
        self.steps: list[float] = []
        self.values: list[float] = []
        self.low = math.inf
        self.high = -math.inf
        self.pruned = False


class LearningCurves:
    """The learning curves of the latest run, read incrementally from the tasks' step rows.

    Args:
        metric: the metric the curves show (None: the optimizer's metric of the
            first trial that reported, else the first metric it reported).
    """

    def __init__(self, metric: str | None) -> None:
        self.by_trial: dict[str, Curve] = {}
        """Trial name -> its curve, in the order the trials were first seen."""
        self.metric = metric
        """The metric the curves show."""
        self._steps_read: dict[int, int] = {}  # id(task) -> the task's steps read so far
        self._pruned_seen: set[str] = set()  # pruned trials whose curve has not been seen yet

    @property
    def has_steps(self) -> bool:
        """Whether a trial of the latest run reported a step with the curves' metric."""
        return any(curve.steps for curve in self.by_trial.values())

    def clear(self) -> None:
        """Forget the curves: a new run starts (the steps read so far stay read)."""
        self.by_trial.clear()
        self._pruned_seen.clear()

    def read(self, task: Any, start: float) -> bool:
        """Add the steps `task` recorded since the last look (those received from `start` on); whether any
        were new. A task without steps (not a Trial.Task) has none."""
        steps = getattr(task, "step_rows", None)
        key = id(task)
        first = self._steps_read.get(key, 0)
        if steps is None or len(steps) == first:
            return False
        curves = self.by_trial
        for row in itertools.islice(steps, first, None):  # the task's own rows, read only
            if row["received"] < start:
                continue
            metric = self.metric
            if metric is None:
                metric = self.metric = row["metric"] or next(iter(row["metrics"]), None)
            value = row["metrics"].get(metric)
            if value is None or not math.isfinite(value):
                continue
            name = row["trial"]
            curve = curves.get(name)
            if curve is None:
                curve = curves[name] = Curve(len(curves))
                if name in self._pruned_seen:
                    curve.pruned = True
            curve.steps.append(float(row["step"]))
            curve.values.append(value)
            if value < curve.low:
                curve.low = value
            if value > curve.high:
                curve.high = value
        self._steps_read[key] = len(steps)
        return True

    def mark_pruned(self, name: str) -> None:
        """The trial `name` was pruned: its curve (now, or when its first step is read) is drawn grey."""
        curve = self.by_trial.get(name)
        if curve is not None:
            curve.pruned = True
        else:
            self._pruned_seen.add(name)
