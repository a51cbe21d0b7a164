"""The engine on a real Slurm cluster through dask-jobqueue's SLURMCluster.

The `slurm_daemons` fixture (conftest.py, tests/slurm_cluster.py) runs munged, slurmctld and slurmd
for one node of two CPUs in one partition. Every dask worker here runs in a Slurm batch job started
by slurmstepd, not a child of this process; the tests check with squeue and psutil that no job and no
job process is left once a cluster is closed. Every socket is on loopback (asserted).

The workers import the functions below from this module: each job's script puts this checkout and
tests/ on PYTHONPATH (`job_script_prologue`), as a real site's script activates a virtual
environment on a shared file system.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pruning_checks import run_and_check_a_pruned_study

from byop_nb.optimization import Trial
from byop_nb.scheduling import Comm, CommTask, ExitCode, Scheduler, Task

pytestmark = [pytest.mark.slurm, pytest.mark.dask]

HERE = Path(__file__).resolve().parent
WORKER_PYTHONPATH = os.pathsep.join([str(HERE.parent), str(HERE)])
NOT_DAEMONIC = "export DASK_DISTRIBUTED__WORKER__DAEMON=False"

# -- functions the workers run --------------------------------------------------------------


def where(call: int) -> tuple[int, str, str]:
    """The call's number, the Slurm job it ran in, and the byop_nb it imported."""
    import byop_nb

    return call, os.environ["SLURM_JOB_ID"], byop_nb.__file__


def nap(seconds: float, call: int) -> str:
    time.sleep(seconds)
    return os.environ["SLURM_JOB_ID"]


def nap_in_job(seconds: float, folder: str, call: int) -> str:
    """Sleep with a `<job>-<call>.running` mark in `folder` (so the test knows who runs where), then
    rename it `.done`."""
    job = os.environ["SLURM_JOB_ID"]
    mark = Path(folder) / f"{job}-{call}.running"
    mark.touch()
    time.sleep(seconds)
    mark.rename(mark.with_suffix(".done"))
    return job


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 2**20))


def chatty(comm: Comm, n: int) -> str:
    for i in range(n):
        comm.send((os.environ["SLURM_JOB_ID"], i))
    return comm.request("your answer?")


def evaluate(trial: Trial) -> Trial.Report:
    blob = bytearray(trial.config["megabytes"] * 2**20)  # outside begin(): a memory limit hit ends the call
    with trial.begin():
        loss = (trial.config["x"] - 3) ** 2
    return trial.success(loss=loss, job=os.environ["SLURM_JOB_ID"], size=len(blob))


# -- helpers ------------------------------------------------------------------------------


def slurm_options(slurm: Any, folder: Path, *, prologue: tuple[str, ...] = ()) -> dict[str, Any]:
    """The SLURMCluster options docs/guide/scaling-out.md shows: loopback, our partition, logs in `folder`."""
    return {
        "queue": slurm.partition,
        "cores": 1,
        "processes": 1,
        "memory": "1GB",
        "walltime": "00:10:00",
        "interface": "lo",  # the scheduler and the workers listen on loopback only
        "scheduler_options": {"dashboard_address": "127.0.0.1:0"},  # not 0.0.0.0:8787
        "worker_extra_args": ["--dashboard-address", "127.0.0.1:0"],  # the worker's http server
        "python": sys.executable,
        "log_directory": str(folder / "logs"),  # #SBATCH -o/-e: not slurm-<id>.out in the cwd
        "local_directory": str(folder / "scratch"),
        "job_script_prologue": [f"export PYTHONPATH={WORKER_PYTHONPATH}", *prologue],
    }


def start_jobs(cluster: Any, jobs: int = 2, *, workers: int | None = None) -> Any:
    """Submit `jobs` jobs and return the cluster's client once `workers` (default: all) connected."""
    cluster.scale(jobs=jobs)
    client = cluster.get_client()
    client.wait_for_workers(jobs if workers is None else workers, timeout=90)
    return client


def squeue(slurm: Any) -> list[str]:
    from slurm_cluster import squeue_ids

    return squeue_ids({**os.environ, **slurm.environment()})


def squeue_states(slurm: Any) -> dict[str, str]:
    from slurm_cluster import squeue_states

    return squeue_states({**os.environ, **slurm.environment()})


