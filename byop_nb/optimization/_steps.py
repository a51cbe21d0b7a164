"""Multi-fidelity: the steps a running trial reports, the pruning question, and the record of the steps.

A Trial.Task's function reports its metrics at each step with
`trial.report_step(step, **metrics)` and asks `trial.should_prune()` (both on
`Trial`, in `trial.py`: they run in the worker). Each is one request through
the call's comm; what travels is this module's wire format, `Step` (checked in
the worker by `checked_step`, so a bad step fails at the call that made it) and
`SHOULD_PRUNE`.

In the main process `StepsTask`, the CommTask that `Trial.Task` is built on,
answers those requests itself in the loop's thread (`_answer_own`: they never reach the user's `on_request`): it
hands a step to the optimizer that asked the trial (`optimizer.report_step`),
asks it `should_prune`, records the step as a row (`step_rows`, `steps_df()`)
and streams it to a journal (`stream_steps_to`); `read_steps` reads one back.
What a pruned trial returns (`trial.prune(...)`, a `Trial.PrunedReport`) is
made and emitted in `trial.py`, with the other reports.
"""

from __future__ import annotations

import numbers
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from byop_nb._journal import Journal, read_rows
from byop_nb._text import bounded_repr
from byop_nb.scheduling.comms import CommTask
from byop_nb.scheduling.engine._call import Call

if TYPE_CHECKING:
    from typing import Unpack

    import pandas as pd

    from byop_nb.scheduling.scheduler import Scheduler
    from byop_nb.scheduling.task import TaskOptions

__all__ = ["read_steps"]

P = ParamSpec("P")
R = TypeVar("R")


