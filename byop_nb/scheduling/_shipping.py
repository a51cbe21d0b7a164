"""Shipping functions to workers, and the tracebacks that come back: one home for both.

A function defined in `__main__` or a notebook cell (or a lambda, or a local
function) cannot be pickled by reference: a worker process cannot import it.
Such functions travel by value, as cloudpickle bytes made once per function in
the main process ([`payload`][byop_nb.scheduling._shipping.payload]) and
unpickled once per worker process ([`load`][byop_nb.scheduling._shipping.load]).
Importable functions travel as they are.

An exception raised in a worker carries the worker's traceback as text in its
`remote_traceback` attribute ([`attach_traceback`][byop_nb.scheduling._shipping.attach_traceback]),
which survives pickling back; [`traceback_text`][byop_nb.scheduling._shipping.traceback_text]
reads it on the main side, whatever executor the exception came through.

This module is imported in worker processes: it imports nothing heavy at import time.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["needs_by_value", "payload", "load", "attach_traceback", "traceback_text"]

_CACHE_MAX = 256
# Main side: function -> its cloudpickle bytes. Worker side: bytes -> the function.
_PAYLOADS: dict[Callable[..., Any], Callable[..., Any] | bytes] = {}
_LOADED: dict[bytes, Callable[..., Any]] = {}


def needs_by_value(function: Callable[..., Any]) -> bool:
    """Whether plain pickle (by reference) would fail to find `function` in a worker process."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    return module in (None, "__main__") or "<locals>" in qualname or "<lambda>" in qualname


def payload(function: Callable[..., Any] | bytes) -> Callable[..., Any] | bytes:
    """`function` as it travels to another process: itself, or its cloudpickle bytes when it needs by-value.

    Decided and pickled once per function (cached, bounded: this is on the submit path);
    unhashable callables are decided each time.
    """
    try:
        return _PAYLOADS[function]  # type: ignore[index]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable
        return _by_value(function) if needs_by_value(function) else function  # type: ignore[arg-type]
    if isinstance(function, bytes):
        return function
    shipped = _by_value(function) if needs_by_value(function) else function
    if len(_PAYLOADS) >= _CACHE_MAX:
        _PAYLOADS.clear()
    _PAYLOADS[function] = shipped
    return shipped


def _by_value(function: Callable[..., Any]) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(function)


def load(shipped: Callable[..., Any] | bytes) -> Callable[..., Any]:
    """The function `payload` shipped: unpickled once per process (cached, bounded)."""
    if not isinstance(shipped, bytes):
        return shipped
    function = _LOADED.get(shipped)
    if function is None:
        import cloudpickle

        function = cloudpickle.loads(shipped)
        if len(_LOADED) >= _CACHE_MAX:
            _LOADED.clear()
        _LOADED[shipped] = function
    return function


def attach_traceback(exception: BaseException, text: str | None = None) -> None:
    """Give `exception` a `remote_traceback` (`text`, or its own traceback) unless it has one.

    Called in the worker, where the traceback is the worker's, and on the main
    side for exceptions that came back without one. Exceptions without a
    `__dict__` are left as they are.
    """
    if getattr(exception, "remote_traceback", None) is not None:
        return
    try:
        exception.remote_traceback = text if text is not None else traceback_text(exception)  # type: ignore[attr-defined]
    except AttributeError:
        pass


def traceback_text(exception: BaseException) -> str:
    """The traceback of `exception` as text: the worker's own when it came from another process."""
    remote = getattr(exception, "remote_traceback", None)
    if isinstance(remote, str):
        return remote
    cause = exception.__cause__
    if type(cause).__name__ == "_RemoteTraceback":  # a ProcessPoolExecutor's worker traceback
        return str(getattr(cause, "tb", cause))
    return "".join(traceback.format_exception(exception))