def assert_no_job_left(slurm: Any, *, grace: float = 20) -> None:
    """No job of ours in squeue and no process of a job alive (dask workers, slurmstepd), within `grace`."""
    deadline = time.monotonic() + grace
    while True:
        jobs, processes = squeue(slurm), slurm.job_processes()
        if not jobs and not processes:
            return
        if time.monotonic() > deadline:
            left = [" ".join(p.cmdline())[:120] for p in processes]
            raise AssertionError(f"left behind: jobs {jobs}, job processes {left}")
        time.sleep(0.2)


def assert_listening_on_loopback_only(slurm: Any) -> None:
    """This process (the dask scheduler), its children (the Slurm daemons) and every job process
    listen on loopback only."""
    me = psutil.Process()
    jobs = slurm.job_processes()
    bound: dict[str, set[str]] = {}
    for process in [me, *me.children(recursive=True), *jobs]:
        try:
            listening = {c.laddr.ip for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            continue
        if listening:
            bound[f"{process.pid} {'job ' if process in jobs else ''}{process.name()}"] = listening
    assert any(" job " in name for name in bound), f"no job process listening: the check sees no worker {bound}"
    assert set().union(*bound.values()) <= {"127.0.0.1", "::1"}, bound


def limited_children(slurm: Any) -> list[psutil.Process]:
    """The job processes that run a limited call: forked from a dask worker process (whose command
    line they keep), or from the forkserver byop_nb starts in the worker for memory limits."""
    found = []
    for process in slurm.job_processes():
        try:
            mine, parents = " ".join(process.cmdline()), " ".join(process.parent().cmdline())
        except (psutil.NoSuchProcess, AttributeError):
            continue
        if any(kind in mine and kind in parents for kind in ("spawn_main", "forkserver")):
            found.append(process)
    return found


@pytest.fixture
def no_slurm_leftovers(slurm: Any) -> Iterator[None]:
    """The test's jobs and every process they started are gone once the test closed its cluster."""
    assert squeue(slurm) == [], "a job of an earlier test is still queued"
    yield
    assert_no_job_left(slurm)


# -- the guide's example -------------------------------------------------------------------


def test_the_guides_slurm_cluster_example_runs_to_exhausted_with_a_row_per_call(
    slurm: Any, tmp_path: Path, no_orphans: None, no_slurm_leftovers: None
) -> None:
    import dask
    import dask_jobqueue  # noqa: F401  (loads jobqueue's config defaults, which `site` then overrides)

    # Site settings live in the jobqueue config (~/.config/dask/jobqueue.yaml on a real cluster),
    # so the guide's code below runs as written, with its placeholder partition filled in.
    site = {f"jobqueue.slurm.{key.replace('_', '-')}": value for key, value in slurm_options(slurm, tmp_path).items()}
    for key in ("queue", "cores", "processes", "memory", "walltime"):
        del site[f"jobqueue.slurm.{key}"]
    with dask.config.set(site):  # for the cluster's whole life: jobs read it when submitted
        # -- the guide (seed/scheduling-guide.md, "dask-jobqueue") --
        from dask_jobqueue import SLURMCluster

        from byop_nb.scheduling import Scheduler

        n_workers = 256

        cluster = SLURMCluster(
            memory="2GB",  # Memory per job
            processes=1,  # Processes per job
            cores=1,  # Cores per job
            job_extra_directives=["--time 0-00:10:00"],  # Duration
            queue=slurm.partition,
        )

        cluster.adapt(maximum_jobs=n_workers)  # Automatically scale up to 256 jobs

        executor = cluster.get_client().get_executor()
        scheduler = Scheduler(executor=executor)
        # -- end of the guide's code --
        try:
            assert "#SBATCH --time 0-00:10:00" in cluster.job_script()
            task = Task(where, scheduler)

            @scheduler.on_start(repeat=2)
            @task.on_done
            def keep_busy() -> None:
                if task.n_called < 20:
                    task(task.n_called + 1)

            assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
            assert_listening_on_loopback_only(slurm)
            df = task.df()
            assert len(df) == 20 and sorted(df["call"]) == list(range(1, 21))
            assert set(df["status"]) == {"returned"}
            calls, jobs, modules = zip(*df["result"], strict=True)
            assert sorted(calls) == list(range(1, 21))
            assert all(job.isdigit() for job in jobs)  # each call ran inside a Slurm job
            assert set(modules) == {str(HERE.parent / "byop_nb" / "__init__.py")}  # this checkout's byop_nb
            assert list((tmp_path / "logs").glob("dask-worker-*.err"))  # the jobs' output went to the log folder
        finally:
            cluster.get_client().close()
            cluster.close()


# -- ending runs ---------------------------------------------------------------------------


def test_stop_keeps_the_jobs_and_closing_the_cluster_after_a_timeout_with_wait_false_ends_them(
    slurm: Any, tmp_path: Path, no_orphans: None, no_slurm_leftovers: None
) -> None:
    from dask_jobqueue import SLURMCluster

    assert slurm.cpus == 2
    with SLURMCluster(**slurm_options(slurm, tmp_path)) as cluster:
        # Three one-core jobs on a two-CPU node: two run, the third waits in the queue.
        client = start_jobs(cluster, 3, workers=2)
        states = squeue_states(slurm)
        assert sorted(states.values()) == ["PENDING", "RUNNING", "RUNNING"], states
        scheduler = Scheduler.with_dask(client)
        task = Task(nap, scheduler)

        # stop() from a callback: the run waits for the call still running, then ends STOPPED.
        scheduler.on_start(lambda: (task(0.1, 1), task(2, 2)), name="launch")
        task.on_returned(scheduler.stop, name="stop")
        assert scheduler.run(timeout=60) is ExitCode.STOPPED
        assert list(task.df()["status"]) == ["returned", "returned"]
        # The Slurm jobs belong to the cluster, not to the run: running and queued, they stay.
        assert squeue_states(slurm) == states
        scheduler.on_start.remove("launch")
        task.on_returned.remove("stop")

        # A timeout with wait=False cancels the running call at once; its worker keeps sleeping
        # in its job until the cluster is closed, which cancels the jobs, the queued one too.
        scheduler.on_start(lambda: task(60, 3), name="launch")
        start = time.monotonic()
        assert scheduler.run(timeout=1, wait=False) is ExitCode.TIMEOUT
        assert time.monotonic() - start < 5
        assert task.df()["status"].iloc[-1] == "cancelled"
        # dask cannot interrupt a running call: its worker runs it on, cancelled, until the job ends.
        states_on_workers = client.run(lambda dask_worker: [t.state for t in dask_worker.state.tasks.values()])
        assert sorted(sum(states_on_workers.values(), [])) == ["cancelled"]
        assert squeue_states(slurm) == states
        client.close()
    # The 60 s call's worker is gone with its job (no_slurm_leftovers checks again after the test).
    start = time.monotonic()
    assert_no_job_left(slurm)
    assert time.monotonic() - start < 15


# -- a job cancelled from outside -----------------------------------------------------------


def run_and_scancel_one_job(slurm: Any, tmp_path: Path) -> tuple[Task, str, str, set[int]]:
    """Keep both jobs busy with 4 calls of 2 s; once each job runs one, `scancel` the first.

    Returns the task, the cancelled job, the job left, and the calls that were running in the
    cancelled job when it was cancelled.
    """
    from dask_jobqueue import SLURMCluster

    marks = tmp_path / "marks"
    marks.mkdir()
    with SLURMCluster(**slurm_options(slurm, tmp_path)) as cluster:
        client = start_jobs(cluster)
        scheduler = Scheduler.with_dask(client)
        task = Task(nap_in_job, scheduler)

        @scheduler.on_start(repeat=2)
        @task.on_done
        def keep_busy() -> None:
            if task.n_called < 4:
                task(2, str(marks), task.n_called + 1)

        cancelled: list[tuple[str, set[int]]] = []

        def scancel_when_both_jobs_run() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                running: dict[str, set[int]] = {}
                for mark in marks.glob("*.running"):
                    job, call = mark.stem.split("-")
                    running.setdefault(job, set()).add(int(call))
                if len(running) == 2:
                    victim = min(running)
                    subprocess.run(["scancel", victim], check=True, env={**os.environ, **slurm.environment()})
                    cancelled.append((victim, running[victim]))
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=scancel_when_both_jobs_run)
        killer.start()
        try:
            assert scheduler.run(timeout=90) is ExitCode.EXHAUSTED
        finally:
            killer.join()
        ((victim, held),) = cancelled
        (survivor,) = squeue(slurm)  # the run went on in the other job
        client.close()
    return task, victim, survivor, held


