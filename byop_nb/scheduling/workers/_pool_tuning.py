"""What byop_nb changes inside a stdlib `ProcessPoolExecutor` it runs on, and why each change is safe.

A stdlib process pool's main-process side is three threads sharing one GIL: the
caller's (here the event loop's), which submits; the pool's manager thread,
which moves work to the call queue and results to their futures; and the call
queue's feeder thread, which pickles each call and writes it to the workers'
pipe. For short calls that side, not the workers, bounds throughput, and most of
its time goes to handing each call from thread to thread (a pipe write or a
condition wake, a GIL round, a selector built for one poll). Each tuning below
removes one such hand-off per call and keeps the stdlib's behaviour, falling back
to the stdlib's own path wherever its reasoning does not hold:

- `_CoalescedWakeup`: the manager thread's wake-up pipe is written at most once
  until the thread looks, and drained with one non-blocking read;
- `_write_calls_directly`: a small, plain call (numbers, text, functions, and
  containers of those: pickling it runs no code of its own) is written to the
  workers' pipe by the manager thread itself when that write cannot block,
  instead of waking the feeder thread to do it.

[`tune`][byop_nb.scheduling.workers._pool_tuning.tune] applies both on POSIX systems
(the direct write on Linux); a pool whose insides are not the ones these were
written against (another Python version, a subclass) is left as it is.
"""

from __future__ import annotations

import array
import os
import select
import types
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.reduction import ForkingPickler
from queue import Full
from typing import Any

from byop_nb import _compat

__all__ = ["tune", "watch_new_workers"]

try:
    import fcntl
    import termios
except ImportError:  # Windows: its pools keep the stdlib's wake-up and feeder as they are
    fcntl = termios = None  # type: ignore[assignment]

# Linux's fcntl command for a pipe's capacity (elsewhere it fails, and calls take the feeder).
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
# The largest call written directly: a pipe write of at most PIPE_BUF bytes is atomic.
_DIRECT_MAX = getattr(select, "PIPE_BUF", 4096)


_WakeupBase: Any = _compat.THREAD_WAKEUP or object  # no tuning where the stdlib's is not the known one


class _CoalescedWakeup(_WakeupBase):
    """The stdlib pool's wake-up of its manager thread, written to at most once until the thread
    looks: a submission into a pool whose manager is already due to wake skips the pipe write.

    The stdlib pool writes to its wake-up pipe at every `submit()`. The manager thread drains
    the pipe after each wake-up (`clear()`), then moves every pending work item to the call
    queue; so a submission whose item was queued while a wake-up was pending is picked up by that
    wake-up. `clear()` forgets the pending mark only after draining: a write that races with it is
    at worst one spare wake-up, never a lost one. Each write costs a system call and a GIL
    round between the loop and the manager thread, per call.

    `clear()` drains with one non-blocking read of the pipe (the stdlib polls it through a
    selector built for the purpose, twice per wake-up). The pipe carries only empty messages,
    each written whole, so reading every byte there is drains whole messages.
    """

    _pending = False
    _fd = -1

    def wakeup(self) -> None:
        if not self._pending:
            self._pending = True
            super().wakeup()

    def clear(self) -> None:
        if self._closed:  # as the stdlib's: closed (and cleared) by the manager thread alone
            return
        fd = self._fd
        if fd < 0:
            super().clear()
        else:
            try:
                while len(os.read(fd, 4096)) == 4096:
                    pass
            except BlockingIOError:
                pass
        self._pending = False


def _coalesce_wakeups(executor: ProcessPoolExecutor) -> None:
    """Give a stdlib process pool the `_CoalescedWakeup` (the same object: its manager thread and
    call queue hold it too); a pool whose wake-up is not the stdlib's own is left as it is."""
    wakeup = _compat.pool_wakeup(executor)
    if fcntl is None or wakeup is None or type(wakeup) is not _compat.THREAD_WAKEUP:
        return
    coalesced: Any = wakeup
    coalesced.__class__ = _CoalescedWakeup
    try:
        fd = coalesced._reader.fileno()
        os.set_blocking(fd, False)  # read only by clear(); the manager's selector polls it, never reads
    except (AttributeError, OSError, ValueError):
        return  # clear() drains the stdlib's way
    coalesced._fd = fd


_ATOMS = frozenset({int, float, bool, type(None)})
_FUNCTIONS = frozenset({types.FunctionType, types.BuiltinFunctionType})
_CALL_OVERHEAD = 200  # bytes a pickled _CallItem adds to its fields (class, frame, memo), rounded up


def _size(value: Any, budget: int, depth: int = 0) -> int:
    """An upper bound of `value`'s pickled size, if pickling it runs no code but pickle's own; else,
    or once the bound passes `budget`, a number over `budget`.

    Plain values only: numbers, text, bytes, None, tuples, lists and dicts of those (exact types: a
    subclass may pickle itself), and functions (pickled by name). Anything else may run its own
    `__reduce__`, which may wait for a lock, or take long: that is the feeder thread's to pickle.
    """
    kind = type(value)
    if kind in _ATOMS:  # a pickled number is at most 9 bytes, an int beyond 64 bits its bytes more
        return 10 if kind is not int or -(2**63) <= value < 2**63 else 10 + value.bit_length() // 8
    if kind is bytes:
        return 16 + len(value)
    if kind is str:  # pickled as UTF-8: at most 4 bytes a character, counted when that matters
        n = len(value)
        return 16 + (4 * n if n <= 64 or n > budget else len(value.encode("utf-8", "surrogatepass")))
    if kind in _FUNCTIONS:  # by module and qualified name
        return 32 + 4 * len(getattr(value, "__module__", None) or "") + 4 * len(value.__qualname__)
    if depth > 4 or kind not in (tuple, list, dict):
        return budget + 1
    size = 16
    for item in (part for pair in value.items() for part in pair) if kind is dict else value:
        size += _size(item, budget, depth + 1) + 1
        if size > budget:
            return size
    return size


