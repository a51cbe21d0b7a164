"""The engine on dask: distributed's LocalCluster (threads and processes) and dask-jobqueue's local job cluster.

Every cluster is started and closed by its test, bound to loopback, with every socket on loopback (asserted).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future
from pathlib import Path

import psutil
import pytest
from helpers import nap, raise_in_worker, square

from byop_nb.scheduling import ExitCode, Scheduler, Task

pytestmark = pytest.mark.dask


def assert_listening_on_loopback_only() -> None:
    """Every socket this process and its children listen on is bound to loopback."""
    me = psutil.Process()
    bound = set()
    for process in [me, *me.children(recursive=True)]:
        try:
            connections = process.net_connections("inet")
        except psutil.NoSuchProcess:
            continue
        bound |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    assert bound, "no listening socket found: the check is not looking at the cluster"
    assert bound <= {"127.0.0.1", "::1"}, bound


@pytest.fixture(scope="module", autouse=True)
def resource_tracker() -> None:
    """dask's nannies start workers with spawn, which starts multiprocessing's resource tracker:
    one process per interpreter that lives until exit. Start it before `no_orphans` looks."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def exercise(scheduler: Scheduler, n: int = 8) -> None:
    """The guide's keep-busy pattern, an exception with its remote traceback, and a second run."""
    task = Task(square, scheduler)
    failing = Task(raise_in_worker, scheduler)
    results: list[int] = []
    errors: list[BaseException] = []
    task.on_returned(results.append)
    failing.on_exception(errors.append)

    @scheduler.on_start(repeat=2)
    @task.on_done
    def submit_next() -> None:
        if task.n_called < n:
            task(task.n_called)

    scheduler.on_start(lambda: failing(0))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert sorted(results) == [i * i for i in range(n)]
    (error,) = errors
    assert isinstance(error, ValueError) and str(error) == "x cannot be 0"
    remote = error.remote_traceback  # type: ignore[attr-defined]
    assert "raise_in_worker" in remote and "x cannot be 0" in remote
    counts = {
        Scheduler.STARTED: 1,
        Scheduler.FINISHING: 1,
        Scheduler.FINISHED: 1,
        (Task.SUBMITTED, "square"): n,
        (Task.DONE, "square"): n,
        (Task.RETURNED, "square"): n,
        (Task.SUBMITTED, "raise_in_worker"): 1,
        (Task.DONE, "raise_in_worker"): 1,
        (Task.EXCEPTION, "raise_in_worker"): 1,
    }
    assert scheduler.counts == counts
    # A scheduler on a client's executor runs again after a run ended.
    n = 2 * n
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert sorted(results) == sorted([i * i for i in range(8)] + [i * i for i in range(8, 16)])
    assert scheduler.counts[(Task.RETURNED, "square")] == 16
    assert scheduler.counts[Scheduler.FINISHED] == 2


def cancel_with_wait_false(scheduler: Scheduler) -> None:
    task = Task(nap, scheduler)
    cancelled: list[Future] = []
    task.on_cancelled(cancelled.append)
    scheduler.on_start(lambda: task(3), name="launch-nap")
    start = time.monotonic()
    assert scheduler.run(timeout=0.5, wait=False) is ExitCode.TIMEOUT
    assert time.monotonic() - start < 2.5
    assert len(cancelled) == 1
    assert task.counts == {Task.SUBMITTED: 1, Task.CANCELLED: 1}
    scheduler.on_start.remove("launch-nap")


@pytest.mark.parametrize("processes", [False, True])
def test_distributed_local_cluster_via_client_get_executor(processes: bool, no_orphans: None) -> None:
    from distributed import Client, LocalCluster

    # processes=False would default to the in-process transport, yet still serve the dashboard
    # and the workers' http servers on 0.0.0.0: TCP on 127.0.0.1 keeps every socket on loopback.
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            host="127.0.0.1",
            protocol="tcp://",
        ) as cluster,
        Client(cluster) as client,
    ):
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert_listening_on_loopback_only()
        scheduler = Scheduler(executor=client.get_executor())
        exercise(scheduler)
        cancel_with_wait_false(scheduler)


def test_scheduler_with_dask_takes_a_cluster(no_orphans: None) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        assert_listening_on_loopback_only()
        scheduler = Scheduler.with_dask(cluster)
        exercise(scheduler)
        cluster.get_client().close()


def test_dask_jobqueue_local_cluster(no_orphans: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from dask_jobqueue.local import LocalCluster

    # The job's worker is a fresh `python -m distributed.cli.dask_worker`: like any cluster
    # worker it must be able to import the functions it runs (here, this test module).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    with LocalCluster(
        n_workers=1,
        cores=2,
        processes=1,
        memory="1GB",
        interface="lo",
        # jobqueue's default dashboard listens on 0.0.0.0:8787; None binds it to the scheduler's host
        scheduler_options={"dashboard_address": None},
        # the worker's http server (metrics, even with --no-dashboard) would listen on 0.0.0.0
        worker_extra_args=["--dashboard-address", "127.0.0.1:0"],
        silence_logs=logging.ERROR,
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        client = cluster.get_client()
        try:
            client.wait_for_workers(1, timeout=60)
            assert_listening_on_loopback_only()
            scheduler = Scheduler(executor=client.get_executor())
            exercise(scheduler)
        finally:
            client.close()


def test_with_dask_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="'not a client'"):
        Scheduler.with_dask("not a client")


def keywords(x: int, **options: object) -> tuple[int, dict[str, object]]:
    return x, options


def draw(seed_unused: int) -> float:
    import random

    return random.random()


def test_keyword_arguments_named_like_dasks_own_reach_the_function_and_equal_calls_all_run(
    no_orphans: None,
) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        host="127.0.0.1",
        protocol="tcp://",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        client = cluster.get_client()
        scheduler = Scheduler.with_dask(client)
        task = Task(keywords, scheduler)
        draws = Task(draw, scheduler)

        @scheduler.on_start
        def launch() -> None:
            task(1, key="mine", workers="nowhere", pure=True, priority=3)
            task(2, key="mine")
            for _ in range(3):
                draws(0)  # equal calls: each runs (dask would give them one key)

        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
        results = sorted(task.df()["result"], key=lambda r: r[0])
        assert results == [
            (1, {"key": "mine", "workers": "nowhere", "pure": True, "priority": 3}),
            (2, {"key": "mine"}),
        ]
        assert draws.df()["result"].nunique() == 3
        client.close()


def test_an_expected_failure_on_an_in_process_dask_worker_logs_no_error_block(
    no_orphans: None, caplog: pytest.LogCaptureFixture
) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        host="127.0.0.1",
        protocol="tcp://",
        dashboard_address=None,
    ) as cluster:
        client = cluster.get_client()
        scheduler = Scheduler.with_dask(client)
        task = Task(raise_in_worker, scheduler)
        task.on_exception(lambda exception: None)
        scheduler.on_start(lambda: task(3))
        with caplog.at_level(logging.INFO, logger="distributed.worker"):
            scheduler.run(timeout=60)
        client.close()
    assert task.df()["exception_message"].tolist() == ["x cannot be 3"]  # reported in the row ...
    assert not [r for r in caplog.records if "Compute Failed" in r.getMessage()]  # ... not as a red log block