def test_a_call_held_by_a_job_cancelled_with_scancel_runs_again_in_the_other_job_by_default(
    slurm: Any, tmp_path: Path, no_orphans: None, no_slurm_leftovers: None
) -> None:
    # dask reschedules the calls of a worker that left (up to distributed.scheduler.allowed-failures
    # deaths per call, 3 by default): the call is run again in the job that is left and returns.
    task, victim, survivor, held = run_and_scancel_one_job(slurm, tmp_path)
    df = task.df().set_index("call")
    assert len(df) == 4 and set(df["status"]) == {"returned"}
    (call,) = held
    assert df.loc[call, "result"] == survivor != victim
    marks = tmp_path / "marks"
    assert (marks / f"{victim}-{call}.running").exists() and (marks / f"{survivor}-{call}.done").exists()


def test_with_no_allowed_failures_a_call_held_by_a_cancelled_job_fails_with_killed_worker(
    slurm: Any, tmp_path: Path, no_orphans: None, no_slurm_leftovers: None
) -> None:
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # read when the cluster starts
        task, victim, survivor, held = run_and_scancel_one_job(slurm, tmp_path)
    df = task.df().set_index("call")
    (call,) = held
    row = df.loc[call]
    assert row["status"] == "exception" and row["exception_type"] == "KilledWorker"
    assert "workers died while running it" in row["exception_message"]
    others = df.drop(index=call)
    assert len(others) == 3 and set(others["status"]) == {"returned"}  # the run went on
    assert set(others["result"]) <= {victim, survivor}


