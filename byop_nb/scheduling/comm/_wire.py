"""The wire between a Comm (in the worker) and its CommTask's hub (in the main process).

Both sides import this module and nothing of each other. The transport is a
Unix socket on the scheduler's machine or TCP from anywhere else; the bytes are
the same. A connection starts with a hello from the worker, checked before
anything it sends is unpickled: the call id, a fresh nonce, and an HMAC of both
keyed with the task's secret token (`hello_mac`), so the token itself never
crosses the network and a hello seen on the wire cannot be replayed (the hub
accepts a nonce once per call). Then frames both ways, each a header (payload
length, kind) and a pickled payload.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import select
import socket
import struct
from collections.abc import Iterator

__all__ = [
    "CommError",
    "HEADER",
    "HELLO",
    "MESSAGE",
    "REQUEST",
    "CLOSE",
    "ANSWER",
    "REFUSAL",
    "GOODBYE",
    "frames",
    "hello_mac",
]

HEADER = struct.Struct("!IB")
HELLO = struct.Struct("!Q16s32s")  # call id, nonce, HMAC-SHA256(token, call id + nonce)
# worker -> main
MESSAGE, REQUEST, CLOSE = 1, 2, 3
# main -> worker
ANSWER, REFUSAL, GOODBYE = 4, 5, 6

CHUNK = 1 << 18
SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)

# The knock file, next to a hub's Unix socket: byte `call id % KNOCKS` is set by a worker whose Comm
# connects through that socket, before it connects. The hub maps the file, so a call's end learns
# without a system call whether a connection of the call may wait to be accepted (a look at the
# listeners releases the GIL, which costs a busy thread pool's loop tens of microseconds per call).
KNOCK_FILE = "knock"
KNOCKS = 1 << 16


def knock(path: str, call_id: int) -> None:
    """Set the knock of call `call_id` in the knock file next to the hub's Unix socket `path`."""
    try:
        fd = os.open(os.path.join(os.path.dirname(path), KNOCK_FILE), os.O_WRONLY)
    except OSError:
        return  # no knock file (the hub is gone): the connection will say so
    try:
        os.pwrite(fd, b"\x01", call_id % KNOCKS)
    finally:
        os.close(fd)


class CommError(RuntimeError):
    """A Comm could not do what was asked: it is closed, or the scheduler will not answer.

    Raised in the worker by `send`, by `request(block=True)` when the request is
    refused (the run is finishing, or the task has no `on_request` callback) or
    the scheduler's end went away (the call was cancelled, the run ended), and
    at the call of a CommTask that cannot reach its workers.
    """


def hello_mac(token: bytes, call_id: int, nonce: bytes) -> bytes:
    """The proof in a hello that its sender was given the task's token (which it does not send)."""
    return hmac.new(token, struct.pack("!Q", call_id) + nonce, hashlib.sha256).digest()


def readable(sock: socket.socket, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000.0))


def frames(buffer: bytearray, *, keep_answers: bool = False) -> Iterator[tuple[int, bytes]]:
    """Take whole frames off the front of `buffer`, yielding (kind, payload).

    With `keep_answers`, answers are left in the buffer (only a goodbye is looked for).
    """
    offset = 0
    size = HEADER.size
    while len(buffer) - offset >= size:
        length, kind = HEADER.unpack_from(buffer, offset)
        end = offset + size + length
        if len(buffer) < end:
            break
        if keep_answers and kind != GOODBYE:
            offset = end
            continue
        body = bytes(buffer[offset + size : end])
        del buffer[offset:end]
        yield kind, body
