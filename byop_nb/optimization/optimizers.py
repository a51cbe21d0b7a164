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
import os
import random
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from byop_nb.optimization.trial import Trial

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["Optimizer", "RandomSearch", "OptunaOptimizer"]

_ACCEPTED = (
    "accepted: (low, high) for a uniform float (or an integer when both are ints), (low, high, 'log') for a "
    "log-uniform one, a non-empty list of choices, or an optuna distribution (FloatDistribution, "
    "IntDistribution, CategoricalDistribution)"
)
_DIRECTIONS = ("minimize", "maximize")
_TEXT_CAP = 1000  # characters of an exception's text kept in a study's user attributes


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
        """The next trial: `Trial(name=f"trial-{n}", config=<a sample of the space>, info={"number": n})`."""
        number = self.n_asked
        config = {name: dimension.sample(self._rng) for name, dimension in self.space.items()}
        trial = Trial(name=f"trial-{number}", config=config, info={"number": number})
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

    def df(self) -> pd.DataFrame:
        """One row per report told, in the order told.

        Columns: `trial`, `number`, `status` ("success", "fail", "crashed"),
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


# -- OptunaOptimizer --------------------------------------------------------------------------

# User attributes this module writes on a study's trials.
ASKED_BY = "byop_nb.asked_by"
STATUS = "byop_nb.status"
LIMIT = "byop_nb.limit"
EXCEPTION = "byop_nb.exception"
REASON = "byop_nb.reason"
VALUE = "byop_nb.value"


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as e:
        raise ImportError('OptunaOptimizer needs Optuna: pip install "byop_nb[optuna]" (or pip install optuna)') from e
    return optuna


def _this_process() -> dict[str, Any]:
    """Who asks: enough to tell later, from another process on this host, whether the asker is gone."""
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": round(psutil.Process().create_time(), 2)}


def _asker_is_gone(asked_by: object) -> bool:
    """True when `asked_by` (an ASKED_BY attribute) names a process of this host that has ended.

    False when it is alive, on another host (nothing to check there), or not ours at all. A pid
    reused by a newer process does not pass for the asker: its start time differs.
    """
    import psutil

    if not isinstance(asked_by, Mapping) or asked_by.get("host") != socket.gethostname():
        return False
    pid, started = asked_by.get("pid"), asked_by.get("started")
    if not isinstance(pid, int) or not _is_number(started):
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        return abs(process.create_time() - started) > 0.5
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # alive, someone else's
        return False


def _finite(value: object) -> float | None:
    """`value` as a finite float (numpy scalars included), or None."""
    if isinstance(value, bool | str | bytes) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _bounded(text: str) -> str:
    return text if len(text) <= _TEXT_CAP else text[: _TEXT_CAP - 20] + f"... [{len(text)} chars]"


class OptunaOptimizer:
    """An [Optuna](https://optuna.org) study driven by ask-and-tell: Optuna samples, byop_nb evaluates.

    Args:
        space: parameter name -> Optuna distribution
            (`{"lr": FloatDistribution(1e-4, 1e-1, log=True), "depth": IntDistribution(1, 8)}`);
            [`RandomSearch`][byop_nb.optimization.RandomSearch]'s short forms
            (`(low, high)`, `(low, high, "log")`, `[choices]`) are accepted too
            and turned into Optuna distributions.
        study: an existing `optuna.Study` to drive. Then `storage`,
            `study_name` and `sampler` must be None, and `direction` is ignored
            (the study has its own).
        storage: where a new study lives: an Optuna storage object
            (`JournalStorage`, `RDBStorage`, ...), a database URL
            (`"sqlite:///study.db"`), or a path (`pathlib.Path`) to a journal
            file (a `JournalStorage` with a `JournalFileBackend`).
            None: in memory.
        study_name: the study's name in `storage`. When `storage` already
            holds a study of that name, it is loaded and continued (resume);
            else it is created.
        direction: "minimize" or "maximize"; one per metric when `metric` is
            a list (multi-objective).
        sampler: an Optuna sampler for a new study (default: Optuna's, TPE).
        metric: the key of a report's `results` that is the objective value,
            or a list of keys for a multi-objective study.

    Raises:
        ImportError: Optuna is not installed.
        ValueError: a bad space entry (named), a bad direction, `study` with
            `storage`/`study_name`/`sampler`, a loaded study whose directions
            differ from `direction`, or metrics and directions of different lengths.

    How reports are told (`tell`), with the user attributes set on the study trial:

    | report                            | study trial | user attributes (`byop_nb.` ...)          |
    |-----------------------------------|-------------|-------------------------------------------|
    | success                           | COMPLETE    | (none)                                    |
    | success with a NaN metric         | FAIL        | `status`, `reason`                        |
    | fail                              | FAIL        | `status`, `exception`, `value` (if any)   |
    | crashed (an exception)            | FAIL        | `status`, `exception`                     |
    | crashed by a limit                | FAIL        | `status`, `exception`, `limit`            |
    | fail/crashed by `TrialPruned`     | PRUNED      | `status`                                  |
    | cancelled, or asked and never run | FAIL        | `status` = "cancelled", `reason`          |

    A cancelled trial makes no report: its study trial stays RUNNING until
    `fail_pending()` marks it (subscribe that to `scheduler.on_finished`).
    `status` is the report's ("fail", "crashed", ...), `limit` is "memory",
    "cpu_time" or "wall_time", `exception` is "Type: message", `value` is
    the metric a fail report carried (a failed trial never becomes the study's
    best, so its value is kept aside, not told).

    Resume: each asked trial records the process that asked it (user
    attribute `byop_nb.asked_by`). When an optimizer is made on a study, the
    trials left RUNNING by a process of this host that has ended (a kernel
    that died, a script killed) are marked FAIL with `byop_nb.status` =
    "orphaned": a study continued after a crash has no trial RUNNING forever.

    Example:
        ```python
        from pathlib import Path
        from optuna.distributions import FloatDistribution
        from byop_nb.optimization import OptunaOptimizer, Trial
        from byop_nb.scheduling import Scheduler

        def evaluate(trial: Trial) -> Trial.Report:
            with trial.begin():
                loss = (trial.config["x"] - 3) ** 2
            return trial.success(loss=loss)

        optimizer = OptunaOptimizer(
            {"x": FloatDistribution(-10, 10)}, storage=Path("study.log"), study_name="quadratic"
        )
        scheduler = Scheduler.with_processes(2)
        task = Trial.Task(evaluate, scheduler)

        @scheduler.on_start(repeat=2)
        def launch() -> None:
            task(optimizer.ask())

        @task.on_report
        def tell_and_ask(report: Trial.Report) -> None:
            optimizer.tell(report)
            if optimizer.n_told < 30:
                task(optimizer.ask())

        scheduler.on_finished(optimizer.fail_pending)  # trials a stop left unrun: FAIL, not RUNNING
        scheduler.run()
        optimizer.study.best_value, optimizer.df()
        ```
    """

    def __init__(
        self,
        space: Mapping[str, Any],
        *,
        study: optuna.Study | None = None,
        storage: str | os.PathLike[str] | optuna.storages.BaseStorage | None = None,
        study_name: str | None = None,
        direction: str | Sequence[str] = "minimize",
        sampler: optuna.samplers.BaseSampler | None = None,
        metric: str | Sequence[str] = "loss",
    ) -> None:
        module = _import_optuna()
        self.space: dict[str, optuna.distributions.BaseDistribution] = _distributions(module, space)
        metrics = [metric] if isinstance(metric, str) else list(metric)
        if not metrics or not all(isinstance(m, str) and m for m in metrics):
            raise ValueError(f"metric={metric!r} is not a result's name (a non-empty str) or a list of them")
        self.metrics: list[str] = metrics
        if study is not None:
            if not isinstance(study, module.Study):
                raise TypeError(f"study= takes an optuna.Study, got {study!r}")
            others = {"storage": storage, "study_name": study_name, "sampler": sampler}
            given = [name for name, value in others.items() if value is not None]
            if given:
                raise ValueError(
                    f"study= is given, so {'=, '.join(given)}= cannot be: the study has its own. Pass either "
                    "study=, or storage=/study_name=/sampler= to create or load one"
                )
        else:
            directions = [direction] if isinstance(direction, str) else list(direction)
            for d in directions:
                _check_direction(d)
            if len(directions) != len(metrics):
                raise ValueError(
                    f"direction={direction!r} gives {len(directions)} direction(s) for {len(metrics)} metric(s) "
                    f"{metrics}: give one direction per metric, e.g. direction={['minimize'] * len(metrics)!r}"
                )
            if isinstance(storage, os.PathLike):
                journal = module.storages.journal
                storage = journal.JournalStorage(journal.JournalFileBackend(os.fspath(storage)))
            study = module.create_study(
                storage=storage,
                sampler=sampler,
                study_name=study_name,
                directions=directions,
                load_if_exists=study_name is not None,
            )
            found = [d.name.lower() for d in study.directions]
            if found != directions:
                raise ValueError(
                    f"study {study.study_name!r} in that storage has direction(s) {found}, not {directions}: "
                    f"pass direction={found[0] if len(found) == 1 else found!r}, or another study_name"
                )
        assert study is not None
        if len(study.directions) != len(metrics):
            raise ValueError(
                f"study {study.study_name!r} has {len(study.directions)} objective(s) and metric={metric!r} "
                f"names {len(metrics)}: give one metric per objective"
            )
        self.study: optuna.Study = study
        """The `optuna.Study` this optimizer asks from and tells to."""
        self._optuna = module
        self._asked_by = _this_process()
        self._pending: dict[int, optuna.trial.Trial] = {}
        self.n_asked = 0
        self.n_told = 0
        self.orphaned: list[int] = self._fail_orphans()
        """Numbers of the trials this optimizer found left RUNNING by an ended process and marked FAIL."""

    @property
    def metric(self) -> str | list[str]:
        """The metric (a list of them for a multi-objective study)."""
        return self.metrics[0] if len(self.metrics) == 1 else list(self.metrics)

    @property
    def pending(self) -> list[Trial]:
        """Trials this optimizer asked and was not told about yet (running, or never run)."""
        return [self._trial(t) for t in self._pending.values()]

    def _trial(self, optuna_trial: optuna.trial.Trial) -> Trial:
        return Trial(
            name=f"trial-{optuna_trial.number}",
            config=dict(optuna_trial.params),
            info={"optuna_study": self.study.study_name, "optuna_trial": optuna_trial.number},
        )

    def ask(self) -> Trial:
        """Ask the study for a trial: `study.ask(space)`.

        Returns:
            `Trial(name=f"trial-{number}", config=<the sampled params>,
            info={"optuna_study": <study name>, "optuna_trial": <number>})`,
            `number` being the Optuna trial's number in the study.
        """
        optuna_trial = self.study.ask(self.space)
        optuna_trial.set_user_attr(ASKED_BY, self._asked_by)
        self._pending[optuna_trial.number] = optuna_trial
        self.n_asked += 1
        return self._trial(optuna_trial)

    def tell(self, report: Trial.Report) -> None:
        """Tell the study how the report's trial went (see the class's table).

        Raises:
            TypeError: `report` is not a `Trial.Report`.
            ValueError: the report's trial was not asked from this study, its
                study trial is finished already (told twice), or it is a
                success report without a metric (or with one that is not a
                number). In the last case the study trial is first marked FAIL
                with the reason, so it is not left RUNNING.
        """
        if not isinstance(report, Trial.Report):
            raise TypeError(f"tell() takes a Trial.Report (e.g. from task.on_report), got {report!r}")
        info = report.trial.info
        number = info.get("optuna_trial")
        if info.get("optuna_study") != self.study.study_name or not isinstance(number, int):
            raise ValueError(
                f"OptunaOptimizer.tell(): trial {report.trial.name!r} was not asked from study "
                f"{self.study.study_name!r} (its info is {dict(info)!r}); tell each report to the optimizer "
                "that asked its trial"
            )
        trial: optuna.trial.Trial | int = self._pending.pop(number, number)
        TrialState = self._optuna.trial.TrialState
        attrs: dict[str, Any] = {}
        values: list[float] | None = None
        state = TrialState.FAIL
        error: ValueError | None = None
        if isinstance(report.exception, self._optuna.TrialPruned):
            state, attrs[STATUS] = TrialState.PRUNED, report.status
        elif isinstance(report, Trial.SuccessReport):
            try:
                values = [_metric_value(report, m, "OptunaOptimizer") for m in self.metrics]
            except ValueError as e:
                error = e
                attrs.update({STATUS: report.status, REASON: _bounded(str(e))})
            else:
                nans = [m for m, v in zip(self.metrics, values, strict=True) if math.isnan(v)]
                if nans:
                    attrs.update({STATUS: report.status, REASON: f"metric {nans} is NaN"})
                    values = None
                else:
                    state = TrialState.COMPLETE
        else:
            attrs[STATUS] = report.status
            if report.exception is not None:
                attrs[EXCEPTION] = _bounded(f"{type(report.exception).__name__}: {report.exception}")
            limit = getattr(report, "limit", None)
            if limit is not None:
                attrs[LIMIT] = limit
            reported = [_finite(report.results.get(m)) for m in self.metrics]
            if all(v is not None for v in reported):
                attrs[VALUE] = reported[0] if len(reported) == 1 else reported
        self._finish(trial, state, values, attrs)
        self.n_told += 1
        if error is not None:
            raise error

    def _finish(
        self, trial: optuna.trial.Trial | int, state: Any, values: list[float] | None, attrs: Mapping[str, Any]
    ) -> None:
        number = trial if isinstance(trial, int) else trial.number
        try:
            if isinstance(trial, int):  # asked by another optimizer on this study: reach its trial by number
                frozen = self._frozen(trial)
                if frozen.state.is_finished():
                    raise ValueError(f"it is {frozen.state.name} already")
                for key, value in attrs.items():
                    self._storage().set_trial_user_attr(frozen._trial_id, key, value)
            else:
                for key, value in attrs.items():
                    trial.set_user_attr(key, value)
            self.study.tell(trial, values, state=state)
        except (ValueError, RuntimeError) as e:  # optuna: "Cannot tell a COMPLETE trial.", "... finished ..."
            raise ValueError(
                f"OptunaOptimizer.tell(): cannot tell trial {number} of study {self.study.study_name!r}: {e} "
                "(a report is told once)"
            ) from e

    def _storage(self) -> Any:
        # A trial asked elsewhere has no optuna Trial here; Optuna's storage API reaches it by id.
        return self.study._storage

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        storage = self._storage()
        study_id = storage.get_study_id_from_name(self.study.study_name)
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:
            raise ValueError(f"OptunaOptimizer.tell(): study {self.study.study_name!r} has no trial {number}") from None
        frozen: optuna.trial.FrozenTrial = storage.get_trial(trial_id)
        return frozen

    def fail_pending(self, *args: Any, reason: str = "the run ended before the trial reported", **kwargs: Any) -> int:
        """Mark FAIL every trial this optimizer asked and was not told about; returns how many.

        Those are the trials a stop left: asked but refused by the task (its
        call limit, or the run ending), or cancelled by a `wait=False` stop or
        a timeout. Their study trials get `byop_nb.status` = "cancelled" and
        `byop_nb.reason`. Arguments other than `reason` are accepted and
        ignored, so it can be subscribed to any event:

        ```python
        scheduler.on_finished(optimizer.fail_pending)
        ```

        Trials finished meanwhile (told by another optimizer on the study) are
        skipped. Only call it when none of them is still running: a report
        told after it raises ValueError (its study trial is finished).
        """
        pending = list(self._pending.values())
        self._pending.clear()
        FAIL = self._optuna.trial.TrialState.FAIL
        marked = 0
        for trial in pending:
            try:
                self._finish(trial, FAIL, None, {STATUS: "cancelled", REASON: reason})
            except ValueError:  # finished already: told by another optimizer on the study
                continue
            marked += 1
        return marked

    def _fail_orphans(self) -> list[int]:
        """Mark FAIL the study's RUNNING trials whose asking process (on this host) has ended."""
        TrialState = self._optuna.trial.TrialState
        orphaned = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            asked_by = frozen.user_attrs.get(ASKED_BY)
            if not _asker_is_gone(asked_by):
                continue
            assert isinstance(asked_by, Mapping)
            reason = (
                f"process {asked_by.get('pid')} on {asked_by.get('host')} asked it and ended before telling it "
                "(a kernel or script that died); found by the next optimizer on the study"
            )
            self._finish(frozen.number, TrialState.FAIL, None, {STATUS: "orphaned", REASON: reason})
            orphaned.append(frozen.number)
        return orphaned

    def df(self) -> pd.DataFrame:
        """Every trial of the study (those of earlier runs and other processes too), one row each.

        Optuna's `study.trials_dataframe()` (columns `number`, `value` (or
        `values_<i>`), `datetime_start`, `datetime_complete`, `duration`,
        `params_<name>`, `user_attrs_<key>`, `state`, ...), with a `trial`
        column after `number`: the name of the trial as byop_nb asked it
        (`trial-<number>`), to join with `task.df()` on `trial`.
        """
        df = self.study.trials_dataframe()
        if "number" in df.columns:
            df.insert(1, "trial", "trial-" + df["number"].astype(str))
        return df

    def __repr__(self) -> str:
        directions = [d.name.lower() for d in self.study.directions]
        return (
            f"OptunaOptimizer(study={self.study.study_name!r}, metric={self.metric!r}, "
            f"direction={directions[0] if len(directions) == 1 else directions!r}, asked={self.n_asked}, "
            f"told={self.n_told}, pending={len(self._pending)})"
        )


def _distributions(optuna: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    """The space as Optuna distributions: those given as is, the short forms converted."""
    distributions = optuna.distributions
    dimensions = _parse_space(space)  # checks every entry, whatever its form
    result: dict[str, Any] = {}
    for name, value in space.items():
        if isinstance(value, distributions.BaseDistribution):
            result[name] = value
            continue
        dimension = dimensions[name]
        make: Callable[..., Any]
        if isinstance(dimension, _Choice):
            result[name] = distributions.CategoricalDistribution(dimension.choices)
            continue
        make = distributions.IntDistribution if dimension.integer else distributions.FloatDistribution
        result[name] = make(dimension.low, dimension.high, log=dimension.log)
    return result