def _plain_call(obj: Any, budget: int) -> bool:
    """Whether `obj`, a call for the workers (or the None that stops one), pickles to at most `budget`
    bytes without running any code but pickle's own."""
    if obj is None:
        return True
    if _compat.CALL_ITEM is None or type(obj) is not _compat.CALL_ITEM:
        return False
    size = _CALL_OVERHEAD + _size(obj.fn, budget)
    if size <= budget:
        size += _size(obj.args, budget)
    if size <= budget:
        size += _size(obj.kwargs, budget)
    return size <= budget


def _write_calls_directly(executor: ProcessPoolExecutor) -> None:
    """Have the manager thread write small, plain calls to the workers' pipe itself (Linux).

    The stdlib call queue hands every call to its feeder thread (a buffer, a condition
    notified, the feeder woken to pickle and write), so that the manager thread never blocks:
    not on a full pipe (a blocked manager could not read the results that workers blocked on
    their own writes wait to get rid of), and not on pickling an argument whose `__reduce__`
    waits for something. `put` here pickles the call and writes it at once, in the caller's
    thread, only when neither can happen:

    - the call is plain (`_plain_call`): its function, arguments and keyword arguments are
      numbers, text, bytes, None, functions, or tuples, lists and dicts of those, so pickling it
      runs no code but pickle's own; and it pickles to at most `PIPE_BUF` bytes (a pipe write
      that small is atomic);
    - the feeder has nothing buffered and its write lock is free (taken without waiting, and
      held for the write, so no other write is under way);
    - the pipe has room for it: its unread bytes (`FIONREAD`) leave at least half its capacity
      and two more calls' worth free, which no pattern of page use by writes this small fills.

    Every other call, and one whose pickling or write fails, takes the stdlib's path to the
    feeder as it is: the feeder pickles and writes it, or reports the failure on the call's
    future, as it always did.
    """
    found = _compat.pool_call_queue(executor)
    if fcntl is None or found is None or "put" in vars(found):
        return
    queue: Any = found  # the multiprocessing.Queue's private parts, read as the feeder reads them
    try:
        sem, notempty, buffer, wlock = queue._sem, queue._notempty, queue._buffer, queue._wlock
        send_bytes, fd = queue._writer.send_bytes, queue._writer.fileno()
        capacity = fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except (AttributeError, OSError, ValueError):  # not Linux's pipes, or not the queue we know
        return
    limit = capacity // 2 - 2 * _DIRECT_MAX
    if wlock is None or limit < _DIRECT_MAX:
        return
    budget = _DIRECT_MAX - 4  # send_bytes adds a 4-byte length
    unread = array.array("i", [0])
    dumps = ForkingPickler.dumps

    def write(obj: Any) -> bool:
        """Write `obj` to the pipe now, if that cannot block; whether it was written."""
        try:
            data = dumps(obj)
            if len(data) > budget:
                return False
            fcntl.ioctl(fd, termios.FIONREAD, unread)
            if unread[0] + len(data) > limit:
                return False
            send_bytes(data)
        except Exception:  # the feeder meets it too, and deals with it as it always did
            return False
        return True

    def put(obj: Any, block: bool = True, timeout: float | None = None) -> None:
        if queue._closed:
            raise ValueError(f"Queue {queue!r} is closed")
        if not sem.acquire(block, timeout):
            raise Full
        if not buffer and queue._thread is not None and _plain_call(obj, budget) and wlock.acquire(False):
            try:
                written = write(obj)
            finally:
                wlock.release()
            if written:
                return
        with notempty:  # the stdlib's path: buffer it for the feeder thread
            if queue._thread is None:
                queue._start_thread()
            buffer.append(obj)
            notempty.notify()

    queue.put = put


def watch_new_workers(executor: ProcessPoolExecutor) -> None:
    """Wake the pool's manager thread after a submission started a worker, so that it watches that one too.

    A spawn or forkserver pool starts its workers on demand, in `submit()`, after waking its
    manager thread (CPython 3.11-3.13): a manager that woke before the new worker was
    registered waits without that worker's sentinel, and would notice its death only when
    something else wakes it (another call's end, maybe much later). One more wake-up, written
    whatever the coalescing says, makes it look again.
    """
    wakeup = _compat.pool_wakeup(executor)
    if wakeup is None:
        return
    try:
        _compat.THREAD_WAKEUP.wakeup(wakeup)  # the stdlib's write, not the coalesced one
    except (OSError, ValueError, AttributeError):  # the pool is shutting down: its manager looks anyway
        pass


def tune(executor: ProcessPoolExecutor) -> None:
    """Apply this module's tunings to a stdlib process pool (idempotent; other pools are left as they are)."""
    _coalesce_wakeups(executor)
    _write_calls_directly(executor)