# -- the tutorial ---------------------------------------------------------------------------


@pytest.mark.kernel
def test_the_scaling_out_tutorial_submits_its_jobs_to_slurm_when_a_cluster_answers(
    slurm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_orphans: None, no_slurm_leftovers: None
) -> None:
    """nbval runs notebooks/07_scaling_out.ipynb where no Slurm answers (its local fallback);
    here its kernel inherits SLURM_CONF, so the same cells go to the Slurm branch."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's tempfile folders (the jobs' logs) go here
    # Ray (the tutorial's Ray section) puts its sockets under TMPDIR too, where their paths would pass
    # the 107 bytes a Unix socket's may have: its own variable keeps them short.
    monkeypatch.setenv("RAY_TMPDIR", "/tmp")

    notebook = nbformat.read(HERE.parent / "notebooks" / "07_scaling_out.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = {}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            printed[cell.source] = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    everything = "\n".join(printed.values())
    assert f"Slurm answers: the jobs go to partition {slurm.partition!r} on this machine" in everything
    assert f"#SBATCH -p {slurm.partition}" in everything and "--interface lo" in everything
    assert "workers: 2" in everything and "10 rows, ['returned']" in everything


# -- limits, Comm and Trial on Slurm-started workers ------------------------------------------
#
# Each class shares one cluster of two jobs between its tests; a class's cluster is closed when
# its last test ended, so the two never compete for the node's CPUs.


@pytest.fixture(scope="class")
def daemonic_workers(slurm_daemons: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A client of two Slurm jobs whose workers run under a nanny (daemonic, dask's default)."""
    from dask_jobqueue import SLURMCluster

    slurm = slurm_daemons
    with pytest.MonkeyPatch.context() as env:  # sbatch at scale(), scancel at close()
        env.setenv("SLURM_CONF", str(slurm.conf))
        with SLURMCluster(**slurm_options(slurm, tmp_path_factory.mktemp("daemonic"))) as cluster:
            client = start_jobs(cluster)
            yield client
            client.close()
        assert_no_job_left(slurm)


