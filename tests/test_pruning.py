"""Multi-fidelity trials: `trial.report_step`, `trial.should_prune`, `trial.prune` through the Comm.

Real parts throughout: process pools, a dask LocalCluster, Optuna studies on SQLite, a study's
process SIGKILLed and resumed. The Slurm test is in test_slurm.py (it shares that module's cluster).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import learn

from byop_nb._html import counters_table_html, task_counters
from byop_nb.optimization import OptunaOptimizer, PruningOptimizer, RandomSearch, Trial
from byop_nb.optimization.trial import read_steps
from byop_nb.scheduling import ExitCode, Scheduler, Status, Task

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8


@pytest.fixture
def optuna() -> Any:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        import optuna
    else:
        optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def pruning_optimizer(optuna: Any, storage: Any = None, study_name: str | None = None) -> OptunaOptimizer:
    """A study whose pruner stops, from step 1 on, a trial worse than the median of the earlier ones."""
    return OptunaOptimizer(
        {"x": (0.0, 1.0)},
        storage=storage,
        study_name=study_name,
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )


def run_study(scheduler: Scheduler, optimizer: Any, n_trials: int, *, in_flight: int = 2, **options: Any) -> Any:
    """The ask-and-tell loop of the docs on `learn`; returns the task."""
    task = Trial.Task(learn, scheduler)

    @scheduler.on_start(repeat=in_flight)
    def launch() -> None:
        task(optimizer.ask(), **options)

    @task.on_report
    def tell_and_ask(report: Trial.Report) -> None:
        optimizer.tell(report)
        if task.n_called < n_trials:
            task(optimizer.ask(), **options)

    assert scheduler.run(timeout=120) is ExitCode.EXHAUSTED
    return task


def check_pruned_study(task: Any, optimizer: OptunaOptimizer, n_trials: int) -> None:
    """What every backend must show: pruned trials ran fewer steps, the study holds them PRUNED with their
    intermediate values, and steps_df() has a row for each reported step."""
    df = task.df()
    statuses = df.set_index("trial")["status"].to_dict()
    assert len(statuses) == n_trials
    pruned = {name for name, status in statuses.items() if status == "pruned"}
    complete = {name for name, status in statuses.items() if status == "success"}
    assert pruned and complete and pruned | complete == set(statuses)
    steps = task.steps_df()
    per_trial = steps.groupby("trial")["step"].agg(["count", "max"])
    assert all(per_trial.loc[name, "count"] == STEPS for name in complete)
    assert all(per_trial.loc[name, "count"] < STEPS for name in pruned)  # pruned trials ran fewer steps
    assert list(steps.columns) == ["trial", "call", "step", "loss", "accuracy", "time"]
    assert str(steps["step"].dtype) == "int64" and str(steps["loss"].dtype) == "float64"
    assert str(steps["time"].dtype) == "datetime64[ns, UTC]"
    # One row per reported step: the steps of each trial are 0, 1, ... in order.
    for _, rows in steps.groupby("trial"):
        assert list(rows["step"]) == list(range(len(rows)))
    assert task.counts[task.PRUNED] == len(pruned)
    counters = task_counters(task)  # what the Dashboard's counters table shows: pruned, its own column
    assert list(counters)[2:5] == ["succeeded", "failed", "pruned"]
    assert (counters["succeeded"], counters["failed"], counters["pruned"]) == (len(complete), 0, len(pruned))
    # The study holds them PRUNED, with their intermediate values, the same as the task's steps.
    study = {f"trial-{t.number}": t for t in optimizer.study.get_trials(deepcopy=False)}
    for name, status in statuses.items():
        frozen = study[name]
        assert frozen.state.name == ("PRUNED" if status == "pruned" else "COMPLETE")
        rows = steps[steps.trial == name]
        assert frozen.intermediate_values == dict(zip(rows["step"], rows["loss"], strict=True))
    stored = optimizer.steps_df()
    assert len(stored) == len(steps)
    assert set(stored[stored.state == "PRUNED"]["trial"]) == pruned


# -- on processes ---------------------------------------------------------------------------


def test_a_pruned_study_on_processes_stops_bad_trials_early_and_keeps_every_step(
    optuna: Any, tmp_path: Path, no_orphans: None
) -> None:
    optimizer = pruning_optimizer(optuna, storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="curves")
    scheduler = Scheduler.with_processes(2)
    task = run_study(scheduler, optimizer, n_trials=10)
    check_pruned_study(task, optimizer, 10)
    # Optuna gives a pruned trial its last intermediate value as its value.
    for frozen in optimizer.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)):
        assert frozen.value == frozen.intermediate_values[max(frozen.intermediate_values)]
        assert frozen.user_attrs["byop_nb.status"] == "pruned"
    pruned_rows = task.df().query("status == 'pruned'")
    assert (pruned_rows["result.loss"] > 0).all()


def test_a_pruned_report_carries_its_last_step_and_goes_to_on_pruned(optuna: Any, no_orphans: None) -> None:
    optimizer = pruning_optimizer(optuna)
    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(learn, scheduler)
    seen: dict[str, list[Trial.Report]] = {"pruned": [], "report": [], "failed": []}
    task.on_pruned(seen["pruned"].append)
    task.on_report(seen["report"].append)
    task.on_failed(seen["failed"].append)

    @scheduler.on_start
    @task.on_report
    def next_trial() -> None:
        if task.n_called < 10:
            trial = optimizer.ask()
            task(trial)

    task.on_report(optimizer.tell)
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert seen["pruned"] and not seen["failed"]
    for report in seen["pruned"]:
        assert isinstance(report, Trial.PrunedReport) and report.status == Status.PRUNED == "pruned"
        assert report.step is not None and report.step < STEPS - 1
        assert report.results["loss"] == pytest.approx(report.trial.config["x"] + 1 / (report.step + 1))
    assert Trial.Task.outcome("pruned") == "pruned"
    summary = task.failure_summary()
    assert summary.failed == 0  # a pruned trial is not a failure
    # The counters table: a "pruned" column after "failed", blank for a plain task, summed in the total row.
    plain = Task(abs, scheduler)
    table = counters_table_html([task, plain])
    rows = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)]
    head, trials, plains, total = rows
    assert head[3:7] == ["succeeded", "failed", "pruned", "cancelled"]
    assert trials[5] == str(len(seen["pruned"])) == total[5] and plains[5] == ""


# -- on dask --------------------------------------------------------------------------------


@pytest.mark.dask
def test_a_pruned_study_on_a_dask_cluster(optuna: Any, no_orphans: None) -> None:
    from multiprocessing import resource_tracker

    from distributed import LocalCluster

    resource_tracker.ensure_running()  # dask's nannies start it: one per interpreter, not an orphan
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        scheduler = Scheduler.with_dask(cluster)
        optimizer = pruning_optimizer(optuna)
        task = run_study(scheduler, optimizer, n_trials=8)
        check_pruned_study(task, optimizer, 8)


# -- the optimizers' side ---------------------------------------------------------------------


def test_random_search_never_prunes_and_its_steps_are_still_recorded_and_journaled(
    tmp_path: Path, no_orphans: None
) -> None:
    import pandas as pd

    search = RandomSearch({"x": (0.0, 1.0)}, seed=0)
    assert isinstance(search, PruningOptimizer) and search.prunes is False
    scheduler = Scheduler.with_processes(2)
    task = run_study(scheduler, search, n_trials=4)
    assert set(task.df()["status"]) == {"success"}
    steps = task.steps_df()
    assert len(steps) == 4 * STEPS
    assert steps.groupby("trial").size().to_dict() == {f"trial-{i}": STEPS for i in range(4)}
    # A journal gets the steps recorded so far, then each new one as it arrives.
    journal = tmp_path / "steps.jsonl"
    task.stream_steps_to(journal)
    assert len(journal.read_text().splitlines()) == 4 * STEPS
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED  # a second run: its launch asks 2 more trials
    assert len(task.steps_df()) == 6 * STEPS
    pd.testing.assert_frame_equal(read_steps(journal), task.steps_df())


def test_an_optuna_optimizer_without_a_pruner_does_not_prune(optuna: Any) -> None:
    optimizer = OptunaOptimizer({"x": (0.0, 1.0)})
    assert optimizer.prunes is False and isinstance(optimizer.study.pruner, optuna.pruners.NopPruner)
    trial = optimizer.ask()
    optimizer.report_step(trial, 0, {"loss": 5.0})
    assert optimizer.should_prune(trial) is False
    assert optimizer.study.trials[0].intermediate_values == {0: 5.0}  # the steps still go to the study
    with pytest.raises(TypeError, match=r"pruner= takes an Optuna pruner .* got 'median'"):
        OptunaOptimizer({"x": (0.0, 1.0)}, pruner="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"pruner= works with one metric"):
        OptunaOptimizer(
            {"x": (0.0, 1.0)},
            metric=["a", "b"],
            direction=["minimize", "minimize"],
            pruner=optuna.pruners.MedianPruner(),
        )
    with pytest.raises(ValueError, match=r"study= is given, so pruner= cannot be"):
        OptunaOptimizer({"x": (0.0, 1.0)}, study=optimizer.study, pruner=optuna.pruners.MedianPruner())


def test_a_trial_travels_without_its_optimizer_but_knows_whether_it_prunes(optuna: Any) -> None:
    trial = pruning_optimizer(optuna).ask()
    assert trial.optimizer is not None
    copy = pickle.loads(pickle.dumps(trial))
    assert copy.optimizer is None and copy._prunes is True and copy == trial
    plain = pickle.loads(pickle.dumps(RandomSearch({"x": (0.0, 1.0)}).ask()))
    assert plain._prunes is False


# -- bad input ------------------------------------------------------------------------------


def misbehave(trial: Trial, how: str) -> Trial.Report:
    if how == "step back":
        trial.report_step(3, loss=1.0)
        trial.report_step(3, loss=0.5)
    elif how == "no metric":
        trial.report_step(0, accuracy=0.5)
    elif how == "not an int":
        trial.report_step(1.5, loss=0.5)  # type: ignore[arg-type]
    elif how == "prune without a pruner":
        trial.report_step(0, loss=0.5)
        return trial.prune(loss=0.5)
    return trial.success(loss=0.0)


@pytest.mark.parametrize(
    ("how", "error", "message"),
    [
        (
            "step back",
            ValueError,
            "trial 'trial-0': report_step(step=3) after step 3: steps must increase; report step 4 or later",
        ),
        (
            "no metric",
            ValueError,
            "trial 'trial-0': report_step(0, accuracy=...) lacks 'loss', the metric of the optimizer that asked "
            "the trial; report it, e.g. trial.report_step(0, loss=...)",
        ),
        ("not an int", ValueError, "trial 'trial-0': report_step(step=1.5): a step is an int (an epoch, a round)"),
        (
            "prune without a pruner",
            RuntimeError,
            "trial 'trial-0': prune() in a run without a pruner: the optimizer that asked the trial (RandomSearch)"
            " never prunes",
        ),
    ],
)
def test_bad_steps_and_a_prune_without_a_pruner_fail_the_trial_at_the_call_that_was_wrong(
    how: str, error: type[Exception], message: str, no_orphans: None
) -> None:
    search = RandomSearch({"x": (0.0, 1.0)}, seed=0)
    scheduler = Scheduler.with_processes(1)
    task = Trial.Task(misbehave, scheduler)
    reports: list[Trial.Report] = []
    task.on_report(reports.append)
    scheduler.on_start(lambda: task(search.ask(), how))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    (report,) = reports
    assert isinstance(report, Trial.CrashReport) and type(report.exception) is error
    assert str(report.exception).startswith(message), str(report.exception)
    assert "in misbehave" in (report.traceback or "")  # raised in the worker, at the call


def test_should_prune_and_report_step_outside_a_running_trial_say_where_they_work(optuna: Any) -> None:
    trial = pruning_optimizer(optuna).ask()
    for call in (trial.should_prune, lambda: trial.report_step(0, loss=1.0)):
        with pytest.raises(RuntimeError, match=r"works inside the function of a running Trial.Task call"):
            call()
    with pytest.raises(RuntimeError, match=r"prune\(\) in a run without a pruner.*a trial made by hand"):
        Trial(name="t").prune(loss=1.0)


# -- the channel: the task's own, the user's callbacks untouched -------------------------------


def chat_and_learn(trial: Trial) -> Trial.Report:
    assert trial.comm is not None
    trial.comm.send("hello")
    trial.report_step(0, loss=1.0)
    answer = trial.comm.request("question")
    trial.should_prune()
    return trial.success(loss=0.5, answer=answer)


def test_the_users_on_message_and_on_request_see_their_own_messages_and_not_the_steps(no_orphans: None) -> None:
    search = RandomSearch({"x": (0.0, 1.0)}, seed=0)
    scheduler = Scheduler.with_processes(1)
    task = Trial.Task(chat_and_learn, scheduler)
    messages: list[Any] = []
    requests: list[Any] = []
    task.on_message(lambda msg: messages.append(msg.data))

    @task.on_request
    def answer(msg: Any) -> None:
        requests.append(msg.data)
        msg.respond(42)

    reports: list[Trial.Report] = []
    task.on_report(reports.append)
    scheduler.on_start(lambda: task(search.ask()))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert messages == ["hello"] and requests == ["question"]
    (report,) = reports
    assert report.status == "success" and report.results["answer"] == 42
    assert len(task.steps_df()) == 1


# -- resume after SIGKILL ---------------------------------------------------------------------

CHILD = """
import sys, time

