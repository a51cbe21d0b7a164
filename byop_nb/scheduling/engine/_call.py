"""A submitted call: [`Call`][byop_nb.scheduling.engine._call.Call]; its end: [`Status`][byop_nb._status.Status]."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from byop_nb._status import Status

if TYPE_CHECKING:
    from byop_nb.events import Event, EventManager
    from byop_nb.history import History

__all__ = ["Call", "Status", "TaskLike"]


class TaskLike(Protocol):
    """What the engine (the Scheduler and its run) asks of a task: [`Task`][byop_nb.scheduling.Task] is one.

    The scheduler knows tasks through this protocol alone, so the engine does not
    import the module of the Task class (nor the Task module the engine's).
    """

    name: str
    function: Callable[..., Any]
    history: History
    event_manager: EventManager
    call_limit: int | None
    n_called: int
    FAILURES: ClassVar[frozenset[Status]]
    NOUN: ClassVar[str]
    CALL_LIMIT_REACHED: Event[...]

    def conclude_call(
        self, call: Call, cancelled: bool, exception: BaseException | None, result: Any
    ) -> Status: ...  # pragma: no cover

    def announce_call(self, call: Call) -> None: ...  # pragma: no cover

    def cancelled_call(self, call: Call) -> None: ...  # pragma: no cover

    def failure_summary(self) -> Any: ...  # pragma: no cover  # a FailureSummary (_failures is above this)


class Call:
    """One submitted call of a Task, from its submission until it ended (internal).

    The scheduler's table of work in flight maps each Future to its Call, and
    hands the Call back to its task when the Future is done. The task ends it
    with [`end`][byop_nb.scheduling.engine._call.Call.end], once; every hook after that
    (`_record`, `_emit`, ...) takes the Call alone and reads how it ended from it.

    Attributes:
        task: the Task the call belongs to.
        number: the call's number in the task (1, 2, ...): the `call` column.
        args, kwargs: the arguments as the caller gave them.
        submitted: when it was submitted (epoch seconds).
        future: its Future, once the executor took it.
        feed: the `task.map(...)` that submitted it, if one did.
        status: how it ended (`RETURNED`, `EXCEPTION`, a limit's status, or
            `CANCELLED`); None while it has not ended.
        result: what the function returned (None unless `status` is `RETURNED`).
        exception: what it raised (None unless it raised or hit a limit).
        comm: a CommTask's state of the call's comm (its hub's record of it), or None.
        report: a Trial.Task's report of the call, once it ended (None for a
            cancelled trial, and for other tasks).
    """

    __slots__ = (
        "args",
        "comm",
        "exception",
        "feed",
        "future",
        "kwargs",
        "number",
        "report",
        "result",
        "status",
        "submitted",
        "task",
    )

    def __init__(
        self,
        task: TaskLike,
        number: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        submitted: float,
    ) -> None:
        self.task = task
        self.number = number
        self.args = args
        self.kwargs = kwargs
        self.submitted = submitted
        self.future: Future[Any] | None = None
        self.feed: Any = None  # a TaskMap
        self.status: Status | None = None
        self.result: Any = None
        self.exception: BaseException | None = None
        self.comm: Any = None  # a CommTask's _CallComms (the comm hub's module is above this one)
        self.report: Any = None

    def end(self, status: Status, result: Any = None, exception: BaseException | None = None) -> None:
        """The call ended with `status`: the one transition from running to ended, made once.

        Like `Future.set_running_or_notify_cancel`, it is guarded: a call ends
        exactly once, whoever ends it (its Future finishing, or a `wait=False`
        stop cancelling it).

        Args:
            status: how it ended: `Status.RETURNED`, `Status.EXCEPTION`, a limit's
                status (`MEMORY_LIMIT`, `CPU_TIME_LIMIT`, `WALL_TIME_LIMIT`) or
                `Status.CANCELLED`.
            result: what the function returned (for `RETURNED`).
            exception: what it raised (for `EXCEPTION` and the limits).

        Raises:
            RuntimeError: the call has ended already.
            TypeError: `status` is not a Status.

        Example:
            ```python
            call.end(Status.RETURNED, result=9)
            assert call.status is Status.RETURNED and call.result == 9
            ```
        """
        if self.status is not None:
            raise RuntimeError(f"{self!r} has ended already (with status {self.status.value!r}); a call ends once")
        if type(status) is not Status:
            raise TypeError(f"Call.end() needs a byop_nb Status, got {status!r}")
        self.status = status
        self.result = result
        self.exception = exception

    def __repr__(self) -> str:
        return f"Call({self.task.name!r}, number={self.number}, args={self.args!r}, kwargs={self.kwargs!r})"
