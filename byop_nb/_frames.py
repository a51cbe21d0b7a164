"""How a history's DataFrame shows in a notebook: the columns a person reads first, in a cell's width.

`History.df()` returns a plain pandas DataFrame (every column, every dtype)
whose notebook display ([`calls_frame`][byop_nb._frames.calls_frame]) shows a
readable view: `call`, `status`, the `arg.*` columns, the results,
`exception_type` and `exception_message` (a message longer than 300 characters
shown by its start and its end), `duration` and the time it finished (short), and says which columns it left
out. Frames made from it that keep every column (`.tail()`, `.head()`, a filter
of rows, a sort, a copy) show the same readable view; a frame with columns of
your choosing (`df[[...]]`) displays as pandas does, and `print(df)` shows
everything.

```python
df = task.df()          # a cell shows call, status, arg.x, result, exception_type, exception_message, ...
df.tail()               # the same view, of the last 5 rows
df.columns              # all of them, as before: task, call, args, ..., traceback, submitted, ...
df[["call", "traceback"]]   # the columns you picked, shown whole
```

How: the frame carries its columns in `df.attrs` (which pandas hands on to the
frames made from it), and in an IPython kernel a display formatter for
DataFrames shows a frame whose columns are still those as the readable view;
every other frame it hands back to the formatter that was there before, or to
pandas' own display.

pandas is imported when the first frame is made, never by `import byop_nb`.
"""

from __future__ import annotations

import warnings
import weakref
from typing import TYPE_CHECKING, Any, cast

from byop_nb import _jupyter
from byop_nb._text import bounded_repr, clipped

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["calls_frame", "readable", "exportable"]

_FIRST = ("call", "status")
_GROUPS = ("arg.", "config.")
_RESULTS = ("result.",)
_LAST = ("duration",)
_MESSAGE_WIDTH = 300
"""Characters of an exception's message the view shows (its start and its end around an ellipsis)."""


