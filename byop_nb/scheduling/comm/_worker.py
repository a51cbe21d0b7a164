"""The worker's side of a CommTask: the [`Comm`][byop_nb.scheduling.Comm] a call talks through.

This module runs in worker processes (and pynisher's limited children); it
imports the wire format and the function loader, nothing of the main side.

A Comm knows up to two ways to its hub: the Unix socket on the scheduler's
machine (tried first when the worker runs on that machine) and, when the hub
listens on TCP too (dask clusters whose workers may be elsewhere), an address
and port there.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from byop_nb.scheduling.comm._wire import (
    ANSWER,
    CHUNK,
    CLOSE,
    GOODBYE,
    HEADER,
    HELLO,
    MESSAGE,
    REQUEST,
    SEND_FLAGS,
    CommError,
    frames,
    hello_mac,
    knock,
    readable,
)
from byop_nb.scheduling.workers._shipping import (
    attach_traceback,
    dumps,
    load,
    payload,
    sendable,
    sendable_exception,
    worker_traceback,
)

__all__ = ["Comm"]

GOODBYE_CHECK = 0.02  # seconds between non-blocking looks for the scheduler's goodbye while only sending
CONNECT_TIMEOUT = 10.0  # seconds for a TCP connection to the hub: a firewall that drops packets would take minutes
DELIVERY_TIMEOUT = 10.0  # seconds a call's end waits for the scheduler's machine to acknowledge what it sent


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

    It connects at its first use: to the task's Unix socket when the worker runs
    on the scheduler's machine and sees it, else (dask workers on other
    machines) to the TCP address the task listens on. A worker that can do
    neither gets a `CommError` naming what it tried.
    """

    Error = CommError
    Msg: ClassVar[type]  # the main side's Msg class, set by byop_nb.scheduling.comms (not imported here)

    __slots__ = (
        "_buffer",
        "_call_id",
        "_checked_at",
        "_closed",
        "_gone",
        "_host",
        "_next_request",
        "_path",
        "_pid",
        "_recv_lock",
        "_send_lock",
        "_sock",
        "_tcp",
        "_token",
        "_via_tcp",
    )

    def __init__(
        self,
        path: str | None,
        tcp: tuple[str, int] | None,
        token: bytes,
        call_id: int,
        host: str,
        unusable: str | None = None,
    ) -> None:
        self._path = path  # the hub's Unix socket, on the machine `host`
        self._tcp = tcp  # the hub's TCP address, when it listens on one
        self._token = token
        self._call_id = call_id
        self._host = host
        self._sock: socket.socket | None = None
        self._via_tcp = False
        self._pid = 0
        self._closed = False
        self._gone: str | None = unusable  # why the scheduler's end went away, once we know (or why it never came)
        self._buffer = bytearray()
        self._next_request = 0
        self._checked_at = 0.0
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (Comm, (self._path, self._tcp, self._token, self._call_id, self._host, self._unusable()))

    def _unusable(self) -> str | None:
        """Why this Comm can never connect (it was made with no hub), else None."""
        return self._gone if self._path is None and self._tcp is None else None

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
        self._write(MESSAGE, dumps(obj))  # by value when its class is the notebook's

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
            body = dumps((request_id, obj))
            try:
                self._write(REQUEST, body)
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
                sock.sendall(HEADER.pack(0, CLOSE), SEND_FLAGS)
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
            if self._via_tcp:
                # The end of the stream first: the scheduler's machine acknowledges a FIN at once, where
                # its delayed acknowledgement of the last bytes could take 40 ms (measured: every call
                # that made a request then sent a message ended 47 ms late).
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                _wait_delivered(sock, DELIVERY_TIMEOUT)
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
        sock = self._connect()
        try:
            nonce = os.urandom(16)
            sock.sendall(HELLO.pack(self._call_id, nonce, hello_mac(self._token, self._call_id, nonce)), SEND_FLAGS)
        except OSError as e:
            sock.close()
            raise self._gone_error(f"the hello ({type(e).__name__}: {e})") from e
        self._sock, self._pid = sock, os.getpid()
        self._buffer.clear()
        self._checked_at = time.monotonic()
        return sock

    def _connect(self) -> socket.socket:
        """A connected socket to the hub: its Unix socket when this is its machine and it is there, else TCP."""
        tried: list[str] = []
        error: OSError | None = None
        here = socket.gethostname()
        if self._path is not None and here == self._host:
            knock(self._path, self._call_id)  # first: the call's end then looks for this connection
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self._path)
                self._via_tcp = False
                return sock
            except OSError as e:  # gone, or another mount namespace (a container) of this machine
                sock.close()
                tried.append(f"the Unix socket {self._path} ({type(e).__name__}: {e})")
                error = e
        if self._tcp is not None:
            host, port = self._tcp
            try:
                sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            except OSError as e:
                tried.append(f"TCP {_host_port(host, port)} ({type(e).__name__}: {e})")
                if isinstance(e, ConnectionRefusedError):  # the machine answered: nothing listens there now
                    raise self._gone_error(" and ".join(tried)) from e
                self._gone = (
                    f"this Comm cannot reach the scheduler on {self._host!r}: tried {' and '.join(tried)}. "
                    "This worker has no way to that address (another network, a firewall); dask workers must "
                    "be able to connect to the scheduler's machine on the address its dask scheduler listens "
                    "on, at any port (a CommTask listens on a free port of that address)."
                )
                raise CommError(self._gone) from e
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request must not wait for an ACK
            self._via_tcp = True
            return sock
        if error is None:  # no way at all from this machine
            self._gone = (
                f"this Comm cannot reach the scheduler: the scheduler runs on {self._host!r} and this worker "
                f"on {here!r}, and this CommTask listens only on a Unix socket of the scheduler's machine "
                "(its executor's workers run there: threads, process pools, dask clusters whose scheduler "
                "listens on loopback). For workers on other machines, use a dask cluster whose scheduler "
                "listens on an address they reach (its Comms then listen there too), or use a plain Task "
                "and return what you need."
            )
            raise CommError(self._gone)
        hint = ""
        if isinstance(error, FileNotFoundError):
            hint = (
                "; or this worker does not see the scheduler's temporary folder (a container or another mount "
                "namespace of the same machine): then run the dask scheduler on an address the worker reaches"
            )
        raise self._gone_error(" and ".join(tried), hint) from error

    def _gone_error(self, tried: str, hint: str = "") -> CommError:
        self._gone = (
            f"the scheduler's end of this Comm is gone: the call was cancelled or the run ended (tried {tried})" + hint
        )
        return CommError(self._gone)

    def _write(self, kind: int, body: bytes) -> None:
        frame = HEADER.pack(len(body), kind) + body
        with self._send_lock:
            sock = self._connected()
            now = time.monotonic()
            if now - self._checked_at > GOODBYE_CHECK:
                # A worker that only sends never reads; look now and then whether the
                # scheduler said goodbye, so a cancelled call stops instead of filling a buffer.
                self._checked_at = now
                if not self._recv_lock.locked() and readable(sock, 0.0):
                    self._peek_goodbye(sock)
            try:
                sock.sendall(frame, SEND_FLAGS)
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
            data = sock.recv(CHUNK)
        except OSError:
            data = b""
        if not data:
            raise self._closed_by_scheduler()
        self._buffer += data

    def _peek_goodbye(self, sock: socket.socket) -> None:
        self._receive(sock)
        for kind, _ in frames(self._buffer, keep_answers=True):
            if kind == GOODBYE:
                raise self._closed_by_scheduler()

    def _read(self, deadline: float | None) -> tuple[int, bool, Any] | None:
        """The next answer or refusal as (request id, ok, value); None when `deadline` passed."""
        sock = self._connected()
        while True:
            for kind, body in frames(self._buffer):
                if kind == GOODBYE:
                    raise self._closed_by_scheduler()
                request_id, value = pickle.loads(body)
                return request_id, kind == ANSWER, value
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not readable(sock, remaining):
                return None
            self._receive(sock)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _wait_delivered(sock: socket.socket, timeout: float) -> None:
    """Wait until the other end acknowledged every byte sent on `sock` (Linux; elsewhere, return).

    Over a Unix socket, what `sendall` returned from is in the hub's buffer already.
    Over TCP it may still be on the way when the call's result (which travels through
    the executor, another way) reaches the scheduler, which reads what the call sent
    when its result comes: so a call's end waits for the acknowledgement of its bytes
    (by the receiving kernel, not the scheduler's loop, which may be busy).
    """
    try:
        import fcntl
        import termios

        request = termios.TIOCOUTQ  # on Linux, for a TCP socket: bytes not yet acknowledged
    except (ImportError, AttributeError):
        return
    deadline = time.monotonic() + timeout
    pause = 0.0002
    while True:
        try:
            (unacknowledged,) = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))
        except OSError:
            return
        if unacknowledged <= 0 or time.monotonic() > deadline:
            return
        time.sleep(pause)
        pause = min(2 * pause, 0.01)


