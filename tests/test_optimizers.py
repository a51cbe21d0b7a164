"""Optimizers: RandomSearch, and OptunaOptimizer on real studies, process pools and a dask cluster.

The Optuna tests skip when Optuna is not installed, except in CI (env CI=true), where they fail instead.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import python_command

from byop_nb.optimization import Optimizer, OptunaOptimizer, RandomSearch, Trial
from byop_nb.scheduling import ExitCode, Scheduler

ROOT = Path(__file__).resolve().parent.parent

# -- functions the workers run -------------------------------------------------------------


def quadratic(trial: Trial) -> Trial.Report:
    with trial.begin():
        loss = (trial.config["x"] - 1.0) ** 2 + (trial.config["y"] + 2.0) ** 2
    return trial.success(loss=loss)


def by_kind(trial: Trial) -> Trial.Report:
    """Ends the way `trial.config["kind"]` says."""
    kind = trial.config["kind"]
    if kind == "memory":  # outside begin(), which would catch the MemoryError as a plain crash
        blob = bytearray(600 * 2**20)  # more than the memory limit
        del blob
    with trial.begin():
        if kind == "crash":
            raise ZeroDivisionError("diverged")
        if kind == "wall_time":
            time.sleep(30)
        if kind == "pruned":
            import optuna

            raise optuna.TrialPruned("not promising at epoch 3")
    if trial.exception is not None:
        return trial.crashed()
    if kind == "fail":
        return trial.fail(loss=50.0, reason="unstable")
    return trial.success(loss=1.5)


def sleeps(trial: Trial) -> Trial.Report:
    with trial.begin():
        time.sleep(trial.config.get("seconds", 30))
    return trial.success(loss=0.0)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def optuna() -> Any:
    """Optuna, quiet; a skip when it is not installed, a failure when CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        import optuna  # in CI a missing Optuna is an error, not a skip
    else:
        optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@pytest.fixture(scope="module", autouse=True)
