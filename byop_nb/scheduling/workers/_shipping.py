"""Shipping functions to workers, and the tracebacks that come back: one home for both.

A function defined in `__main__` or a notebook cell (or a lambda, or a local
function) cannot be pickled by reference: a worker process cannot import it.
Such functions travel by value, as cloudpickle bytes made once per function in
the main process ([`payload`][byop_nb.scheduling.workers._shipping.payload]) and
unpickled once per worker process ([`load`][byop_nb.scheduling.workers._shipping.load]).
Importable functions travel as they are.

An exception raised in a worker carries the worker's traceback as text in its
`remote_traceback` attribute ([`attach_traceback`][byop_nb.scheduling.workers._shipping.attach_traceback]),
which survives pickling back; [`traceback_text`][byop_nb.scheduling.workers._shipping.traceback_text]
reads it on the main side, whatever executor the exception came through.

Values travel the same way when they need to, and only then
([`arguments`][byop_nb.scheduling.workers._shipping.arguments] going out,
[`sendable`][byop_nb.scheduling.workers._shipping.sendable] and
[`sendable_exception`][byop_nb.scheduling.workers._shipping.sendable_exception] coming
back, [`dumps`][byop_nb.scheduling.workers._shipping.dumps] for Comm messages): an
instance of a class defined in `__main__` or a notebook cell cannot be found by
reference in a worker (spawn, forkserver, `python -c`, a notebook), and a class
that itself travelled by value cannot be found by reference on the way back
("it's not the same object as __main__.Result"). Such values are pickled with
cloudpickle; everything else with plain pickle, as before. On the receiving
side both are read with `pickle.loads`.

This module is imported in worker processes: it imports nothing heavy at import time.
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from concurrent.futures import __file__ as _futures_file
from itertools import islice
from types import FunctionType, MethodType
from typing import Any, ClassVar

from byop_nb import _jupyter

__all__ = [
    "needs_by_value",
    "payload",
    "load",
    "attach_traceback",
    "traceback_text",
    "worker_traceback",
    "from_the_users_frames",
    "cloudpickle_dumps",
    "ByValue",
    "arguments",
    "sendable",
    "sendable_exception",
    "dumps",
    "UnpicklableError",
    "FunctionNotShippable",
    "cells_named",
    "name_cells",
]

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


def _code_reduce(code: Any) -> tuple[Any, ...]:
    """How a code object travels by value: cloudpickle's way, plus its file's name (cloudpickle names
    every code it rebuilds "<dynamic-code>") and, for a file that exists only in this process's
    `linecache` (a notebook cell), its lines: a traceback in the worker then shows the cell's file,
    line and source, which the main side names "Cell In[5], line 7" (`cells_named`)."""
    import linecache
    import os
    import types

    import cloudpickle

    constructor, args = cloudpickle.Pickler.dispatch_table[types.CodeType](code)
    filename = code.co_filename
    lines = None
    if filename and not filename.startswith("<") and not os.path.exists(filename):
        lines = linecache.getlines(filename) or None  # the same list for every code of a cell: pickled once
    return _code_from, (constructor, args, filename, lines)


def _code_from(constructor: Any, args: tuple[Any, ...], filename: str, lines: list[str] | None) -> Any:
    """The code object `_code_reduce` shipped, with its file's name, whose lines the worker's `linecache` gets."""
    code = constructor(*args)
    if lines is not None:
        import linecache

        if filename not in linecache.cache:  # mtime None: linecache.checkcache leaves the entry alone
            linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return code.replace(co_filename=filename)


_PICKLER: Any = None


def cloudpickle_dumps(value: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    """`cloudpickle.dumps(value)`, with code objects that keep their file's name (`_code_reduce`)."""
    global _PICKLER
    import io

    if _PICKLER is None:
        import collections
        import types

        import cloudpickle

        class Pickler(cloudpickle.Pickler):
            dispatch_table: ClassVar[Any] = collections.ChainMap(
                {types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table
            )

        _PICKLER = Pickler
    buffer = io.BytesIO()
    _PICKLER(buffer, protocol=protocol).dump(value)
    return buffer.getvalue()


_CELL_FRAME = None


def cells_named(text: str) -> str:
    """`text` (a worker's traceback) with the frames of notebook cells named as IPython names them
    (`File "/tmp/ipykernel_1/123.py", line 7` -> `Cell In[5], line 7`); `text` itself outside IPython.

    Asks `byop_nb._jupyter` for IPython's naming: nothing is imported here.
    """
    name_of = _jupyter.cell_namer() if 'File "' in text else None
    if name_of is None:
        return text
    global _CELL_FRAME
    import re

    if _CELL_FRAME is None:
        _CELL_FRAME = re.compile(r'File "([^"]+)", line (\d+)')

    def named(match: re.Match[str]) -> str:
        try:
            label = name_of(match.group(1))
        except Exception:  # IPython's own helper must never lose the traceback
            label = None
        return f"{label[0]} {label[1]}, line {match.group(2)}" if label else match.group(0)

    return _CELL_FRAME.sub(named, text)


class FunctionNotShippable(pickle.PicklingError):
    """A function that must travel by value cannot be pickled (a closure over a lock, a socket, ...)."""


def _by_value(function: Callable[..., Any]) -> bytes:
    try:
        return cloudpickle_dumps(function)
    except Exception as e:
        name = getattr(function, "__qualname__", None) or type(function).__name__
        raise FunctionNotShippable(
            f"the function {name} cannot be sent to a worker process: it is defined in __main__ or a notebook "
            f"cell (or is local), so it travels by value with everything it refers to, and pickling failed "
            f"({type(e).__name__}: {e}). Make what it refers to picklable, create it inside the function, or "
            "run on threads"
        ) from e


def load(shipped: Callable[..., Any] | bytes) -> Callable[..., Any]:
    """The function `payload` shipped: unpickled once per process (cached, bounded)."""
    if not isinstance(shipped, bytes):
        return shipped
    function = _LOADED.get(shipped)
    if function is None:
        function = pickle.loads(shipped)
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


def name_cells(exception: BaseException) -> None:
    """Main side, in IPython: the worker's traceback on `exception` (and on the process pool's
    `_RemoteTraceback` cause, which IPython shows) with its notebook cells named "Cell In[5]"."""
    remote = getattr(exception, "remote_traceback", None)
    if isinstance(remote, str):
        named = cells_named(remote)
        if named is not remote:
            try:
                exception.remote_traceback = named  # type: ignore[attr-defined]
            except AttributeError:
                pass
    cause = exception.__cause__
    if type(cause).__name__ == "_RemoteTraceback" and isinstance(getattr(cause, "tb", None), str):
        cause.tb = cells_named(cause.tb)  # type: ignore[union-attr]


# Where the frames above a user's function come from: byop_nb, and the stdlib's pools (a thread pool's worker).
_NOT_THE_USERS = (
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep,  # byop_nb/
    os.path.dirname(os.path.abspath(_futures_file)) + os.sep,  # concurrent/futures/
)


def worker_traceback(exception: BaseException) -> str:
    """In the worker: the traceback of what a call raised, from the user's first frame on.

    The frames above the user's function (byop_nb's worker entry point, a limited
    child's runner, a trial's wrapper; a thread pool's worker) say nothing about the
    error, so the text starts at the first frame outside byop_nb and the stdlib's
    pools. An error raised in those frames only keeps them all, to be found.
    """
    return from_the_users_frames("".join(traceback.format_exception(exception)))


def traceback_text(exception: BaseException) -> str:
    """The traceback of `exception` as text: the worker's own when it came from another process."""
    remote = getattr(exception, "remote_traceback", None)
    if isinstance(remote, str):
        return remote
    cause = exception.__cause__
    if type(cause).__name__ == "_RemoteTraceback":  # a ProcessPoolExecutor's worker traceback, as text
        text = str(getattr(cause, "tb", cause))
        if text.startswith('\n"""\n') and text.endswith('"""'):  # the pool's quotes around it
            text = text[5:-3]
        return from_the_users_frames(text)
    return worker_traceback(exception)


def from_the_users_frames(text: str) -> str:
    """A traceback's text without the frames above the user's function (see `worker_traceback`): the
    worker's own, and the text a process pool sends back.

    Only the last traceback of the text (the exception raised, after any it was raised
    from) loses them, and only when a frame of the user's follows.
    """
    lines = text.splitlines(keepends=True)
    heads = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if not heads:
        return text
    head = heads[-1]
    frames = [i for i in range(head + 1, len(lines)) if lines[i].startswith('  File "')]
    for i in frames:
        path = lines[i][len('  File "') :].split('"', 1)[0]
        if not path.startswith(_NOT_THE_USERS):
            return "".join(lines[: head + 1] + lines[i:]) if i != frames[0] else text
    return text


# -- values ----------------------------------------------------------------------------------

_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})
_CONTAINERS = frozenset({list, tuple, set, frozenset})
_LOOK_INTO = 32  # items of a container looked at for a value that needs by-value


