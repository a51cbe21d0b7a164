"""Waking an asyncio loop from other threads with one system call and no Python objects.

`loop.call_soon_threadsafe` wakes a loop from another thread, but first builds
a Handle and copies the thread's context, in the calling thread. For the
Scheduler that thread is the executor's (a process pool's management thread,
the busiest thread of a dispatch-bound run): the Python it runs there holds the
GIL that the loop and the pool's other threads wait for. A `Doorbell` is a file
descriptor the loop watches (`loop.add_reader`); `ring()` from any thread is a
single `write`, and the loop calls the one callback it was given when it sees
the ring. Rings that arrive before the loop answers are answered together.

This module is internal to the Scheduler; see `Scheduler._future_done_threadsafe`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import weakref
from collections.abc import Callable

__all__ = ["Doorbell"]

_CHUNK = 4096


class Doorbell:
    """A wake-up file descriptor: `ring()` from any thread, `callback()` runs in the loop it is `attach`ed to.

    An eventfd on Linux, a pair of non-blocking sockets elsewhere. The descriptors are
    closed only when the Doorbell is garbage collected, that is, when nothing
    can ring it any more: a late ring never writes to a reused descriptor number.

    Example:
        ```python
        import asyncio, threading
        from byop_nb.scheduling.doorbell import Doorbell

        async def main() -> None:
            rung = asyncio.Event()
            bell = Doorbell()
            bell.attach(asyncio.get_running_loop(), rung.set)
            threading.Thread(target=bell.ring).start()
            await rung.wait()
            bell.detach()

        asyncio.run(main())
        ```
    """

    def __init__(self) -> None:
        self._eventfd = hasattr(os, "eventfd")
        if self._eventfd:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._read_fd = self._write_fd = fd
            closers: tuple[Callable[[], None], ...] = (functools.partial(os.close, fd),)
        else:  # a socket pair: what every selector can watch (select() on Windows takes sockets only)
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._read_fd, self._write_fd = reader.fileno(), writer.fileno()
            self._reader, self._writer = reader, writer
            closers = (reader.close, writer.close)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callback: Callable[[], None] | None = None
        self._finalizer = weakref.finalize(self, _close_all, closers)

    def ring(self) -> None:
        """Wake the loop (from any thread; safe to call at any time)."""
        try:
            if self._eventfd:
                os.eventfd_write(self._write_fd, 1)
            else:
                self._writer.send(b"\0")
        except BlockingIOError:  # the count or the buffer is full: a ring is pending anyway
            pass

    def attach(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
        """Have `loop` call `callback()` after each ring (rings before it answers count once).

        Returns False when the loop cannot watch file descriptors (e.g. the
        Proactor loop on Windows); the caller then wakes it another way.
        Rings made before `attach` are answered as soon as the loop runs.
        """
        self.detach()
        try:
            loop.add_reader(self._read_fd, self._answer)
        except NotImplementedError:
            return False
        self._loop, self._callback = loop, callback
        return True

    def detach(self) -> None:
        """Stop watching (rings made from now on wait for the next `attach`)."""
        loop, self._loop, self._callback = self._loop, None, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._read_fd)

    def _answer(self) -> None:
        try:
            if self._eventfd:
                os.eventfd_read(self._read_fd)  # the count: ours to clear
            else:
                self._reader.recv(_CHUNK)
        except BlockingIOError:
            pass
        loop, callback = self._loop, self._callback
        if loop is not None and callback is not None:
            # A handle of its own for each answer: the reader's handle is one object with one
            # context, which a run nested inside the callback (nest_asyncio2, in Jupyter) could not
            # enter again while the callback is still on the stack; the ring would then go unanswered.
            loop.call_soon(callback)


def _close_all(closers: tuple[Callable[[], None], ...]) -> None:
    for close in closers:
        try:
            close()
        except OSError:
            pass
