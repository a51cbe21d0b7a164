"""Comm and CommTask: two-way messages between a running call and the scheduler.

A [`CommTask`][byop_nb.scheduling.CommTask] passes a [`Comm`][byop_nb.scheduling.Comm]
as the first argument of its function. In the worker, `comm.send(obj)` emits
`MESSAGE` in the main process and `comm.request(obj)` emits `REQUEST` and waits
for a callback to answer with `msg.respond(x)`:

```python
from byop_nb.scheduling import Comm, CommTask, Scheduler

def train(comm: Comm, epochs: int) -> str:
    with comm:                                  # CLOSE is emitted when the block ends
        for epoch in range(epochs):
            comm.send({"epoch": epoch})         # -> on_message
        lr = comm.request("learning rate?")     # -> on_request; waits for the answer
    return f"done with lr={lr}"

scheduler = Scheduler.with_processes(2)
task = CommTask(train, scheduler)

@scheduler.on_start
def launch() -> None:
    task(3)

@task.on_message
def progress(msg: Comm.Msg) -> None:
    print(msg.data)

@task.on_request
def answer(msg: Comm.Msg) -> None:
    msg.respond(0.01)

scheduler.run()
```

How it works: each CommTask listens on a Unix socket in a private temporary
directory while it has calls running. A call's `Comm` connects to it the first
time it is used, from whatever process or thread runs the function (a process
pool worker, pynisher's limited child, a thread, a dask worker on this
machine). The main end of every connection is a non-blocking socket read by
the scheduler's event loop (`loop.add_reader`), so callbacks run in the loop's
thread like every other event and the loop never waits on a worker. When a call
ends, whatever it sent is read and emitted first, then `CLOSE`, then the Task's
own `DONE`/`RETURNED`/`EXCEPTION`/`CANCELLED` events; its connections are
closed, and the socket is removed when no call of the task runs.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
import os
import pickle
import secrets
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeAlias, TypeVar

from byop_nb.events import Event, Subscriber
from byop_nb.scheduling.executors import SequentialExecutor
from byop_nb.scheduling.task import Task
from byop_nb.scheduling.worker import _load

if TYPE_CHECKING:
    import asyncio

    from byop_nb.scheduling.limits import MemoryLimit, TimeLimit
    from byop_nb.scheduling.scheduler import Scheduler

__all__ = ["Comm", "CommError", "CommTask", "Msg"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Wire format, both ways: a header (payload length, kind) and a pickled payload.
# A worker's connection starts with a hello: the task's secret token and the call id,
# checked before anything it sends is unpickled.
_HEADER = struct.Struct("!IB")
_HELLO = struct.Struct("!16sQ")
# worker -> main
_MESSAGE, _REQUEST, _CLOSE = 1, 2, 3
# main -> worker
_ANSWER, _REFUSAL, _GOODBYE = 4, 5, 6

_CHUNK = 1 << 18
_DRAIN_ROUNDS = 256  # reads per connection when a call ends: bounded, in case a leaked comm keeps sending
_GOODBYE_CHECK = 0.02  # seconds between non-blocking looks for the scheduler's goodbye while only sending
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)


class CommError(RuntimeError):
    """A Comm could not do what was asked: it is closed, or the scheduler will not answer.

    Raised in the worker by `send`, by `request(block=True)` when the request is
    refused (the run is finishing, or the task has no `on_request` callback) or
    the scheduler's end went away (the call was cancelled, the run ended), and
    at the call of a CommTask that cannot reach its workers.
    """


_Kind = Literal["message", "request", "close"]


class Msg:
    """A message from a running call, as given to `on_message`, `on_request` and `on_close`.

    Attributes:
        kind: "message" (from `comm.send`), "request" (from `comm.request`) or
            "close" (the comm was closed or the call ended).
        data: the object the worker sent (None for "close").
        task: the [`CommTask`][byop_nb.scheduling.CommTask] of the call.
        future: the call's Future.

    Example:
        ```python
        @task.on_request
        def answer(msg: Comm.Msg) -> None:
            msg.respond(msg.data * 2)
        ```
    """

    __slots__ = ("_call", "_conn", "_request_id", "_state", "data", "future", "kind", "task")

    def __init__(
        self,
        kind: _Kind,
        data: Any,
        task: CommTask[Any, Any],
        future: Future[Any] | None,
        call: _Call,
        conn: _Conn | None = None,
        request_id: int = 0,
    ) -> None:
        self.kind: _Kind = kind
        self.data = data
        self.task = task
        self.future: Future[Any] | None = future
        self._call = call
        self._conn = conn
        self._request_id = request_id
        # "open" (a request waiting), "answered", "refused", "gone" (the call ended), "-" (not a request)
        self._state = "open" if kind == "request" else "-"

    def __repr__(self) -> str:
        return f"Msg({self.kind}, data={self.data!r}, task={self.task.name!r})"

    @property
    def answered(self) -> bool:
        """Whether `respond` was called on this request."""
        return self._state == "answered"

    def respond(self, response: Any) -> None:
        """Answer this request: the worker's `comm.request(...)` returns `response`.

        Safe from any thread. Answering after the worker stopped waiting (the call
        ended, the request timed out, or it was refused because the run is
        finishing) does nothing.

        Raises:
            TypeError: this is not a request (a "message" or "close" message), or
                `response` cannot be pickled.
            RuntimeError: this request was answered already.
        """
        if self.kind != "request":
            raise TypeError(
                f"only requests can be answered, and this is a {self.kind!r} message; the worker sends "
                "requests with comm.request(...) and they arrive at on_request"
            )
        if self._state == "answered":
            raise RuntimeError(f"this request was answered already: {self!r}")
        if self._state != "open":
            return
        try:
            body = pickle.dumps((self._request_id, response), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            raise TypeError(f"msg.respond() needs a picklable answer, got {response!r}: {e}") from e
        self._state = "answered"
        self._call.requests.pop(self._request_id, None)
        self._send(_ANSWER, body)

    def _refuse(self, reason: str) -> None:
        if self._state != "open":
            return
        self._state = "refused"
        self._call.requests.pop(self._request_id, None)
        self._send(_REFUSAL, pickle.dumps((self._request_id, reason)))

    def _send(self, kind: int, body: bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        frame = _HEADER.pack(len(body), kind) + body
        hub = conn.hub
        if threading.get_ident() == hub.loop_thread:
            conn.write(frame)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: the call is over
                hub.loop.call_soon_threadsafe(conn.write, frame)


# --------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------
class Comm:
    """The worker's end of a two-way channel to the scheduler.

    A [`CommTask`][byop_nb.scheduling.CommTask] makes one per call and passes it
    as the function's first argument; do not create one yourself.

    Example:
        ```python
        from byop_nb.scheduling import Comm

        def work(comm: Comm, n: int) -> int:
            with comm:
                for i in range(n):
                    comm.send(i)                       # MESSAGE(msg) with msg.data == i
                extra = comm.request("more?", block=5, default=0)
            return n + extra
        ```

    A Comm is safe to use from several threads of one call. Messages of one
    call arrive in the order they were sent (from one process; copies of a Comm
    pickled into other processes open their own connection).
    """

    Error = CommError
    Msg: TypeAlias = Msg

    __slots__ = (
        "_address",
        "_buffer",
        "_call_id",
        "_checked_at",
        "_closed",
        "_gone",
        "_host",
        "_next_request",
        "_pid",
        "_recv_lock",
        "_send_lock",
        "_sock",
        "_token",
    )

    def __init__(self, address: str, token: bytes, call_id: int, host: str) -> None:
        self._address = address
        self._token = token
        self._call_id = call_id
        self._host = host
        self._sock: socket.socket | None = None
        self._pid = 0
        self._closed = False
        self._gone: str | None = None  # why the scheduler's end went away, once we know
        self._buffer = bytearray()
        self._next_request = 0
        self._checked_at = 0.0
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (Comm, (self._address, self._token, self._call_id, self._host))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._sock is not None else "open"
        return f"Comm(call={self._call_id}, {state})"

    @property
    def closed(self) -> bool:
        """Whether `close()` was called (or the `with comm:` block, or the call, ended)."""
        return self._closed

    # -- public API ----------------------------------------------------------
    def send(self, obj: Any) -> None:
        """Send `obj` to the scheduler, where it is emitted as `MESSAGE(msg)` with `msg.data == obj`.

        Returns once the message is handed to the operating system (it waits only
        when the scheduler is far behind in reading).

        Raises:
            CommError: the comm is closed, or the scheduler's end went away (the
                call was cancelled or the run ended).
            pickle.PicklingError, TypeError: `obj` cannot be pickled.
        """
        self._write(_MESSAGE, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def request(self, obj: Any = None, *, block: bool | float = True, default: Any = None) -> Any:
        """Send `obj` as a request (`REQUEST(msg)` in the main process) and return the answer.

        The answer is whatever a callback passes to `msg.respond(...)`.

        Args:
            obj: the request's data (`msg.data`).
            block: True waits for the answer; a number of seconds waits at most
                that long; False does not wait and returns the answer only when
                it is already there (rarely: answering takes a round trip, so
                give the scheduler a moment with e.g. `block=0.1`).
            default: returned by the waiting-limited forms when no answer came
                in time, or when the scheduler refused or went away. An answer
                that comes after `request` gave up on it is dropped.

        Raises:
            CommError: with `block=True` only, when the request will never be
                answered: the task has no `on_request` callback, the run is
                finishing (`stop()`, timeout) and nobody answered, or the call
                was cancelled. Also, with any `block`, when the comm is closed.
            ValueError: `block` is not True, False or non-negative seconds.
        """
        wait = _wait_time(block)
        with self._recv_lock:
            self._next_request += 1
            request_id = self._next_request
            body = pickle.dumps((request_id, obj), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                self._write(_REQUEST, body)
            except CommError:
                if block is True or self._closed:
                    raise
                return default  # the scheduler's end is gone: no answer will come
            deadline = None if wait is None else time.monotonic() + wait
            while True:
                try:
                    frame = self._read(deadline)
                except CommError:
                    if block is True:
                        raise
                    return default
                if frame is None:
                    return default
                answered_id, ok, value = frame
                if answered_id != request_id:
                    continue  # the answer to an earlier request that gave up waiting
                if ok:
                    return value
                if block is True:
                    raise CommError(value)
                return default

    def close(self) -> None:
        """Close the comm; the scheduler emits `CLOSE` for this call (once) right away.

        Idempotent, never raises. `with comm:` calls it when the block ends.
        After it, `send` and `request` raise `CommError`. When the function
        returns or raises, its comm is closed too.
        """
        if self._closed:
            return
        try:
            with self._send_lock:
                sock = self._connected()
                sock.sendall(_HEADER.pack(0, _CLOSE), _SEND_FLAGS)
        except (CommError, OSError):
            pass
        finally:
            self._detach()

    def __enter__(self) -> Comm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------
    def _detach(self) -> None:
        """Drop the connection without a word: the call is over (or the comm was closed)."""
        self._closed = True
        sock, self._sock = self._sock, None
        if sock is not None and self._pid == os.getpid():
            sock.close()

    def _connected(self) -> socket.socket:
        if self._closed:
            raise CommError(
                "this Comm is closed (its `with comm:` block ended, close() was called, or the call "
                "ended); send and request only while it is open"
            )
        if self._gone is not None:
            raise CommError(self._gone)
        sock = self._sock
        if sock is not None and self._pid == os.getpid():
            return sock
        # First use in this process (a fork or an unpickled copy connects anew).
        if socket.gethostname() != self._host:
            raise CommError(
                f"this Comm cannot reach the scheduler: the scheduler runs on {self._host!r} and this "
                f"worker on {socket.gethostname()!r}, and a Comm is a Unix socket on the scheduler's "
                "machine. Run the workers on that machine (threads, a process pool, a dask LocalCluster), "
                "or use a plain Task and return what you need."
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._address)
            sock.sendall(_HELLO.pack(self._token, self._call_id), _SEND_FLAGS)
        except OSError as e:
            sock.close()
            self._gone = (
                "the scheduler's end of this Comm is gone: the call was cancelled or the run ended "
                f"({type(e).__name__}: {e})"
            )
            raise CommError(self._gone) from e
        self._sock, self._pid = sock, os.getpid()
        self._buffer.clear()
        self._checked_at = time.monotonic()
        return sock

    def _write(self, kind: int, body: bytes) -> None:
        frame = _HEADER.pack(len(body), kind) + body
        with self._send_lock:
            sock = self._connected()
            now = time.monotonic()
            if now - self._checked_at > _GOODBYE_CHECK:
                # A worker that only sends never reads; look now and then whether the
                # scheduler said goodbye, so a cancelled call stops instead of filling a buffer.
                self._checked_at = now
                if not self._recv_lock.locked() and _readable(sock, 0.0):
                    self._peek_goodbye(sock)
            try:
                sock.sendall(frame, _SEND_FLAGS)
            except OSError as e:
                self._gone = (
                    "the scheduler's end of this Comm is gone: the call was cancelled or the run ended "
                    f"({type(e).__name__}: {e})"
                )
                raise CommError(self._gone) from e

    def _closed_by_scheduler(self) -> CommError:
        self._gone = "the scheduler closed this Comm: the call was cancelled or the run ended"
        return CommError(self._gone)

    def _receive(self, sock: socket.socket) -> None:
        """Append what the scheduler sent to the buffer; raises when it closed the connection."""
        try:
            data = sock.recv(_CHUNK)
        except OSError:
            data = b""
        if not data:
            raise self._closed_by_scheduler()
        self._buffer += data

    def _peek_goodbye(self, sock: socket.socket) -> None:
        self._receive(sock)
        for kind, _ in _frames(self._buffer, keep_answers=True):
            if kind == _GOODBYE:
                raise self._closed_by_scheduler()

    def _read(self, deadline: float | None) -> tuple[int, bool, Any] | None:
        """The next answer or refusal as (request id, ok, value); None when `deadline` passed."""
        sock = self._connected()
        while True:
            for kind, body in _frames(self._buffer):
                if kind == _GOODBYE:
                    raise self._closed_by_scheduler()
                request_id, value = pickle.loads(body)
                return request_id, kind == _ANSWER, value
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not _readable(sock, remaining):
                return None
            self._receive(sock)


def _wait_time(block: bool | float) -> float | None:
    if block is True:
        return None
    if block is False:
        return 0.0
    if isinstance(block, (int, float)) and block >= 0:
        return float(block)
    raise ValueError(f"block= must be True, False or non-negative seconds, got {block!r}")


def _readable(sock: socket.socket, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000.0))


def _frames(buffer: bytearray, *, keep_answers: bool = False) -> Any:
    """Take whole frames off the front of `buffer`, yielding (kind, payload).

    With `keep_answers`, answers are left in the buffer (only a goodbye is looked for).
    """
    offset = 0
    size = _HEADER.size
    while len(buffer) - offset >= size:
        length, kind = _HEADER.unpack_from(buffer, offset)
        end = offset + size + length
        if len(buffer) < end:
            break
        if keep_answers and kind != _GOODBYE:
            offset = end
            continue
        body = bytes(buffer[offset + size : end])
        del buffer[offset:end]
        yield kind, body


class _CommCall:
    """What a CommTask submits: calls the user's function with the call's Comm first, then closes it.

    One object per call, so it is unhashable: it must stay out of the scheduler's
    per-function payload cache. It pickles the user's function by value when it
    lives in `__main__` (or a notebook), like the scheduler does for plain tasks.
    """

    __slots__ = ("comm", "function")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, function: Callable[..., Any] | bytes, comm: Comm) -> None:
        self.function = function
        self.comm = comm

    def __reduce__(self) -> tuple[Any, ...]:
        return (_CommCall, (_shippable(self.function), self.comm))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        comm = self.comm
        try:
            return _load(self.function)(comm, *args, **kwargs)
        finally:
            comm._detach()


_SHIPPED: dict[int, tuple[Callable[..., Any], bytes]] = {}


def _shippable(function: Callable[..., Any] | bytes) -> Callable[..., Any] | bytes:
    if isinstance(function, bytes):
        return function
    from byop_nb.scheduling.scheduler import _needs_by_value

    if not _needs_by_value(function):
        return function
    cached = _SHIPPED.get(id(function))
    if cached is not None and cached[0] is function:
        return cached[1]
    import cloudpickle

    data = cloudpickle.dumps(function)
    if len(_SHIPPED) > 64:
        _SHIPPED.clear()
    _SHIPPED[id(function)] = (function, data)
    return data


# --------------------------------------------------------------------------
# Main side
# --------------------------------------------------------------------------
class _Call:
    """The main side's state of one call of a CommTask."""

    __slots__ = ("closed", "conns", "ended", "future", "hub", "id", "requests")

    def __init__(self, hub: _Hub, call_id: int) -> None:
        self.hub = hub
        self.id = call_id
        self.future: Future[Any] | None = None
        self.conns: list[_Conn] = []
        self.requests: dict[int, Msg] = {}  # open requests by id
        self.closed = False  # CLOSE was emitted
        self.ended = False


