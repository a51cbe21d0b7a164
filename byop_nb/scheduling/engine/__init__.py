"""The engine: the main process's machinery of a run (internal).

A [`Call`][byop_nb.scheduling.engine._call.Call] and the
[`TaskLike`][byop_nb.scheduling.engine._call.TaskLike] protocol the scheduler
knows tasks by (`_call`); the `_Run` each
run makes, its options, named states and `RunHandle` (`_run`); the handing of
finished futures to the loop (`_handoff`, `_doorbell`); a background run's
captured output (`_output`); running nested in Jupyter's loop (`_runtime`); the
Scheduler's read-only properties and `with_*` constructors (`_reads`,
`_factories`); failure summaries (`_failures`); checks of user options
(`_checks`). The public faces are `byop_nb.scheduling.scheduler` and
`byop_nb.scheduling.task`.
"""