def resource_tracker() -> None:
    """Spawn pools (and dask's nannies) start multiprocessing's resource tracker once per process, where it
    stays by design: start it before `no_orphans` looks."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


@pytest.fixture
def dask_cluster() -> Iterator[Any]:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
        host="127.0.0.1",
        protocol="tcp://",
    ) as cluster:
        yield cluster


def states(study: Any) -> dict[int, str]:
    return {t.number: t.state.name for t in study.get_trials(deepcopy=False)}


def ask_tell_loop(
    optimizer: Optimizer,
    task: Trial.Task[[]],
    scheduler: Scheduler,
    *,
    n_workers: int,
    n_trials: int | None = None,
    n_reports: int | None = None,
) -> list[Trial.Report]:
    """The guide's pattern: ask once per worker on start; on each report tell it and ask again.

    `n_trials`: ask no more than that many (the run then ends on its own); `n_reports`: stop the run
    after that many reports (the trials still running report too; asks after the stop are refused).
    """
    reports: list[Trial.Report] = []

    @scheduler.on_start(repeat=n_workers)
    def launch() -> None:
        task(optimizer.ask())

    @task.on_report
    def tell_and_ask(report: Trial.Report) -> None:
        optimizer.tell(report)
        reports.append(report)
        if n_trials is None or task.n_called < n_trials:
            task(optimizer.ask())

    if n_reports is not None:
        task.on_report(scheduler.stop, when=lambda: len(reports) >= n_reports)
    scheduler.run(timeout=90)
    return reports


# -- RandomSearch --------------------------------------------------------------------------

SPACE = {"lr": (1e-4, 1e-1, "log"), "depth": (1, 8), "dropout": (0.0, 0.5), "kernel": ["rbf", "linear", "poly"]}


def test_random_search_asks_the_same_trials_for_the_same_seed() -> None:
    first, again, other = RandomSearch(SPACE, seed=7), RandomSearch(SPACE, seed=7), RandomSearch(SPACE, seed=8)
    a = [first.ask() for _ in range(50)]
    assert a == [again.ask() for _ in range(50)]
    assert [t.config for t in a] != [other.ask().config for _ in range(50)]
    assert [t.name for t in a[:3]] == ["trial-0", "trial-1", "trial-2"] and a[2].info == {"number": 2}
    for trial in a:
        c = trial.config
        assert 1e-4 <= c["lr"] <= 1e-1 and isinstance(c["lr"], float)
        assert 1 <= c["depth"] <= 8 and type(c["depth"]) is int
        assert 0.0 <= c["dropout"] <= 0.5 and c["kernel"] in ("rbf", "linear", "poly")
    assert {t.config["depth"] for t in a} == set(range(1, 9))  # both ends of an int range come up
    assert sum(t.config["lr"] < 1e-2 for t in a) > 20  # log-uniform: two decades of three below 1e-2


def test_random_search_takes_optuna_distributions_too(optuna: Any) -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    search = RandomSearch(
        {
            "lr": FloatDistribution(1e-4, 1e-1, log=True),
            "units": IntDistribution(16, 64, step=16),
            "momentum": FloatDistribution(0.0, 1.0, step=0.25),
            "act": CategoricalDistribution(["relu", "tanh"]),
        },
        seed=0,
    )
    configs = [search.ask().config for _ in range(40)]
    assert {c["units"] for c in configs} == {16, 32, 48, 64}
    assert {c["momentum"] for c in configs} <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert all(1e-4 <= c["lr"] <= 1e-1 for c in configs) and {c["act"] for c in configs} == {"relu", "tanh"}


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"x": (1.0, 0.0)}, r"entry 'x': \(1\.0, 0\.0\) has low >= high"),
        ({"x": (0, 1, 2)}, r"entry 'x'.*third item that is not 'log'"),
        ({"x": (1.0,)}, r"entry 'x'.*tuple of 1 items"),
        ({"x": (0.0, math.inf)}, r"entry 'x'.*finite numbers"),
        ({"x": ("a", "b")}, r"entry 'x'.*finite numbers"),
        ({"x": (0.0, 1.0, "log")}, r"entry 'x'.*log-uniform with low <= 0"),
        ({"x": []}, r"entry 'x'.*empty list"),
        ({"ok": (0, 1), "x": "uniform"}, r"entry 'x': 'uniform' is not a search dimension"),
        ({"x": {0, 1}}, r"entry 'x'.*not a search dimension"),
        ({"x": (True, False)}, r"entry 'x'.*finite numbers"),
        ({}, r"the search space is empty"),
        ({1: (0, 1)}, r"key 1 is not a parameter name"),
    ],
)
def test_a_bad_search_space_fails_naming_the_entry_and_the_accepted_forms(space: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        RandomSearch(space)
    if "entry" in match:
        assert "accepted: (low, high)" in str(info.value)


def test_random_search_checks_its_other_arguments() -> None:
    with pytest.raises(TypeError, match="a search space is a mapping"):
        RandomSearch([("x", (0, 1))])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction='min' is not a direction; accepted: 'minimize' or 'maximize'"):
        RandomSearch({"x": (0, 1)}, direction="min")


def test_random_search_keeps_what_it_is_told_and_knows_the_best() -> None:
    search = RandomSearch({"x": (0.0, 1.0)}, seed=1, direction="maximize", metric="acc")
    assert isinstance(search, Optimizer)
    t0, t1, t2, t3 = (search.ask() for _ in range(4))
    assert search.best is None and search.pending == [t0, t1, t2, t3]
    search.tell(t1.success(acc=0.7))
    search.tell(t0.success(acc=0.9))
    search.tell(t2.fail(acc=0.99))  # failed trials are never the best
    with t3.begin():
        raise OSError("disk full")
    search.tell(t3.crashed())
    assert search.best is not None and search.best.trial == t0 and search.pending == []
    assert search.n_told == 4 and [r.trial.name for r in search.reports] == ["trial-1", "trial-0", "trial-2", "trial-3"]
    df = search.df()
    assert list(df.trial) == ["trial-1", "trial-0", "trial-2", "trial-3"]
    assert list(df.status) == ["success", "success", "fail", "crashed"]
    assert df.loc[3, "exception_type"] == "OSError" and df.loc[0, "config.x"] == t1.config["x"]

    with pytest.raises(ValueError, match="trial 'trial-0' is not one this search asked and is waiting for"):
        search.tell(t0.success(acc=1.0))  # told twice
    with pytest.raises(TypeError, match="tell\\(\\) takes a Trial.Report"):
        search.tell({"acc": 1.0})  # type: ignore[arg-type]
    t4 = search.ask()
    with pytest.raises(
        ValueError, match="success report of trial 'trial-4' has no result 'acc'.*results are \\['loss'\\]"
    ):
        search.tell(t4.success(loss=0.1))


def test_random_search_drives_a_trial_task_on_processes(no_orphans: None) -> None:
    search = RandomSearch({"x": (-5.0, 5.0), "y": (-5.0, 5.0)}, seed=3)
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(quadratic, scheduler)
    reports = ask_tell_loop(search, task, scheduler, n_workers=2, n_trials=16)
    assert len(reports) == 16 == search.n_told and search.pending == []
    assert search.best is not None and search.best.results["loss"] == task.df()["result.loss"].min()
    again = RandomSearch({"x": (-5.0, 5.0), "y": (-5.0, 5.0)}, seed=3)
    assert sorted(r.trial.name for r in reports) == sorted(f"trial-{i}" for i in range(16))
    assert {r.trial.name: dict(r.trial.config) for r in reports} == {
        t.name: t.config for t in (again.ask() for _ in range(16))
    }


def test_importing_byop_nb_and_its_optimizers_does_not_import_optuna() -> None:
    code = (
        "import sys, byop_nb\n"
        "from byop_nb.optimization import OptunaOptimizer, RandomSearch, Optimizer\n"
        "RandomSearch({'x': (0, 1)}).ask()\n"
        "assert 'optuna' not in sys.modules, 'optuna was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


# -- OptunaOptimizer: arguments ------------------------------------------------------------


def test_optuna_optimizer_makes_loads_or_takes_a_study(optuna: Any, tmp_path: Path) -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = {"x": FloatDistribution(-1, 1), "n": (1, 4), "lr": (1e-3, 1.0, "log"), "k": ["a", "b"]}
    made = OptunaOptimizer(space)
    assert made.study.direction.name == "MINIMIZE" and made.metric == "loss"
    assert made.space["x"] is space["x"] and made.space["n"] == IntDistribution(1, 4)
    assert made.space["lr"] == FloatDistribution(1e-3, 1.0, log=True)
    assert made.space["k"] == CategoricalDistribution(["a", "b"])

    journal = tmp_path / "study.log"
    first = OptunaOptimizer(space, storage=journal, study_name="s", direction="maximize", metric="acc")
    first.tell(first.ask().success(acc=0.5))
    second = OptunaOptimizer(space, storage=journal, study_name="s", direction="maximize", metric="acc")
    assert second.study.study_name == "s" and len(second.study.trials) == 1
    assert second.ask().info["optuna_trial"] == 1  # it continues the study
    with pytest.raises(ValueError, match=r"study 's' in that storage has direction\(s\) \['maximize'\]"):
        OptunaOptimizer(space, storage=journal, study_name="s", metric="acc")

    url = f"sqlite:///{tmp_path / 'study.db'}"
    by_url = OptunaOptimizer(space, storage=url, study_name="db", sampler=optuna.samplers.RandomSampler(seed=0))
    assert isinstance(by_url.study.sampler, optuna.samplers.RandomSampler)

    study = optuna.create_study(direction="maximize")
    taken = OptunaOptimizer(space, study=study, metric="acc")
    assert taken.study is study
    with pytest.raises(ValueError, match="study= is given, so storage=, sampler= cannot be"):
        OptunaOptimizer(space, study=study, storage=url, sampler=optuna.samplers.RandomSampler())
    with pytest.raises(TypeError, match="study= takes an optuna.Study"):
        OptunaOptimizer(space, study="s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="entry 'x': 'normal' is not a search dimension"):
        OptunaOptimizer({"x": "normal"})
    with pytest.raises(ValueError, match="direction='up' is not a direction"):
        OptunaOptimizer(space, direction="up")
    with pytest.raises(ValueError, match=r"1 direction\(s\) for 2 metric\(s\)"):
        OptunaOptimizer(space, metric=["loss", "seconds"])
    with pytest.raises(ValueError, match=r"has 1 objective\(s\) and metric=\['loss', 'seconds'\] names 2"):
        OptunaOptimizer(space, study=study, metric=["loss", "seconds"])


def test_multi_objective_tells_every_metric(optuna: Any) -> None:
    optimizer = OptunaOptimizer({"x": (0.0, 1.0)}, metric=["loss", "seconds"], direction=["minimize", "minimize"])
    trial = optimizer.ask()
    optimizer.tell(trial.success(loss=0.25, seconds=3))
    (frozen,) = optimizer.study.trials
    assert frozen.state.name == "COMPLETE" and frozen.values == [0.25, 3.0]
    assert optimizer.metric == ["loss", "seconds"]


def test_tell_rejects_bad_reports_and_leaves_no_trial_running(optuna: Any) -> None:
    optimizer = OptunaOptimizer({"x": (0.0, 1.0)}, metric="loss")
    trial = optimizer.ask()
    with pytest.raises(
        ValueError,
        match=r"success report of trial 'trial-0' has no result 'loss' \(metric='loss'\); its results are \['acc'\]",
    ):
        optimizer.tell(trial.success(acc=0.9))
    frozen = optimizer.study.trials[0]
    assert frozen.state.name == "FAIL" and "has no result 'loss'" in frozen.user_attrs["byop_nb.reason"]
    with pytest.raises(ValueError, match="cannot tell trial 0 .*a report is told once"):
        optimizer.tell(trial.success(loss=0.1))

    trial = optimizer.ask()
    with pytest.raises(ValueError, match="the result 'loss' of trial 'trial-1' is 'low', not a number"):
        optimizer.tell(trial.success(loss="low"))
    with pytest.raises(TypeError, match="takes a Trial.Report"):
        optimizer.tell(trial)  # type: ignore[arg-type]
    stranger = Trial(name="t", config={"x": 0.5})
    with pytest.raises(ValueError, match=r"trial 't' was not asked from study .*its info is \{\}"):
        optimizer.tell(stranger.success(loss=1.0))
    other = OptunaOptimizer({"x": (0.0, 1.0)})
    with pytest.raises(ValueError, match="was not asked from study"):
        optimizer.tell(other.ask().success(loss=1.0))

    crashed = optimizer.ask()
    optimizer.tell(crashed.crashed(OSError("disk full")))
    with pytest.raises(ValueError, match=f"cannot tell trial {crashed.info['optuna_trial']} .*it is FAIL already"):
        optimizer.tell(crashed.crashed(OSError("disk full")))

    trial = optimizer.ask()
    optimizer.tell(trial.success(loss=math.nan))  # a diverged run is an outcome, not a mistake
    frozen = optimizer.study.trials[trial.info["optuna_trial"]]
    assert frozen.state.name == "FAIL" and frozen.user_attrs["byop_nb.reason"] == "metric ['loss'] is NaN"
    assert [t.state.name for t in optimizer.study.trials] == ["FAIL", "FAIL", "FAIL", "FAIL"]


def test_a_trial_asked_by_one_optimizer_can_be_told_by_another_on_the_same_study(optuna: Any) -> None:
    study = optuna.create_study()
    asker, teller = OptunaOptimizer({"x": (0.0, 1.0)}, study=study), OptunaOptimizer({"x": (0.0, 1.0)}, study=study)
    first, second = asker.ask(), asker.ask()
    teller.tell(first.success(loss=0.5))
    teller.tell(second.crashed(MemoryError("out of memory")))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"] and study.trials[0].value == 0.5
    assert study.trials[1].user_attrs["byop_nb.exception"] == "MemoryError: out of memory"
    assert len(asker.pending) == 2  # the asker was not told; its fail_pending leaves the finished trials alone
    assert asker.fail_pending() == 0 and asker.pending == []
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]


# -- OptunaOptimizer: the loop, on processes and dask ---------------------------------------


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_n_trials_on_processes_end_with_exactly_n_trials_told(optuna: Any, start_method: str, no_orphans: None) -> None:
    n = 12
    optimizer = OptunaOptimizer({"x": (-5.0, 5.0), "y": (-5.0, 5.0)}, sampler=optuna.samplers.TPESampler(seed=0))
    scheduler = Scheduler.with_processes(2, start_method=start_method)
    task = Trial.Task(quadratic, scheduler)
    reports = ask_tell_loop(optimizer, task, scheduler, n_workers=2, n_trials=n)

    assert len(reports) == n == optimizer.n_told == optimizer.n_asked and optimizer.pending == []
    trials = optimizer.study.get_trials(deepcopy=False)
    assert len(trials) == n and all(t.state.name == "COMPLETE" for t in trials)
    for report in reports:
        frozen = trials[report.trial.info["optuna_trial"]]
        assert frozen.params == report.trial.config and frozen.value == report.results["loss"]
    df = optimizer.df()
    assert len(df) == n and set(df.trial) == set(task.df().trial)
    assert optimizer.study.best_value == task.df()["result.loss"].min()


@pytest.mark.dask
def test_stopping_after_n_reports_on_dask_tells_every_report_and_fails_what_never_ran(
    optuna: Any, dask_cluster: Any, no_orphans: None
) -> None:
    n = 10
    optimizer = OptunaOptimizer({"x": (-5.0, 5.0), "y": (-5.0, 5.0)}, sampler=optuna.samplers.TPESampler(seed=1))
    scheduler = Scheduler.with_dask(dask_cluster)
    task = Trial.Task(quadratic, scheduler)
    scheduler.on_finished(optimizer.fail_pending)
    reports = ask_tell_loop(optimizer, task, scheduler, n_workers=2, n_reports=n)
    dask_cluster.get_client().close()

    # The stop takes effect after the reports already back are handled (each asks again, refused).
    assert scheduler.exit_code is ExitCode.STOPPED and n <= len(reports) <= n + 4
    told = {r.trial.info["optuna_trial"] for r in reports}
    trials = optimizer.study.get_trials(deepcopy=False)
    assert {t.number for t in trials if t.state.name == "COMPLETE"} == told
    never_ran = [t for t in trials if t.number not in told]  # asked after the stop: the task refused them
    assert len(never_ran) >= 1 and len(trials) == len(reports) + len(never_ran)
    assert all(t.state.name == "FAIL" and t.user_attrs["byop_nb.status"] == "cancelled" for t in never_ran)
    assert optimizer.pending == [] and len(task.df()) == len(reports)


def test_each_kind_of_report_becomes_its_study_state(optuna: Any, no_orphans: None) -> None:
    from optuna.distributions import CategoricalDistribution

    kinds = ["success", "fail", "crash", "wall_time", "memory", "pruned"]
    optimizer = OptunaOptimizer({"kind": CategoricalDistribution(kinds)})
    for kind in kinds:
        optimizer.study.enqueue_trial({"kind": kind})
    # spawn: the memory limit caps the address space, and a fresh worker starts small
    scheduler = Scheduler.with_processes(2, start_method="spawn")
    task = Trial.Task(by_kind, scheduler, wall_time_limit=3, memory_limit=(400, "MB"))
    reports = ask_tell_loop(optimizer, task, scheduler, n_workers=2, n_trials=len(kinds))
    assert len(reports) == len(kinds)

    by_kind_ = {t.params["kind"]: t for t in optimizer.study.get_trials(deepcopy=False)}
    assert {kind: t.state.name for kind, t in by_kind_.items()} == {
        "success": "COMPLETE",
        "fail": "FAIL",
        "crash": "FAIL",
        "wall_time": "FAIL",
        "memory": "FAIL",
        "pruned": "PRUNED",
    }
    assert by_kind_["success"].value == 1.5 and by_kind_["success"].user_attrs.keys() == {"byop_nb.asked_by"}
    fail = by_kind_["fail"].user_attrs
    assert fail["byop_nb.status"] == "fail" and fail["byop_nb.value"] == 50.0 and "byop_nb.limit" not in fail
    crash = by_kind_["crash"].user_attrs
    assert crash["byop_nb.status"] == "crashed" and crash["byop_nb.exception"] == "ZeroDivisionError: diverged"
    wall = by_kind_["wall_time"].user_attrs
    assert wall["byop_nb.status"] == "crashed" and wall["byop_nb.limit"] == "wall_time"
    assert "wall-time limit" in wall["byop_nb.exception"]
    memory = by_kind_["memory"].user_attrs
    assert memory["byop_nb.status"] == "crashed" and memory["byop_nb.limit"] == "memory", memory
    assert by_kind_["pruned"].user_attrs["byop_nb.status"] == "crashed"
    assert optimizer.df().set_index("trial").loc["trial-3", "user_attrs_byop_nb.limit"] == "wall_time"


def test_cancelled_and_refused_trials_become_fail_with_fail_pending(optuna: Any, no_orphans: None) -> None:
    optimizer = OptunaOptimizer({"seconds": [30]})
    scheduler = Scheduler.with_processes(1)
    task = Trial.Task(sleeps, scheduler, call_limit=2)
    scheduler.on_finished(optimizer.fail_pending)

    @scheduler.on_start
    def launch() -> None:
        for _ in range(3):  # the third is refused by the call limit: asked, never run
            task(optimizer.ask())

    start = time.monotonic()
    assert scheduler.run(timeout=1, wait=False) is ExitCode.TIMEOUT  # both calls cancelled
    assert time.monotonic() - start < 10
    trials = optimizer.study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "FAIL"]
    assert all(t.user_attrs["byop_nb.status"] == "cancelled" for t in trials)
    assert list(task.df().status) == ["cancelled", "cancelled"] and optimizer.pending == []


def test_a_new_optimizer_fails_the_running_trials_of_ended_processes_only(optuna: Any) -> None:
    study = optuna.create_study()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    import psutil

    me = psutil.Process()
    askers = {
        "dead": {"host": socket.gethostname(), "pid": dead.pid, "started": 1.0},
        "reused pid": {"host": socket.gethostname(), "pid": os.getpid(), "started": me.create_time() - 100},
        "alive": {"host": socket.gethostname(), "pid": os.getpid(), "started": round(me.create_time(), 2)},
        "other host": {"host": "elsewhere", "pid": dead.pid, "started": 1.0},
        "not byop_nb": None,
    }
    for asked_by in askers.values():
        trial = study.ask()
        if asked_by is not None:
            trial.set_user_attr("byop_nb.asked_by", asked_by)
    optimizer = OptunaOptimizer({"x": (0.0, 1.0)}, study=study)
    assert optimizer.orphaned == [0, 1]
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL", "RUNNING", "RUNNING", "RUNNING"]
    assert study.trials[0].user_attrs["byop_nb.status"] == "orphaned"
    assert (
        f"process {dead.pid} on {socket.gethostname()} asked it and ended"
        in study.trials[0].user_attrs["byop_nb.reason"]
    )


CHILD = """
import sys, time
from pathlib import Path

