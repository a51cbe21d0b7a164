"""Recording one row per call, and turning the rows into pandas DataFrames.

Every [`Task`][byop_nb.scheduling.Task] owns a [`History`][byop_nb.history.History]
(`task.history`) and records one row in it each time a call ends. Recording is
O(1): the row is normalised (arguments turned into their `repr`, the exception
into its type name and message, dict fields spread into columns) and its values
appended to per-column lists. The DataFrame is built only when asked for, by
`history.df()` (or `task.df()`), and cached until the next row arrives.

```python
from byop_nb.history import History

history = History("square")
history.record({"task": "square", "call": 1, "args": (3,), "kwargs": {}, "status": "returned",
                "result": 9, "submitted": 1700000000.0, "finished": 1700000000.5})
df = history.df()
assert df.loc[0, "result"] == 9 and df.loc[0, "duration"] == 0.5
```

## Columns

Always present, in this order and with these dtypes:

| column              | dtype                 | contents                                              |
|---------------------|-----------------------|-------------------------------------------------------|
| `task`              | `string`              | the task's name                                       |
| `call`              | `int64`               | call number, 1 for the task's first call (`Int64` if a row lacks it) |
| `args`              | `string`              | `repr` of the positional arguments, e.g. `"(3,)"` (bounded: below) |
| `kwargs`            | `string`              | `repr` of the keyword arguments, e.g. `"{'seed': 1}"` (bounded) |
| `status`            | `string`              | how the call ended (below)                            |
| `result`            | `object`              | the returned value (None if none, or a dict: below)   |
| `exception_type`    | `string`              | the exception's class name (`__qualname__`), e.g. `"ValueError"` |
| `exception_message` | `string`              | `str(exception)` (bounded)                            |
| `traceback`         | `string`              | the traceback text (the worker's, for remote calls; bounded: its end) |
| `submitted`         | `datetime64[ns, UTC]` | when the call was submitted                           |
| `finished`          | `datetime64[ns, UTC]` | when the call's end was recorded                      |
| `duration`          | `float64`             | `finished - submitted` in seconds                     |

A Task's `status` is `returned`, `exception`, `cancelled`, `memory_limit`,
`cpu_time_limit` or `wall_time_limit`; a Trial.Task records `success`, `fail`
and `crashed`. It is a plain `string` column rather than a `category`: the set of
statuses is open (Trial tasks add their own), and a string column compares,
filters and exports the same everywhere (`df[df.status == "exception"]`,
`df.status.value_counts()`).

Text in rows is bounded: `args`, `kwargs` and `exception_message` keep at most
about 2,000 characters. A longer message keeps its start and its last 500
characters (where advice often is) around a note of how long it was; a longer
argument text is cut, and ends with an ellipsis and the value's type and size
(`[0.0, 1.0, ...] … (list of 1000000 items)`); long
containers, strings and bytes are never turned into text whole, so a call with
a million-float argument costs no more to record than any other. A value whose
`repr` raises (a detached ORM object) is shown as
`<Type object: repr() raised Error: message>`; recording never fails because
of a value, and never ends a run.

Missing values are pandas' own: `<NA>` in `string` columns, `NaT` in the
timestamps, `NaN` in floats, None in `object` columns (`df.isna()` sees all of
them); never a sentinel string.

Further columns follow, in the order their keys were first recorded (a
spread field's columns where the field was):

* `result.<key>`, `config.<key>`, `info.<key>`: a dict-valued `result`,
  `config` or `info` field is spread over one column per key (one level deep;
  a row without the key has a missing value there). A dict result leaves
  `result` itself None.
* any other key of the recorded rows is a column of its own (a Trial.Task
  records `trial`, `wall_time`, `cpu_time`, ...).

These columns take the dtype pandas infers from their values (`int64`, or
`float64` when a value is missing; `bool`; `object` for mixed values), except
that columns of text are always `string`.

A recorded row is a mapping with the keys `task`, `call`, `args` (tuple),
`kwargs` (dict), `status`, `result`, `exception` (the exception object, or
None), `traceback`, `submitted` and `finished` (epoch seconds, `time.time()`),
plus any extra keys. A row may also give `exception_type` / `exception_message`
strings directly instead of `exception`. The exception object itself is not
kept (its frames would keep every local of the failed call alive).

## Exports

Use pandas' own writers. Parquet (`pip install byop_nb[parquet]`) keeps every
dtype except the `object` column `result`, which comes back with the type its
values share; CSV keeps only text and numbers. Either way,
[`restore_dtypes`][byop_nb.history.restore_dtypes] gives the frame read back
the dtypes above:

```python
import pandas as pd
from byop_nb.history import restore_dtypes

df = task.df()
df.to_parquet("calls.parquet")
back = restore_dtypes(pd.read_parquet("calls.parquet"))   # equals df
df.to_csv("calls.csv", index=False)
back = restore_dtypes(pd.read_csv("calls.csv"))           # equals df, for the limits below
```

Limits of CSV: an empty string reads back as missing, text that looks like a
number reads back as a number (a `result` of `"3"` becomes `3`), and only
numbers and text survive in `result`. Limits of Parquet: an `object` column
(`result`, and extra columns of mixed values) must hold values Arrow can store
as one type. [`exportable`][byop_nb.history.exportable] makes any frame
writable: such columns become text (each value's bounded `repr`, strings kept
as they are), the rest is untouched:

```python
from byop_nb.history import exportable

exportable(task.df()).to_parquet("calls.parquet")   # works for every history
```

## Journals

`history.stream_to(path)` appends every row to `path` as one JSON object per
line, written before the callbacks of its call run, so a kernel or process that is killed
loses no call that had ended. The keys are the column names above, except that
`duration` is left out and `submitted` / `finished` are epoch seconds.
Values JSON cannot hold are written as follows: tuples and sets as lists,
numpy values as numbers or lists, dates and times as ISO text, dicts with
keys other than text as their `repr()`, anything else as its `repr()`; NaN
and infinities as JSON's common extensions `NaN` / `Infinity`. Every line is
bounded: a string of more than 100,000 characters, a list, dict or array of
more than 10,000 items, or any value whose JSON would be longer, is written as
its bounded text (as above); every `repr()` is bounded too.

A write that fails (a full disk: `OSError(28)`) cuts the journal back to its
last complete line, so it stays readable and keeps every row written before;
the history then stops streaming, with a `RuntimeWarning` naming the file, and
keeps recording in memory (the run goes on). `stream_to` itself raises the
`OSError`, naming the file.
[`read_journal(path)`][byop_nb.history.read_journal] gives back the same
DataFrame as `history.df()` for the rows the journal holds (up to those
conversions). Nothing is ever pickled to disk.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byop_nb._frames import calls_frame, exportable
from byop_nb._journal import Journal, read_rows
from byop_nb._text import TRACEBACK_LIMIT, bounded_message, bounded_repr, bounded_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["History", "read_journal", "restore_dtypes", "exportable", "COLUMNS"]

COLUMNS: tuple[str, ...] = (
    "task",
    "call",
    "args",
    "kwargs",
    "status",
    "result",
    "exception_type",
    "exception_message",
    "traceback",
    "submitted",
    "finished",
    "duration",
)
"""The columns every `History.df()` starts with, in order."""

_STRING_COLUMNS = ("task", "args", "kwargs", "status", "exception_type", "exception_message", "traceback")
_TIME_COLUMNS = ("submitted", "finished")
# Keys that are not columns of their own: turned into other columns by _normalize or _build.
_NOT_EXTRA = frozenset(COLUMNS) | {"exception"}
# Dict-valued fields spread over "<field>.<key>" columns.
_SPREAD = ("result", "config", "info")


# -- recording -----------------------------------------------------------------


def _exception_message(exception: BaseException) -> str:
    try:
        message = str(exception)
    except Exception as e:  # a broken __str__ must not lose the row
        return f"<str() of the {type(exception).__qualname__} raised {type(e).__qualname__}>"
    return bounded_message(message)  # its start and its end: advice is often at the end


def _traceback(text: str | None) -> str | None:
    return text if text is None else bounded_text(text, TRACEBACK_LIMIT, keep_end=True)


def _normalize(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row as stored and journaled: text for args and the exception, dict fields spread.

    This runs once per ended call, in the scheduler's loop: it copies the row
    in C and does Python work only for the keys that need it.
    """
    normal = dict(row)
    args = normal.get("args")
    if args is not None and type(args) is not str:
        normal["args"] = bounded_repr(args)
    kwargs = normal.get("kwargs")
    if kwargs is not None and type(kwargs) is not str:
        normal["kwargs"] = bounded_repr(kwargs)
    exception = normal.pop("exception", None)
    if exception is not None:
        if isinstance(exception, BaseException):
            normal["exception_type"] = type(exception).__qualname__
            normal["exception_message"] = _exception_message(exception)
        else:
            normal["exception_message"] = bounded_text(str(exception))
    if normal.get("traceback") is not None:
        normal["traceback"] = _traceback(normal["traceback"])
    if isinstance(normal.get("result"), dict) or "config" in normal or "info" in normal:
        normal = _spread(normal)
    task = normal.get("task")
    if task is not None and type(task) is not str:
        normal["task"] = str(task)
    status = normal.get("status")
    if status is not None and type(status) is not str:
        normal["status"] = str(status)
    return normal


