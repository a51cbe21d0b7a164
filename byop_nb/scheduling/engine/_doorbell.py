"""Waking an asyncio loop from other threads with one system call and no Python objects.

`loop.call_soon_threadsafe` wakes a loop from another thread, but first builds
a Handle and copies the thread's context, in the calling thread. For the
Scheduler that thread is the executor's (a process pool's management thread,
the busiest thread of a dispatch-bound run): the Python it runs there holds the
GIL that the loop and the pool's other threads wait for. A `Doorbell` is a file
descriptor the loop watches (`loop.add_reader`); `ring()` from any thread is a
single `write`, and the loop calls the one callback it was given when it sees
the ring. Rings that arrive before the loop answers are answered together.

The callback runs inside the loop's reader handle. A loop run again from inside
the callback (nested, as `Scheduler.run()` does from a callback in Jupyter)
needs `rearm(loop)` first: see there.

This module is internal to the Scheduler; see `Scheduler._future_done_threadsafe`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
import weakref
from collections.abc import Callable

__all__ = ["Doorbell", "rearm"]

_CHUNK = 4096


class Doorbell:
    """A wake-up file descriptor: `ring()` from any thread, `callback()` runs in the loop it is `attach`ed to.

    An eventfd on Linux, a pair of non-blocking sockets elsewhere. The descriptors are
    closed by `close()` (the Scheduler closes its bell when a run ends), or when the
    Doorbell is garbage collected. A ring after `close()`, from a thread that
    was about to ring, does nothing: it never writes to a reused descriptor number.

    Example:
        ```python
        import asyncio, threading
        from byop_nb.scheduling.engine._doorbell import Doorbell

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
        self._closed = False
        self._lock = threading.Lock()  # a ring and close() never overlap
        self._finalizer = weakref.finalize(self, _close_all, closers)

    def ring(self) -> None:
        """Wake the loop (from any thread; safe to call at any time, also after `close()`)."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._eventfd:
                    os.eventfd_write(self._write_fd, 1)
                else:
                    self._writer.send(b"\0")
            except BlockingIOError:  # the count or the buffer is full: a ring is pending anyway
                pass

    def close(self) -> None:
        """Detach and release the descriptors now (idempotent); later rings do nothing."""
        self.detach()
        with self._lock:
            self._closed = True
        self._finalizer()

    def attach(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
        """Have `loop` call `callback()` after each ring (rings before it answers count once).

        Returns False when the loop cannot watch file descriptors (e.g. the
        Proactor loop on Windows); the caller then wakes it another way.
        Rings made before `attach` are answered as soon as the loop runs.
        """
        if self._closed:
            raise ValueError("this Doorbell is closed")
        self.detach()
        try:
            loop.add_reader(self._read_fd, self._answer)
        except NotImplementedError:
            return False
        self._loop, self._callback = loop, callback
        _ATTACHED.add(self)
        return True

    def detach(self) -> None:
        """Stop watching (rings made from now on wait for the next `attach`)."""
        loop, self._loop, self._callback = self._loop, None, None
        _ATTACHED.discard(self)
        if loop is not None and not loop.is_closed() and not self._closed:
            loop.remove_reader(self._read_fd)

    def _answer(self) -> None:
        try:
            if self._eventfd:
                os.eventfd_read(self._read_fd)  # the count: ours to clear
            else:
                self._reader.recv(_CHUNK)
        except BlockingIOError:
            pass
        callback = self._callback
        if callback is not None:
            callback()

    def _rearm(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.add_reader(self._read_fd, self._answer)  # a new handle, in a new context; the old one is cancelled


def rearm(loop: asyncio.AbstractEventLoop) -> None:
    """Give each Doorbell attached to `loop` a fresh reader handle; call it before running `loop` nested.

    The loop answers a Doorbell through one handle, with one context, and runs
    the callback from inside it. When that callback runs the loop again, nested
    (nest_asyncio2, as `Scheduler.run()` does from a callback in Jupyter), the
    nested loop will not run a handle whose context is still on the stack: the
    ring would stay unanswered and the descriptor readable, and the nested loop
    would spin on it. A fresh handle is free to run.
    """
    for bell in list(_ATTACHED):
        if bell._loop is loop:
            bell._rearm()


_ATTACHED: weakref.WeakSet[Doorbell] = weakref.WeakSet()


def _close_all(closers: tuple[Callable[[], None], ...]) -> None:
    for close in closers:
        try:
            close()
        except OSError:
            pass