def readable(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The view shown for `df`, and the names of the columns it leaves out."""
    import pandas as pd

    columns = list(df.columns)
    chosen: list[str] = [c for c in _FIRST if c in columns]
    if "task" in columns and df["task"].nunique(dropna=True) > 1:
        chosen.insert(0, "task")
    if "trial" in columns:
        chosen.append("trial")
    chosen += [c for prefix in _GROUPS for c in columns if c.startswith(prefix)]
    if "result" in columns and df["result"].notna().any():
        chosen.append("result")
    chosen += [c for prefix in _RESULTS for c in columns if c.startswith(prefix)]
    if "exception_type" in columns and df["exception_type"].notna().any():
        chosen += ["exception_type", "exception_message"]  # real columns: df["exception_message"] finds them
    view = pd.DataFrame(df[chosen])
    if "exception_message" in view.columns:  # long messages keep their end, where advice often is
        view["exception_message"] = df["exception_message"].map(
            lambda message: clipped(message, _MESSAGE_WIDTH) if isinstance(message, str) else message
        )
    shown_extra: set[str] = set()
    chosen += [c for c in _LAST if c in columns]
    for column in _LAST:
        if column in columns:
            view[column] = df[column]
    if "finished" in columns:
        view["finished"] = df["finished"].dt.strftime("%H:%M:%S")
        shown_extra.add("finished")
    left_out = [c for c in columns if c not in chosen and c not in shown_extra]
    return view, left_out


class _ReadableHTML:
    """A history frame's `_repr_html_`: the readable view and a line naming the columns left out."""

    __slots__ = ("_frame",)

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = weakref.ref(frame)  # no cycle: the frame holds this

    def __call__(self) -> str | None:
        frame = self._frame()
        return None if frame is None else _readable_html(frame)


def _readable_html(frame: pd.DataFrame) -> str | None:
    """The readable view of `frame` as HTML, with a line naming the columns it leaves out."""
    view, left_out = readable(frame)
    import pandas as pd

    with pd.option_context("display.max_colwidth", _MESSAGE_WIDTH + 10):  # pandas' 50 would cut messages
        shown = cast(Any, view)._repr_html_()  # pandas' own notebook display of the view
    return None if shown is None else shown + _footer(left_out, html=True)


_MARK = "byop_nb.columns"
"""The `df.attrs` key of a history frame's columns: frames made from it that still have them display readably."""


def calls_frame(df: pd.DataFrame) -> pd.DataFrame:
    """`df` itself, given the readable notebook display; it stays a plain `pandas.DataFrame` in every
    other way. Frames made from it that keep every column display readably too (in an IPython
    kernel); frames with other columns display as pandas does."""
    df.attrs[_MARK] = tuple(df.columns)
    object.__setattr__(df, "_repr_html_", _ReadableHTML(df))  # IPython looks it up on the object
    object.__setattr__(df, "to_parquet", _ToParquet(df))
    _show_derived_frames_readably()
    return df


def _show_derived_frames_readably() -> None:
    """In an IPython kernel, display frames made from a history frame readably (once per shell)."""
    _jupyter.show_dataframes_with(_derived_html)


def _derived_html(df: pd.DataFrame) -> str | None:
    """A frame made from a history frame that still has its columns, readably; None for others."""
    return _readable_html(df) if df.attrs.get(_MARK) == tuple(df.columns) else None


def _footer(left_out: list[str], *, html: bool) -> str:
    if not left_out:
        return ""
    text = f"{len(left_out)} more columns in the DataFrame: {', '.join(left_out)}"
    return f'<p style="font-size:11px;opacity:.7">{text}</p>' if html else f"\n[{text}]"


# -- exports ----------------------------------------------------------------------------------


class _ToParquet:
    """A history frame's `to_parquet`: pandas' own; when Arrow cannot store a column's mixed values
    (a `result` of numbers and strings), the frame's `exportable()` copy instead, with a warning."""

    __slots__ = ("_frame",)

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = weakref.ref(frame)  # no cycle: the frame holds this

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import pandas as pd

        frame = self._frame()
        assert frame is not None  # called through the frame, which is alive
        try:
            return pd.DataFrame.to_parquet(frame, *args, **kwargs)
        except Exception as error:
            mixed = [c for c in frame.columns if frame[c].dtype == object and not _arrow_takes(frame[c])]
            if not mixed or type(error).__module__.split(".")[0] != "pyarrow":
                raise
        warnings.warn(
            f"to_parquet: the column(s) {mixed} hold values of several types, which Parquet cannot store as "
            "one; they were written as text (each value's repr; strings as they are), the rest as it is: "
            "what byop_nb.history.exportable(df).to_parquet(...) writes. Read the file back with "
            "byop_nb.history.restore_dtypes(pd.read_parquet(...)).",
            UserWarning,
            stacklevel=2,
        )
        return pd.DataFrame.to_parquet(exportable(frame), *args, **kwargs)


def exportable(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` that Parquet (and CSV) can write, whatever the calls returned.

    An `object` column whose values Arrow cannot store as one type (a `result`
    column of ints and strings, of objects of your own classes, ...) becomes a
    `string` column: strings stay as they are, other values become their
    bounded `repr`, missing values stay missing. Other columns are untouched, so
    a history whose columns already export gives an equal frame. Read the file
    back with `restore_dtypes(pd.read_parquet(...))`.

    ```python
    from byop_nb.history import exportable

    exportable(task.df()).to_parquet("calls.parquet")
    ```
    """
    import pandas as pd

    out = df.copy()
    for name in out.columns:
        column = out[name]
        if column.dtype != object or _arrow_takes(column):
            continue
        out[name] = pd.array(
            [None if v is None else v if isinstance(v, str) else bounded_repr(v) for v in column], dtype="string"
        )
    return out


def _arrow_takes(column: Any) -> bool:
    """Whether Arrow stores the values of `column` as one type (without pyarrow: plain values of one type)."""
    try:
        import pyarrow as pa
    except ImportError:
        kinds = {type(v) for v in column if v is not None}
        return len(kinds) <= 1 and kinds <= {int, float, bool, str, bytes}
    try:
        pa.array(column.tolist(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        return False
    return True
