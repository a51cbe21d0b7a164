"""A Trial.Task is a CommTask: a trial function talks through `trial.comm`; and the one ending of a call, `Call.end`."""

from __future__ import annotations

from typing import Any

import pytest

from byop_nb.optimization import Trial
from byop_nb.scheduling import Comm, CommError, Scheduler, Status
from byop_nb.scheduling.engine._call import Call
from byop_nb.scheduling.task import Task

# -- trial functions (module level: importable by spawned workers) ------------------


def talking_trial(trial: Trial, scale: int = 1) -> Trial.Report:
    assert isinstance(trial.comm, Comm)
    trial.comm.send({"trial": trial.name, "step": 1})
    lr = trial.comm.request("learning rate?")
    return trial.success(loss=trial.config["x"] * lr * scale)


def silent_trial(trial: Trial) -> Trial.Report:
    # The comm is there but never used: it has not connected.
    return trial.success(comm=repr(trial.comm))


def sends_on_sequential(trial: Trial) -> Trial.Report:
    assert trial.comm is not None
    try:
        trial.comm.send("hello")
    except CommError as e:
        return trial.fail(error=str(e))
    return trial.success()


def _schedulers() -> list[Any]:
    return [
        pytest.param(lambda: Scheduler.with_processes(2), id="processes"),
        pytest.param(lambda: Scheduler.with_threads(2), id="threads"),
    ]


@pytest.mark.parametrize("make", _schedulers())
def test_a_trial_function_sends_a_message_and_gets_its_request_answered(make: Any, no_orphans: None) -> None:
    scheduler = make()
    task = Trial.Task(talking_trial, scheduler)
    trials = [Trial(name=f"t-{i}", config={"x": i}) for i in range(3)]
    events: list[tuple[str, Any]] = []

    @scheduler.on_start
    def launch() -> None:
        for trial in trials:
            task(trial, scale=10)

    @task.on_message
    def message(msg: Comm.Msg) -> None:
        assert msg.args[0] in trials  # the trial the message is about
        events.append(("message", msg.data["trial"]))

    @task.on_request
    def request(msg: Comm.Msg) -> None:
        trial: Trial = msg.args[0]
        events.append(("request", trial.name))
        msg.respond(0.5 if trial.name != "t-2" else 2.0)

    @task.on_close
    def close(msg: Comm.Msg) -> None:
        events.append(("close", msg.args[0].name))

    @task.on_done
    def done(future: Any) -> None:
        events.append(("done", None))

    @task.on_success
    def success(report: Trial.Report) -> None:
        events.append(("success", report.trial.name))

    scheduler.run()
    df = task.df()
    assert sorted(df["result.loss"]) == [0.0, 5.0, 40.0]
    assert list(df["status"]) == ["success"] * 3
    assert sorted(name for kind, name in events if kind == "message") == ["t-0", "t-1", "t-2"]
    assert sorted(name for kind, name in events if kind == "request") == ["t-0", "t-1", "t-2"]
    # Per trial: its message and request, then one CLOSE, then DONE, then its report's events.
    for name in ("t-0", "t-1", "t-2"):
        mine = [i for i, (kind, n) in enumerate(events) if n == name]
        kinds = [events[i][0] for i in mine]
        assert kinds == ["message", "request", "close", "success"], kinds
        assert events[mine[2] + 1] == ("done", None)  # DONE right after the trial's CLOSE
    assert all(trial.comm is None for trial in trials)  # the main side's trials never keep a comm


@pytest.mark.parametrize("make", _schedulers())
def test_a_trial_that_never_uses_its_comm_never_connects(make: Any, no_orphans: None) -> None:
    scheduler = make()
    task = Trial.Task(silent_trial, scheduler)
    reports: list[Trial.Report] = []
    task.on_report(reports.append)

    @scheduler.on_start
    def launch() -> None:
        task.map([Trial(name=f"t-{i}") for i in range(4)], in_flight=2)

    scheduler.run()
    assert [r.status for r in reports] == [Status.SUCCESS] * 4
    assert all(r.results["comm"].endswith(", open)") for r in reports), [r.results for r in reports]
    assert all(r.trial.comm is None for r in reports)  # the report travels back without the comm


def test_on_the_sequential_executor_a_trial_runs_but_its_comm_says_why_it_cannot_be_used() -> None:
    scheduler = Scheduler.with_sequential()
    task = Trial.Task(sends_on_sequential, scheduler)  # created: a Trial.Task runs there, unlike a CommTask
    reports: list[Trial.Report] = []
    task.on_report(reports.append)

    @scheduler.on_start
    def launch() -> None:
        task(Trial(name="t-0"))

    scheduler.run()
    (report,) = reports
    assert report.status is Status.FAIL
    error = report.results["error"]
    assert "sequential executor" in error and "Trial.Task 'sends_on_sequential'" in error
    assert "Scheduler.with_threads(1)" in error


def test_a_call_ends_once_and_says_how() -> None:
    scheduler = Scheduler.with_threads(1)
    task = Task(abs, scheduler)
    call = Call(task, 1, (-3,), {}, 0.0)
    assert call.status is None
    call.end(Status.RETURNED, 3)
    assert (call.status, call.result, call.exception) == (Status.RETURNED, 3, None)
    with pytest.raises(RuntimeError, match=r"has ended already \(with status 'returned'\); a call ends once"):
        call.end(Status.CANCELLED)
    fresh = Call(task, 2, (), {}, 0.0)
    with pytest.raises(TypeError, match="Call.end\\(\\) needs a byop_nb Status, got 'returned'"):
        fresh.end("returned")  # type: ignore[arg-type]
    assert fresh.status is None


def test_a_cancelled_trial_ends_as_cancelled_without_a_report(no_orphans: None) -> None:
    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(slow_trial, scheduler)
    reports: list[Trial.Report] = []
    closes: list[str] = []
    task.on_report(reports.append)
    task.on_close(lambda msg: closes.append(msg.args[0].name))

    @scheduler.on_start
    def launch() -> None:
        task(Trial(name="runs"))
        task(Trial(name="queued"))
        scheduler.stop()

    scheduler.run(wait=False)
    df = task.df()
    assert list(df["status"]) == ["cancelled", "cancelled"]
    assert reports == []  # a cancelled trial makes no report
    assert sorted(closes) == ["queued", "runs"]  # each call's comm closed once


def slow_trial(trial: Trial) -> Trial.Report:
    import time

    time.sleep(1.0)
    return trial.success()
