"""Trial, its reports, and Trial.Task: timing, crash capture, events, recording, limits, a random search."""

from __future__ import annotations

import math
import pickle
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from byop_nb.optimization import Trial
from byop_nb.scheduling import ExitCode, Scheduler

# -- functions the workers run -------------------------------------------------------


def evaluate(trial: Trial) -> Trial.Report:
    """Success, fail or crash, as the config says."""
    with trial.begin():
        x = trial.config["x"]
        if trial.config.get("raise_inside"):
            raise ArithmeticError("inside begin")
        loss = (x - 3) ** 2
    if trial.exception is not None:
        return trial.crashed()
    if loss > 50:
        return trial.fail(loss=loss, reason="too far")
    return trial.success(loss=loss, echo=trial.config.get("payload"))


def escapes(trial: Trial) -> Trial.Report:
    raise KeyError(f"escaped from {trial.name}")


def sleeps(trial: Trial, seconds: float) -> Trial.Report:
    with trial.begin():
        time.sleep(seconds)
    return trial.success()


def allocates(trial: Trial) -> Trial.Report:
    blob = bytearray(600 * 2**20)  # more than the memory limit
    return trial.success(size=len(blob))


def allocates_inside_begin(trial: Trial) -> Trial.Report:
    with trial.begin():
        blob = bytearray(600 * 2**20)  # more than the memory limit, inside the timed block
    if trial.exception is not None:
        return trial.crashed()
    return trial.success(size=len(blob))


def quadratic(trial: Trial) -> Trial.Report:
    with trial.begin():
        loss = (trial.config["x"] - 1.0) ** 2 + (trial.config["y"] + 2.0) ** 2
    return trial.success(loss=loss)


