"""byop_nb: run, watch, stop and analyse many function calls from a notebook.

```python
import byop_nb
from byop_nb import Scheduler, Task
```

Importing `byop_nb` stays light: pandas, ipywidgets, matplotlib, dask and
IPython are imported only by the features that need them.
"""

from typing import TYPE_CHECKING, Any

from byop_nb.events import Event, EventManager, Subscriber
from byop_nb.scheduling import Comm, CommTask, ExitCode, Scheduler, Task

if TYPE_CHECKING:
    from byop_nb.optimization import Trial

__version__ = "0.1.0"

__all__ = [
    "Event",
    "EventManager",
    "Subscriber",
    "Scheduler",
    "Task",
    "ExitCode",
    "Comm",
    "CommTask",
    "Trial",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # `byop_nb.Trial` is imported on first use, so `import byop_nb` stays light.
    if name == "Trial":
        from byop_nb.optimization import Trial

        return Trial
    raise AttributeError(f"module 'byop_nb' has no attribute {name!r}")