def is_number(value: Any) -> bool:
    """Whether `value` is a real number (numpy's included); bools are not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def plain_number(value: Any) -> Any:
    """A numpy scalar as its Python number (what an optimizer and a DataFrame cell want)."""
    item = getattr(value, "item", None)
    return item() if type(value).__module__ == "numpy" and item is not None else value


# -- the wire format: what the worker's trial asks the main process --------------------
@dataclass(frozen=True)
class Step:
    """What `trial.report_step` sends: the step, its metrics, and when (epoch seconds, the worker's clock)."""

    step: int
    metrics: dict[str, float]
    time: float


class ShouldPrune:
    """What `trial.should_prune` asks."""

    def __reduce__(self) -> str:
        return "SHOULD_PRUNE"  # one instance, in every process


SHOULD_PRUNE = ShouldPrune()


def checked_step(
    trial: str, step: Any, metrics: Mapping[str, Any], *, last: int | None, names: Sequence[str], required: bool
) -> Step:
    """The `Step` that `trial.report_step(step, **metrics)` sends, checked in the worker.

    `trial` is the trial's name, `last` its previous step, `names` its metrics
    (`trial.metrics`); `required` says whether `names` must be among `metrics`
    (an optimizer asked the trial).

    Raises:
        ValueError: `step` is not an int larger than `last`; no metrics; a
            metric is not a number; a required metric is missing.
    """
    if not isinstance(step, int) or isinstance(step, bool):
        raise ValueError(
            f"trial {trial!r}: report_step(step={step!r}): a step is an int (an epoch, a round), "
            f"got {type(step).__name__}"
        )
    if last is not None and step <= last:
        raise ValueError(
            f"trial {trial!r}: report_step(step={step}) after step {last}: steps must "
            f"increase; report step {last + 1} or later"
        )
    if not metrics:
        raise ValueError(
            f"trial {trial!r}: report_step({step}) has no metrics; report at least "
            f"{names[0]!r}, e.g. trial.report_step({step}, {names[0]}=...)"
        )
    not_numbers = {k: v for k, v in metrics.items() if not is_number(v)}
    if not_numbers:
        key, value = next(iter(not_numbers.items()))
        raise ValueError(
            f"trial {trial!r}: report_step({step}, {key}={bounded_repr(value, 100)}): a metric is a "
            "real number (int, float, numpy scalar)"
        )
    missing = [m for m in names if m not in metrics] if required else []
    if missing:
        raise ValueError(
            f"trial {trial!r}: report_step({step}, {', '.join(f'{k}=...' for k in metrics)}) lacks "
            f"{missing[0]!r}, the metric of the optimizer that asked the trial; report it, e.g. "
            f"trial.report_step({step}, {missing[0]}=...)"
        )
    return Step(step, {k: float(plain_number(v)) for k, v in metrics.items()}, time.time())


# -- the main process: answering, recording and streaming the steps --------------------
class SteppingTrial(Protocol):
    """What `StepsTask` reads of a call's trial (a `Trial`: this module stays below `trial.py`)."""

    @property
    def name(self) -> str: ...
    @property
    def metric(self) -> str | Sequence[str] | None: ...
    @property
    def metrics(self) -> list[str]: ...
    @property
    def optimizer(self) -> Any: ...


class StepsTask(CommTask[P, R]):
    """The multi-fidelity half of [`Trial.Task`][byop_nb.optimization.trial.TrialTask]: a CommTask whose
    calls report steps (`trial.report_step`) and ask whether to prune (`trial.should_prune`).

    The call's first argument is its trial. The task answers the two requests
    itself (they are not `REQUEST` events), records each step (`step_rows`,
    `steps_df()`, `stream_steps_to`), and hands it to the optimizer that asked
    the trial (`trial.optimizer`, see `PruningOptimizer`).
    """

    def __init__(self, function: Callable[P, R], scheduler: Scheduler, **options: Unpack[TaskOptions]) -> None:
        super().__init__(function, scheduler, **options)  # type: ignore[arg-type]  # the trial is the caller's
        self._steps: list[dict[str, Any]] = []  # one row per reported step (`steps_df`)
        self._last_steps: dict[int, int] = {}  # call number -> the latest step of a running call
        self._steps_journal: Journal | None = None

    @property
    def step_rows(self) -> Sequence[Mapping[str, Any]]:
        """The reported steps as recorded, oldest first (read only; `steps_df()` is the DataFrame).

        Each is a dict: `trial`, `call`, `step`, `metrics` (name -> float), `time`
        (the worker's clock), `received` (the main process's clock) and `metric`
        (the asking optimizer's metric, or None). The list only grows, so a reader
        that keeps how many it has read (the Dashboard) reads only the new ones.
        """
        return self._steps

    def steps_df(self) -> pd.DataFrame:
        """One row per step a trial reported with `trial.report_step(step, **metrics)`, in the order received.

        Columns: `trial` (its name), `call` (the call's number), `step`
        (int64), one float64 column per metric name any step reported (NaN
        where a step did not report it), and `time` (datetime64 UTC, when the
        worker reported it).

        ```python
        curves = task.steps_df().pivot(index="step", columns="trial", values="loss")
        ```

        The steps live in this task (this kernel). To keep them on disk, stream
        them to a journal (`stream_steps_to`); an `OptunaOptimizer` also keeps
        the metric's values in its study's storage, so the curves of a study
        outlive the kernel (`optimizer.steps_df()`).
        """
        return steps_frame(self._steps)

    def stream_steps_to(self, path: str | os.PathLike[str]) -> None:
        """Append every reported step to the journal file `path`, one JSON line each, as it arrives.

        The steps recorded already are written first. Each step is handed to the
        operating system before the worker's `report_step` returns, so a kernel
        killed later loses none; [`read_steps`][byop_nb.optimization.trial.read_steps]
        gives them back as the `steps_df()` frame. The file is appended to; a torn
        last line (a process killed mid-write) is removed first. Calling it again
        with the same path does nothing; with another, the steps go there instead.

        ```python
        task.stream_steps_to("results/steps.jsonl")
        ...   # a later session, after the kernel died
        from byop_nb.optimization.trial import read_steps
        curves = read_steps("results/steps.jsonl")
        ```

        Raises:
            OSError: the file cannot be opened or written (the message names it).
        """
        journal = self._steps_journal
        target = Path(path).expanduser().resolve()
        if journal is not None and journal.path == target:
            return
        if journal is not None:
            journal.close()
        self._steps_journal = None
        journal = Journal(target)
        try:
            for row in self._steps:
                journal.add(row)
            journal.flush()
        except BaseException:
            journal.close()
            raise
        self._steps_journal = journal

    def _journal_step(self, row: dict[str, Any]) -> None:
        journal = self._steps_journal
        if journal is None:
            return
        try:
            journal.write(row)
        except OSError as e:  # a full disk: the steps stay in memory, the run goes on
            self._steps_journal = None
            journal.close()
            warnings.warn(
                f"Trial.Task {self.name!r} stopped streaming its steps to {journal.path}: {e}",
                RuntimeWarning,
                stacklevel=2,
            )

    def _answer_own(self, call: Call, data: Any) -> tuple[bool, Any]:
        """Answer a request of `trial.report_step` or `trial.should_prune`: (handled, answer).

        They are answered here, in the loop's thread, never emitted as `REQUEST`:
        a user's `on_request` callbacks see only what the function asks itself.
        The answer is `(True, value)`, or `(False, message)` for the worker to raise.
        """
        trial: SteppingTrial = call.args[0]
        optimizer = trial.optimizer
        if isinstance(data, Step):
            last = self._last_steps.get(call.number)
            if last is not None and data.step <= last:
                return True, (
                    False,
                    f"trial {trial.name!r}: step {data.step} after step {last}: steps must increase "
                    "(a copy of the trial in another process reported them?)",
                )
            if optimizer is not None and callable(getattr(optimizer, "report_step", None)):
                try:
                    optimizer.report_step(trial, data.step, data.metrics)
                except Exception as e:
                    return True, (False, f"{type(optimizer).__name__}.report_step() refused step {data.step}: {e}")
            self._last_steps[call.number] = data.step
            self._steps.append(
                {
                    "trial": trial.name,
                    "call": call.number,
                    "step": data.step,
                    "metrics": data.metrics,
                    "time": data.time,
                    "received": time.time(),  # the main process's clock: which run a step belongs to
                    "metric": trial.metrics[0] if trial.metric is not None else None,
                }
            )
            self._journal_step(self._steps[-1])
            return True, (True, None)
        if isinstance(data, ShouldPrune):
            if optimizer is None or not callable(getattr(optimizer, "should_prune", None)):
                return True, (True, False)
            if call.number not in self._last_steps:
                return True, (True, False)  # nothing reported yet: nothing to judge
            try:
                return True, (True, bool(optimizer.should_prune(trial)))
            except Exception as e:
                return True, (False, f"{type(optimizer).__name__}.should_prune() raised {type(e).__name__}: {e}")
        return False, None

    def _emit(self, call: Call) -> None:
        self._last_steps.pop(call.number, None)  # the call ended: a later call of the trial starts afresh
        super()._emit(call)


def steps_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The `steps_df()` frame of step rows (`task.step_rows`, or read from a journal)."""
    import pandas as pd

    metrics: dict[str, None] = {}
    for row in rows:
        metrics.update(dict.fromkeys(row["metrics"]))
    columns: dict[str, Any] = {
        "trial": pd.array([row["trial"] for row in rows], dtype="string"),
        "call": pd.array([row["call"] for row in rows], dtype="int64"),
        "step": pd.array([row["step"] for row in rows], dtype="int64"),
    }
    for metric in metrics:
        columns[metric] = pd.array([row["metrics"].get(metric, float("nan")) for row in rows], dtype="float64")
    columns["time"] = pd.to_datetime([row["time"] for row in rows], unit="s", utc=True)
    return pd.DataFrame(columns)


def read_steps(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The steps a journal written by `task.stream_steps_to(path)` holds, as `task.steps_df()` gave them.

    A torn last line (the writing process killed mid-line) is skipped.

    ```python
    from byop_nb.optimization.trial import read_steps

    steps = read_steps("results/steps.jsonl")
    steps.groupby("trial").step.max()
    ```

    Raises:
        FileNotFoundError: there is no file at `path`.
        ValueError: a line other than the last is not a JSON object (the message names it).
    """
    return steps_frame(list(read_rows(path)))
