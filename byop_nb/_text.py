"""Values as bounded text: what rows, journals and messages show of arguments, results and exceptions.

A row must never hold megabytes of text (a list of a million floats as an
argument), nor lose the call because a value's `__repr__` raised (a detached
ORM object). [`bounded_repr`][byop_nb._text.bounded_repr] gives the `repr` of
a value, cut to a cap with an ellipsis and the value's type and size; large
containers, strings and bytes are never turned into text whole. A `repr` that
raises gives a text naming the failure instead.

```python
from byop_nb._text import bounded_repr

bounded_repr((3, "a"))              # "(3, 'a')"
bounded_repr(list(range(10**6)))    # "[0, 1, 2, ..., ...] … (list of 1000000 items)"
```

Imports nothing of byop_nb (it runs in worker processes too).
"""

from __future__ import annotations

import reprlib
from itertools import islice
from typing import Any

__all__ = [
    "TEXT_LIMIT",
    "TRACEBACK_LIMIT",
    "bounded_repr",
    "bounded_message",
    "bounded_text",
    "cell_value",
    "clipped",
    "size_of",
]

TEXT_LIMIT = 2000
"""Characters kept of an argument's, a result's or an exception message's text."""
TRACEBACK_LIMIT = 20000
"""Characters kept of a traceback (its end, where the error is)."""

ELLIPSIS = "…"
_ITEMS = 64  # items shown of a long container, before its ellipsis
_PLAIN = frozenset({int, float, bool, type(None), complex})


def size_of(value: Any) -> str:
    """The type and size of `value` in words, e.g. "list of 1000000 items", "bytes of 200 MB"."""
    name = type(value).__name__
    try:
        n = len(value)
    except Exception:
        return name
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{name} of {_amount(n)}"
    if isinstance(value, str):
        return f"{name} of {n} characters"
    return f"{name} of {n} items"


def _amount(n: int) -> str:
    if n < 10_000:
        return f"{n} bytes"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"  # pragma: no cover


def bounded_text(text: str, limit: int = TEXT_LIMIT, *, about: str | None = None, keep_end: bool = False) -> str:
    """`text`, or its first (`keep_end`: last) `limit` characters with an ellipsis and what was cut."""
    if len(text) <= limit:
        return text
    what = about if about is not None else f"{len(text)} characters"
    if keep_end:
        return f"{ELLIPSIS} ({what}; the first {len(text) - limit} characters left out)\n{text[-limit:]}"
    return f"{text[:limit]}{ELLIPSIS} ({what})"


