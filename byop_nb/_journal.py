"""Journals: a history's rows on disk as JSON lines, appended as they are recorded, and read back.

One row per line. The rows of the calls a scheduler reports together (one
batch of ended calls) go to the operating system in one `write()`, before any
callback sees those calls; a row recorded outside a run is written at once. So
a killed process loses no call whose end was reported. Values JSON
cannot hold are written as described in [`byop_nb.history`][byop_nb.history];
every line is bounded (a huge value is written as bounded text). A torn last
line (a process killed mid-write) is removed before appending, and skipped when
reading. A write that fails (a full disk) cuts the file back to its last
complete line before the error is raised, so the journal stays readable.
Nothing is ever pickled to disk.

[`byop_nb.history.read_journal`][byop_nb.history.read_journal] reads a journal
back into a DataFrame; this module knows only lines and files.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from byop_nb._text import TEXT_LIMIT, bounded_repr, bounded_text

__all__ = ["Journal", "read_rows"]

_JSON_ITEMS = 10_000  # items of a list, dict or array written as JSON; a longer one as bounded text
_JSON_TEXT = 100_000  # characters of a string, or of one value's JSON, written as they are
_LINE = 1_000_000  # characters of a line before its values are looked at one by one


class Journal:
    """An open journal file that rows are appended to.

    Opening repairs a torn last line left by a killed writer, then appends.

    Raises:
        OSError: the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _repair_torn_tail(self.path)
        # Unbuffered: each flush goes to the operating system in one write().
        self._file = io.FileIO(self.path, "a")
        self._pending: list[bytes] = []

    def write(self, row: dict[str, Any]) -> None:
        """Append `row` as one JSON line, now.

        Raises:
            OSError: the write failed (a full disk, ...); the message names the file. What was
                written of the line is cut off again, so the journal ends with a complete line.
        """
        self.add(row)
        self.flush()

    def add(self, row: dict[str, Any]) -> None:
        """Encode `row` as one JSON line, to be written at the next `flush()`."""
        self._pending.append(_json_line(row))

    def flush(self) -> None:
        """Write the lines added since the last flush, in one `write()` (the scheduler flushes once per
        batch of ended calls, before any callback of the batch runs).

        Raises:
            OSError: as `write`; the lines not written are dropped (the rows stay in memory).
        """
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        file = self._file
        try:
            written = file.write(data) or 0
            while written < len(data):  # a short write (a huge row, a signal): write the rest
                written += file.write(data[written:]) or 0
        except OSError as e:
            try:
                _cut_to_last_line(self.path, file)
            except OSError:
                pass
            raise OSError(e.errno, f"{e.strerror}; the row was not written to the journal", str(self.path)) from e

    def close(self) -> None:
        """Write what is pending, and close the file (idempotent)."""
        try:
            if not self._file.closed:
                self.flush()
        finally:
            self._file.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return list(value) if len(value) <= _JSON_ITEMS else bounded_repr(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist() if getattr(value, "size", 1) <= _JSON_ITEMS else bounded_repr(value)
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        try:
            return isoformat()
        except Exception:
            pass
    return bounded_repr(value)


_ENCODER = json.JSONEncoder(default=_json_default)


def _bounded(value: Any) -> Any:
    """`value`, or bounded text in its place when it is a long string or a long container."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= _JSON_TEXT else bounded_text(value, TEXT_LIMIT)
    if kind in (list, dict, tuple, set, frozenset) and len(value) > _JSON_ITEMS:
        return bounded_repr(value)
    return value


def _orjson_dumps() -> Any:
    """orjson's `dumps` writing one line (a compiled encoder, several times faster than json's), or
    None without orjson."""
    try:
        import orjson
    except ImportError:  # the standard library's encoder does all
        return None
    option = orjson.OPT_APPEND_NEWLINE
    return lambda row: orjson.dumps(row, option=option)


_fast_dumps: Any = _orjson_dumps()


def _json_line(row: dict[str, Any]) -> bytes:
    """`row` as one line of JSON, newline included; never raises, and never megabytes long.

    The common row is encoded by orjson: the journal encodes one row per ended call in the
    scheduler's loop, where orjson costs about a fifth of json's time, and its lines read back
    (`json.loads`) as json's do. The standard encoder takes what orjson refuses (a set, a numpy
    value, an int beyond 64 bits, a lone surrogate, ...) and what it would write otherwise: a float
    that is not finite (orjson writes null, json NaN: a line with more nulls than the row has None
    values), and anything long.
    """
    if _fast_dumps is not None:
        try:
            line: bytes = _fast_dumps(row)
        except Exception:
            pass
        else:
            nulls = line.count(b"null")
            if (not nulls or nulls == [*row.values()].count(None)) and len(line) <= _JSON_TEXT:
                return line
    try:  # the common row: short, every value JSON can hold
        short = _ENCODER.encode(row)
        if len(short) <= _JSON_TEXT:
            return (short + "\n").encode("utf-8", "surrogatepass")
    except Exception:
        pass
    row = {key: _bounded(value) for key, value in row.items()}
    text: str | None
    try:
        text = _ENCODER.encode(row)
    except Exception:  # non-text dict keys, a value that contains itself or nests too deep, ...
        text = None
    if text is None or len(text) > _LINE:
        safe: dict[str, Any] = {}
        for key, value in row.items():
            try:
                encoded = _ENCODER.encode(value)
                safe[key] = value if len(encoded) <= _JSON_TEXT else bounded_repr(value)
            except Exception:
                safe[key] = bounded_repr(value)
        text = _ENCODER.encode(safe)
    return (text + "\n").encode("utf-8", "surrogatepass")


def read_rows(path: str | os.PathLike[str]) -> Iterable[dict[str, Any]]:
    """The rows a journal holds, oldest first (a torn last line, of any kind, is skipped).

    Raises:
        FileNotFoundError: there is no file at `path`.
        ValueError: a line other than the last is not a JSON object (not UTF-8, not JSON,
            nested too deep, not an object); the message names the line. Also a file whose
            only line is not even the start of a JSON object: it is not a journal.
    """
    return _journal_rows(Path(path))


def _journal_rows(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, "rb") as file:
        lines = file.read().split(b"\n")
    last = len(lines)
    while last and not lines[last - 1].strip():
        last -= 1
    for number, line in enumerate(lines[:last], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)  # bytes: decoded as UTF-8, a UnicodeDecodeError is a ValueError
        except (ValueError, RecursionError) as e:
            # torn by a kill or a full disk mid-write: that row never ended (a lone line must look like a row)
            if number == last and (number > 1 or line.lstrip().startswith(b"{")):
                return
            raise ValueError(
                f"{path}:{number} is not a JSON line ({_why(e)}): the file is not a byop_nb journal, or was "
                "damaged; only the last line of a journal may be torn"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number} holds {type(row).__name__}, not a JSON object: not a byop_nb journal")
        yield row


def _why(error: BaseException) -> str:
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text at byte {error.start}"
    if isinstance(error, RecursionError):
        return "nested too deep to read"
    return str(error)


def _last_line_end(file: Any, size: int) -> int:
    """Where the file's last complete line ends (after its newline), 0 if it has none; reads backwards."""
    end = size
    while end > 0:
        begin = max(0, end - 65536)
        file.seek(begin)
        newline = file.read(end - begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


def _cut_to_last_line(path: Path, file: io.FileIO) -> None:
    """Cut what a failed write left after the last complete line of the journal `file` (open to append)."""
    fd = file.fileno()
    size = os.fstat(fd).st_size
    with open(path, "rb") as reader:
        keep = _last_line_end(reader, size)
    if keep < size:
        os.ftruncate(fd, keep)


def _repair_torn_tail(path: Path) -> None:
    """Make `path` end with a newline: drop a torn last line, or end a complete one."""
    try:
        file = open(path, "r+b")
    except FileNotFoundError:
        return
    with file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return
        start = _last_line_end(file, size)
        file.seek(start)
        tail = file.read()
        try:
            complete = isinstance(json.loads(tail), dict)
        except (ValueError, RecursionError):
            complete = False
        if complete:
            file.seek(size)
            file.write(b"\n")
            return
        file.truncate(start)
    warnings.warn(
        f"the journal {path} ended with a torn line ({size - start} bytes; a process was killed while "
        "writing it); the torn line was removed before appending",
        RuntimeWarning,
        stacklevel=4,  # the user's call of History.stream_to
    )
