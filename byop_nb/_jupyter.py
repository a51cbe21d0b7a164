"""The one home of what byop_nb knows about Jupyter and IPython.

Nothing here imports IPython: each function looks it up in `sys.modules`, so
outside a kernel (a script, a worker) they cost a dictionary lookup and say
"no". What byop_nb asks of a running IPython shell:

* `cell_run()`: the notebook cell being run (its id, and the run's execution
  count), from the kernel's parent message: `EventManager` drops what an
  earlier run of the same cell subscribed;
* `cell_namer()`: IPython's own naming of a cell's code file ("Cell In[5]"),
  for workers' tracebacks (`_shipping.cells_named`);
* `show_dataframes_with(html)`: a DataFrame display for the shell, chained
  to the display that was there before, registered once per shell
  (`History.df()` frames, through `_frames`).

The notebook skin (`byop_nb.notebook`) imports IPython's display itself: it
only runs in a kernel.

Example:
    ```python
    from byop_nb import _jupyter

    _jupyter.cell_run()      # None outside a kernel; ("6f3c...", 12) in a JupyterLab cell
    ```
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, cast

__all__ = ["shell", "cell_run", "cell_namer", "show_dataframes_with"]


def shell() -> Any:
    """The running IPython shell, or None (IPython not imported, or no shell running)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        return ipython.get_ipython()
    except Exception:  # a half-imported or stubbed IPython
        return None


def cell_run() -> tuple[str, int] | None:
    """The notebook cell being run now, as (cell id, execution count); None outside a kernel, or when
    the frontend sends no cell id (JupyterLab, Notebook 7 and VS Code send one)."""
    if sys.modules.get("IPython") is None:  # the common case outside a kernel: one lookup
        return None
    try:
        running = shell()
        parent = running.kernel.get_parent("shell")
        cell_id = parent["metadata"].get("cellId")
    except Exception:  # no shell, no kernel (a terminal IPython), an older ipykernel, no metadata
        return None
    if not isinstance(cell_id, str) or not cell_id:
        return None
    return cell_id, int(running.execution_count)


def cell_namer() -> Callable[[str], Any] | None:
    """IPython's name for a code file of a notebook cell: `namer(path)` gives `("Cell", "In[5]")` for
    a cell's file and None for others; None outside IPython."""
    compiler = getattr(shell(), "compile", None)
    return getattr(compiler, "format_code_name", None)


_SHELLS: set[int] = set()  # the shells whose DataFrame display was chained already


def show_dataframes_with(html: Callable[[Any], str | None]) -> None:
    """In a running IPython shell, display DataFrames with `html(df)`; once per shell.

    `html` returns None for a frame it leaves to the display that was there
    before (another library's), or to pandas' own. Does nothing outside IPython.
    """
    running = shell()
    if running is None or id(running) in _SHELLS:
        return
    import pandas as pd

    formatter = running.display_formatter.formatters["text/html"]
    before = formatter.type_printers.get(pd.DataFrame)

    def display(df: pd.DataFrame) -> str | None:
        shown = html(df)
        if shown is not None:
            return shown
        if before is not None:  # another library's display of DataFrames
            return cast("str | None", before(df))
        return cast("str | None", cast(Any, df)._repr_html_())  # pandas' own

    formatter.for_type(pd.DataFrame, display)
    _SHELLS.add(id(running))