@pytest.fixture(scope="class")
def workers_that_may_have_children(slurm_daemons: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A client of two Slurm jobs whose job script makes the workers non-daemonic."""
    from dask_jobqueue import SLURMCluster

    slurm = slurm_daemons
    settings = slurm_options(slurm, tmp_path_factory.mktemp("not-daemonic"), prologue=(NOT_DAEMONIC,))
    with pytest.MonkeyPatch.context() as env:  # sbatch at scale(), scancel at close()
        env.setenv("SLURM_CONF", str(slurm.conf))
        with SLURMCluster(**settings) as cluster:
            assert NOT_DAEMONIC in cluster.job_script()
            client = start_jobs(cluster)
            yield client
            client.close()
        assert_no_job_left(slurm)


class TestWorkersUnderANanny:
    def test_limits_fail_the_call_with_the_setting_to_change(self, daemonic_workers: Any) -> None:
        scheduler = Scheduler.with_dask(daemonic_workers)
        walled = Task(nap, scheduler, wall_time_limit=5)
        capped = Task(allocate, scheduler, memory_limit=(300, "MB"))
        scheduler.on_start(lambda: (walled(0.1, 1), capped(10)))
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
        for task in (walled, capped):
            ((_, row),) = task.df().iterrows()
            assert row["status"] == "exception" and row["exception_type"] == "RuntimeError"
            assert "daemonic" in row["exception_message"]
            assert "'distributed.worker.daemon': False" in row["exception_message"]

    def test_a_comm_task_round_trips_messages_and_a_request(self, daemonic_workers: Any) -> None:
        scheduler = Scheduler.with_dask(daemonic_workers)
        task = CommTask(chatty, scheduler)
        messages: list[Any] = []
        task.on_message(lambda msg: messages.append(msg.data))
        task.on_request(lambda msg: msg.respond(f"answer to {msg.data}"))
        results: list[str] = []
        task.on_returned(results.append)
        scheduler.on_start(lambda: task(5))
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
        assert results == ["answer to your answer?"]
        jobs = {job for job, _ in messages}
        assert len(jobs) == 1 and next(iter(jobs)).isdigit()  # sent from inside a Slurm job
        assert [i for _, i in messages] == list(range(5))

    def test_trials_report_steps_and_are_pruned_from_inside_slurm_jobs(self, daemonic_workers: Any) -> None:
        run_and_check_a_pruned_study(Scheduler.with_dask(daemonic_workers), timeout=120)


class TestWorkersStartedNotDaemonic:
    """The job script exports DASK_DISTRIBUTED__WORKER__DAEMON=False (`job_script_prologue`)."""

    def test_memory_and_wall_time_limits_work(self, slurm: Any, workers_that_may_have_children: Any) -> None:
        scheduler = Scheduler.with_dask(workers_that_may_have_children)
        walled = Task(nap, scheduler, wall_time_limit=1)
        capped = Task(allocate, scheduler, memory_limit=(300, "MB"))
        scheduler.on_start(lambda: (walled(0.1, 1), walled(30, 2), capped(10), capped(600)))
        start = time.monotonic()
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
        assert time.monotonic() - start < 10
        assert list(walled.df().sort_values("call")["status"]) == ["returned", "wall_time_limit"]
        assert list(capped.df().sort_values("call")["status"]) == ["returned", "memory_limit"]
        # Each limited call ran in a child of the worker (forked) or of its forkserver: none outlived its call.
        deadline = time.monotonic() + 5
        while limited := limited_children(slurm):
            assert time.monotonic() < deadline, f"a limited call's child outlived its call: {limited}"
            time.sleep(0.1)

    def test_a_memory_limited_trial_task_round_trips_its_reports(self, workers_that_may_have_children: Any) -> None:
        scheduler = Scheduler.with_dask(workers_that_may_have_children)
        task = Trial.Task(evaluate, scheduler, memory_limit=(300, "MB"))
        trials = [
            Trial(name="fits", config={"x": 1, "megabytes": 10}),
            Trial(name="too-big", config={"x": 2, "megabytes": 600}),
        ]
        crashes: list[Trial.Report] = []
        task.on_crashed(crashes.append)
        scheduler.on_start(lambda: [task(trial) for trial in trials])
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
        df = task.df().set_index("trial")
        assert df.loc["fits", "status"] == "success" and df.loc["fits", "result.loss"] == 4
        assert str(df.loc["fits", "result.job"]).isdigit() and df.loc["fits", "config.megabytes"] == 10
        assert df.loc["too-big", "status"] == "crashed"
        (crash,) = crashes
        assert crash.trial.name == "too-big" and crash.limit == "memory", crash.exception