@pytest.fixture(scope="module", autouse=True)
def resource_tracker() -> None:
    """Start multiprocessing's resource tracker up front: the first spawn pool starts it once per
    process and it stays by design, so it must not count as a process the test left behind."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


@pytest.fixture
def dask_client() -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            host="127.0.0.1",
            protocol="tcp",
            dashboard_address="127.0.0.1:0",
            processes=False,
            n_workers=1,
            threads_per_worker=2,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# -- the trial in the worker ----------------------------------------------------------


def test_begin_times_the_block_in_wall_and_cpu_time() -> None:
    trial = Trial(name="t", config={"x": 1})
    with trial.begin():
        time.sleep(0.1)
        sum(i * i for i in range(300_000))  # some CPU
    timings = trial.timings
    assert timings is not None and trial.exception is None and trial.traceback is None
    assert 0.1 <= timings.wall_time < 2
    assert 0 < timings.cpu_time < timings.wall_time  # the sleep costs wall time, not CPU
    assert timings.end == pytest.approx(timings.start + timings.wall_time)
    report = trial.success(loss=0.5)
    assert isinstance(report, Trial.SuccessReport) and isinstance(report, Trial.Report)
    assert (report.status, report.results, report.timings, report.trial) == ("success", {"loss": 0.5}, timings, trial)


def report_inside_the_block(trial: Trial) -> Trial.Report:
    with trial.begin():
        time.sleep(0.1)
        sum(i * i for i in range(300_000))  # some CPU
        return trial.success(loss=trial.config["x"])  # the byop-era pattern: the report inside the block


def test_a_report_made_inside_begin_records_the_timings_up_to_the_report(no_orphans: None) -> None:
    trial = Trial(name="inside", config={"x": 1.0})
    report = report_inside_the_block(trial)
    assert report.timings is not None and trial.timings is not None
    assert 0.1 <= report.timings.wall_time < 2 and 0 < report.timings.cpu_time < report.timings.wall_time
    assert report.timings.wall_time <= trial.timings.wall_time  # up to the report; the block ends after it

    scheduler = Scheduler.with_processes(1)
    task = Trial.Task(report_inside_the_block, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task(Trial(name="t-0", config={"x": 2.0}))

    assert scheduler.run() is ExitCode.EXHAUSTED
    row = task.df().iloc[0]
    assert row["status"] == "success" and row["result.loss"] == 2.0
    assert 0.1 <= row["wall_time"] < 2 and 0 < row["cpu_time"] < row["wall_time"]


def test_begin_captures_an_exception_with_its_traceback() -> None:
    trial = Trial(name="t", config={})

    def deep_in_the_model() -> None:
        raise ZeroDivisionError("diverged")

    with trial.begin():
        deep_in_the_model()
    assert isinstance(trial.exception, ZeroDivisionError)
    assert trial.traceback is not None and "deep_in_the_model" in trial.traceback
    assert trial.timings is not None

    crash = trial.crashed()
    assert isinstance(crash, Trial.CrashReport) and crash.status == "crashed"
    assert crash.exception is trial.exception and crash.traceback == trial.traceback and crash.limit is None
    fail = trial.fail(loss=math.inf)
    assert isinstance(fail, Trial.FailReport) and fail.status == "fail" and fail.exception is trial.exception


def test_begin_lets_keyboard_interrupt_through() -> None:
    trial = Trial(name="t")
    with pytest.raises(KeyboardInterrupt), trial.begin():
        raise KeyboardInterrupt
    assert trial.exception is None


def test_crashed_needs_an_exception() -> None:
    trial = Trial(name="t")
    with pytest.raises(ValueError, match="crashed\\(\\) needs the exception"):
        trial.crashed()
    error = OSError("disk full")
    report = trial.crashed(error, epochs=3)
    assert report.exception is error and report.results == {"epochs": 3} and "OSError: disk full" in report.traceback


def test_a_trial_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="name= must be a non-empty str"):
        Trial(name="", config={})
    with pytest.raises(TypeError, match="config= must be a mapping"):
        Trial(name="t", config=[1, 2])  # type: ignore[arg-type]
    assert Trial(name="t", info=None).info == {}  # type: ignore[arg-type]


def test_reports_pickle_small_and_an_unpicklable_exception_travels_as_text() -> None:
    trial = Trial(name="t-7", config={"lr": 0.01, "depth": 3, "kernel": "rbf"}, info={"seed": 7})
    with trial.begin():
        raise ValueError("bad depth")
    report = trial.fail(loss=1.5)
    data = pickle.dumps(report)
    assert len(data) < 3000
    back = pickle.loads(data)
    assert type(back) is Trial.FailReport and back.trial == trial and back.results == {"loss": 1.5}
    assert isinstance(back.exception, ValueError) and back.traceback == report.traceback

    class Unpicklable(Exception):  # a local class: pickle cannot find it
        pass

    with trial.begin():
        raise Unpicklable("lost class")
    crash = pickle.loads(pickle.dumps(trial.crashed()))
    assert isinstance(crash.exception, RuntimeError) and "Unpicklable: lost class" in str(crash.exception)


def test_trials_compare_by_value_and_key_dicts() -> None:
    a = Trial(name="t", config={"x": 1})
    b = pickle.loads(pickle.dumps(a))
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != Trial(name="t", config={"x": 2})


# -- Trial.Task ------------------------------------------------------------------------


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_trial_task_reports_every_kind_and_config_and_results_survive_the_process_round_trip(
    start_method: str, no_orphans: None
) -> None:
    scheduler = Scheduler.with_processes(2, start_method=start_method)
    task = Trial.Task(evaluate, scheduler)
    payload = {"nested": {"tuple": (1, 2.5, None), "list": [1, "a"]}, "float": 0.1 + 0.2, "big": 2**70}
    trials = {
        "good": Trial(name="good", config={"x": 2.5, "payload": payload}, info={"seed": 1}),
        "far": Trial(name="far", config={"x": 30}, info={"seed": 2}),
        "inside": Trial(name="inside", config={"x": 0, "raise_inside": True}, info={"seed": 3}),
    }
    log: list[tuple[str, Any]] = []
    reports: dict[str, Trial.Report] = {}
    task.on_done(lambda future: log.append(("done", future)))
    task.on_returned(lambda report: log.append(("returned", report.trial.name)))
    task.on_report(lambda report: log.append(("report", report.trial.name)))
    task.on_success(lambda report: log.append(("success", report.trial.name)))
    task.on_failed(lambda report: log.append(("failed", report.trial.name)))
    task.on_crashed(lambda report: log.append(("crashed", report.trial.name)))
    task.on_report(lambda report: reports.__setitem__(report.trial.name, report))
    scheduler.on_start(lambda: [task(trial) for trial in trials.values()])
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED

    good, far, inside = reports["good"], reports["far"], reports["inside"]
    assert isinstance(good, Trial.SuccessReport)
    assert good.trial == trials["good"] and good.trial.config == trials["good"].config  # unchanged by the trip
    assert good.results == {"loss": 0.25, "echo": payload} and good.results["echo"]["big"] == 2**70
    assert good.timings is not None and good.timings.wall_time >= 0 and good.exception is None
    assert isinstance(far, Trial.FailReport) and far.results == {"loss": 729, "reason": "too far"}
    assert isinstance(inside, Trial.CrashReport) and isinstance(inside.exception, ArithmeticError)
    assert "raise ArithmeticError" in inside.traceback and inside.limit is None

    for name, kind in (("good", "success"), ("far", "failed"), ("inside", "crashed")):
        mine = [event for event, subject in log if subject == name]
        assert mine == ["returned", "report", kind]
    assert [event for event, _ in log].count("done") == 3

    counts = scheduler.counts
    assert counts[(task.REPORT, "evaluate")] == 3
    assert counts[(task.SUCCESS, "evaluate")] == counts[(task.FAILURE, "evaluate")] == 1
    assert counts[(task.CRASHED, "evaluate")] == 1

    df = task.df().set_index("trial")
    assert len(df) == 3
    assert df.loc["good", "status"] == "success" and df.loc["far", "status"] == "fail"
    assert df.loc["inside", "status"] == "crashed" and df.loc["inside", "exception_type"] == "ArithmeticError"
    assert df.loc["good", "config.x"] == 2.5 and df.loc["far", "info.seed"] == 2
    assert df.loc["good", "result.loss"] == 0.25 and df.loc["far", "result.reason"] == "too far"
    assert df["wall_time"].notna().all() and df["cpu_time"].notna().all()
    assert set(df["task"]) == {"evaluate"} and sorted(df["call"]) == [1, 2, 3]


def test_an_exception_escaping_the_function_becomes_a_crash_report() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(escapes, scheduler)
    trial = Trial(name="t-1", config={"x": 1})
    log: list[Any] = []
    task.on_exception(lambda e: log.append("exception"))
    task.on_report(lambda report: log.append("report"))
    task.on_crashed(log.append)
    scheduler.on_start(lambda: task(trial))
    scheduler.run(timeout=30)
    assert log[:2] == ["exception", "report"]
    crash = log[2]
    assert isinstance(crash, Trial.CrashReport) and crash.trial is trial
    assert isinstance(crash.exception, KeyError) and "escaped from t-1" in str(crash.exception)
    assert "in escapes" in crash.traceback and crash.timings is None
    row = task.history.row(0)
    assert row["status"] == "crashed" and row["exception_type"] == "KeyError" and row["config.x"] == 1


def returns_plain(trial: Trial) -> Any:
    """Returns what the config's "value" is, as an Optuna objective returns its value."""
    return trial.config["value"]