def _wait_time(block: bool | float) -> float | None:
    if block is True:
        return None
    if block is False:
        return 0.0
    if isinstance(block, (int, float)) and block >= 0:
        return float(block)
    raise ValueError(f"block= must be True, False or non-negative seconds, got {block!r}")


class _CommCall:
    """What a CommTask submits: calls the user's function with the call's Comm, then closes it.

    The Comm goes first among the arguments (a CommTask's `function(comm, *args)`), or, with
    `into_trial`, onto the first argument, a Trial, as `trial.comm` (a Trial.Task's
    `function(trial, *args)`), for the time the function runs.

    One object per call, so it is unhashable: it must stay out of the scheduler's
    per-function payload cache. It pickles the user's function by value when it
    lives in `__main__` (or a notebook), like the scheduler does for plain tasks.
    """

    __slots__ = ("comm", "function", "into_trial", "unpickled")
    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self, function: Callable[..., Any] | bytes, comm: Comm, unpickled: bool = False, into_trial: bool = False
    ) -> None:
        self.function = function
        self.comm = comm
        self.unpickled = unpickled  # its function came by value: what it returns goes back by value
        self.into_trial = into_trial

    def __reduce__(self) -> tuple[Any, ...]:
        # As the scheduler ships a plain task: a function importable in the worker goes by reference,
        # and then its result and exception travel back as the stdlib pool sends them (no second
        # pickling); a function shipped by value sends them back by value where it must.
        shipped = payload(self.function)
        return (_CommCall, (shipped, self.comm, shipped is not self.function, self.into_trial))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        comm = self.comm
        trial = args[0] if self.into_trial else None
        try:
            if trial is not None:
                trial.comm = comm
                result = load(self.function)(*args, **kwargs)
            else:
                result = load(self.function)(comm, *args, **kwargs)
        except BaseException as e:
            if not self.unpickled:
                raise
            attach_traceback(e, worker_traceback(e))
            sent = sendable_exception(e)  # by value, like the function, where it must
            if sent is e:
                raise
            raise sent from None
        finally:
            comm._detach()
            if trial is not None:
                trial.comm = None  # the trial's report travels back without it
        return sendable(result) if self.unpickled else result


_SHIPPED: dict[int, tuple[Callable[..., Any], bytes]] = {}
