"""Once a run is asked to end, it accepts no new work (even in the emission that called stop())."""

from __future__ import annotations

import time

from helpers import nap

from byop_nb.scheduling import ExitCode, Scheduler, Task


def test_a_call_made_right_after_stop_is_refused(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(1)
    task = Task(nap, scheduler)
    accepted: list[bool] = []
    scheduler.on_start(lambda: task(0.01))

    @task.on_returned
    def stop_then_call(_result: float) -> None:
        scheduler.stop()
        accepted.append(task(5.0) is not None)

    start = time.monotonic()
    assert scheduler.run() is ExitCode.STOPPED
    assert accepted == [False]
    assert task.n_called == 1
    assert time.monotonic() - start < 4.0  # the refused 5 s call was never waited for
