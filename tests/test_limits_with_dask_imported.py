"""Limit exceptions reach the main process even when dask.distributed is imported.

Importing distributed installs tblib's pickling for every exception class, which
breaks the round trip of pynisher's MemoryLimitException; the process pool then
broke instead of reporting the memory limit.
"""

from __future__ import annotations

import textwrap

import pytest
from conftest import run_script

pytestmark = pytest.mark.dask  # imports dask.distributed

SCRIPT = textwrap.dedent(
    """
    import pynisher
    import distributed.utils  # installs tblib's exception pickling, as any dask user has
    from byop_nb.scheduling import Scheduler, Task

    def hog(n):
        return len(bytearray(n))

    if __name__ == "__main__":
        scheduler = Scheduler.with_processes(1)
        task = Task(hog, scheduler, memory_limit=(300, "MB"))
        seen = []
        task.on_memory_limit_reached(lambda future, exc: seen.append(type(exc).__name__))
        task.on_exception(lambda exc: seen.append(f"exception {type(exc).__name__}"))
        task.on_returned(lambda n: seen.append("returned"))
        scheduler.on_start(lambda: (task(2**30), task(10)))
        scheduler.run()
        print(sorted(seen))
    """
)


def test_memory_limit_is_reported_with_dask_imported(tmp_path, no_orphans: None) -> None:
    stdout = run_script(tmp_path, SCRIPT)
    assert stdout.strip() == ("['MemoryLimitException', 'exception MemoryLimitException', 'returned']"), stdout