import optuna
from byop_nb.optimization import OptunaOptimizer, Trial
from byop_nb.scheduling import Scheduler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def slow(trial):
    with trial.begin():
        time.sleep(0.1)
        loss = (trial.config["x"] - 1) ** 2
    return trial.success(loss=loss)


if __name__ == "__main__":
    optimizer = OptunaOptimizer({"x": (-5.0, 5.0)}, storage=Path(sys.argv[1]), study_name="resume")
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(slow, scheduler)

    @scheduler.on_start(repeat=2)
    def launch():
        task(optimizer.ask())

    @task.on_report
    def tell_and_ask(report):
        optimizer.tell(report)
        print("told", report.trial.info["optuna_trial"], flush=True)
        task(optimizer.ask())

    scheduler.run(timeout=120)
"""


def test_a_study_resumes_after_its_process_is_killed_with_no_trial_lost_or_left_running(
    optuna: Any, tmp_path: Path, no_orphans: None
) -> None:
    journal = tmp_path / "study.log"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, str(script), str(journal)], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        deadline = time.monotonic() + 60
        while True:  # mid-study: some trials told, two running
            assert child.poll() is None and time.monotonic() < deadline, "the study did not get going"
            try:
                study = optuna.load_study(study_name="resume", storage=storage)
            except KeyError:  # not created yet
                study = None
            if study is not None and sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)) >= 6:
                break
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        # The pool's workers outlive a SIGKILLed parent (they wait on its call queue): end its session.
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output = child.stdout.read() if child.stdout else ""
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    told_before = {int(line.split()[1]) for line in output.splitlines() if line.startswith("told ")}

    before = {t.number: t for t in optuna.load_study(study_name="resume", storage=storage).trials}
    running = sorted(n for n, t in before.items() if t.state.name == "RUNNING")
    assert running, "no trial was running when the process was killed"
    complete = {n for n, t in before.items() if t.state.name == "COMPLETE"}
    assert told_before <= complete and len(complete - told_before) <= 1  # (killed between a tell and its print)

    optimizer = OptunaOptimizer({"x": (-5.0, 5.0)}, storage=journal, study_name="resume")
    assert optimizer.orphaned == running
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(quadratic_x, scheduler)
    reports = ask_tell_loop(optimizer, task, scheduler, n_workers=2, n_trials=6)
    assert len(reports) == 6

    after = {t.number: t for t in optimizer.study.get_trials(deepcopy=False)}
    assert len(after) == len(before) + 6 and sorted(after) == list(range(len(after)))
    assert not [n for n, t in after.items() if t.state.name == "RUNNING"]
    for number in complete:  # the earlier trials, as they were
        assert after[number].state.name == "COMPLETE" and after[number].value == before[number].value
    for number in running:
        attrs = after[number].user_attrs
        assert after[number].state.name == "FAIL" and attrs["byop_nb.status"] == "orphaned"
        assert f"process {child.pid} " in attrs["byop_nb.reason"]
    new = {r.trial.info["optuna_trial"] for r in reports}
    assert min(new) == len(before) and all(after[n].state.name == "COMPLETE" for n in new)
    df = optimizer.df()
    assert len(df) == len(after) and df.state.value_counts().to_dict() == {
        "COMPLETE": len(complete) + 6,
        "FAIL": len(running),
    }


def quadratic_x(trial: Trial) -> Trial.Report:
    with trial.begin():
        loss = (trial.config["x"] - 1) ** 2
    return trial.success(loss=loss)


# -- the guide and the docstrings, run as written -------------------------------------------


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text (or a docstring), dedented."""
    import re
    import textwrap

    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", text, flags=re.S)]


