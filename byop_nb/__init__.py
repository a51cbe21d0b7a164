"""byop_nb: run, watch, stop and analyse many function calls from a notebook.

```python
import byop_nb
from byop_nb import Scheduler, Task
```

Importing `byop_nb` stays light: pandas, ipywidgets, matplotlib, dask and
IPython are imported only by the features that need them.
"""

from byop_nb.events import Event, EventManager, Subscriber
from byop_nb.scheduling import ExitCode, Scheduler, Task

__version__ = "0.1.0"

__all__ = ["Event", "EventManager", "Subscriber", "Scheduler", "Task", "ExitCode", "__version__"]
