"""A submitted call: [`Call`][byop_nb.scheduling._call.Call], and how it ended: [`Status`][byop_nb._status.Status]."""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from byop_nb._status import Status

if TYPE_CHECKING:
    from byop_nb.scheduling.task import Task, TaskMap

__all__ = ["Call", "Status"]


class Call:
    """One submitted call of a Task, from its submission until it ended (internal).

    The scheduler's table of work in flight maps each Future to its Call, and
    hands the Call back to its task when the Future is done.

    Attributes:
        task: the Task the call belongs to.
        number: the call's number in the task (1, 2, ...): the `call` column.
        args, kwargs: the arguments as the caller gave them.
        submitted: when it was submitted (epoch seconds).
        future: its Future, once the executor took it.
        state: what a Task subclass keeps about the call between its hooks
            (a CommTask: the call's comm state; a Trial.Task: the trial's report).
        feed: the `task.map(...)` that submitted it, if one did.
    """

    __slots__ = ("args", "feed", "future", "kwargs", "number", "state", "submitted", "task")

    def __init__(
        self,
        task: Task[Any, Any],
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
        self.state: Any = None
        self.feed: TaskMap | None = None

    def __repr__(self) -> str:
        return f"Call({self.task.name!r}, number={self.number}, args={self.args!r}, kwargs={self.kwargs!r})"