def plain_returns_of(values: list[Any], **trial_options: Any) -> list[Trial.Report]:
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(returns_plain, scheduler)
    reports: list[Trial.Report] = []
    task.on_report(reports.append)
    scheduler.on_start(
        lambda: [task(Trial(name=f"t-{i}", config={"value": v}, **trial_options)) for i, v in enumerate(values)]
    )
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    return sorted(reports, key=lambda r: r.trial.name)


def test_a_returned_number_is_a_success_under_value_and_a_mapping_of_numbers_a_success_with_it(
    no_orphans: None,
) -> None:
    import numpy as np

    reports = plain_returns_of([0.97, 3, np.float32(0.5), {"accuracy": 0.9, "loss": np.int64(2)}])
    assert [type(r) for r in reports] == [Trial.SuccessReport] * 4
    assert [dict(r.results) for r in reports] == [
        {"value": 0.97},
        {"value": 3},
        {"value": 0.5},
        {"accuracy": 0.9, "loss": 2},
    ]
    assert type(reports[2].results["value"]) is float and type(reports[3].results["loss"]) is int


def test_a_returned_number_goes_under_the_trials_metric() -> None:
    (report,) = plain_returns_of([0.25], metric="accuracy")
    assert isinstance(report, Trial.SuccessReport) and report.results == {"accuracy": 0.25}


