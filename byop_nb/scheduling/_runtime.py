"""Running inside an event loop that is already running, as in a Jupyter kernel.

`Scheduler.run()` nests its run into a running loop with nest-asyncio2 (applied
to that loop only, at that moment, never at import); `Scheduler.start()` runs
it in the background of that loop and returns a
[`RunHandle`][byop_nb.scheduling.RunHandle].
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from byop_nb.scheduling import _doorbell as _doorbell

if TYPE_CHECKING:
    from byop_nb.scheduling.scheduler import ExitCode, Scheduler

__all__ = [
    "RunHandle",
    "running_loop",
    "run_nested",
    "log_background_error",
    "trim_traceback",
    "note_callback",
    "interrupted",
]

logger = logging.getLogger("byop_nb.scheduling.scheduler")


class RunHandle:
    """The background run started by [`Scheduler.start`][byop_nb.scheduling.Scheduler.start].

    Awaitable (`await handle` gives the ExitCode); `done()` tells whether the
    run ended; `result()` gives its ExitCode or raises the error that ended it.
    """

    def __init__(self, task: asyncio.Task[ExitCode], scheduler: Scheduler) -> None:
        self._task = task
        self.scheduler = scheduler

    def done(self) -> bool:
        """Whether the run has ended."""
        return self._task.done()

    def result(self) -> ExitCode:
        """The run's ExitCode; raises the callback error that ended it.

        Raises:
            RuntimeError: the run has not ended yet (use `await handle`, or `scheduler.stop()`).
        """
        __tracebackhide__ = True  # IPython and pytest leave this frame out
        if not self._task.done():
            raise RuntimeError("the run is still going; `await` the handle in a cell, or call scheduler.stop() first")
        try:
            return self._task.result()
        except Exception as error:  # from a callback: show the user's frames, as run() does
            raise trim_traceback(error)

    def __await__(self) -> Generator[Any, None, ExitCode]:
        __tracebackhide__ = True
        try:
            return (yield from self._task.__await__())
        except Exception as error:  # from a callback: show the user's frames, as run() does
            raise trim_traceback(error)
        except asyncio.CancelledError as cancelled:  # Kernel -> Interrupt: the user's line, not the loop's
            raise interrupted(cancelled, self.scheduler) from None

    def __repr__(self) -> str:
        if not self._task.done():
            return "RunHandle(running)"
        if self._task.cancelled():
            return "RunHandle(cancelled)"
        error = self._task.exception()
        return f"RunHandle(error={error!r})" if error else f"RunHandle({self._task.result()})"


def interrupted(error: BaseException, scheduler: Scheduler) -> BaseException:
    """`error` (a KeyboardInterrupt, or the CancelledError of an interrupted `await`) as the user sees it:
    without the event loop's and byop_nb's frames, and with a note on what became of the run (once)."""
    error.__traceback__ = None
    note = "byop_nb: the run was interrupted; its running calls were cancelled and its workers ended"
    if not any(n.startswith(note) for n in getattr(error, "__notes__", ())):
        error.add_note(f"{note} (scheduler.exit_code is {scheduler.exit_code})")
    return error


def log_background_error(task: asyncio.Task[ExitCode]) -> None:
    """Nobody may be awaiting a background run: make its error visible anyway."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("the background run ended with an error", exc_info=task.exception())


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run_nested(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, ExitCode]) -> ExitCode:
    """Run `coroutine` to completion inside the already running `loop` (a Jupyter cell)."""
    import nest_asyncio2

    nest_asyncio2.apply(loop)
    _doorbell.rearm(loop)  # a scheduler whose callback runs this one keeps being woken
    task = asyncio.ensure_future(coroutine, loop=loop)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        # An interrupt (the notebook's stop button) left the run suspended: cancel it,
        # so it settles its calls as cancelled and kills its workers, then re-raise.
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task)
        raise


# Frames of these modules are the machinery between the user's cell and the user's callback.
_MACHINERY = ("byop_nb.", "asyncio.", "nest_asyncio2", "concurrent.futures", "contextlib")


def trim_traceback(error: BaseException) -> BaseException:
    """Give `error` the traceback a user reads: from their line that ran or awaited the run to their
    callback that raised, without the machinery's frames (byop_nb, asyncio, nest-asyncio2). Returns `error`.

    The callback's frames are those `note_callback` kept when the callback raised: an error
    that ended a background run is raised again at each `await handle` or `handle.result()`, and
    each raise adds frames of its own cell to the traceback it carries. Otherwise the error's
    traceback is trimmed. The traceback is a new chain: one that other code holds (asyncio keeps
    the run's) is left as it is. A traceback of machinery frames only (an error of byop_nb's
    own) is left whole.
    """
    kept = getattr(error, "_byop_nb_callback_tb", None)
    error.__traceback__ = kept if kept is not None else _without_machinery(error.__traceback__)
    return error


def _without_machinery(tb: TracebackType | None) -> TracebackType | None:
    """A new chain of the frames of `tb` that are not the machinery's (`tb` itself if all are)."""
    kept = []
    entry = tb
    while entry is not None:
        module = entry.tb_frame.f_globals.get("__name__", "")
        if not (module == "byop_nb" or module.startswith(_MACHINERY)):
            kept.append(entry)
        entry = entry.tb_next
    if not kept:
        return tb
    chain = None
    for entry in reversed(kept):
        chain = TracebackType(chain, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return chain


def note_callback(error: BaseException) -> None:
    """Add a note naming the callback and event that raised `error` in a run (once)."""
    raised_by = getattr(error, "byop_nb_raised_by", None)
    if raised_by is None or hasattr(error, "_byop_nb_callback_tb"):  # noted already
        return
    callback, event, source = raised_by
    try:
        error.add_note(f"byop_nb: raised by the callback {callback!r} of the event {event!r} ({source})")
        # The user's frames, from the callback down to where it raised (see trim_traceback).
        error._byop_nb_callback_tb = _without_machinery(error.__traceback__)  # type: ignore[attr-defined]
    except AttributeError:
        pass