def run_as_main(directory: Path, source: str) -> str:
    """Run `source` as a script's `__main__` in a new Python, in `directory`; its stdout."""
    script = directory / "example.py"
    script.write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(python_command(script), cwd=directory, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_guides_loop_runs_as_written(tmp_path: Path, no_orphans: None) -> None:
    loop = python_blocks((ROOT / "docs" / "guide" / "optimizers.md").read_text())[0]
    run_as_main(tmp_path, loop + "\nassert optimizer.n_told >= 2 and optimizer.best is not None\n")


def test_the_docstring_examples_run_as_written(optuna: Any, tmp_path: Path, no_orphans: None) -> None:
    from byop_nb.optimization import optimizers

    module_example = python_blocks(optimizers.__doc__ or "")[0]
    run_as_main(tmp_path, module_example + "\nassert optimizer.n_told == 20\n")
    (optuna_example,) = python_blocks(OptunaOptimizer.__doc__ or "")
    run_as_main(
        tmp_path,
        "import optuna\noptuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        + optuna_example
        + "\nassert len(optimizer.df()) == len(optimizer.study.trials) >= 30 and Path('study.log').exists()\n",
    )
    (random_example,) = python_blocks(RandomSearch.__doc__ or "")
    namespace: dict[str, Any] = {}
    exec(random_example.replace("search.best.trial is trial   # True", "assert search.best.trial is trial"), namespace)
    assert namespace["trial"].config["depth"] == 7 and namespace["trial"].config["kernel"] == "rbf"
    (protocol_example,) = python_blocks(Optimizer.__doc__ or "")
    exec(protocol_example, {})


def accuracy_of(trial: Trial) -> float:
    """An Optuna-style objective: returns the number, no report."""
    return 1.0 - abs(trial.config["x"]) / 10


def test_an_objective_that_returns_a_plain_number_tells_the_study_its_value(optuna: Any, no_orphans: None) -> None:
    optimizer = OptunaOptimizer(
        {"x": (-5.0, 5.0)}, direction="maximize", metric="accuracy", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(accuracy_of, scheduler)
    reports = ask_tell_loop(optimizer, task, scheduler, n_workers=2, n_trials=6)

    assert [r.status for r in reports] == ["success"] * 6
    trials = optimizer.study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    for trial in trials:
        assert trial.value == pytest.approx(1.0 - abs(trial.params["x"]) / 10)
    assert optimizer.study.best_value == task.df()["result.accuracy"].max()


def test_a_long_crash_message_keeps_its_end_in_the_studys_user_attributes(optuna: Any) -> None:
    optimizer = OptunaOptimizer({"x": (0.0, 1.0)})
    trial = optimizer.ask()
    optimizer.tell(trial.crashed(ValueError("x" * 3000 + "; pass learning_rate= instead")))
    (frozen,) = optimizer.study.trials
    kept = frozen.user_attrs["byop_nb.exception"]
    assert kept.startswith("ValueError: xxx") and kept.endswith("xx; pass learning_rate= instead")
    assert len(kept) < 1100 and "characters; the middle left out)" in kept
