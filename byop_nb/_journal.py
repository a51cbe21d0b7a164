"""Journals: a history's rows on disk as JSON lines, appended as they are recorded, and read back.

One row per line, written with one `write()` to the operating system as the
row is recorded, so a killed process loses no call that had ended. Values JSON
cannot hold are written as described in [`byop_nb.history`][byop_nb.history].
A torn last line (a process killed mid-write) is removed before appending, and
skipped when reading. Nothing is ever pickled to disk.

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

__all__ = ["Journal", "read_rows"]


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
        # Unbuffered: each row goes to the operating system in one write() as it is recorded.
        self._file = io.FileIO(self.path, "a")

    def write(self, row: dict[str, Any]) -> None:
        """Append `row` as one JSON line.

        Raises:
            OSError: the write failed.
        """
        data = _json_line(row)
        file = self._file
        written = file.write(data) or 0
        while written < len(data):  # a short write (a huge row, a signal): write the rest
            written += file.write(data[written:]) or 0

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    return repr(value)


_ENCODER = json.JSONEncoder(default=_json_default)


def _json_line(row: dict[str, Any]) -> bytes:
    """`row` as one line of JSON, newline included."""
    try:
        text = _ENCODER.encode(row)
    except (TypeError, ValueError):  # non-text dict keys, a value that contains itself, ...
        safe: dict[str, Any] = {}
        for key, value in row.items():
            try:
                _ENCODER.encode(value)
                safe[key] = value
            except (TypeError, ValueError):
                safe[key] = repr(value)
        text = _ENCODER.encode(safe)
    return (text + "\n").encode("utf-8", "surrogatepass")


def read_rows(path: str | os.PathLike[str]) -> Iterable[dict[str, Any]]:
    """The rows a journal holds, oldest first (a torn last line is skipped).

    Raises:
        FileNotFoundError: there is no file at `path`.
        ValueError: a line other than the last is not a JSON object; the message names the line.
    """
    return _journal_rows(Path(path))


def _journal_rows(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="\n") as file:
        lines = file.readlines()
    last = len(lines)
    while last and not lines[last - 1].strip():
        last -= 1
    for number, line in enumerate(lines[:last], start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            if number == last:  # torn by a kill mid-write: that row never ended
                return
            raise ValueError(
                f"{path}:{number} is not a JSON line ({e}); only the last line of a journal may be torn"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number} holds {type(row).__name__}, not a JSON object: not a byop_nb journal")
        yield row


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
        start, end = 0, size
        while end > 0:
            begin = max(0, end - 65536)
            file.seek(begin)
            newline = file.read(end - begin).rfind(b"\n")
            if newline >= 0:
                start = begin + newline + 1
                break
            end = begin
        file.seek(start)
        tail = file.read()
        try:
            complete = isinstance(json.loads(tail), dict)
        except ValueError:
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