@pytest.mark.parametrize(
    ("value", "options", "says"),
    [
        (
            42,
            {"metric": ["loss", "accuracy"]},
            "returned 42, one number for the 2 metrics ['loss', 'accuracy']; return {'loss': ..., 'accuracy': ...}",
        ),
        (
            "0.9",
            {},
            "returned '0.9'; return a number (recorded as 'value'), a mapping of metric names to numbers "
            "(e.g. {'value': ...}), or a report: trial.success(...), trial.fail(...) or trial.crashed(...)",
        ),
        (None, {"metric": "loss"}, "returned None; return a number (recorded as 'loss')"),
        (True, {}, "returned True; return a number"),
        ([0.1, 0.2], {}, "returned [0.1, 0.2]; return a number"),
        ({"loss": "low"}, {}, "its entry 'loss': 'low' is not a metric name with a number; return a number"),
        ({"accuracy": 0.9}, {"metric": "loss"}, "without the metric 'loss' of the optimizer that asked the trial"),
        ({}, {}, "returned {}, an empty mapping"),
    ],
)
def test_any_other_return_value_is_a_crash_that_says_what_to_return(value: Any, options: Any, says: str) -> None:
    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(returns_plain, scheduler)
    crashes: list[Trial.Report] = []
    task.on_crashed(crashes.append)
    scheduler.on_start(lambda: task(Trial(name="t", config={"value": value}, **options)))
    scheduler.run(timeout=30)
    (crash,) = crashes
    assert isinstance(crash.exception, TypeError)
    assert f"the function of Trial.Task 'returns_plain' {says}" in str(crash.exception) or says in str(
        crash.exception
    ), str(crash.exception)
    assert task.df()["exception_message"].iloc[0] == str(crash.exception)


def test_a_trials_metric_must_name_results() -> None:
    with pytest.raises(TypeError, match=r"Trial metric= must be a result's name .* got 3"):
        Trial(name="t", metric=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got \[\]"):
        Trial(name="t", metric=[])
    assert Trial(name="t").metrics == ["value"] and Trial(name="t", metric=["a", "b"]).metrics == ["a", "b"]


def test_calling_a_trial_task_without_a_trial_fails_at_the_call() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(evaluate, scheduler)
    scheduler.on_start(lambda: task({"x": 1}))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="called with a Trial first"):
        scheduler.run(timeout=30)
    assert task.n_called == 0