class _Conn:
    """One accepted connection: a non-blocking socket read by the loop."""

    __slots__ = ("buffer", "call", "closed", "hub", "out", "sock")

    def __init__(self, hub: _Hub, sock: socket.socket) -> None:
        self.hub = hub
        self.sock = sock
        self.buffer = bytearray()
        self.out = bytearray()
        self.call: _Call | None = None
        self.closed = False

    def read(self) -> bool:
        """Read once and handle whole frames; False when the connection ended or has nothing now."""
        try:
            data = self.sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self.hub.drop(self)
            return False
        buffer = self.buffer
        if buffer:  # the start of a frame came with an earlier read
            buffer += data
            if self.call is not None and len(buffer) >= _HEADER.size:
                length, _ = _HEADER.unpack_from(buffer)
                if len(buffer) < _HEADER.size + length:
                    return True  # a large frame still coming: gather it without copying it again
            data = bytes(buffer)
            buffer.clear()
        offset = 0
        call = self.call
        if call is None:
            if len(data) < _HELLO.size:
                self.buffer += data
                return True
            token, call_id = _HELLO.unpack_from(data)
            offset = _HELLO.size
            call = self.hub.calls.get(call_id)
            if not hmac.compare_digest(token, self.hub.token) or call is None or call.ended:
                self.hub.drop(self)
                return False
            self.call = call
            call.conns.append(self)
        # The hot path: frames are handed on as slices of what was received, without copies.
        on_frame = self.hub.task._on_frame
        view = memoryview(data)
        size, header, unpack = len(data), _HEADER.size, _HEADER.unpack_from
        try:
            while size - offset >= header and not self.closed:
                length, kind = unpack(data, offset)
                end = offset + header + length
                if end > size:
                    break
                body = view[offset + header : end]
                offset = end  # before handing it on: a callback that raises must not see it again
                on_frame(self, call, kind, body)
        finally:
            if offset < size and not self.closed:
                self.buffer += view[offset:]
        return True

    def write(self, frame: bytes) -> None:
        if self.closed:
            return
        if self.out:
            self.out += frame
            return
        try:
            sent = self.sock.send(frame, _SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.hub.drop(self)
            return
        if sent < len(frame):
            self.out += frame[sent:]
            self.hub.loop.add_writer(self.sock.fileno(), self.flush)

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.out, _SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.hub.drop(self)
            return
        del self.out[:sent]
        if not self.out:
            self.hub.loop.remove_writer(self.sock.fileno())


class _Hub:
    """A CommTask's listening socket and connections, served by one event loop."""

    def __init__(self, task: CommTask[Any, Any], loop: asyncio.AbstractEventLoop, loop_thread: int | None) -> None:
        self.task = task
        self.loop = loop
        self.loop_thread = loop_thread
        self.token = secrets.token_bytes(16)
        self.host = socket.gethostname()
        base = None if len(tempfile.gettempdir()) < 80 else "/tmp"  # Unix socket paths are short
        self.directory = tempfile.mkdtemp(prefix="byop_nb-comm-", dir=base)
        self.address = os.path.join(self.directory, "s")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.address)
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
            loop.add_reader(listener.fileno(), self._on_acceptable)
        except BaseException:
            listener.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self.listener = listener
        self.calls: dict[int, _Call] = {}
        self.conns: set[_Conn] = set()
        self.open = True
        self._ids = itertools.count(1)

    def new_call(self) -> _Call:
        call = _Call(self, next(self._ids))
        self.calls[call.id] = call
        return call

    # -- loop callbacks: an error here is a user callback's, and ends the run ---
    def _on_acceptable(self) -> None:
        try:
            self.accept()
        except BaseException as e:
            self.task.scheduler._fail(e)

    def _on_readable(self, conn: _Conn) -> None:
        try:
            conn.read()
        except BaseException as e:
            self.task.scheduler._fail(e)

    # -- work -----------------------------------------------------------------
    def accept(self) -> None:
        while self.open:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            conn = _Conn(self, sock)
            self.conns.add(conn)
            self.loop.add_reader(sock.fileno(), self._on_readable, conn)

    def drain(self, call: _Call) -> None:
        """Handle everything that reached the socket for `call` (it ended, so nothing more will come)."""
        self.accept()
        for conn in [c for c in self.conns if c.call is None]:  # not yet said which call they belong to
            for _ in range(_DRAIN_ROUNDS):
                if not conn.read() or conn.call is not None:
                    break
        for conn in list(call.conns):
            for _ in range(_DRAIN_ROUNDS):
                if not conn.read():
                    break

    def end(self, call: _Call) -> None:
        """Say goodbye to and close the connections of `call`."""
        call.ended = True
        self.calls.pop(call.id, None)
        for msg in call.requests.values():
            msg._state = "gone"
        call.requests.clear()
        for conn in list(call.conns):
            # A goodbye, not only the close: a forked pynisher child of another call may hold a
            # copy of this socket, and then the worker would never see the end of the stream.
            with contextlib.suppress(OSError):
                conn.sock.send(_HEADER.pack(0, _GOODBYE), _SEND_FLAGS | socket.MSG_DONTWAIT)
            self.drop(conn)

    def drop(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.conns.discard(conn)
        if conn.call is not None:
            with contextlib.suppress(ValueError):
                conn.call.conns.remove(conn)
            for msg in conn.call.requests.values():
                if msg._conn is conn:
                    msg._state = "gone"
        fd = conn.sock.fileno()
        if fd >= 0:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self.loop.remove_reader(fd)
                if conn.out:
                    self.loop.remove_writer(fd)
        conn.sock.close()

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        for call in list(self.calls.values()):
            self.end(call)
        for conn in list(self.conns):
            self.drop(conn)
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.listener.fileno())
        self.listener.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class CommTask(Task[P, R]):
    """A Task whose function gets a [`Comm`][byop_nb.scheduling.Comm] first, to talk with the scheduler.

    Takes every [`Task`][byop_nb.scheduling.Task] option (limits included).
    Calling it submits `function(comm, *args, **kwargs)` with a fresh Comm.

    Events (each with a [`Msg`][byop_nb.scheduling.comms.Msg]), in the order a
    call's worker sent them:

    * `MESSAGE(msg)` `on_message`: the worker called `comm.send(obj)`.
    * `REQUEST(msg)` `on_request`: the worker called `comm.request(obj)` and
      waits for `msg.respond(answer)`. A request that no callback answered is
      refused when the run is finishing (`stop()` or a timeout), so a waiting
      worker never holds the run; with no `on_request` callback at all it is
      refused at once.
    * `CLOSE(msg)` `on_close`: the comm was closed (`with comm:` ended,
      `comm.close()`) or the call ended; exactly once per submitted call, after
      its last MESSAGE/REQUEST and before its DONE or CANCELLED.

    Works with thread pools, process pools (any start method), and dask
    clusters whose workers run on this machine (`LocalCluster`, with
    `processes=False` or not). Workers on other machines cannot reach the
    Comm's Unix socket: the call then raises `CommError`. The sequential
    executor runs the function inside the scheduler's own thread, where nobody
    could answer, so a CommTask refuses it when created.

    Example:
        ```python
        from byop_nb.scheduling import Comm, CommTask, Scheduler

        def count(comm: Comm, n: int) -> int:
            for i in range(n):
                comm.send(i)
            return n

        scheduler = Scheduler.with_threads(1)
        task = CommTask(count, scheduler)
        seen = []

        @scheduler.on_start
        def launch() -> None:
            task(3)

        @task.on_message
        def collect(msg: Comm.Msg) -> None:
            seen.append(msg.data)

        scheduler.run()
        assert seen == [0, 1, 2]
        ```
    """

    MESSAGE: Event[[Msg]] = Event("comm-message")
    """The worker sent a message: `on_message(msg)`."""
    REQUEST: Event[[Msg]] = Event("comm-request")
    """The worker asks and waits: `on_request(msg)`, answer with `msg.respond(x)`."""
    CLOSE: Event[[Msg]] = Event("comm-close")
    """The call's comm closed (by the worker, or because the call ended): `on_close(msg)`."""

    def __init__(
        self,
        function: Callable[Concatenate[Comm, P], R],
        scheduler: Scheduler,
        *,
        name: str | None = None,
        call_limit: int | None = None,
        concurrent_limit: int | None = None,
        memory_limit: MemoryLimit | None = None,
        cpu_time_limit: TimeLimit | None = None,
        wall_time_limit: TimeLimit | None = None,
    ) -> None:
        if isinstance(getattr(scheduler, "executor", None), SequentialExecutor):
            raise TypeError(
                "a CommTask cannot run on the sequential executor: it runs the function inside the "
                "scheduler's own thread, so nothing could receive its messages or answer its requests. "
                "For debugging, use Scheduler.with_threads(1) instead."
            )
        super().__init__(
            function,  # type: ignore[arg-type]  # the Comm is given at the call, not by the caller
            scheduler,
            name=name,
            call_limit=call_limit,
            concurrent_limit=concurrent_limit,
            memory_limit=memory_limit,
            cpu_time_limit=cpu_time_limit,
            wall_time_limit=wall_time_limit,
        )
        em = self.event_manager
        self.on_message: Subscriber[[Msg]] = em.subscriber(self.MESSAGE)
        self.on_request: Subscriber[[Msg]] = em.subscriber(self.REQUEST)
        self.on_close: Subscriber[[Msg]] = em.subscriber(self.CLOSE)
        self._hub: _Hub | None = None
        self._calls: dict[Future[Any], _Call] = {}
        self._checked_executor: Any = None
        # Registered by name, so a task that replaces this one (same name) replaces these too.
        scheduler.event_manager.on(
            scheduler.FINISHING, self._refuse_waiting, name=f"byop_nb.CommTask({self.name}): refuse requests"
        )
        scheduler.event_manager.on(
            scheduler.FINISHED, self._close_hub, name=f"byop_nb.CommTask({self.name}): close comms"
        )

    # -- submitting ------------------------------------------------------------
    def _submit(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        scheduler = self.scheduler
        loop = scheduler._loop
        if not scheduler.running() or loop is None:
            return super()._submit(function, args, kwargs)  # refused or raises, as for any Task
        self._check_workers_reachable()
        hub = self._hub
        if hub is None or not hub.open or hub.loop is not loop:
            self._close_hub()
            hub = self._hub = _Hub(self, loop, scheduler._loop_thread)
        call = hub.new_call()
        comm = Comm(hub.address, hub.token, call.id, hub.host)
        future = super()._submit(_CommCall(function, comm), args, kwargs)
        if future is None:
            hub.calls.pop(call.id, None)
            if not self._calls:
                self._close_when_idle(hub)
            return None
        call.future = future
        self._calls[future] = call
        return future

    def _check_workers_reachable(self) -> None:
        """Dask workers on other machines cannot reach the Unix socket: say so at the call."""
        executor = self.scheduler.executor
        if executor is self._checked_executor or type(executor).__module__ != "distributed.cfexecutor":
            return
        client = executor._client  # type: ignore[attr-defined]
        try:
            info = client.scheduler_info(n_workers=-1)  # every worker, not only the first few
        except TypeError:  # distributed before 2025: always every worker
            info = client.scheduler_info()
        workers = info.get("workers", {})
        here = _local_hosts()
        remote = sorted(address for address, info in workers.items() if info.get("host") not in here)
        if remote:
            raise CommError(
                f"CommTask {self.name!r} cannot talk to dask workers on other machines: a Comm is a Unix "
                f"socket on this machine ({socket.gethostname()!r}), and workers {remote} run elsewhere. "
                "Use a plain Task (or Trial.Task) and return what you need from the call, or run the "
                "workers on this machine (e.g. dask's LocalCluster)."
            )
        self._checked_executor = executor

    # -- receiving (in the loop's thread) --------------------------------------
    def _on_frame(self, conn: _Conn, call: _Call | None, kind: int, body: bytes | memoryview) -> None:
        if call is None or call.closed:
            return  # nothing of a call is emitted after its CLOSE
        em = self.event_manager
        if kind == _MESSAGE:
            em.emit(self.MESSAGE, Msg("message", self._loads(body, call), self, call.future, call))
        elif kind == _REQUEST:
            request_id, data = self._loads(body, call)
            msg = Msg("request", data, self, call.future, call, conn, request_id)
            call.requests[request_id] = msg
            em.emit(self.REQUEST, msg)
            if msg._state == "open":
                if not em.callbacks(self.REQUEST):
                    msg._refuse(
                        f"CommTask {self.name!r} has no on_request callback, so nothing will answer this "
                        "request; subscribe one with @task.on_request and answer with msg.respond(...)"
                    )
                elif self.scheduler.state == "finishing":
                    msg._refuse(self._finishing_reason())
        elif kind == _CLOSE:
            self._emit_close(call)
        else:
            conn.hub.drop(conn)

    def _loads(self, body: bytes | memoryview, call: _Call) -> Any:
        try:
            return pickle.loads(body)
        except Exception as e:
            raise CommError(
                f"a message from call {call.id} of CommTask {self.name!r} could not be unpickled in the "
                f"main process ({type(e).__name__}: {e}); send objects whose classes the main process can "
                "import"
            ) from e

    def _emit_close(self, call: _Call) -> None:
        if call.closed:
            return
        call.closed = True
        self.event_manager.emit(self.CLOSE, Msg("close", None, self, call.future, call))

    def _finishing_reason(self) -> str:
        return (
            f"the scheduler is finishing (stop() or a timeout) and no callback of CommTask {self.name!r} "
            "answered this request; requests are answered only while the run goes on"
        )

    # -- ending (in the loop's thread) -----------------------------------------
    def _end_comm(self, future: Future[Any]) -> None:
        call = self._calls.pop(future, None)
        if call is None:
            return
        hub = call.hub
        try:
            if hub.open:
                hub.drain(call)
            self._emit_close(call)
        finally:
            hub.end(call)
            if not self._calls and hub is self._hub:
                self._close_when_idle(hub)

    def _process_future(self, future: Future[Any], *args: Any, **kwargs: Any) -> None:
        try:
            self._end_comm(future)
        finally:
            super()._process_future(future, *args, **kwargs)

    def _process_cancelled(self, future: Future[Any]) -> None:
        try:
            self._end_comm(future)
        finally:
            super()._process_cancelled(future)

    def _refuse_waiting(self) -> None:
        hub = self._hub
        if hub is None:
            return
        reason = self._finishing_reason()
        for call in list(hub.calls.values()):
            for msg in list(call.requests.values()):
                msg._refuse(reason)

    def _close_when_idle(self, hub: _Hub) -> None:
        # Not at once: a callback of the call that just ended (on_done, on_returned) often submits
        # the next call, which can then use this listener. FINISHED closes it in any case.
        try:
            hub.loop.call_soon(self._close_if_idle, hub)
        except RuntimeError:  # the loop is closed
            self._close_hub()

    def _close_if_idle(self, hub: _Hub) -> None:
        if hub is self._hub and not self._calls:
            self._close_hub()

    def _close_hub(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.close()


def _local_hosts() -> set[str]:
    hosts = {"127.0.0.1", "::1", "localhost", socket.gethostname(), socket.getfqdn()}
    try:
        import psutil

        for addresses in psutil.net_if_addrs().values():
            hosts.update(a.address.split("%")[0] for a in addresses)
    except Exception:
        pass
    return hosts
