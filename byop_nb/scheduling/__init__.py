"""The engine: [`Scheduler`][byop_nb.scheduling.Scheduler] runs [`Task`][byop_nb.scheduling.Task]s on any executor."""

from byop_nb._status import Status
from byop_nb.scheduling.comms import Comm, CommError, CommTask
from byop_nb.scheduling.scheduler import ExitCode, RunHandle, Scheduler
from byop_nb.scheduling.task import FailureSummary, Task, TaskMap, TaskOptions
from byop_nb.scheduling.workers._executors import SequentialExecutor
from byop_nb.scheduling.workers._ray import RayExecutor

__all__ = [
    "Scheduler",
    "Task",
    "TaskOptions",
    "TaskMap",
    "FailureSummary",
    "Status",
    "ExitCode",
    "RunHandle",
    "SequentialExecutor",
    "RayExecutor",
    "Comm",
    "CommTask",
    "CommError",
]