def bounded_message(text: str, limit: int = TEXT_LIMIT) -> str:
    """`text`, or its start and its end (a quarter of `limit`) around a note of what was left out: an
    exception's message, whose advice is often at its end, bounded without losing it."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    return f"{text[: limit - tail]}{ELLIPSIS} ({len(text)} characters; the middle left out) {ELLIPSIS}{text[-tail:]}"


def clipped(text: str, limit: int) -> str:
    """`text`, or its start and its end around an ellipsis, in `limit` characters: for messages in a
    narrow place, whose useful part is often at the end ("...; return a number, or trial.success(...)")."""
    if len(text) <= limit:
        return text
    tail = max(1, limit // 3)
    return f"{text[: max(0, limit - tail - 1)]}{ELLIPSIS}{text[-tail:]}"


def bounded_repr(value: Any, limit: int = TEXT_LIMIT) -> str:
    """`repr(value)` in at most about `limit` characters; never raises.

    A longer text is cut, with an ellipsis and the value's type and size. Long
    containers show their first items, long strings and bytes their start; they
    are never turned into text whole. A `repr` that raises gives
    `<Type object: repr() raised Error: message>` (also for items inside a container).
    """
    try:
        if _short(value, limit):
            text = repr(value)
        else:
            text = _BoundedRepr(limit).repr(value)
    except Exception as e:  # a __repr__ that raised at the top, or something stranger
        return _failed(value, e)
    if len(text) <= limit:
        return text
    return bounded_text(text, limit, about=size_of(value))


def _short(value: Any, limit: int) -> bool:
    """Whether `repr(value)` is surely short and cheap (the common case of a call's arguments)."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind is str or kind is bytes:
        return len(value) * 4 < limit
    if kind is tuple or kind is list:
        if len(value) > 16:
            return False
        for item in value:
            if type(item) not in _PLAIN and not (type(item) is str and len(item) < 64):
                return False
        return True
    if kind is dict:
        if len(value) > 16:
            return False
        for key, item in value.items():
            if type(key) is not str or len(key) > 64:
                return False
            if type(item) not in _PLAIN and not (type(item) is str and len(item) < 64):
                return False
        return True
    return False


def _failed(value: Any, error: BaseException) -> str:
    try:
        message = str(error)
    except Exception:
        message = ""
    message = bounded_text(message, 200)
    failure = f"{type(error).__qualname__}: {message}" if message else type(error).__qualname__
    return f"<{type(value).__qualname__} object: repr() raised {failure}>"


class _BoundedRepr(reprlib.Repr):
    """reprlib's abbreviations, with the size of what was abbreviated and named repr failures."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxtuple = self.maxlist = self.maxset = self.maxfrozenset = self.maxdeque = _ITEMS
        self.maxarray = self.maxdict = _ITEMS
        # An item's text is cut at a quarter of the cap, so that one long item inside a container
        # (an argument in the arguments' tuple) keeps the note of its own type and size.
        self.maxstring = self.maxlong = self.maxother = max(40, limit // 4)
        self._inside: set[int] = set()  # the containers being shown: one met again is a cycle

    def repr1(self, x: Any, level: int) -> str:
        kind = type(x)
        if kind is not list and kind is not dict:
            return super().repr1(x, level)
        if id(x) in self._inside:  # a container that holds itself, shown as repr() shows it
            return "[...]" if kind is list else "{...}"
        self._inside.add(id(x))
        try:
            return super().repr1(x, level)
        finally:
            self._inside.discard(id(x))

    def _repr_iterable(self, x: Any, level: int, left: str, right: str, maxiter: int, trail: str = "") -> str:
        text: str = super()._repr_iterable(x, level, left, right, maxiter, trail)  # type: ignore[misc]
        return text if len(x) <= maxiter else f"{text} {ELLIPSIS} ({size_of(x)})"

    def repr_dict(self, x: Any, level: int) -> str:
        if len(x) <= self.maxdict:
            return super().repr_dict(x, level)
        if level <= 0:
            return "{" + self.fillvalue + "}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in islice(x.items(), self.maxdict)]
        return "{" + ", ".join(pieces) + f", ...}} {ELLIPSIS} ({size_of(x)})"

    def repr_str(self, x: Any, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return f"{x[: self.maxstring]!r}{ELLIPSIS} ({size_of(x)})"

    def repr_bytes(self, x: Any, level: int) -> str:
        shown = self.maxstring // 4  # a byte may take four characters: \x00
        if len(x) <= shown:
            return repr(x)
        return f"{bytes(x[:shown])!r}{ELLIPSIS} ({size_of(x)})"

    repr_bytearray = repr_memoryview = repr_bytes

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            text = repr(x)
        except Exception as e:
            return _failed(x, e)
        return text if len(text) <= self.maxother else bounded_text(text, self.maxother, about=size_of(x))


_CELL_SCALARS = frozenset({int, float, bool, type(None)})


def cell_value(value: Any) -> Any:
    """`value` as a DataFrame cell: numbers, bools, None and short strings as they are (native
    dtypes in a column), anything else as its bounded `repr`."""
    kind = type(value)
    if kind in _CELL_SCALARS:
        return value
    if kind is str:
        return value if len(value) <= TEXT_LIMIT else bounded_text(value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()  # a numpy scalar: its Python number
    return bounded_repr(value)