def _type_by_value(kind: type) -> bool:
    return kind.__module__ == "__main__" or "<locals>" in kind.__qualname__


def value_needs_by_value(value: Any) -> bool:
    """Whether `value` refers to something a worker cannot import: a class or function of `__main__`,
    a local one, a lambda. Looks at the value, and one level into the first items of a plain container."""
    kind = type(value)
    if kind in _PLAIN:
        return False
    if _type_by_value(kind):
        return True
    if kind in _CONTAINERS:
        return any(type(item) not in _PLAIN and _one_needs(item) for item in islice(value, _LOOK_INTO))
    if kind is dict:
        return any(type(item) not in _PLAIN and _one_needs(item) for item in islice(value.values(), _LOOK_INTO))
    return _one_needs(value)


def _one_needs(value: Any) -> bool:
    if _type_by_value(type(value)):
        return True
    if isinstance(value, (FunctionType, MethodType, type)):
        return needs_by_value(value)
    return False


class ByValue:
    """A value that travels by value: pickled with cloudpickle, unpickled as the value itself."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (pickle.loads, (cloudpickle_dumps(self.value),))


def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call's arguments as they travel to a worker process: those that need it wrapped in `ByValue`.

    The same objects come back when none needs it (the common case: one pass over the arguments).
    """
    for value in args:
        if type(value) not in _PLAIN and value_needs_by_value(value):
            break
    else:
        for value in kwargs.values():
            if type(value) not in _PLAIN and value_needs_by_value(value):
                break
        else:
            return args, kwargs
    return (
        tuple(ByValue(v) if value_needs_by_value(v) else v for v in args),
        {k: ByValue(v) if value_needs_by_value(v) else v for k, v in kwargs.items()},
    )


