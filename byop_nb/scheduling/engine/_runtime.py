"""Running inside an event loop that is already running, as in a Jupyter kernel.

`Scheduler.run()` nests its run into a running loop with nest-asyncio2 (applied
to that loop only, at that moment, never at import); `Scheduler.start()` runs
it in the background of that loop and returns a
[`RunHandle`][byop_nb.scheduling.RunHandle] (in `_run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from byop_nb.scheduling.engine import _doorbell

# This module sits below `_run` (which holds ExitCode): a run's result is typed `R` here.
R = TypeVar("R")

__all__ = [
    "running_loop",
    "run_nested",
    "log_background_error",
    "trim_traceback",
    "note_callback",
    "interrupted",
]

logger = logging.getLogger("byop_nb.scheduling.scheduler")


def interrupted(error: BaseException, exit_code: object) -> BaseException:
    """`error` (a KeyboardInterrupt, or the CancelledError of an interrupted `await`) as the user sees it:
    without the event loop's and byop_nb's frames, and with a note on what became of the run (once)."""
    error.__traceback__ = None
    note = "byop_nb: the run was interrupted; its running calls were cancelled and its workers ended"
    if not any(n.startswith(note) for n in getattr(error, "__notes__", ())):
        error.add_note(f"{note} (scheduler.exit_code is {exit_code})")
    return error


def log_background_error(task: asyncio.Task[Any]) -> None:
    """Nobody may be awaiting a background run: make its error visible anyway."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("the background run ended with an error", exc_info=task.exception())


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run_nested(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, R]) -> R:
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
