"""Notebook skin: the `Dashboard` widget and its live `plots`.

```python
from byop_nb.notebook import Dashboard
```

The HTML reprs of Scheduler, Task and History are not part of the skin: they
live below it, in `byop_nb._html`, and need neither ipywidgets nor matplotlib.
`Dashboard` is imported on first use, and needs the `notebook` extra
(`pip install "byop_nb[notebook]"`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from byop_nb.notebook.dashboard import Dashboard

__all__ = ["Dashboard"]


def __getattr__(name: str) -> Any:
    if name == "Dashboard":
        try:
            from byop_nb.notebook.dashboard import Dashboard
        except ImportError as error:
            raise ImportError(
                f"byop_nb.notebook.Dashboard needs ipywidgets and matplotlib ({error}); "
                'install them with: pip install "byop_nb[notebook]"'
            ) from error
        return Dashboard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
