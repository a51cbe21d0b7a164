"""The main process's side of a CommTask: its listening sockets and connections, read by the loop.

A `_Hub` listens while its task has calls running: on a Unix socket in a
private temporary directory (workers on this machine), and, when its task's
workers may run elsewhere, on TCP at one address of this machine
(`tcp_host_for` picks it: the interface the workers already reach this machine
on, never a wildcard). Each accepted connection is a non-blocking `_Conn` read
by the scheduler's event loop (`loop.add_reader`); its hello is checked before
anything it sends is unpickled, then its whole frames go to the `on_frame`
callback the hub was made with (its CommTask's). `_CallComms` is what the main
side keeps of one call. The hub knows nothing of CommTask nor of Msg (which
reads `call.ended` and `conn.closed` to know whether anybody still waits); it
knows the `_Run` it serves: its loop, and
`run.fail(error)` for a callback's error.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import itertools
import mmap
import os
import secrets
import select
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from byop_nb.scheduling.comm._wire import CHUNK, GOODBYE, HEADER, HELLO, KNOCK_FILE, KNOCKS, SEND_FLAGS, hello_mac

if TYPE_CHECKING:
    from concurrent.futures import Future

    from byop_nb.scheduling.engine._call import Call
    from byop_nb.scheduling.engine._output import RunOutput
    from byop_nb.scheduling.engine._run import _Run

# What a hub hands each whole frame to (a CommTask's `_on_frame`): (connection, its call or None, kind, body).
OnFrame = Callable[["_Conn", "_CallComms | None", int, "bytes | memoryview"], None]

__all__ = ["_Hub", "_Conn", "_CallComms"]

DRAIN_ROUNDS = 256  # reads per connection when a call ends: bounded, in case a leaked comm keeps sending

DIRECTORY_PREFIX = "byop_nb-comm-"
"""A hub's socket directory is `<temporary folder>/byop_nb-comm-<pid>-<random>`, `<pid>` its process's."""

SOCKET_FILE = "s"
"""The hub's Unix socket, in that directory (next to its knock file, `_wire.KNOCK_FILE`)."""

_swept: set[str | None] = set()  # the folders this process has swept (see sweep_dead_directories)


