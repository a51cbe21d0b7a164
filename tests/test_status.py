"""One status vocabulary: each status a row can hold, and what each Task class says it means."""

from __future__ import annotations

import pytest

from byop_nb.optimization import Trial
from byop_nb.scheduling import CommTask, Status, Task

# What the docs say (docs/guide/dataframes.md, the Status and Task docstrings).
PLAIN = {
    Status.RETURNED: "success",
    Status.EXCEPTION: "failure",
    Status.MEMORY_LIMIT: "failure",
    Status.CPU_TIME_LIMIT: "failure",
    Status.WALL_TIME_LIMIT: "failure",
    Status.CANCELLED: "cancelled",
}
TRIALS = {
    Status.SUCCESS: "success",
    Status.FAIL: "failure",
    Status.CRASHED: "failure",
    Status.PRUNED: "pruned",
    Status.CANCELLED: "cancelled",
}


@pytest.mark.parametrize(("status", "outcome"), PLAIN.items())
@pytest.mark.parametrize("cls", [Task, CommTask])
def test_task_and_comm_task_classify_each_status_as_documented(cls: type[Task], status: Status, outcome: str) -> None:
    assert cls.outcome(status) == outcome
    assert cls.outcome(status.value) == outcome  # the text in a DataFrame means the same


@pytest.mark.parametrize(("status", "outcome"), TRIALS.items())
def test_trial_task_classifies_each_status_as_documented(status: Status, outcome: str) -> None:
    assert Trial.Task.outcome(status) == outcome


@pytest.mark.parametrize("cls", [Task, CommTask, Trial.Task])
def test_a_status_another_class_uses_is_refused_with_the_accepted_ones(cls: type[Task]) -> None:
    foreign = Status.SUCCESS if cls is not Trial.Task else Status.RETURNED
    with pytest.raises(ValueError, match=rf"{foreign.value!r} is not a status of .*accepted: \["):
        cls.outcome(foreign)


def test_every_status_is_used_by_some_task_class_and_is_its_text() -> None:
    assert set(PLAIN) | set(TRIALS) == set(Status)
    for status in Status:
        assert status == status.value and isinstance(status, str)


def test_limit_statuses_name_their_limit_both_ways() -> None:
    for limit in ("memory", "cpu_time", "wall_time"):
        assert Status.of_limit(limit).limit == limit
    assert Status.RETURNED.limit is None and Status.CRASHED.limit is None


def test_report_kinds_carry_their_status() -> None:
    assert Trial.SuccessReport.status is Status.SUCCESS
    assert Trial.FailReport.status is Status.FAIL
    assert Trial.CrashReport.status is Status.CRASHED
