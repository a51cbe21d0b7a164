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
import os
import weakref
from collections.abc import Callable

__all__ = ["Doorbell"]

_PIPE_CHUNK = 4096


class Doorbell:
    """A wake-up file descriptor: `ring()` from any thread, `callback()` runs in the loop it is `attach`ed to.

    An eventfd on Linux, a non-blocking pipe elsewhere. The descriptors are
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
        eventfd = getattr(os, "eventfd", None)
        if eventfd is not None:
            fd = eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._read_fd, self._write_fd = fd, fd
            self._fds: tuple[int, ...] = (fd,)
        else:
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)
            self._read_fd, self._write_fd = read_fd, write_fd
            self._fds = (read_fd, write_fd)
        self._eventfd = eventfd is not None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callback: Callable[[], None] | None = None
        self._finalizer = weakref.finalize(self, _close_all, self._fds)

    def ring(self) -> None:
        """Wake the loop (from any thread; safe to call at any time)."""
        try:
            if self._eventfd:
                os.eventfd_write(self._write_fd, 1)
            else:
                os.write(self._write_fd, b"\0")
        except BlockingIOError:  # the count or the pipe is full: a ring is pending anyway
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
            os.read(self._read_fd, _PIPE_CHUNK)  # an eventfd's count, or the pipe's bytes: ours to clear
        except BlockingIOError:
            pass
        callback = self._callback
        if callback is not None:
            callback()


def _close_all(fds: tuple[int, ...]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
