"""The Dashboard's live table of calls: the best few and the latest few, with their parameters and metrics.

Like the trial table Ray Tune prints: one row per call (a trial, for a
`Trial.Task`), its parameters (`config.<key>` of a trial, `arg.<name>` of a
plain call), its status, its metrics (`result.<key>`, or the result itself
when it is a number) and how long it took. The rows are the history's own
(read, never copied), collected by [`LiveData`][byop_nb.notebook.plots.LiveData]
as they end; building the table costs O(rows shown). Needs no ipywidgets.

```python
from byop_nb.notebook._table import trials_table_html
from byop_nb.notebook.plots import LiveData

html = trials_table_html(LiveData())
assert "no results yet" in html
```
"""

from __future__ import annotations

import html
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from byop_nb._html import row_error

if TYPE_CHECKING:
    from byop_nb.notebook.plots import LiveData

__all__ = ["trials_table_html", "TABLE_CSS"]

MAX_PARAMETERS = 6
"""A table shows at most this many parameter columns (the first ones), and as many metrics."""

TABLE_CSS = (
    "<style>"
    ".byop-trials{border-collapse:collapse;font-size:12px;margin:4px 0}"
    ".byop-trials th,.byop-trials td{padding:1px 8px;text-align:right;"
    "border-bottom:1px solid rgba(128,128,128,.25);white-space:nowrap}"
    ".byop-trials td.byop-text{text-align:left;max-width:24em;overflow:hidden;text-overflow:ellipsis}"
    ".byop-trials tr.byop-group th{text-align:left;font-weight:normal;font-style:italic;opacity:.75}"
    ".byop-trials td.byop-bad{color:#b71c1c}"
    ".byop-trials td.byop-quiet{color:#757575}"
    ".byop-trials td.byop-metric{font-weight:bold}"
    "</style>"
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "\u2026"


def _keys(rows: Iterable[Mapping[str, Any]], prefixes: Sequence[str]) -> list[str]:
    """The row keys starting with one of `prefixes`, in the order first seen."""
    keys: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith(tuple(prefixes)):
                keys.setdefault(key, None)
    return list(keys)


# A failure's status is red, a success's plain; any other (a cancelled call, a pruned trial) is grey.
_STATUS_CLASS = {"failure": " byop-bad", "success": ""}


def trials_table_html(data: LiveData, *, metric: str | None = None) -> str:
    """The best rows of the latest run (by `data`'s metric, in its direction) and its latest rows, as HTML.

    `metric` names the column to put first among the metrics (default: `data.metric`).
    """
    top = [row for _, _, row in data.top]
    latest = list(reversed(data.latest))  # newest first
    if not top and not latest:
        return '<div class="byop-trials-empty">no results yet</div>'
    rows = [*top, *latest]
    several = len({row.get("task") for row in rows}) > 1
    trials = data.trials
    parameters = _keys(rows, ("config.",)) if trials else []
    parameters = (parameters or _keys(rows, ("arg.",)))[:MAX_PARAMETERS]
    metrics = _keys(rows, ("result.",))
    chosen = metric or data.metric
    if chosen is not None and f"result.{chosen}" in metrics:
        metrics.remove(f"result.{chosen}")
        metrics.insert(0, f"result.{chosen}")
    metrics = metrics[:MAX_PARAMETERS]
    plain_result = any(isinstance(row.get("result"), numbers.Real) for row in rows)
    unit = "trial" if trials else "call"
    head = [unit] + (["task"] if several else []) + ["status"]
    names = [key.split(".", 1)[1] for key in parameters]
    head += names
    # a metric named as a parameter (a result that repeats its argument) keeps its prefix: "result.x"
    head += [key if key.split(".", 1)[1] in names else key.split(".", 1)[1] for key in metrics]
    head += ["result"] if plain_result else []
    head += ["seconds"]
    width = len(head)

    def line(row: Mapping[str, Any]) -> str:
        name = row.get("trial") if trials and row.get("trial") is not None else row.get("call", "")
        cells = [f'<td class="byop-text">{_e(name)}</td>']
        if several:
            cells.append(f'<td class="byop-text">{_e(row.get("task", ""))}</td>')
        status = str(row.get("status", ""))
        error = row_error(row)
        title = f' title="{_e(error)}"' if error else ""
        css = _STATUS_CLASS.get(data.outcomes.get(status, ""), " byop-quiet")
        cells.append(f'<td class="byop-text{css}"{title}>{_e(status)}</td>')
        cells += [f"<td>{_e(_value_text(row.get(key)))}</td>" for key in parameters]
        for i, key in enumerate(metrics):
            css = ' class="byop-metric"' if i == 0 and chosen is not None and key == f"result.{chosen}" else ""
            cells.append(f"<td{css}>{_e(_value_text(row.get(key)))}</td>")
        if plain_result:
            result = row.get("result")
            cells.append(f"<td>{_e(_value_text(result)) if isinstance(result, numbers.Real) else ''}</td>")
        submitted, finished = row.get("submitted"), row.get("finished")
        took = finished - submitted if isinstance(submitted, float) and isinstance(finished, float) else None
        cells.append(f"<td>{'' if took is None else f'{took:.2f}'}</td>")
        return f"<tr>{''.join(cells)}</tr>"

    direction = f"best ({data.best})"
    parts = [f"<tr>{''.join(f'<th>{_e(name)}</th>' for name in head)}</tr>"]
    if top:
        what = f"{direction} {len(top)} of this run by {chosen or 'result'}"
        parts.append(f'<tr class="byop-group"><th colspan="{width}">{_e(what)}</th></tr>')
        parts += [line(row) for row in top]
    parts.append(f'<tr class="byop-group"><th colspan="{width}">latest {len(latest)}, newest first</th></tr>')
    parts += [line(row) for row in latest]
    return f'{TABLE_CSS}<table class="byop-trials">{"".join(parts)}</table>'