def sweep_dead_directories(base: str | None) -> list[str]:
    """Remove the socket directories that hubs of processes that no longer exist left in `base`; once per process.

    A hub removes its directory when it closes, on every exit path Python sees; a process
    killed by SIGKILL (a kernel killed from outside, an out-of-memory kill) cannot, and
    leaves a directory with its socket and knock file behind. The next hub on this
    machine removes those of this user whose process is gone and whose socket nobody
    listens on. A directory whose pid runs (its owner, or another process that got the pid
    since) stays, and so does one whose socket still takes a connection (its owner runs in
    another PID namespace, a container sharing this folder). Returns what was removed.
    """
    if base in _swept or not hasattr(os, "getuid"):
        return []
    _swept.add(base)
    folder = base if base is not None else tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(DIRECTORY_PREFIX):
            continue
        parts = entry.name[len(DIRECTORY_PREFIX) :].split("-")  # <pid>, <random>
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            os.kill(int(parts[0]), 0)
            continue  # its process runs
        except ProcessLookupError:
            pass
        except OSError:  # PermissionError: the pid runs, as another user's process
            continue
        if _someone_listens(os.path.join(entry.path, SOCKET_FILE)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


def _someone_listens(path: str) -> bool:
    """Whether a hub listens on the Unix socket `path` (a connection made and dropped at once: the hub ignores it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:  # not sure (a full backlog, a path too long): keep it
            return True
        return True


class _CallComms:
    """The main side's state of one call of a CommTask."""

    __slots__ = ("closed", "conns", "ended", "hub", "id", "nonces", "owner", "requests")

    def __init__(self, hub: _Hub, call_id: int, owner: Call) -> None:
        self.hub = hub
        self.id = call_id
        self.owner = owner  # the engine's Call
        self.conns: list[_Conn] = []
        self.nonces: set[bytes] = set()  # of the hellos accepted: a hello seen on the network is not let in twice
        self.requests: dict[int, Any] = {}  # open requests by id: their Msgs
        self.closed = False  # CLOSE was emitted
        self.ended = False

    @property
    def future(self) -> Future[Any] | None:
        """The call's Future."""
        return self.owner.future


class _Conn:
    """One accepted connection: a non-blocking socket read by the loop."""

    __slots__ = ("buffer", "call", "closed", "hub", "out", "sock")

    def __init__(self, hub: _Hub, sock: socket.socket) -> None:
        self.hub = hub
        self.sock = sock
        self.buffer = bytearray()
        self.out = bytearray()
        self.call: _CallComms | None = None
        self.closed = False

    def read(self) -> bool:
        """Read once and handle whole frames; False when the connection ended or has nothing now."""
        try:
            data = self.sock.recv(CHUNK)
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
            if self.call is not None and len(buffer) >= HEADER.size:
                length, _ = HEADER.unpack_from(buffer)
                if len(buffer) < HEADER.size + length:
                    return True  # a large frame still coming: gather it without copying it again
            data = bytes(buffer)
            buffer.clear()
        offset = 0
        call = self.call
        if call is None:
            if len(data) < HELLO.size:
                self.buffer += data
                return True
            call_id, nonce, mac = HELLO.unpack_from(data)
            offset = HELLO.size
            call = self.hub.calls.get(call_id)
            if (
                not hmac.compare_digest(mac, hello_mac(self.hub.token, call_id, nonce))
                or call is None
                or call.ended
                or nonce in call.nonces
            ):
                self.hub.drop(self)
                return False
            call.nonces.add(nonce)
            self.call = call
            call.conns.append(self)
        # The hot path: frames are handed on as slices of what was received, without copies.
        on_frame = self.hub.on_frame
        view = memoryview(data)
        size, header, unpack = len(data), HEADER.size, HEADER.unpack_from
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

    def send(self, kind: int, body: bytes) -> None:
        """Send one frame to the worker, from any thread (the loop's thread writes it)."""
        frame = HEADER.pack(len(body), kind) + body
        hub = self.hub
        if threading.get_ident() == hub.loop_thread:
            self.write(frame)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: the call is over
                hub.loop.call_soon_threadsafe(self.write, frame)

    def write(self, frame: bytes) -> None:
        if self.closed:
            return
        if self.out:
            self.out += frame
            return
        try:
            sent = self.sock.send(frame, SEND_FLAGS)
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
            sent = self.sock.send(self.out, SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.hub.drop(self)
            return
        del self.out[:sent]
        if not self.out:
            self.hub.loop.remove_writer(self.sock.fileno())


class _Hub:
    """A CommTask's listening sockets and connections, served by one event loop.

    `tcp_host`: also listen on TCP at this address of this machine (any free
    port), for workers that cannot reach the Unix socket. `unix=False` leaves
    the Unix socket out (benchmarks and tests of the TCP path).
    """

    def __init__(
        self,
        on_frame: OnFrame,
        run: _Run,
        output: RunOutput,
        *,
        tcp_host: str | None = None,
        unix: bool = True,
    ) -> None:
        self.on_frame = on_frame
        self.run = run
        self.output = output
        self.loop = run.loop
        self.loop_thread = run.loop_thread
        self.token = secrets.token_bytes(16)
        self.host = socket.gethostname()
        self.directory: str | None = None
        self.address: str | None = None  # the Unix socket's path
        self.tcp_address: tuple[str, int] | None = None
        self.listeners: list[socket.socket] = []
        # Whether a listener has a connection waiting, in one look (not an accept() per listener).
        self._knocking = select.poll()
        # The knock file's map (see _wire.KNOCK_FILE): which calls' workers may have connected.
        self._knocks: mmap.mmap | None = None
        self._always_look = tcp_host is not None or not unix  # workers elsewhere cannot knock
        try:
            if unix:
                base = None if len(tempfile.gettempdir()) < 80 else "/tmp"  # Unix socket paths are short
                sweep_dead_directories(base)
                # Named by the process that owns it, so a leftover says whose it was (see sweep_dead_directories).
                self.directory = tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-", dir=base)
                self.address = os.path.join(self.directory, SOCKET_FILE)
                knocks = os.path.join(self.directory, KNOCK_FILE)
                fd = os.open(knocks, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.ftruncate(fd, KNOCKS)
                    self._knocks = mmap.mmap(fd, KNOCKS)
                finally:
                    os.close(fd)
                self._listen(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), self.address)
            if tcp_host is not None:
                family = socket.AF_INET6 if ipaddress.ip_address(tcp_host).version == 6 else socket.AF_INET
                listener = self._listen(socket.socket(family, socket.SOCK_STREAM), (tcp_host, 0))
                self.tcp_address = (tcp_host, listener.getsockname()[1])
        except BaseException:
            self._close_listeners()
            raise
        self.calls: dict[int, _CallComms] = {}
        self.conns: set[_Conn] = set()
        self.open = True
        self._ids = itertools.count(1)

    def _listen(self, listener: socket.socket, address: Any) -> socket.socket:
        self.listeners.append(listener)
        listener.bind(address)
        listener.listen(socket.SOMAXCONN)
        listener.setblocking(False)
        self._knocking.register(listener.fileno(), select.POLLIN)
        self.loop.add_reader(listener.fileno(), self._on_acceptable, listener)
        return listener

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self.loop.remove_reader(listener.fileno())
            with contextlib.suppress(Exception):
                self._knocking.unregister(listener.fileno())
            listener.close()
        self.listeners.clear()
        knocks, self._knocks = self._knocks, None
        if knocks is not None:
            knocks.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def new_call(self, owner: Call) -> _CallComms:
        call = _CallComms(self, next(self._ids), owner)
        calls = self.calls
        calls[call.id] = call
        knocks = self._knocks
        if knocks is not None:
            knocks[call.id % KNOCKS] = 0
            if len(calls) >= KNOCKS:  # two calls in flight could share a knock: look at every end from now on
                self._always_look = True
        return call

    # -- loop callbacks: an error here is a user callback's, and ends the run ---
    def _on_acceptable(self, listener: socket.socket) -> None:
        try:
            self.accept(listener)
        except BaseException as e:
            self.run.fail(e)

    def _on_readable(self, conn: _Conn) -> None:
        output = self.output
        try:
            if output.active:  # the messages' callbacks write to a Dashboard's log pane
                with output.capture():
                    conn.read()
            else:
                conn.read()
        except BaseException as e:
            self.run.fail(e)

    # -- work -----------------------------------------------------------------
    def accept(self, listener: socket.socket) -> None:
        while self.open:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # answers go out at once
            conn = _Conn(self, sock)
            self.conns.add(conn)
            self.loop.add_reader(sock.fileno(), self._on_readable, conn)

    def drain(self, call: _CallComms) -> None:
        """Handle everything that reached the socket for `call` (it ended, so nothing more will come)."""
        knocks = self._knocks
        if self._always_look or knocks is None or knocks[call.id % KNOCKS]:  # it may have connected
            if self._knocking.poll(0):
                for listener in self.listeners:
                    self.accept(listener)
        for conn in [c for c in self.conns if c.call is None]:  # not yet said which call they belong to
            for _ in range(DRAIN_ROUNDS):
                if not conn.read() or conn.call is not None:
                    break
        for conn in list(call.conns):
            for _ in range(DRAIN_ROUNDS):
                if not conn.read():
                    break

    def end(self, call: _CallComms) -> None:
        """Say goodbye to and close the connections of `call`."""
        call.ended = True  # its requests' Msgs see it: nobody waits for their answers any more
        self.calls.pop(call.id, None)
        call.requests.clear()
        for conn in list(call.conns):
            # A goodbye, not only the close: a forked pynisher child of another call may hold a
            # copy of this socket, and then the worker would never see the end of the stream.
            with contextlib.suppress(OSError):
                conn.sock.send(HEADER.pack(0, GOODBYE), SEND_FLAGS | socket.MSG_DONTWAIT)
            self.drop(conn)

    def drop(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.conns.discard(conn)
        if conn.call is not None:
            with contextlib.suppress(ValueError):
                conn.call.conns.remove(conn)  # its requests' Msgs see `conn.closed`
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
        self._close_listeners()
