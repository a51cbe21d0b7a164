"""[`OptunaOptimizer`][byop_nb.optimization.OptunaOptimizer]: an Optuna study driven by ask-and-tell.

Optuna is imported when the first optimizer is made (the `optuna` extra), never
by `import byop_nb`. The protocol and the search spaces are in
[`byop_nb.optimization.optimizers`][byop_nb.optimization.optimizers].
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from byop_nb._text import bounded_message
from byop_nb.optimization.optimizers import _check_direction, _Choice, _is_number, _metric_value, _parse_space
from byop_nb.optimization.trial import Trial

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["OptunaOptimizer"]

_TEXT_CAP = 1000  # characters of an exception's text kept in a study's user attributes

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


@contextlib.contextmanager
def _without_info_lines(optuna: Any) -> Iterator[None]:
    """Optuna at its default verbosity (INFO) writes a line to stderr when a study is created ("A new
    study created in memory with name: ...") and per trial told; a notebook shows stderr as a red box,
    as if something failed. At that verbosity, only warnings and errors are written meanwhile; a
    verbosity the user chose (`optuna.logging.set_verbosity(...)`, DEBUG for every line) is kept."""
    logging = optuna.logging
    if logging.get_verbosity() != logging.INFO:
        yield
        return
    logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(logging.INFO)


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
    """`text` in about `_TEXT_CAP` characters: its start and its end (a message's advice is often there)."""
    return bounded_message(text, _TEXT_CAP)


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
        pruner: an Optuna pruner (`optuna.pruners.MedianPruner()`, ...) for a
            new or loaded study: `trial.should_prune()` asks it, from the steps
            the trial reported (`trial.report_step`), which go to the Optuna
            trial (`report(value, step)`) and so into the study's storage.
            None: no pruning (Optuna's `NopPruner`, not Optuna's default
            MedianPruner); `trial.prune()` is then refused. With `study=`,
            the study's own pruner is used.
        metric: the key of a report's `results` that is the objective value,
            or a list of keys for a multi-objective study. The trials it asks
            carry it: a Trial.Task function may return the plain number (or
            a mapping `{metric: number, ...}`), as an Optuna objective does.

    At Optuna's default verbosity (INFO), its INFO lines ("A new study created
    ...", "Trial 3 finished with value ...") are not written while this
    optimizer creates the study or tells it: they went to stderr, which a
    notebook shows as a red box. Warnings still are; a verbosity you set is
    kept (`optuna.logging.set_verbosity(optuna.logging.DEBUG)` writes them all).

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
    | pruned (`trial.prune()`)          | PRUNED      | `status`                                  |
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
        pruner: optuna.pruners.BasePruner | None = None,
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
            others = {"storage": storage, "study_name": study_name, "sampler": sampler, "pruner": pruner}
            given = [name for name, value in others.items() if value is not None]
            if given:
                raise ValueError(
                    f"study= is given, so {'=, '.join(given)}= cannot be: the study has its own. Pass either "
                    "study=, or storage=/study_name=/sampler=/pruner= to create or load one"
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
            if pruner is not None and not isinstance(pruner, module.pruners.BasePruner):
                raise TypeError(
                    f"pruner= takes an Optuna pruner (e.g. optuna.pruners.MedianPruner()) or None, got {pruner!r}"
                )
            if pruner is not None and len(metrics) > 1:
                raise ValueError(
                    f"pruner= works with one metric, and metric={metric!r} names {len(metrics)}: Optuna "
                    "prunes single-objective studies only"
                )
            with _without_info_lines(module):
                study = module.create_study(
                    storage=storage,
                    sampler=sampler,
                    # Optuna's default is a MedianPruner; here no pruner= means no pruning.
                    pruner=pruner if pruner is not None else module.pruners.NopPruner(),
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
    def prunes(self) -> bool:
        """Whether the study's pruner may prune (False with `pruner=None`: Optuna's `NopPruner`)."""
        return not isinstance(self.study.pruner, self._optuna.pruners.NopPruner) and len(self.metrics) == 1

    def report_step(self, trial: Trial, step: int, metrics: Mapping[str, float]) -> None:
        """Report the metric at `step` to the trial's Optuna trial (`optuna_trial.report(value, step)`).

        The value goes into the study's storage as an intermediate value, so it
        outlives the kernel (`steps_df()` reads them back, a resumed study
        keeps them). Multi-objective studies keep no intermediate values
        (Optuna's rule): their steps are recorded by the task only.

        Raises:
            ValueError: `metrics` lacks the metric, or the trial is not one
                this optimizer asked and has not been told about.
        """
        if len(self.metrics) != 1:
            return
        metric = self.metrics[0]
        if metric not in metrics:
            raise ValueError(f"the step has no {metric!r} (metric={metric!r}); its metrics are {sorted(metrics)}")
        self._running(trial, "report_step").report(float(metrics[metric]), step)

    def should_prune(self, trial: Trial) -> bool:
        """The pruner's word on the trial, from the steps it reported: `optuna_trial.should_prune()`."""
        if not self.prunes:
            return False
        return bool(self._running(trial, "should_prune").should_prune())

    def _running(self, trial: Trial, method: str) -> optuna.trial.Trial:
        number = trial.info.get("optuna_trial")
        optuna_trial = self._pending.get(number) if isinstance(number, int) else None
        if optuna_trial is None or trial.info.get("optuna_study") != self.study.study_name:
            raise ValueError(
                f"OptunaOptimizer.{method}(): trial {trial.name!r} is not one this optimizer asked and is "
                f"waiting for (its info is {dict(trial.info)!r})"
            )
        return optuna_trial

    def steps_df(self) -> pd.DataFrame:
        """The intermediate values of every trial of the study, from its storage: one row per step.

        Columns: `trial` (`trial-<number>`), `number`, `step`, the metric
        (float64), and `state` (the study trial's: "COMPLETE", "PRUNED",
        "RUNNING", ...). Those of earlier runs and of killed kernels included:
        the learning curves of a resumed study.
        """
        import pandas as pd

        metric = self.metrics[0]
        rows = [
            (f"trial-{t.number}", t.number, step, value, t.state.name)
            for t in self.study.get_trials(deepcopy=False)
            for step, value in sorted(t.intermediate_values.items())
        ]
        df = pd.DataFrame(rows, columns=["trial", "number", "step", metric, "state"])
        return df.astype({"trial": "string", "number": "int64", "step": "int64", metric: "float64", "state": "string"})

    @property
    def metric(self) -> str | list[str]:
        """The metric (a list of them for a multi-objective study)."""
        return self.metrics[0] if len(self.metrics) == 1 else list(self.metrics)

    @property
    def direction(self) -> str | list[str]:
        """ "minimize" or "maximize" (a list of them for a multi-objective study): the study's own."""
        directions = [d.name.lower() for d in self.study.directions]
        return directions[0] if len(directions) == 1 else directions

    @property
    def best_value(self) -> float | None:
        """The study's best value of the metric, in the study's direction, over all its COMPLETE trials:
        those of earlier runs, kernels and processes on the same storage too. None before any trial
        completed, and for a multi-objective study (it has a front, not one best).

        ```python
        optimizer = OptunaOptimizer({"x": (0.0, 1.0)}, metric="acc", direction="maximize")
        optimizer.best_value            # None: nothing completed yet
        trial = optimizer.ask()
        optimizer.tell(trial.success(acc=0.9))
        optimizer.best_value            # 0.9
        ```
        """
        if len(self.study.directions) != 1:
            return None
        try:
            return float(self.study.best_value)
        except ValueError:  # no COMPLETE trial yet
            return None

    @property
    def pending(self) -> list[Trial]:
        """Trials this optimizer asked and was not told about yet (running, or never run)."""
        return [self._trial(t) for t in self._pending.values()]

    def _trial(self, optuna_trial: optuna.trial.Trial) -> Trial:
        return Trial(
            name=f"trial-{optuna_trial.number}",
            config=dict(optuna_trial.params),
            info={"optuna_study": self.study.study_name, "optuna_trial": optuna_trial.number},
            metric=self.metric,
            optimizer=self,
        )

    def ask(self) -> Trial:
        """Ask the study for a trial: `study.ask(space)`.

        Returns:
            `Trial(name=f"trial-{number}", config=<the sampled params>,
            info={"optuna_study": <study name>, "optuna_trial": <number>}, metric=<the metric>)`,
            `number` being the Optuna trial's number in the study. A Trial.Task
            function that returns a plain number reports it under `metric`.
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
        if isinstance(report, Trial.PrunedReport) or isinstance(report.exception, self._optuna.TrialPruned):
            # Optuna gives a pruned trial its last intermediate value as its value.
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
            with _without_info_lines(self._optuna):
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
