"""The hand-off of finished futures from executor threads to the scheduler's event loop.

Futures finish in executor threads; the events of a call are emitted in the
scheduler's loop. This hand-over is the hot path of dispatch. The executor's
thread (a process pool's management thread) appends the finished future to a
queue and *rings* a [`Doorbell`][byop_nb.scheduling.engine._doorbell.Doorbell] the loop
watches: one `write`, only when no ring is already on its way, and no Python
objects made in that thread (`call_soon_threadsafe` makes a Handle and copies a
context there, which held the GIL the pool's threads wait for). The loop then
*drains*: it processes the futures queued before it woke, in the order they
finished; those that finish meanwhile wait for its next turn, so timers and
other callbacks get theirs (trio's `_entry_queue.py` does "a bounded amount of
work on each pass" for the same reason).

Vocabulary: executor threads *ring*; the loop *drains*; a drain can be *nested*
(a callback runs another scheduler, whose run nests into this loop), and the
scheduler's wake-up is *deferred* until the drains on the stack have returned.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from byop_nb.scheduling.engine import _doorbell
from byop_nb.scheduling.engine._output import RunOutput

__all__ = ["Handoff", "outcome"]

logger = logging.getLogger(__name__)


def _no_ring() -> None:
    """Between runs: a future that finishes is settled by the next run (or was already)."""


class Handoff:
    """Queues futures finished in any thread and drains them in the loop, in the order they finished.

    Args:
        process: called in the loop with each finished future; what it returns (other
            than None) is handed to `announce` once the batch is processed.
        announce: called in the loop after each batch, with what `process` returned for
            its futures, in order (the scheduler writes the batch's rows to the journals
            once, then emits the batch's events).
        after_drain: called in the loop after each outermost drain, with whether
            a wake-up was deferred during it (see `defer_wake`).
        output: where the text the batch's callbacks write goes while it is `active`
            (a background run with a Dashboard); one check per drain, not per future.
    """

    def __init__(
        self,
        process: Callable[[Future[Any]], Any],
        announce: Callable[[list[Any]], None],
        after_drain: Callable[[bool], None],
        output: RunOutput | None = None,
    ) -> None:
        self._process = process
        self._announce = announce
        self._after_drain = after_drain
        self._output = output
        self._finished: collections.deque[Future[Any]] = collections.deque()
        self._scheduled = False  # a drain is on its way: finishing futures need not ring
        self._depth = 0  # drains on the stack: more than one when a callback nests another run
        self._deferred = False  # a wake-up that waits for the drains on the stack to end
        self._doorbell: _doorbell.Doorbell | None = None  # made at the first open
        self._ring: Callable[[], None] = _no_ring
        self._loop: asyncio.AbstractEventLoop | None = None  # while open

    # -- the loop's side: open for a run, close at its end -------------------------------
    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start draining into `loop`.

        Futures of an earlier run that ended without them are settled already. The ring is
        set before the flag, and a first drain is rung for: a call of that run that ends
        meanwhile cannot leave the flag set with no drain on its way.
        """
        self._ring = self._ring_for(loop)
        self._loop = loop
        self._finished.clear()
        self._deferred = False
        self._scheduled = True
        self._ring()

    def close(self) -> None:
        """Stop draining (the run ended); what finishes from now on is dropped.

        The doorbell's descriptor is released now (a scheduler kept after its run
        holds none; the next run makes a new bell), not when it is garbage collected.
        """
        self._ring = _no_ring
        self._loop = None
        doorbell, self._doorbell = self._doorbell, None
        if doorbell is not None:
            doorbell.close()
        self._finished.clear()  # settled by the scheduler: their results need not stay alive

    def _ring_for(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """How executor threads wake `loop` to drain: the doorbell, where the loop can watch it."""
        if self._doorbell is None:
            try:
                self._doorbell = _doorbell.Doorbell()
            except OSError as e:  # out of file descriptors, ...
                logger.debug("no doorbell (%s); waking the loop with call_soon_threadsafe", e)
        if self._doorbell is not None and self._doorbell.attach(loop, self.drain):
            return self._doorbell.ring

        def call_soon() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the run is over, nothing to report
                loop.call_soon_threadsafe(self.drain)

        return call_soon

    # -- executor threads ---------------------------------------------------------------
    def future_done(self, future: Future[Any]) -> None:
        """A future's done callback, in the thread that finished it: queue it, ring if no drain is coming."""
        self._finished.append(future)
        if self._scheduled:  # the loop will see it: no system call, no GIL round
            return
        self._scheduled = True
        self._ring()

    # -- the loop -----------------------------------------------------------------------
    def finished_here(self, future: Future[Any]) -> None:
        """`future_done` for a future that had finished when it was submitted, in the loop's thread
        (a sequential executor, a call refused at submission): queue it, and if no drain is coming,
        schedule one on the loop directly. Ringing the bell from the loop's own thread would cost a
        system call to ring and two more to answer (the loop's poll, the bell's read), per drain."""
        self._finished.append(future)
        if self._scheduled:
            return
        self._scheduled = True
        loop = self._loop
        if loop is None:  # between runs: settled by the next run (or already)
            return
        loop.call_soon(self.drain)

    def drain(self) -> None:
        """Process the futures that finished before this wake-up, in the order they finished."""
        output = self._output
        if output is not None and output.active:  # one capture for the whole batch's callbacks
            with output.capture():
                self._drain()
        else:
            self._drain()

    def _drain(self) -> None:
        # Cleared first: a future that finishes from here on rings again. It is left for that
        # next wake-up, so that calls which end as fast as callbacks resubmit them (a sequential
        # executor, instant calls on threads) cannot keep the loop from its timers, other
        # callbacks and the kernel's messages.
        self._scheduled = False
        finished = self._finished
        process = self._process
        batch = []  # this drain's own: a drain nested in an announcement makes its own
        self._depth += 1
        try:
            for _ in range(len(finished)):
                if not finished:  # a run nested in a callback (another scheduler's) drained the rest
                    break
                concluded = process(finished.popleft())
                if concluded is not None:
                    batch.append(concluded)
            if batch:
                self._announce(batch)
        finally:
            self._depth -= 1
        if not self._depth:
            deferred, self._deferred = self._deferred, False
            self._after_drain(deferred)

    def defer_wake(self) -> bool:
        """Whether a drain is on the stack; if so, the wake-up is noted for `after_drain`.

        A callback may run another scheduler (its run nests into this loop): until that
        callback returns, the run whose drain called it must not end under it.
        """
        if self._depth:
            self._deferred = True
            return True
        return False


def outcome(future: Future[Any]) -> tuple[bool, BaseException | None, Any]:
    """`(cancelled, exception, result)` of a done future, asked through its methods.

    The standard library's Future guards each of `cancelled()`, `exception()`
    and `result()` with its lock (about a microsecond each); once such a future
    has FINISHED its fields no longer change, so `_process_future` reads them
    directly (inline: it runs once per call: `Scheduler._process_future`) and asks here only for the rest:
    cancelled futures, and futures of other classes.
    """
    if future.cancelled():
        return True, None, None
    exception = future.exception()
    return False, exception, None if exception is not None else future.result()
