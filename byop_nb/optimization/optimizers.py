"""Optimizers: where the next [`Trial`][byop_nb.optimization.Trial] comes from, and where its report goes.

An optimizer has two methods: `ask()` gives a trial to evaluate, `tell(report)`
gives it back what the evaluation reported. That is the
[`Optimizer`][byop_nb.optimization.Optimizer] protocol, and it fits the
scheduler's events: ask when the scheduler starts (once per worker), tell and
ask again on each report.

```python
from byop_nb.optimization import RandomSearch, Trial
from byop_nb.scheduling import Scheduler

def evaluate(trial: Trial) -> Trial.Report:
    with trial.begin():
        loss = (trial.config["x"] - 3) ** 2
    return trial.success(loss=loss)

optimizer = RandomSearch({"x": (-10.0, 10.0)}, seed=0)
scheduler = Scheduler.with_processes(2)
task = Trial.Task(evaluate, scheduler, call_limit=20)

@scheduler.on_start(repeat=2)
def launch() -> None:
    task(optimizer.ask())

@task.on_report
def tell_and_ask(report: Trial.Report) -> None:
    optimizer.tell(report)
    if task.n_called < 20:
        task(optimizer.ask())

scheduler.run()
print(optimizer.best)
```

Two optimizers come with byop_nb:

* [`RandomSearch`][byop_nb.optimization.RandomSearch]: uniform sampling of a
  search space, built in (no extra dependency);
* [`OptunaOptimizer`][byop_nb.optimization.OptunaOptimizer]: an Optuna study
  driven by ask-and-tell (the `optuna` extra: `pip install "byop_nb[optuna]"`;
  Optuna is imported when the first one is made, never by `import byop_nb`).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from byop_nb.optimization.trial import Trial

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Optimizer", "PruningOptimizer", "RandomSearch"]

_ACCEPTED = (
    "accepted: (low, high) for a uniform float (or an integer when both are ints), (low, high, 'log') for a "
    "log-uniform one, a non-empty list of choices, or an optuna distribution (FloatDistribution, "
    "IntDistribution, CategoricalDistribution)"
)
_DIRECTIONS = ("minimize", "maximize")


@runtime_checkable
class Optimizer(Protocol):
    """What the scheduler's ask-and-tell loop needs from an optimizer.

    * `ask()` returns the next [`Trial`][byop_nb.optimization.Trial] to evaluate;
    * `tell(report)` gives the optimizer the report of a trial it asked.

    Any object with these two methods is an optimizer (`isinstance` works on it).

    Example:
        ```python
        from byop_nb.optimization import Optimizer, RandomSearch, Trial

        class Grid:
            def __init__(self, xs: list[float]) -> None:
                self.todo = list(xs)
                self.reports: list[Trial.Report] = []

            def ask(self) -> Trial:
                x = self.todo.pop(0)
                return Trial(name=f"x={x}", config={"x": x})

            def tell(self, report: Trial.Report) -> None:
                self.reports.append(report)

        assert isinstance(Grid([1.0, 2.0]), Optimizer)
        assert isinstance(RandomSearch({"x": (0.0, 1.0)}), Optimizer)
        ```
    """

    def ask(self) -> Trial:
        """The next trial to evaluate."""
        ...

    def tell(self, report: Trial.Report) -> None:
        """The report of a trial this optimizer asked."""
        ...


@runtime_checkable
class PruningOptimizer(Optimizer, Protocol):
    """An optimizer that also hears the steps of its trials and may prune them (multi-fidelity).

    On top of `ask()` and `tell(report)`:

    * `prunes`: whether `should_prune` can ever say True. The worker's
      `trial.prune()` is refused when it is False.
    * `report_step(trial, step, metrics)`: a trial it asked reported `metrics`
      (a dict of floats) at `step` (an int, larger than the trial's previous
      one). Raise to refuse it: the worker's `trial.report_step` raises
      ValueError with the message.
    * `should_prune(trial) -> bool`: whether to stop the trial now, judged on
      the steps it reported so far (asked only after at least one step).

    How it is wired: `ask()` returns `Trial(..., optimizer=self)`. The trial
    travels to the worker without the optimizer (only whether it `prunes`);
    in the main process, the `Trial.Task` answers the worker's
    `trial.report_step(...)` and `trial.should_prune()` by calling these
    methods of `trial.optimizer`, in the scheduler's loop thread, one trial's
    calls in the order the worker made them. A pruned trial's report
    (`Trial.PrunedReport`, status "pruned") comes to `tell` like any other.

    `RandomSearch` is one that never prunes; `OptunaOptimizer(..., pruner=...)`
    reports each step to its Optuna trial and asks the pruner.

    Example:
        ```python
        class Patience(RandomSearch):
            # Stop a trial whose loss has not improved for 3 steps.
            prunes = True

            def __init__(self, space):
                super().__init__(space)
                self.curves = {}

            def report_step(self, trial, step, metrics):
                self.curves.setdefault(trial.name, []).append(metrics["loss"])

            def should_prune(self, trial):
                curve = self.curves[trial.name]
                return len(curve) > 3 and min(curve[-3:]) > min(curve[:-3])
        ```
    """

    @property
    def prunes(self) -> bool:
        """Whether `should_prune` may say True."""
        ...

    def report_step(self, trial: Trial, step: int, metrics: Mapping[str, float]) -> None:
        """`trial` reported `metrics` at `step`."""
        ...

    def should_prune(self, trial: Trial) -> bool:
        """Whether to stop `trial` now."""
        ...


# -- the search space -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Range:
    """Numbers from `low` to `high` (both included for integers), uniform or log-uniform, on an optional grid."""

    low: float
    high: float
    integer: bool
    log: bool = False
    step: float | None = None

    def sample(self, rng: random.Random) -> float | int:
        if self.step is not None:
            n_steps = math.floor((self.high - self.low) / self.step + 1e-9)
            value = self.low + self.step * rng.randint(0, n_steps)
            return int(value) if self.integer else value
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
            if self.integer:
                return min(max(round(value), int(self.low)), int(self.high))
            return min(max(value, self.low), self.high)
        if self.integer:
            return rng.randint(int(self.low), int(self.high))
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class _Choice:
    choices: tuple[Any, ...]

    def sample(self, rng: random.Random) -> Any:
        return self.choices[rng.randrange(len(self.choices))]


_Dimension = _Range | _Choice


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _dimension(name: str, value: Any) -> _Dimension:
    """One entry of a search space, checked; ValueError naming it and the accepted forms otherwise."""

    def bad(why: str) -> ValueError:
        return ValueError(f"search space entry {name!r}: {value!r} {why}; {_ACCEPTED}")

    distributions = sys.modules.get("optuna.distributions")  # an optuna distribution means optuna is imported
    if distributions is not None and isinstance(value, distributions.BaseDistribution):
        if isinstance(value, distributions.CategoricalDistribution):
            return _Choice(tuple(value.choices))
        if isinstance(value, distributions.FloatDistribution | distributions.IntDistribution):
            integer = isinstance(value, distributions.IntDistribution)
            step = value.step if value.step is not None and not (integer and value.step == 1) else None
            return _Range(value.low, value.high, integer=integer, log=value.log, step=step)
        raise bad("is an optuna distribution this search space does not know")
    if isinstance(value, list):
        if not value:
            raise bad("is an empty list of choices")
        return _Choice(tuple(value))
    if isinstance(value, tuple):
        if len(value) == 3 and value[2] != "log":
            raise bad("has a third item that is not 'log'")
        if len(value) not in (2, 3):
            raise bad(f"is a tuple of {len(value)} items (a range is (low, high) or (low, high, 'log'))")
        low, high = value[0], value[1]
        if not _is_number(low) or not _is_number(high):
            raise bad("does not have finite numbers as its bounds")
        if not low < high:
            raise bad("has low >= high (for a constant, use a one-item list: [value])")
        log = len(value) == 3
        if log and low <= 0:
            raise bad("is log-uniform with low <= 0")
        return _Range(low, high, integer=isinstance(low, int) and isinstance(high, int), log=log)
    raise bad("is not a search dimension")


def _parse_space(space: Mapping[str, Any]) -> dict[str, _Dimension]:
    if not isinstance(space, Mapping):
        raise TypeError(f"a search space is a mapping from parameter names to dimensions, got {space!r}; {_ACCEPTED}")
    if not space:
        raise ValueError("the search space is empty; give it at least one parameter, e.g. {'x': (0.0, 1.0)}")
    dimensions = {}
    for name, value in space.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"search space key {name!r} is not a parameter name (a non-empty str)")
        dimensions[name] = _dimension(name, value)
    return dimensions


def _check_direction(direction: object) -> str:
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not a direction; accepted: 'minimize' or 'maximize'")
    return str(direction)


def _metric_value(report: Trial.Report, metric: str, optimizer: str) -> float:
    """`report.results[metric]` as a float (NaN allowed); ValueError naming what is wrong otherwise."""
    if metric not in report.results:
        raise ValueError(
            f"{optimizer}: the {report.status} report of trial {report.trial.name!r} has no result {metric!r} "
            f"(metric={metric!r}); its results are {sorted(report.results)}. Report it, e.g. "
            f"trial.success({metric}=...), or make the optimizer with the metric you report"
        )
    value = report.results[metric]
    try:
        if isinstance(value, bool | str | bytes):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{optimizer}: the result {metric!r} of trial {report.trial.name!r} is {value!r}, not a number"
        ) from None


# -- RandomSearch -----------------------------------------------------------------------------


class RandomSearch:
    """Uniform random sampling of a search space; built in, no dependency.

    Args:
        space: parameter name -> dimension. A dimension is
            `(low, high)`: a uniform float in [low, high], or, when both are
            ints, a uniform integer from low to high (both included);
            `(low, high, "log")`: log-uniform (low > 0), float or integer
            alike; a non-empty `list` of choices, picked uniformly; or an
            Optuna `FloatDistribution`, `IntDistribution` (`log` and `step`
            honoured) or `CategoricalDistribution`, so one space serves both
            optimizers.
        seed: seeds the sampler: the same seed asks the same configurations
            in the same order. None: a fresh random seed.
        metric: the result that ranks successful trials for `best`; every
            success report must carry it (None: no ranking, `best` raises).
        direction: "minimize" or "maximize" the metric.

    Raises:
        TypeError: `space` is not a mapping.
        ValueError: an entry of `space` is not one of the accepted forms (the
            message names it), the space is empty, or `direction` is unknown.

    Trials are named `trial-0`, `trial-1`, ... in the order asked, and carry
    `info={"number": n}`. The optimizer keeps every report it was told
    (`reports`, `df()`) and the trials asked and not told yet (`pending`).

    Example:
        ```python
        from byop_nb.optimization import RandomSearch, Trial

        search = RandomSearch({"lr": (1e-4, 1e-1, "log"), "depth": (1, 8), "kernel": ["rbf", "linear"]}, seed=0)
        trial = search.ask()
        trial.config       # {'lr': 0.0341..., 'depth': 7, 'kernel': 'rbf'}
        search.tell(trial.success(loss=0.3))
        search.best.trial is trial   # True
        ```
    """

    def __init__(
        self,
        space: Mapping[str, Any],
        *,
        seed: int | None = None,
        metric: str | None = "loss",
        direction: str = "minimize",
    ) -> None:
        self.space: dict[str, _Dimension] = _parse_space(space)
        if metric is not None and (not isinstance(metric, str) or not metric):
            raise ValueError(f"metric={metric!r} is not the name of a result (a non-empty str) or None")
        self.metric = metric
        self.direction = _check_direction(direction)
        self.seed = seed
        self._rng = random.Random(seed)
        self.n_asked = 0
        self.reports: list[Trial.Report] = []
        """The reports told, in the order told."""
        self._pending: dict[str, Trial] = {}
        self._best: Trial.Report | None = None
        self._best_value = math.nan

    def ask(self) -> Trial:
        """The next trial: `Trial(name=f"trial-{n}", config=<a sample of the space>, info={"number": n},
        metric=<this search's metric>)` (a plain number the function returns is recorded under `metric`)."""
        number = self.n_asked
        config = {name: dimension.sample(self._rng) for name, dimension in self.space.items()}
        trial = Trial(
            name=f"trial-{number}", config=config, info={"number": number}, metric=self.metric, optimizer=self
        )
        self.n_asked += 1
        self._pending[trial.name] = trial
        return trial

    def tell(self, report: Trial.Report) -> None:
        """Keep `report` (of a trial this search asked and has not been told about).

        Raises:
            TypeError: `report` is not a `Trial.Report`.
            ValueError: its trial was not asked by this search or was told
                already; or it is a success report without the `metric` result
                (or with one that is not a number).
        """
        if not isinstance(report, Trial.Report):
            raise TypeError(f"tell() takes a Trial.Report (e.g. from task.on_report), got {report!r}")
        name = report.trial.name
        if name not in self._pending:
            raise ValueError(
                f"RandomSearch.tell(): trial {name!r} is not one this search asked and is waiting for "
                f"({len(self._pending)} are); each asked trial is told once"
            )
        if isinstance(report, Trial.SuccessReport) and self.metric is not None:
            value = _metric_value(report, self.metric, "RandomSearch")
            better = value < self._best_value if self.direction == "minimize" else value > self._best_value
            if self._best is None or better:
                self._best, self._best_value = report, value
        del self._pending[name]
        self.reports.append(report)

    prunes: bool = False
    """A RandomSearch never prunes: `should_prune` is always False, and `trial.prune()` is refused."""

    def report_step(self, trial: Trial, step: int, metrics: Mapping[str, float]) -> None:
        """Nothing to do: a random search does not look at a trial's steps (the task records them)."""

    def should_prune(self, trial: Trial) -> bool:
        """Always False: a random search never stops a trial early."""
        return False

    @property
    def n_told(self) -> int:
        """Reports told so far."""
        return len(self.reports)

    @property
    def pending(self) -> list[Trial]:
        """Trials asked and not told yet (running, or never run), in the order asked."""
        return list(self._pending.values())

    @property
    def best(self) -> Trial.Report | None:
        """The success report with the best `metric` (first one on ties); None before any success.

        Raises:
            ValueError: the search was made with `metric=None`.
        """
        if self.metric is None:
            raise ValueError("this RandomSearch has metric=None, so no trial is best; make it with metric='...'")
        return self._best

    @property
    def best_value(self) -> float | None:
        """The best `metric` value of all the reports told (every run's), in `direction`; None before any
        success, or with `metric=None`.

        ```python
        search = RandomSearch({"x": (0.0, 1.0)}, metric="acc", direction="maximize")
        search.tell(search.ask().success(acc=0.5))
        search.tell(search.ask().success(acc=0.75))
        search.best_value   # 0.75
        ```
        """
        return None if self.metric is None or self._best is None else self._best_value

    def df(self) -> pd.DataFrame:
        """One row per report told, in the order told.

        Columns: `trial`, `number`, `status` ("success", "fail", "crashed", "pruned"),
        `config.<name>`, `result.<key>`, `limit` (of a crash by a limit),
        `exception_type`, `exception_message`, `wall_time`, `cpu_time`.
        """
        import pandas as pd

        rows = []
        for report in self.reports:
            timings = report.timings
            row: dict[str, Any] = {
                "trial": report.trial.name,
                "number": report.trial.info.get("number"),
                "status": report.status,
            }
            row.update({f"config.{key}": value for key, value in report.trial.config.items()})
            row.update({f"result.{key}": value for key, value in report.results.items()})
            row["limit"] = getattr(report, "limit", None)
            row["exception_type"] = type(report.exception).__name__ if report.exception is not None else None
            row["exception_message"] = str(report.exception) if report.exception is not None else None
            row["wall_time"] = timings.wall_time if timings is not None else None
            row["cpu_time"] = timings.cpu_time if timings is not None else None
            rows.append(row)
        columns = ["trial", "number", "status", *(f"config.{name}" for name in self.space)]
        return pd.DataFrame(rows, columns=None if rows else columns)

    def __repr__(self) -> str:
        return (
            f"RandomSearch({list(self.space)}, seed={self.seed!r}, asked={self.n_asked}, told={self.n_told}, "
            f"pending={len(self._pending)})"
        )