def test_a_wall_time_limit_hit_becomes_a_crash_report_naming_the_limit(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(1)
    task = Trial.Task(sleeps, scheduler, wall_time_limit=1)
    crashes: list[Trial.Report] = []
    task.on_crashed(crashes.append)
    scheduler.on_start(lambda: task(Trial(name="slow", config={"s": 30}), 30))
    start = time.monotonic()
    scheduler.run(timeout=30)
    assert time.monotonic() - start < 10
    (crash,) = crashes
    assert isinstance(crash, Trial.CrashReport) and crash.limit == "wall_time"
    assert "wall-time limit" in str(crash.exception)
    assert task.history.row(0)["status"] == "crashed"
    assert scheduler.counts[(task.WALL_TIME_LIMIT_REACHED, "sleeps")] == 1


# allocates_inside_begin: begin() lets the MemoryError through, so the limit is named, not a plain crash.
@pytest.mark.parametrize("function", [allocates, allocates_inside_begin], ids=["outside begin", "inside begin"])
def test_a_memory_limit_hit_becomes_a_crash_report_naming_the_limit(function: Any, no_orphans: None) -> None:
    # spawn: the limit caps the address space, and a fresh worker starts small
    scheduler = Scheduler.with_processes(1, start_method="spawn")
    task = Trial.Task(function, scheduler, memory_limit=(400, "MB"))
    crashes: list[Trial.Report] = []
    task.on_crashed(crashes.append)
    scheduler.on_start(lambda: task(Trial(name="hungry")))
    scheduler.run(timeout=60)
    (crash,) = crashes
    assert crash.limit == "memory", crash.exception
    assert task.df()["status"].tolist() == ["crashed"]


def test_begin_lets_a_memory_error_through() -> None:
    trial = Trial(name="t")
    with pytest.raises(MemoryError), trial.begin():
        raise MemoryError("out of memory")
    assert trial.exception is None and trial.timings is not None


def test_a_cancelled_trial_makes_no_report_but_is_recorded(no_orphans: None) -> None:
    scheduler = Scheduler.with_processes(1)
    task = Trial.Task(sleeps, scheduler)
    reports: list[Trial.Report] = []
    task.on_report(reports.append)

    @scheduler.on_start
    def launch() -> None:
        task(Trial(name="long"), 30)
        scheduler.stop()

    assert scheduler.run(timeout=30, wait=False) is ExitCode.STOPPED
    assert reports == []
    assert task.history.row(0)["status"] == "cancelled" and task.history.row(0)["trial"] == "long"


@pytest.mark.dask
def test_trial_task_on_dask(dask_client: Any) -> None:
    scheduler = Scheduler.with_dask(dask_client)
    task = Trial.Task(evaluate, scheduler)
    successes: list[Trial.Report] = []
    task.on_success(successes.append)
    scheduler.on_start(lambda: task(Trial(name="d", config={"x": 4})))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert [r.results["loss"] for r in successes] == [1]


# -- an optimization loop, the guide's way -----------------------------------------------


def random_search(*, n_reports: int, target: float | None, seed: int) -> tuple[ExitCode, Any, Any]:
    """The example's random search, as a user would write it in a notebook."""
    rng = random.Random(seed)
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(quadratic, scheduler)
    names = iter(range(10**6))

    def sample() -> Trial:
        config = {"x": rng.uniform(-5, 5), "y": rng.uniform(-5, 5)}
        return Trial(name=f"trial-{next(names)}", config=config)

    @scheduler.on_start(repeat=2)
    @task.on_report
    def ask_for_more() -> None:
        task(sample())

    @task.on_report(when=lambda: len(task.history) >= n_reports)
    def enough_reports() -> None:
        scheduler.stop()

    if target is not None:

        @task.on_success(when=lambda: task.df()["result.loss"].min() <= target)
        def good_enough() -> None:
            scheduler.stop()

    exit_code = scheduler.run(timeout=60)
    df = task.df()
    best = df[df.status == "success"].sort_values("result.loss").iloc[0]
    return exit_code, df, best


def test_random_search_stops_after_n_reports_and_finds_the_best(no_orphans: None) -> None:
    exit_code, df, best = random_search(n_reports=20, target=None, seed=0)
    assert exit_code is ExitCode.STOPPED
    assert 20 <= len(df) <= 22  # the stop lets the calls still running finish (wait=True)
    assert (df.status == "success").all() and df.trial.is_unique
    assert best["result.loss"] == df["result.loss"].min()
    assert best["result.loss"] == pytest.approx((best["config.x"] - 1.0) ** 2 + (best["config.y"] + 2.0) ** 2)


def test_random_search_stops_at_a_target_value(no_orphans: None) -> None:
    exit_code, df, best = random_search(n_reports=10_000, target=2.0, seed=1)
    assert exit_code is ExitCode.STOPPED
    assert best["result.loss"] <= 2.0 and len(df) < 10_000
    # It stopped at the first report that reached the target: after it come only the calls that were
    # running, and those that reports already queued in the loop submitted before the stop took effect.
    reached = df.index[df["result.loss"] <= 2.0][0]
    assert len(df) - (reached + 1) <= 4


def test_importing_byop_nb_stays_light_and_trial_is_there_on_first_use() -> None:
    code = (
        "import sys, byop_nb\n"
        "heavy = [m for m in ('pandas', 'dask', 'ipywidgets', 'matplotlib', 'IPython', 'byop_nb.optimization')"
        " if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "from byop_nb import Trial\n"
        "from byop_nb.optimization import Trial as T\n"
        "assert Trial is T and byop_nb.Trial is T\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- crashes say so (issue 22, item 2) ---------------------------------------------------------


def reads_learning_rate(trial: Trial) -> float:
    """Crashes unless the config has the key: the typo of a real search space."""
    return trial.config["learning_rate"] * 2


def test_crashed_trials_are_said_at_the_runs_end_even_when_on_report_handled_them(
    no_orphans: None, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(reads_learning_rate, scheduler, name="evaluate")
    seen: list[tuple[int, int]] = []

    @task.on_report
    def watch(report: Trial.Report) -> None:  # handles every report; the run's end still speaks
        summary = task.failure_summary()  # live, during the run
        seen.append((summary.failed, summary.ended))

    scheduler.on_start(lambda: task.map([Trial(name=f"t-{i}", config={"lr": 0.1}) for i in range(6)], in_flight=1))
    with caplog.at_level("WARNING", logger="byop_nb"):
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    said = [r.getMessage() for r in caplog.records if r.name.startswith("byop_nb")]
    assert said == [
        "6 of 6 trials of 'evaluate' crashed; first: KeyError: 'learning_rate' (trial t-0, call 1); see task.df()"
    ]
    assert seen == [(n, n) for n in range(1, 7)]
    summary = task.failure_summary()
    assert summary.line == str(summary) == said[0].removesuffix("; see task.df()")
    assert (summary.noun, summary.statuses, summary.in_a_row, summary.first_trial) == (
        "trials",
        {"crashed": 6},
        6,
        "t-0",
    )


def succeeds_unless(trial: Trial) -> Trial.Report:
    with trial.begin():
        if trial.config["crash"]:
            raise ValueError(f"crash {trial.name}")
    if trial.exception is not None:
        return trial.crashed()
    if trial.config.get("fail"):
        return trial.fail(loss=1.0)
    return trial.success(loss=0.0)


def test_end_after_failures_ends_the_run_after_n_failed_trials_in_a_row(no_orphans: None) -> None:
    # crash, success (starts the count afresh), fail, crash, crash: the 3rd in a row ends the run.
    kinds = [(True, False), (False, False), (False, True), (True, False), (True, False), (False, False)]
    scheduler = Scheduler.with_processes(1)
    task = Trial.Task(succeeds_unless, scheduler)
    in_a_row: list[int] = []
    task.on_report(lambda report: in_a_row.append(task.failure_summary().in_a_row))
    trials = [Trial(name=f"t-{i}", config={"crash": c, "fail": f}) for i, (c, f) in enumerate(kinds)]
    scheduler.on_start(lambda: task.map(trials, in_flight=1))
    assert scheduler.run(timeout=60, end_after_failures=3) is ExitCode.EXCEPTION
    assert task.df()["status"].tolist() == ["crashed", "success", "fail", "crashed", "crashed"]
    assert in_a_row == [1, 0, 1, 2, 3]
    assert str(scheduler.last_error) == (
        "the run ended after 3 failed trials in a row of 'succeeds_unless' (end_after_failures=3); "
        "the last: ValueError: crash t-4"
    )
    # Without the option the same trials all run.
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED and len(task.df()) == 5 + 6


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (2.5, TypeError), (True, TypeError)])
def test_end_after_failures_takes_a_positive_int(value: Any, error: type[Exception]) -> None:
    scheduler = Scheduler.with_threads(1)
    with pytest.raises(error, match=rf"end_after_failures= must be a positive int or None, got {value!r}"):
        scheduler.run(end_after_failures=value)


def test_a_fail_report_without_an_exception_is_summarised_by_its_results() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(succeeds_unless, scheduler)
    scheduler.on_start(lambda: task(Trial(name="far", config={"crash": False, "fail": True})))
    scheduler.run(timeout=30)
    summary = task.failure_summary()
    assert summary.first_error == "fail (loss=1.0)"
    assert summary.line == "1 of 1 trials of 'succeeds_unless' failed; first: fail (loss=1.0) (trial far, call 1)"