class _Sendable:
    """A result on its way back: pickled by reference when it can be, else by value."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (pickle.loads, (dumps(self.value),))


def sendable(value: Any) -> Any:
    """`value` as it travels back to the process that asked for it (see `dumps`)."""
    return value if type(value) in _PLAIN else _Sendable(value)


def dumps(value: Any) -> bytes:
    """`value` pickled for another process: with pickle, or with cloudpickle when pickle by reference
    would fail there (see `value_needs_by_value`) or fails here. Read it with `pickle.loads`.

    Raises:
        pickle.PicklingError, TypeError, ...: neither can pickle `value` (pickle's error).
    """
    if not value_needs_by_value(value):
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            error = e
    else:
        error = None
    try:
        return cloudpickle_dumps(value)
    except Exception:
        if error is not None:
            raise error from None
        raise


class UnpicklableError(Exception):
    """Stands for an exception of the user's that could not have been unpickled by the scheduler.

    Its message names the original exception, its message and why; `remote_traceback`
    is the original's traceback.
    """


class _SentException(Exception):
    """An exception on its way back that needs by-value: unpickled as the original exception."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (pickle.loads, (self.data,))


def sendable_exception(exception: BaseException) -> BaseException:
    """What to raise in a worker so that `exception` reaches the scheduler's process intact.

    `exception` itself when plain pickle takes it there and back; an exception that
    unpickles as it when it needs by-value; an `UnpicklableError` naming it when it
    cannot be pickled, or could not be unpickled (an `__init__` that wants more
    arguments than `args` holds), which would otherwise break the process pool.
    """
    what = "pickled"
    try:
        data = dumps(exception)
        what = "unpickled in the scheduler's process"
        pickle.loads(data)  # as the scheduler's process will (it has the same classes, as a rule)
    except Exception as e:
        try:
            message = str(exception)
        except Exception:
            message = ""
        stand_in = UnpicklableError(
            f"{type(exception).__qualname__}: {message} (this exception could not be {what}: "
            f"{type(e).__name__}: {e}; it is reported as an UnpicklableError. Make the exception class "
            "picklable: e.g. pass all of __init__'s arguments on to super().__init__)"
        )
        attach_traceback(stand_in, traceback_text(exception))
        return stand_in
    if value_needs_by_value(exception):
        return _SentException(data)
    return exception