def _spread(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with its dict-valued result/config/info spread over "<field>.<key>" keys, in place of the field."""
    spread: dict[str, Any] = {}
    for field, value in row.items():
        if field in _SPREAD and isinstance(value, dict):
            if field == "result":
                spread["result"] = None
            for key, sub_value in value.items():
                spread[f"{field}.{key}"] = sub_value
        else:
            spread[field] = value
    return spread


class History:
    """The ended calls of one task, one row each, in the order they ended.

    Args:
        name: a name for reprs (a Task's history is named after the task).

    Example:
        ```python
        from byop_nb.scheduling import Scheduler, Task

        def square(x: int) -> int:
            return x * x

        scheduler = Scheduler.with_threads(2)
        task = Task(square, scheduler)
        task.history.stream_to("square.jsonl")   # optional: a journal on disk

        @scheduler.on_start
        def launch() -> None:
            for x in range(3):
                task(x)

        scheduler.run()
        df = task.history.df()      # 3 rows; same as task.df()
        df[["call", "args", "status", "result", "duration"]]
        ```

    The columns and their dtypes are described in [`byop_nb.history`][byop_nb.history].
    """

    def __init__(self, name: str = "history") -> None:
        self.name = name
        self._rows: list[dict[str, Any]] = []
        # Bookkeeping done on reading, not on recording: rows per status for rows[:_tallied], and for
        # rows[:_shaped] the distinct key sequences in the order first seen (they give the columns in
        # order). Apart: a run's end asks for the statuses of every row it added, only df() for shapes.
        self._tallied = 0
        self._shaped = 0
        self._tally_lock = threading.Lock()
        self._shapes: dict[tuple[str, ...], None] = {}
        self._status_counts: dict[str, int] = {}
        self._frame: pd.DataFrame | None = None
        self._frame_rows = -1
        self._journal: Journal | None = None

    # -- recording ---------------------------------------------------------
    def record(self, row: Mapping[str, Any], *, flush: bool = True) -> None:
        """Append one row: O(1) in the number of rows already recorded.

        The row's keys and what becomes of them are described in
        [`byop_nb.history`][byop_nb.history]. When the history streams to a
        journal, the row is written and flushed before `record` returns.

        ```python
        history.record({"task": "f", "call": 1, "args": (), "kwargs": {}, "status": "returned",
                        "result": {"loss": 0.1}, "submitted": t0, "finished": t1})
        # -> a "result.loss" column
        ```

        A journal write that fails (a full disk) does not raise: the history stops
        streaming with a `RuntimeWarning` naming the file, keeps the row in memory,
        and leaves the journal readable (cut back to its last complete line).
        """
        self._store(_normalize(row), flush)

    def record_call(
        self,
        task: str,
        call: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        status: str,
        result: Any,
        exception: BaseException | None,
        traceback: str | None,
        submitted: float,
        finished: float,
        arguments: dict[str, Any] | None = None,
        *,
        flush: bool = True,
    ) -> None:
        """`record` of a Task's row, from its fields: the same row, built without a mapping to normalise.

        `arguments` are the call's arguments by parameter, as `arg.<parameter>` keys
        (cell values: see `byop_nb._text.cell_value`), added to the row as they are.
        With `flush=False` the row reaches the journal at the next `flush()` (the
        scheduler flushes once per batch of ended calls, before their callbacks run).

        ```python
        history.record_call("f", 1, (3,), {}, "returned", 9, None, None, t0, t1)
        # stores what history.record({"task": "f", "call": 1, "args": (3,), ...}) stores
        ```
        """
        normal = {
            "task": task,
            "call": call,
            "args": bounded_repr(args) if args else "()",
            "kwargs": bounded_repr(kwargs) if kwargs else "{}",
            "status": status,
            "result": result,
            "traceback": None if traceback is None else _traceback(traceback),
            "submitted": submitted,
            "finished": finished,
        }
        if exception is not None:
            normal["exception_type"] = type(exception).__qualname__
            normal["exception_message"] = _exception_message(exception)
        if arguments:
            normal.update(arguments)
        if isinstance(result, dict):
            normal = _spread(normal)
        self._store(normal, flush)

    def _store(self, normal: dict[str, Any], flush: bool) -> None:
        """Append a normalised row, and write it to the journal if there is one (with `flush=False`:
        at the next `flush()`)."""
        self._rows.append(normal)
        journal = self._journal
        if journal is not None:
            journal.add(normal)
            if flush:
                self.flush()

    def flush(self) -> None:
        """Write the rows recorded since the last flush to the journal (never raises: a failed write
        stops the streaming, loudly; the rows stay in memory)."""
        journal = self._journal
        if journal is not None:
            try:
                journal.flush()
            except OSError as e:
                self._stop_streaming(journal, e)

    def _stop_streaming(self, journal: Journal, error: OSError) -> None:
        """A journal write failed (a full disk): stop streaming, loudly; the run and the rows go on.

        Recording happens inside runs, and must never end one: the row is kept in
        memory, the journal keeps what it held (cut back to its last complete line),
        and a warning says so, once.
        """
        self._journal = None
        journal.close()
        warnings.warn(
            f"History {self.name!r} stopped streaming to its journal {str(journal.path)!r}: {error}. The journal "
            f"holds the rows written before this one and stays readable; all {len(self._rows)} rows are kept in "
            "memory (history.df()). Free space and call history.stream_to(<new path>) to write them all again.",
            RuntimeWarning,
            stacklevel=3,
        )

    def _tally(self) -> int:
        """Bring the status counts up to date; returns the number of rows they cover."""
        with self._tally_lock:
            rows = self._rows
            n = len(rows)
            # Counted in C (no Python per row): a run's end counts every row it added.
            added = collections.Counter(map(dict.get, rows[self._tallied : n], itertools.repeat("status")))
            counts = self._status_counts
            for status, count in added.items():
                if status is not None:
                    counts[status] = counts.get(status, 0) + count
            self._tallied = n
            return n

    def _shape(self, n: int) -> tuple[tuple[str, ...], ...]:
        """The key shapes of rows[:n] (n at least those already shaped), in the order first seen."""
        with self._tally_lock:
            rows, shapes = self._rows, self._shapes
            last = None
            for index in range(self._shaped, n):
                keys = rows[index].keys()
                if keys != last:  # rows of one task mostly share their keys: compared in C
                    shapes[tuple(keys)] = None
                    last = keys
            self._shaped = max(self._shaped, n)
            return tuple(shapes)

    def __len__(self) -> int:
        return len(self._rows)

    def stored_rows(self, start: int, stop: int) -> list[dict[str, Any]]:
        """The stored rows `start` to `stop` themselves, not copies: read them, never change them.

        For readers that read many rows often (the Dashboard reads every ended call, a task's
        failure summary scans its run's rows; a copy each would double their cost). `rows`
        and `row(i)` give copies.

        ```python
        for row in task.history.stored_rows(0, len(task.history)):
            print(row["status"])
        ```
        """
        return self._rows[start:stop]

    @property
    def status_counts(self) -> dict[str, int]:
        """Rows per status, e.g. `{"returned": 98, "exception": 2}` (without building a DataFrame)."""
        self._tally()
        return dict(self._status_counts)

    def row(self, index: int) -> dict[str, Any]:
        """A copy of the row at `index` (negative counts from the end) as stored and journaled.

        Stored means normalised: `args` and `kwargs` as text, the exception as
        `exception_type` / `exception_message`, dict fields spread.

        Raises:
            IndexError: there is no such row.
        """
        try:
            return dict(self._rows[index])
        except IndexError:
            raise IndexError(f"row {index} does not exist; the history has {len(self._rows)} rows") from None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Copies of every row as stored (O(rows); use `df()` for analysis)."""
        return [dict(row) for row in self._rows]

    # -- DataFrames --------------------------------------------------------
    def df(self) -> pd.DataFrame:
        """The rows as a pandas DataFrame, columns and dtypes as in [`byop_nb.history`][byop_nb.history].

        Built on first use and cached until another row is recorded; each call
        returns a frame of its own, so changing it never changes the next one.
        In a notebook it shows the columns a person reads first (call, status,
        `arg.*`, results, the error, duration, finished) and names the others;
        every column is in the frame (see `byop_nb._frames`).

        ```python
        df = task.history.df()
        df[df.status == "exception"][["args", "exception_type", "exception_message"]]
        df["result.loss"].min()        # for calls that returned dicts with a "loss"
        ```
        """
        n = self._tally()
        if self._frame is None or self._frame_rows != n:
            self._frame = _build(self._rows[:n], self._shape(n))
            self._frame_rows = n
        return calls_frame(_own_copy(self._frame))

    # -- journal -----------------------------------------------------------
    def stream_to(self, path: str | os.PathLike[str]) -> None:
        """Append every row, from now on and already recorded, to the journal file `path`.

        Each row is one JSON line, handed to the operating system before the
        callbacks of its call run (the rows of a batch of calls that ended
        together in one write), so a killed process loses no call that had ended. Rows already
        recorded are written first. The file is appended to (create a new path
        to start a fresh journal); a torn last line left by a process killed
        while writing is removed first, with a warning. Calling `stream_to`
        again with the same path does nothing; with another path, the history
        switches to that file (writing every row to it). Read a journal back
        with [`read_journal`][byop_nb.history.read_journal].

        ```python
        task.history.stream_to("results/square.jsonl")
        ...
        from byop_nb.history import read_journal
        df = read_journal("results/square.jsonl")
        ```

        Raises:
            OSError: the file cannot be opened or written (the message names it); the
                history then does not stream, and the file ends with a complete line.
        """
        target = Path(path).expanduser().resolve()
        if self._journal is not None and self._journal.path == target:
            return
        self.close()
        journal = Journal(target)
        try:
            for row in self._rows:
                journal.write(row)
        except BaseException:
            journal.close()
            raise
        self._journal = journal

    @property
    def journal(self) -> Path | None:
        """The file this history streams to, or None."""
        return self._journal.path if self._journal is not None else None

    def close(self) -> None:
        """Stop streaming to the journal and close its file (rows stay recorded in memory)."""
        journal, self._journal = self._journal, None
        if journal is not None:
            journal.close()

    # -- display -----------------------------------------------------------
    def __repr__(self) -> str:
        counts = ", ".join(f"{status}={n}" for status, n in self.status_counts.items())
        journal = f", journal={str(self.journal)!r}" if self._journal is not None else ""
        return f"History({self.name!r}, rows={len(self._rows)}{': ' + counts if counts else ''}{journal})"

    def _repr_html_(self) -> str:
        """Compact HTML for notebooks: rows per status and the last few rows."""
        from byop_nb import _html

        return _html.history_html(self)


# -- building DataFrames ---------------------------------------------------------


def _own_copy(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    # With copy-on-write (always on from pandas 3) a shallow copy is already independent.
    cow = int(pd.__version__.split(".")[0]) >= 3 or bool(pd.get_option("mode.copy_on_write"))
    return frame.copy(deep=not cow)


def _build(rows: list[dict[str, Any]], shapes: Iterable[tuple[str, ...]]) -> pd.DataFrame:
    """The DataFrame of `rows` (normalised); `shapes` gives the keys in the order first seen."""
    import numpy as np
    import pandas as pd

    def column(name: str) -> list[Any]:
        return [row.get(name) for row in rows]

    data: dict[str, Any] = {}
    for name in _STRING_COLUMNS:
        data[name] = _strings(pd, column(name))
    calls = column("call")
    try:
        data["call"] = np.array(calls, dtype=np.int64)
    except (TypeError, ValueError):  # a row without a call number
        data["call"] = pd.array(calls, dtype="Int64")
    # fromiter keeps list and tuple results as single values (np.array would make a 2-D array of them)
    data["result"] = np.fromiter(column("result"), dtype=object, count=len(rows))
    seconds = {name: np.array(column(name), dtype=np.float64) for name in _TIME_COLUMNS}
    for name, values in seconds.items():
        data[name] = pd.to_datetime(values, unit="s", utc=True).as_unit("ns")
    data["duration"] = seconds["finished"] - seconds["submitted"]
    frame = pd.DataFrame({name: data[name] for name in COLUMNS})

    extra_names = dict.fromkeys(key for shape in shapes for key in shape if key not in _NOT_EXTRA)
    if extra_names:
        extras = pd.DataFrame({name: _extra_column(pd, column(name)) for name in extra_names}, index=frame.index)
        frame = pd.concat([frame, extras], axis=1)
    return frame


def _strings(pd: Any, values: list[Any]) -> Any:
    """`values` (text or None) as a `string` array; through pyarrow directly when that is the storage."""
    if pd.StringDtype().storage == "pyarrow":
        import pyarrow as pa

        try:  # about 5x faster than pd.array(values, dtype="string") for 100k values
            return pd.array(pa.array(values, type=pa.large_string()), dtype="string")
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a value that is not text
            pass
    return pd.array([v if v is None or isinstance(v, str) else str(v) for v in values], dtype="string")


def _extra_column(pd: Any, values: list[Any]) -> Any:
    if pd.api.types.infer_dtype(values, skipna=True) == "string":
        return pd.array(values, dtype="string")
    series = pd.Series(values, dtype=None)
    if series.dtype == object:
        # pandas' inference keeps NaN and None apart in object columns; None is the one missing value here.
        series = series.where(series.notna(), None)
    return series


# -- reading back ------------------------------------------------------------------


def read_journal(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The DataFrame of the rows a journal written by `History.stream_to` holds.

    Gives the same frame `history.df()` gave for those rows (values JSON cannot
    hold come back as described in [`byop_nb.history`][byop_nb.history]). A
    torn last line, left when the writing process was killed mid-row, is
    skipped, whatever it holds (cut JSON, cut UTF-8, garbage).

    ```python
    from byop_nb.history import read_journal

    df = read_journal("results/square.jsonl")
    ```

    Raises:
        FileNotFoundError: there is no file at `path`.
        ValueError: a line other than the last is not a JSON object (not UTF-8,
            not JSON, nested too deep: the file is not a journal, or was damaged);
            the message names the line.
    """
    history = History(Path(path).name)
    history._rows.extend(read_rows(path))
    return history.df()


def restore_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Give a frame read back with `pd.read_csv` or `pd.read_parquet` the dtypes `History.df()` has.

    Text columns become `string`, `call` `int64` (`Int64` with missing values),
    `submitted` / `finished` `datetime64[ns, UTC]`, `duration` `float64`, and
    `result` `object` with None for missing values. Of the other columns, text
    ones become `string`, `object` ones get None for missing values, the rest
    keep their dtype. Returns a new frame.

    ```python
    import pandas as pd
    from byop_nb.history import restore_dtypes

    task.df().to_csv("calls.csv", index=False)
    df = restore_dtypes(pd.read_csv("calls.csv"))
    ```
    """
    import pandas as pd

    out = df.copy()
    for name in out.columns:
        column = out[name]
        if name in _STRING_COLUMNS:
            out[name] = column.astype("string")
        elif name == "call":
            out[name] = column.astype("int64" if not column.isna().any() else "Int64")
        elif name in _TIME_COLUMNS:
            out[name] = pd.to_datetime(column, utc=True, format="ISO8601").dt.as_unit("ns")
        elif name == "duration":
            out[name] = column.astype("float64")
        elif name == "result":
            values = column.astype(object)
            out[name] = values.where(values.notna(), None)
        elif pd.api.types.infer_dtype(column, skipna=True) == "string":
            out[name] = column.astype("string")
        elif column.dtype == object:
            out[name] = column.where(column.notna(), None)
    return out
