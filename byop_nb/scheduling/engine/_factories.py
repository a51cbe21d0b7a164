"""The Scheduler's constructors for the executors byop_nb knows: `Scheduler.with_processes(2)` and the like.

[`Scheduler`][byop_nb.scheduling.Scheduler] inherits them from
`SchedulerFactories`, which only builds an executor and calls `cls(executor, ...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from byop_nb.scheduling.engine._checks import positive_int
from byop_nb.scheduling.workers import _executors

__all__ = ["SchedulerFactories"]

S = TypeVar("S", bound="SchedulerFactories")


class SchedulerFactories:
    """The `with_*` constructors of [`Scheduler`][byop_nb.scheduling.Scheduler] (a mixin)."""

    def __init__(self, executor: Executor, *, terminate: bool | Callable[[Executor], Any] = True) -> None:
        raise NotImplementedError  # pragma: no cover  # the Scheduler's

    @classmethod
    def with_processes(
        cls: type[S],
        max_workers: int | None = None,
        *,
        start_method: str | None = None,
        terminate: bool | Callable[[Executor], Any] = True,
    ) -> S:
        """A Scheduler on a `ProcessPoolExecutor` with `max_workers` processes.

        Args:
            max_workers: number of worker processes (default: the number of CPUs).
            start_method: "fork", "spawn" or "forkserver". The default is Python's default, except
                that a process with other threads running is never forked (Python 3.12+ warns that
                the child may deadlock): a Jupyter kernel always has some, so there, and wherever
                Python's default is "fork" and threads run, the workers come from a forkserver
                (Python 3.14's default), which does not re-run the main script either.

        ```python
        from byop_nb.scheduling import Scheduler
        scheduler = Scheduler.with_processes(2)
        ```
        """
        import multiprocessing

        positive_int("max_workers", max_workers)
        accepted = multiprocessing.get_all_start_methods()
        if start_method is not None and start_method not in accepted:
            known = start_method in ("fork", "spawn", "forkserver")
            raise ValueError(
                f"Scheduler.with_processes(start_method={start_method!r}): "
                + ("this platform has no such start method" if known else "no such start method")
                + f"; accepted: {', '.join(map(repr, accepted))}, or None for Python's default "
                f"({multiprocessing.get_start_method()!r} here)"
            )
        if start_method is None and _forks_a_threaded_process(multiprocessing.get_start_method(), accepted):
            start_method = "forkserver"
        context = multiprocessing.get_context(start_method) if start_method else None
        return cls(ProcessPoolExecutor(max_workers=max_workers, mp_context=context), terminate=terminate)

    @classmethod
    def with_threads(cls: type[S], max_workers: int | None = None) -> S:
        """A Scheduler on a `ThreadPoolExecutor` (threads cannot be killed: `wait=False` abandons them)."""
        positive_int("max_workers", max_workers)
        return cls(ThreadPoolExecutor(max_workers=max_workers))

    @classmethod
    def with_sequential(cls: type[S]) -> S:
        """A Scheduler that runs each call in the main thread when it is submitted (for debugging)."""
        return cls(_executors.SequentialExecutor())

    @classmethod
    def with_dask(cls: type[S], client_or_cluster: Any, **executor_kwargs: Any) -> S:
        """A Scheduler on a dask.distributed client (or cluster, whose client is used).

        Works the same for `LocalCluster`, and for dask-jobqueue clusters
        (`SLURMCluster`, `PBSCluster`, ...). The cluster stays yours to close.

        ```python
        from dask.distributed import LocalCluster
        from byop_nb.scheduling import Scheduler

        cluster = LocalCluster(n_workers=2, processes=False, host="127.0.0.1", dashboard_address="127.0.0.1:0")
        scheduler = Scheduler.with_dask(cluster)
        ```
        """
        client = client_or_cluster
        if not hasattr(client, "get_executor") and hasattr(client, "get_client"):
            client = client.get_client()  # a cluster: use (or make) its client
        if not hasattr(client, "get_executor") or not hasattr(client, "submit"):
            raise TypeError(f"with_dask needs a dask.distributed Client or a cluster, got {client_or_cluster!r}")
        return cls(client.get_executor(**executor_kwargs))

    @classmethod
    def with_ray(
        cls: type[S],
        n_workers: int | None = None,
        *,
        address: str | None = None,
        task_options: dict[str, Any] | None = None,
        **ray_init_kwargs: Any,
    ) -> S:
        """A Scheduler on Ray (a [`RayExecutor`][byop_nb.scheduling.RayExecutor]); needs the `ray` extra.

        Without `address`, starts a local Ray in this process with `n_workers`
        CPUs (default: all of them) and no dashboard; with `address` (a running
        Ray head's "host:port", or "auto"), connects to that cluster. Either way
        the scheduler owns that Ray: it shuts it down (or disconnects) when a run
        ends, and starts it again for the next run, so nothing of Ray is left
        running between runs. When Ray is running in this process already (you
        called `ray.init`), call `with_ray()` without arguments: the scheduler
        runs on that Ray, which stays yours to shut down (and up between runs).

        Args:
            n_workers: CPUs of the local Ray (Ray's `num_cpus`): that many calls run at once.
            address: a running Ray cluster to connect to instead.
            task_options: options of each call's Ray task (see `RayExecutor`:
                `num_cpus`, `memory`, `num_gpus`, `resources`, ...).
            **ray_init_kwargs: passed on to `ray.init` (e.g. `runtime_env=`, `log_to_driver=False`).

        Raises:
            ImportError: Ray is not installed (the message names the `ray` extra).
            ConnectionError: nothing answers at `address` within 10 s.
            RuntimeError: Ray is running in this process already and arguments asked for another.

        ```python
        from byop_nb.scheduling import Scheduler
        scheduler = Scheduler.with_ray(2)
        ```
        """
        from byop_nb.scheduling.workers._ray import start_ray  # imports Ray itself only now

        positive_int("n_workers", n_workers)
        if address is not None and not isinstance(address, str):
            raise TypeError(f"with_ray(address=...) must be a 'host:port' string or None, got {address!r}")
        return cls(start_ray(n_workers, address, ray_init_kwargs, task_options or {}))


def _forks_a_threaded_process(default: str, accepted: list[str]) -> bool:
    """Whether Python's default start method would fork this process while it has other threads."""
    import threading

    return default == "fork" and "forkserver" in accepted and threading.active_count() > 1