import optuna
sys.path.insert(0, sys.argv[2])
from helpers import learn
from byop_nb.optimization import OptunaOptimizer, Trial
from byop_nb.scheduling import Scheduler

optuna.logging.set_verbosity(optuna.logging.WARNING)

if __name__ == "__main__":
    optimizer = OptunaOptimizer(
        {"x": (0.0, 1.0)}, storage=sys.argv[1], study_name="curves",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(learn, scheduler)
    task.stream_steps_to(sys.argv[3])

    @scheduler.on_start(repeat=2)
    def launch():
        task(optimizer.ask(), delay=0.05)

    @task.on_report
    def tell_and_ask(report):
        optimizer.tell(report)
        task(optimizer.ask(), delay=0.05)

    scheduler.run(timeout=120)
"""


def test_a_resume_after_sigkill_keeps_the_earlier_learning_curves(
    optuna: Any, tmp_path: Path, no_orphans: None
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    # The killed process cannot remove its comm's socket folder: it makes it in a short folder of ours.
    child_tmp = Path(tempfile.mkdtemp(prefix="byop-kill-", dir="/tmp"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TMPDIR": str(child_tmp),
    }
    journal = tmp_path / "steps.jsonl"
    child = subprocess.Popen(
        [sys.executable, str(script), url, str(ROOT / "tests"), str(journal)], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while True:  # mid-study: trials finished, two running with some steps reported
            assert child.poll() is None and time.monotonic() < deadline, "the study did not get going"
            try:
                trials = optuna.load_study(study_name="curves", storage=url).get_trials(deepcopy=False)
            except Exception:  # not created yet (KeyError), or the child is creating the tables (locked)
                trials = []
            finished = [t for t in trials if t.state.is_finished()]
            running = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
            if len(finished) >= 4 and running:
                break
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)  # the pool's workers, whose parent is gone
        except ProcessLookupError:
            pass
        child.wait(timeout=10)
        shutil.rmtree(child_tmp, ignore_errors=True)
    assert child.returncode == -signal.SIGKILL
    before = {t.number: t for t in optuna.load_study(study_name="curves", storage=url).trials}
    curves_before = {n: dict(t.intermediate_values) for n, t in before.items() if t.intermediate_values}
    assert any(t.state.name == "PRUNED" for t in before.values()) or len(curves_before) >= 4

    # The task's own journal of steps has them too (all but, at most, the step being written at the kill).
    # (The study gets a step before the journal does: a kill between the two leaves the journal one short.)
    journaled = read_steps(journal)
    assert set(journaled["trial"]) <= {f"trial-{n}" for n in curves_before}
    for number, curve in curves_before.items():
        rows = journaled[journaled.trial == f"trial-{number}"]
        assert dict(zip(rows["step"], rows["loss"], strict=True)).items() <= curve.items()
        assert len(curve) - len(rows) <= 1
    assert len(journaled) >= sum(map(len, curves_before.values())) - 2  # two trials ran at the kill

    optimizer = pruning_optimizer(optuna, storage=url, study_name="curves")
    assert optimizer.orphaned  # the trials the kill interrupted, with the steps they had reported
    stored = optimizer.steps_df()
    for number, curve in curves_before.items():  # the earlier curves are all there
        rows = stored[stored.number == number]
        assert dict(zip(rows["step"], rows["loss"], strict=True)) == curve
    scheduler = Scheduler.with_processes(2)
    task = run_study(scheduler, optimizer, n_trials=4)
    after = optimizer.steps_df()
    assert len(after) == len(stored) + len(task.steps_df())
    assert set(after["number"]) >= set(curves_before)


# -- the Dashboard's learning curves ------------------------------------------------------------


def test_the_live_data_reads_the_curves_and_greys_out_pruned_trials(optuna: Any, no_orphans: None) -> None:
    pytest.importorskip("matplotlib")
    from byop_nb.notebook.plots import LiveData, PlotRenderer

    optimizer = pruning_optimizer(optuna)
    scheduler = Scheduler.with_processes(2)
    data = LiveData(x="number")
    renderer = PlotRenderer()
    task = run_study(scheduler, optimizer, n_trials=8)
    assert data.update([task], scheduler.started_at)
    assert data.has_curves and data.curve_metric == "loss"  # the optimizer's metric, not the first reported
    steps = task.steps_df()
    assert set(data.curves) == set(steps["trial"])
    pruned = set(task.df().query("status == 'pruned'")["trial"])
    assert {name for name, curve in data.curves.items() if curve.pruned} == pruned
    for name, curve in data.curves.items():
        assert curve.steps == [float(s) for s in steps[steps.trial == name]["step"]]
    png = renderer.render(data)
    assert png.startswith(b"\x89PNG") and renderer._layout == ("ended", "values", "curves")
    lines = {key[1]: lines[0] for key, lines in renderer._lines.items() if key[0] == "curves"}
    assert len(lines) == len(data.curves)
    from matplotlib.colors import to_rgba

    for name, curve in data.curves.items():
        grey = to_rgba(lines[curve.index].get_color()) == to_rgba("0.72")
        assert grey == curve.pruned, name
    assert "pruned (grey)" in renderer._titles[renderer._axes["curves"]]
    assert not data.update([task], scheduler.started_at)  # nothing new: nothing read


def test_the_curves_panel_keeps_most_curves_whole_when_one_diverges() -> None:
    pytest.importorskip("matplotlib")
    from byop_nb.notebook.plots import LiveData, PlotRenderer

    data = LiveData()
    steps: list[dict[str, Any]] = []

    from byop_nb.history import History

    class Steps:  # what LiveData reads of a Trial.Task: its (empty) history and its steps
        name = "train"
        history = History("train")
        step_rows = steps
        SUCCESSES, FAILURES = Trial.Task.SUCCESSES, Trial.Task.FAILURES  # how it colours its statuses

    task = Steps()
    renderer = PlotRenderer()

    def report(trial: str, values: list[float]) -> None:
        for step, value in enumerate(values):
            steps.append({"trial": trial, "step": step, "metrics": {"loss": value}, "received": 1.0, "metric": "loss"})

    report("wild", [0.9, 0.95, 0.9])  # a diverged one first: the axis grows to hold it
    data.update([task], 0.0)  # type: ignore[list-item]
    renderer.render(data)
    ax = renderer._axes["curves"]
    assert ax.get_ylim()[1] >= 0.9
    for i in range(10):
        report(f"good-{i}", [0.2 - 0.01 * i, 0.1, 0.05])
    data.update([task], 0.0)  # type: ignore[list-item]
    renderer.render(data)
    assert ax.get_ylim()[1] < 0.5  # shrunk: 10 of the 11 curves whole, the wild one off the top
    assert "y clipped" in renderer._titles[ax] and "11 trials" in renderer._titles[ax]


def test_a_dashboard_draws_the_curves_while_the_study_runs(optuna: Any, no_orphans: None) -> None:
    pytest.importorskip("ipywidgets")
    from byop_nb.notebook import Dashboard

    optimizer = pruning_optimizer(optuna)
    scheduler = Scheduler.with_processes(2)
    task = Trial.Task(learn, scheduler)
    board = Dashboard(scheduler, task, optimizer=optimizer)
    seen: list[tuple[int, int, tuple[str, ...]]] = []

    @scheduler.on_start(repeat=2)
    def launch() -> None:
        task(optimizer.ask())

    @task.on_report
    def tell_and_ask(report: Trial.Report) -> None:
        optimizer.tell(report)
        if task.n_called < 8:
            task(optimizer.ask())
        board.refresh(redraw=True)  # what the Dashboard's timer does in a kernel, now
        pruned = sum(curve.pruned for curve in board._data.curves.values())
        seen.append((len(board._data.curves), pruned, board._renderer._layout))

    assert scheduler.run(timeout=120) is ExitCode.EXHAUSTED
    assert seen[0][0] >= 1 and seen[0][2][-1] == "curves"  # drawn from the first report on, mid-run
    assert seen[-1][0] == 8 and seen[-1][1] == (task.df()["status"] == "pruned").sum() > 0
    assert bytes(board.plot_image.value).startswith(b"\x89PNG")
    board.refresh(redraw=True)
    table = board.trials_html.value  # a pruned trial is not shown as a failure (red) in the table
    assert re.search(r'class="byop-text byop-quiet"[^>]*>pruned<', table) and 'class="byop-text byop-bad"' not in table
    board.close()


def test_on_the_sequential_executor_a_step_says_where_to_run_instead() -> None:
    scheduler = Scheduler.with_sequential()
    task = Trial.Task(learn, scheduler)
    reports: list[Trial.Report] = []
    task.on_report(reports.append)
    scheduler.on_start(lambda: task(Trial(name="t", config={"x": 0.5})))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    (report,) = reports
    assert report.status == "crashed" and "sequential executor" in str(report.exception)
    assert "Scheduler.with_threads(1)" in str(report.exception)
