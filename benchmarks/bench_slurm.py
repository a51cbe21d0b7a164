"""Slurm: time from `cluster.scale(jobs=2)` to the first result, and no-op dispatch on 2 Slurm-started workers.

Needs Slurm. With SLURM_CONF set and `sinfo` answering, the cluster it names is used (pass its
partition with --partition); otherwise a throwaway single-node cluster (munged + slurmctld +
slurmd, tests/slurm_cluster.py) is started in a temporary folder and stopped at the end.

1. Start-up (--startups times, a new SLURMCluster each): the clock starts at
   `cluster.scale(jobs=2)`; a byop_nb Scheduler on the cluster has one no-op call in flight from
   its start; the figure is the time to that call's RETURNED (sbatch, Slurm's scheduling pass,
   the job's Python starting a dask worker, the worker connecting, the call).
2. Dispatch, on one SLURMCluster of 2 one-core jobs (2 dask workers, one thread each): N no-op
   calls with 2 x workers in flight, a new call submitted as each one ends, through byop_nb
   (`Scheduler.with_dask(client, pure=False)`, a Task, `on_done`) against dask's own pattern on
   the same client (`client.submit(noop, pure=False)` fed to `distributed.as_completed`). Rounds
   alternate; the figure that counts is the median of the per-round ratios byop_nb / dask.

`pure=False` on both sides: dask's default `pure=True` gives equal calls (here: every no-op call)
one key, so calls in flight together would run once.

    python benchmarks/bench_slurm.py [--n 2000] [--rounds 5] [--startups 3] [--partition NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _tasks import IN_FLIGHT, WORKERS, noop  # noqa: E402

from byop_nb.scheduling import Scheduler, Task  # noqa: E402


def slurm_answers() -> bool:
    if "SLURM_CONF" not in os.environ or shutil.which("sinfo") is None:
        return False
    result = subprocess.run(["sinfo", "--noheader"], capture_output=True, timeout=30)
    return result.returncode == 0


def cluster_options(partition: str, folder: Path) -> dict[str, Any]:
    """The configuration tests/test_slurm.py tests: loopback, one core and one worker per job."""
    return {
        "queue": partition,
        "cores": 1,
        "processes": 1,
        "memory": "1GB",
        "walltime": "00:10:00",
        "interface": "lo",
        "scheduler_options": {"dashboard_address": "127.0.0.1:0"},
        "worker_extra_args": ["--dashboard-address", "127.0.0.1:0"],
        "python": sys.executable,
        "log_directory": str(folder / "logs"),
        "local_directory": str(folder / "scratch"),
        # the workers import `noop` from benchmarks/_tasks.py and byop_nb from this checkout
        "job_script_prologue": [f"export PYTHONPATH={HERE.parent}{os.pathsep}{HERE}"],
    }


def time_to_first_result(partition: str, folder: Path) -> tuple[float, float]:
    """Seconds from `scale(jobs=2)` to the first no-op result through byop_nb, and to both workers."""
    from dask_jobqueue import SLURMCluster

    with SLURMCluster(**cluster_options(partition, folder)) as cluster:
        client = cluster.get_client()
        scheduler = Scheduler.with_dask(client, pure=False)
        task = Task(noop, scheduler)
        first: list[float] = []
        task.on_returned(lambda _: first.append(time.perf_counter()) if not first else None)
        scheduler.on_start(lambda: task())
        start = time.perf_counter()
        cluster.scale(jobs=2)
        scheduler.run(timeout=120)
        client.wait_for_workers(2, timeout=120)
        both = time.perf_counter() - start
        client.close()
    return first[0] - start, both


def byop(client: Any, n: int) -> float:
    """No-op calls per second through byop_nb: 2 x workers in flight, one more from each on_done."""
    scheduler = Scheduler.with_dask(client, pure=False)
    task = Task(noop, scheduler)
    times: dict[str, float] = {}

    @scheduler.on_start(repeat=IN_FLIGHT)
    def first() -> None:
        times.setdefault("start", time.perf_counter())
        task()

    @task.on_done
    def again(_future: Any) -> None:
        if task.n_called < n:
            task()

    @task.on_returned
    def last(_result: Any) -> None:
        times["end"] = time.perf_counter()

    scheduler.run(timeout=600)
    assert task.n_called == n and task.n_running == 0 and task.counts[Task.RETURNED] == n, task.counts
    return n / (times["end"] - times["start"])


def dask_as_completed(client: Any, n: int) -> float:
    """No-op calls per second with dask's own keep-busy pattern: client.submit + as_completed."""
    from distributed import as_completed

    start = time.perf_counter()
    pending = as_completed([client.submit(noop, pure=False) for _ in range(IN_FLIGHT)])
    submitted = IN_FLIGHT
    finished = 0
    for future in pending:
        future.result()
        finished += 1
        if submitted < n:
            pending.add(client.submit(noop, pure=False))
            submitted += 1
    assert finished == n
    return n / (time.perf_counter() - start)


def compare(partition: str, folder: Path, n: int, rounds: int) -> float:
    from dask_jobqueue import SLURMCluster

    with SLURMCluster(**cluster_options(partition, folder)) as cluster:
        cluster.scale(jobs=WORKERS)
        client = cluster.get_client()
        client.wait_for_workers(WORKERS, timeout=120)
        byop(client, 200), dask_as_completed(client, 200)  # warm both paths
        ratios = []
        for i in range(rounds):
            d = dask_as_completed(client, n)
            b = byop(client, n)
            ratios.append(b / d)
            print(f"round {i + 1}: dask as_completed {d:7.0f}/s  byop_nb {b:7.0f}/s  ratio {b / d:.3f}", flush=True)
        client.close()
    median = statistics.median(ratios)
    print(f"median ratio byop_nb/dask: {median:.3f}  (n={n}, rounds={rounds}, {WORKERS} Slurm jobs x 1 worker)")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--startups", type=int, default=3)
    parser.add_argument("--partition", default=None, help="partition of an already running Slurm")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        if slurm_answers():
            partition = args.partition
            print(f"using the running Slurm cluster of SLURM_CONF={os.environ['SLURM_CONF']}")
        else:
            from slurm_cluster import SlurmDaemons

            daemons = stack.enter_context(SlurmDaemons(folder / "slurm"))
            os.environ.update(daemons.environment())
            partition = daemons.partition
            print(f"started a throwaway single-node Slurm cluster in {daemons.root} ({daemons.cpus} CPUs)")
        startups = [time_to_first_result(partition, folder / f"startup-{i}") for i in range(args.startups)]
        for first, both in startups:
            print(f"scale(jobs=2) -> first result {first:.2f} s  (both workers connected: {both:.2f} s)")
        print(f"median time from scale(jobs=2) to the first result: {statistics.median(f for f, _ in startups):.2f} s")
        compare(partition, folder / "dispatch", args.n, args.rounds)


if __name__ == "__main__":
    main()
