"""The Dashboard and the HTML reprs: widgets driven directly, then over a real kernel's widget comm.

The unit tests click the buttons with `button.click()` (what a front end's
click ends in) inside an asyncio loop, as in a kernel, and read the widgets'
values. The kernel tests start an ipykernel, display a dashboard there and
talk to its widgets the way JupyterLab does: comm messages on the shell
channel in, state updates on iopub out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from queue import Empty
from typing import Any

import pytest

from byop_nb._html import scheduler_html, task_counters, task_html
from byop_nb.notebook import Dashboard
from byop_nb.notebook.plots import LiveData, numeric_value
from byop_nb.optimization import Trial
from byop_nb.scheduling import ExitCode, Scheduler, Task

PNG = b"\x89PNG\r\n\x1a\n"


def square(x: float) -> float:
    return x * x


def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def keep_busy(scheduler: Scheduler, task: Task, *args: Any, in_flight: int = 2) -> None:
    """Submit `in_flight` calls at start and a new one as each ends (while the run goes on)."""

    @scheduler.on_start(repeat=in_flight)
    @task.on_done
    def again() -> None:
        if scheduler.state == "running":
            task(*args)


def run_async(coroutine_function: Callable[[], Any]) -> Any:
    """Run a test body inside an event loop, as a kernel runs cells."""
    return asyncio.run(coroutine_function())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def status_text(board: Dashboard) -> str:
    import re

    return re.sub(r"<[^>]+>", "", board.status_html.value).replace("&middot;", "·")


# -- importing --------------------------------------------------------------------------


def test_display_and_byop_nb_import_without_ipywidgets_or_matplotlib():
    code = (
        "import sys, byop_nb, byop_nb.notebook\n"
        "from byop_nb import _html as display\n"
        "from byop_nb.scheduling import Scheduler, Task\n"
        "s = Scheduler.with_threads(1); t = Task(abs, s)\n"
        "assert 'Scheduler' in s._repr_html_() and 'abs' in t._repr_html_()\n"
        "print(sorted(m for m in ('ipywidgets', 'matplotlib', 'IPython') if m in sys.modules))\n"
        "from byop_nb.notebook import Dashboard\n"
        "print('ipywidgets' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.splitlines() == ["[]", "True"], out.stdout + out.stderr


def test_unknown_attribute_of_byop_nb_notebook_is_an_attribute_error():
    import byop_nb.notebook

    with pytest.raises(AttributeError, match="no attribute 'Dashbord'"):
        byop_nb.notebook.Dashbord  # noqa: B018


EXIT_SCRIPT = """
import sys
{imports}
from byop_nb import Scheduler, Task
from byop_nb.notebook import Dashboard

def square(x):
    return {{"loss": x * x}}

def main():
    scheduler = Scheduler.with_{executor}(2)
    task = Task(square, scheduler)
    scheduler.on_start(lambda: [task(x) for x in range(6)])
    kept = Dashboard(scheduler, task)
    scheduler.dashboard(plot=False)  # neither kept nor closed
    Dashboard(scheduler, task)  # the same, with a plot
    print(scheduler.run(timeout=120))
    return kept

if __name__ == "__main__":
    dashboard = main()
{ending}
"""

# What Python 3.12 and later do at exit, made to happen on any version (3.11 never collects an open
# widget): the last garbage collection calls each open dashboard's __del__ while the interpreter is
# finalizing and nothing can be imported any more.
SIMULATED_EXIT = """
    import builtins

    def no_import(*args, **kwargs):
        raise ImportError("sys.meta_path is None, Python is likely shutting down")

    really_finalizing, really_import = sys.is_finalizing, builtins.__import__
    sys.is_finalizing, builtins.__import__ = (lambda: True), no_import
    try:
        dashboard.__del__()
    finally:
        builtins.__import__, sys.is_finalizing = really_import, really_finalizing
"""


@pytest.mark.parametrize(
    ("executor", "imports", "ending"),
    [
        ("threads", "", ""),
        ("processes", "import matplotlib.pyplot", ""),
        ("processes", "", "    dashboard.close()"),
        ("threads", "", SIMULATED_EXIT),
    ],
    ids=["threads", "processes-pyplot", "closed", "simulated-exit"],
)
def test_a_plain_script_with_dashboards_exits_silently(no_orphans, tmp_path, executor, imports, ending):
    """No "Exception ignored in Widget.__del__ ... sys.meta_path is None" at exit (Python 3.12+ printed it
    for every dashboard left open: collected at exit, closing it cleared its figure, which imports)."""
    script = tmp_path / "script.py"
    script.write_text(EXIT_SCRIPT.format(executor=executor, imports=imports, ending=ending))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ExitCode.EXHAUSTED"
    # (Not stderr == "": a first matplotlib import on a fresh machine says it builds its font cache.)
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]


# -- HTML reprs --------------------------------------------------------------------------


def fails_on_odd(x: int) -> dict[str, int]:
    if x % 2:
        raise ValueError(f"odd <{x}>")
    return {"value": x, "double": 2 * x}


def test_scheduler_and_task_html_show_state_counters_and_last_results():
    scheduler = Scheduler.with_threads(1)
    task = Task(fails_on_odd, scheduler, name="<odd>", call_limit=4)

    @scheduler.on_start
    def launch() -> None:
        for x in range(5):  # the fifth is refused by call_limit
            task(x)

    assert scheduler.run() is ExitCode.EXHAUSTED
    assert task_counters(task) == {
        "submitted": 4,
        "running": 0,
        "succeeded": 2,
        "failed": 2,
        "cancelled": 1,  # refused by call_limit: it never ran (a study would call it cancelled)
        "limit hits": 0,  # memory, CPU and wall time only
    }
    html = scheduler_html(scheduler)
    assert "finished" in html and "exit code exhausted" in html and "ThreadPoolExecutor" in html
    assert "&lt;odd&gt;" in html and "<odd>" not in html  # names are escaped
    assert (
        '<td>4</td><td>0</td><td>2</td><td>2</td><td title="1 refused by call_limit">1</td><td>0</td><td>4</td>' in html
    )
    assert "scheduler-started=1" in html
    assert scheduler._repr_html_() == html

    shown = task_html(task, last=3)
    assert "call_limit=4" in shown and task._repr_html_() == task_html(task)
    results = shown.split("byop-last-results")[1]
    assert results.count("<tr>") == 4  # a header and the last 3 calls
    assert "ValueError: odd &lt;3&gt;" in results  # an exception, escaped
    assert "{&#x27;value&#x27;: 2, &#x27;double&#x27;: 4}" in results  # a dict result, from its result.<key> fields
    assert results.index("odd &lt;3&gt;") < results.index("&#x27;value&#x27;: 2")  # newest first


def test_scheduler_html_shows_the_error_of_a_callback():
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task(2)

    @task.on_returned
    def broken(result: float) -> None:
        raise KeyError("no such thing")

    with pytest.raises(KeyError):
        scheduler.run()
    assert "last error: <code>KeyError: &#x27;no such thing&#x27;</code>" in scheduler_html(scheduler)


# -- the widgets -------------------------------------------------------------------------


def test_new_dashboard_is_idle_with_only_start_enabled_and_an_image():
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    board = Dashboard(scheduler, task)
    assert status_text(board).startswith("idle")
    assert not board.start_button.disabled and board.stop_button.disabled
    assert bytes(board.plot_image.value).startswith(PNG) and board.n_redraws == 1
    assert board._progress_row.layout.display == "none"  # no call_limit, no timeout: no bound known
    assert "<td>square</td>" in board.counters_html.value
    assert "byop-dashboard" in board._dom_classes and "byop-stop" in board.stop_button._dom_classes
    board.close()


def test_start_and_stop_buttons_drive_a_background_run():
    scheduler = Scheduler.with_threads(2)
    task = Task(pause, scheduler)
    keep_busy(scheduler, task, 0.01)
    board = Dashboard(scheduler, task, timeout=30, interval=0.1)

    async def body() -> None:
        board.start_button.click()
        assert board.handle is not None and scheduler.state == "running"
        assert board.start_button.disabled and not board.stop_button.disabled
        await until(lambda: task_counters(task)["succeeded"] >= 20)
        await asyncio.sleep(0.3)  # a few ticks of the refresh timer
        assert status_text(board).startswith("running")
        assert board.progress_bar.description == "time" and 0 < board.progress_bar.value < 1

        board.stop_button.click()
        assert board.stop_button.disabled  # one Stop is enough
        assert await board.handle is ExitCode.STOPPED

    run_async(body)
    text = status_text(board)
    assert text.startswith("finished") and "exit code: stopped" in text
    assert not board.start_button.disabled and board.stop_button.disabled
    returned = task_counters(task)["succeeded"]
    assert f"<td>{returned}</td>" in board.counters_html.value
    assert scheduler.counts[(Task.RETURNED, "pause")] == returned
    board.close()


def test_start_passes_the_dashboards_run_options():
    scheduler = Scheduler.with_threads(1)
    board = Dashboard(scheduler, timeout=0.3, end_on_empty=False)

    async def body() -> ExitCode:
        return await board.start()

    assert run_async(body) is ExitCode.TIMEOUT  # nothing to do, yet it waited for the timeout
    assert scheduler.timeout == 0.3
    board.close()


def test_start_clicked_without_an_event_loop_shows_why_in_the_status_line():
    scheduler = Scheduler.with_threads(1)
    board = Dashboard(scheduler)
    board.start_button.click()
    assert scheduler.state == "idle" and board.handle is None
    assert "Start: RuntimeError" in board.last_error and "scheduler.run()" in board.last_error
    assert "last error: " in status_text(board)
    board.close()


def test_counters_last_error_and_call_limit_progress_after_a_blocking_run():
    scheduler = Scheduler.with_threads(1)  # one worker: calls end in the order they were submitted
    task = Task(fails_on_odd, scheduler, call_limit=20)
    numbers = iter(range(100))

    @scheduler.on_start(repeat=2)
    @task.on_done
    def again() -> None:
        task(next(numbers))

    board = Dashboard(scheduler, task)
    assert "0/20 calls [00:00, ? calls/s]" in board.progress_html.value  # no run yet: no time left to say
    assert scheduler.run() is ExitCode.EXHAUSTED
    row = '<td>fails_on_odd</td><td>20</td><td>0</td><td>10</td><td>10</td><td title="2 refused by call_limit">2</td>'
    assert row + "<td>0</td><td>20</td>" in board.counters_html.value
    assert board.progress_bar.value == 1.0
    assert re.search(r"20/20 calls \[00:0\d, [\d.]+ calls/s\]", board.progress_html.value), board.progress_html.value
    assert board.progress_bar.description == "calls" and board.progress_bar.bar_style == "success"
    assert board.last_error == "fails_on_odd: ValueError: odd <19>"
    assert "exit code: exhausted" in status_text(board)
    board.close()


def evaluate_by_kind(trial: Trial) -> Trial.Report:
    kind = trial.config["kind"]
    with trial.begin():
        if kind == "crash":
            raise RuntimeError(f"crashed on {trial.name}")
    if trial.exception is not None:
        return trial.crashed()
    if kind == "fail":
        return trial.fail(loss=99.0)
    return trial.success(loss=trial.config["loss"])


def test_a_dashboard_over_a_trial_task_counts_successes_failures_and_crashes():
    # Before there was one owner for a status, every success of a Trial.Task counted as a failure
    # here: "failed 3", no values plotted, and last error "evaluate: success".
    scheduler = Scheduler.with_threads(1)  # one worker: trials end in the order they were submitted
    task = Trial.Task(evaluate_by_kind, scheduler, name="evaluate")
    plan = [("success", 0.5), ("success", 0.25), ("fail", None), ("success", 0.75), ("crash", None)]

    @scheduler.on_start
    def launch() -> None:
        for n, (kind, loss) in enumerate(plan):
            task(Trial(name=f"t-{n}", config={"kind": kind, "loss": loss}))

    board = Dashboard(scheduler, task)
    assert scheduler.run() is ExitCode.EXHAUSTED
    board.refresh()
    assert task_counters(task) == {
        "submitted": 5,
        "running": 0,
        "succeeded": 3,
        "failed": 2,
        "pruned": 0,  # a Trial.Task's outcome that is neither: a column of its own
        "cancelled": 0,
        "limit hits": 0,
    }
    assert (
        "<td>evaluate</td><td>5</td><td>0</td><td>3</td><td>2</td><td>0</td><td>0</td><td>0</td>"
        in board.counters_html.value
    )
    (series,) = board._data.series
    assert series.values == [0.5, 0.25, 0.75] and series.best == [0.5, 0.25, 0.25]
    assert series.failed == 2 and series.failures == {"fail": 1, "crashed": 1}
    assert board.last_error == "evaluate: RuntimeError: crashed on t-4"
    board.close()


def accuracy(trial: Trial) -> Trial.Report:
    with trial.begin():
        acc = 1 - abs(trial.config["x"] - 0.3)
    return trial.success(loss=1 - acc, acc=acc)


def test_a_dashboard_over_an_optimizer_plots_its_metric_best_in_its_direction():
    from byop_nb.optimization import RandomSearch

    optimizer = RandomSearch({"x": (0.0, 1.0)}, seed=1, metric="acc", direction="maximize")
    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(accuracy, scheduler, call_limit=12)

    @scheduler.on_start
    @task.on_report
    def ask_again() -> None:
        task(optimizer.ask())

    task.on_report(optimizer.tell)
    board = Dashboard(scheduler, task, optimizer=optimizer)
    scheduler.run()
    board.refresh()
    (series,) = board._data.series
    accs = [report.results["acc"] for report in optimizer.reports]
    assert series.metric == "acc" and series.values == accs
    assert series.best == [max(accs[: i + 1]) for i in range(len(accs))]  # the best so far is the highest
    board.close()
    with pytest.raises(TypeError, match="optimizer= needs an optimizer with a `metric`"):
        Dashboard(scheduler, task, optimizer=object())


def test_time_progress_follows_the_runs_own_timeout():
    scheduler = Scheduler.with_threads(1)
    board = Dashboard(scheduler, interval=0.1)  # the run is started without the dashboard
    seen: list[float] = []
    board.progress_bar.observe(lambda change: seen.append(change["new"]), "value")
    assert scheduler.run(timeout=1.0, end_on_empty=False) is ExitCode.TIMEOUT
    assert board.progress_bar.description == "time" and board.progress_bar.value == 1.0
    assert len(seen) >= 5 and seen == sorted(seen)  # it moved forward while run() blocked
    board.close()


def test_widgets_update_while_a_blocking_run_goes_on():
    scheduler = Scheduler.with_threads(2)
    task = Task(pause, scheduler)
    keep_busy(scheduler, task, 0.02)
    board = Dashboard(scheduler, task, interval=0.2, draw_budget=1.0)
    status_changes: list[tuple[float, str]] = []
    image_changes: list[float] = []
    board.status_html.observe(lambda change: status_changes.append((time.monotonic(), change["new"])), "value")
    board.plot_image.observe(lambda change: image_changes.append(time.monotonic()), "value")
    began = time.monotonic()
    assert scheduler.run(timeout=2.0) is ExitCode.TIMEOUT
    ended = time.monotonic()
    running = [when for when, value in status_changes if "byop-state-running" in value]
    assert len(running) >= 5 and running[-1] - running[0] > 1.0  # spread over the run, not all at the end
    assert any(began < when < ended - 0.3 for when in image_changes)  # the plot, too, redrew during the run
    assert "byop-state-finished" in status_changes[-1][1]
    board.close()


def test_redraws_are_throttled_to_the_interval_and_coalesced():
    scheduler = Scheduler.with_threads(2)
    task = Task(square, scheduler)
    keep_busy(scheduler, task, 3.0, in_flight=4)
    board = Dashboard(scheduler, task, interval=0.5, draw_budget=1.0)  # only the interval (see the next test)
    redraws: list[tuple[float, bool]] = []
    redraw = board.redraw

    def timed_redraw(*, throttle: bool = True) -> None:
        redraws.append((time.perf_counter(), throttle))
        redraw(throttle=throttle)

    board.redraw = timed_redraw  # type: ignore[method-assign]
    assert scheduler.run(timeout=2.6) is ExitCode.TIMEOUT
    throttled = [when for when, throttle in redraws if throttle]
    ended = scheduler.counts[(Task.DONE, "square")]
    assert ended > 300  # many calls ended ...
    assert 3 <= len(throttled) <= 2.6 / 0.5 + 1  # ... and the plot was redrawn a few times, not per call
    gaps = [b - a for a, b in zip(throttled, throttled[1:])]
    assert all(gap >= 0.5 - 0.01 for gap in gaps), gaps
    assert redraws[-1][1] is False  # the final picture, when the run finished
    board.close()


def spin(seconds: float) -> None:
    """Work the CPU for `seconds` of this thread's CPU time: a slow machine's drawing (the throttle
    counts the loop's work, not the time other processes take the CPU from it)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_slow_redraws_back_off(monkeypatch):
    scheduler = Scheduler.with_threads(2)
    task = Task(square, scheduler)
    keep_busy(scheduler, task, 3.0)
    board = Dashboard(scheduler, task, interval=0.1, draw_budget=0.05)
    render = board._renderer.render
    monkeypatch.setattr(board._renderer, "render", lambda *a: (spin(0.03), render(*a))[1])
    starts: list[float] = []
    redraw = board.redraw

    def timed_redraw(*, throttle: bool = True) -> None:
        if throttle:
            starts.append(time.perf_counter())
        redraw(throttle=throttle)

    board.redraw = timed_redraw  # type: ignore[method-assign]
    scheduler.run(timeout=2.5)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert starts and all(gap >= 0.03 / 0.05 for gap in gaps), gaps  # not every 0.1 s
    assert len(starts) <= 1 + 2.5 / (0.03 / 0.05)
    board.close()


def test_numeric_value_reads_numbers_and_dicts_of_numbers():
    assert numeric_value(3) == (3.0, None)
    assert numeric_value(True) == (None, None)
    assert numeric_value({"name": "x", "loss": 0.25, "acc": 0.9}) == (0.25, "loss")
    assert numeric_value({"loss": 0.25, "acc": 0.9}, "acc") == (0.9, "acc")
    assert numeric_value({"loss": 0.25}, "acc") == (None, "acc")
    assert numeric_value([1, 2]) == (None, None)


def identity(x: Any) -> Any:
    return x


def test_numeric_results_plot_values_and_best_so_far():
    scheduler = Scheduler.with_sequential()
    task = Task(identity, scheduler)
    other = Task(identity, scheduler, name="other")

    @scheduler.on_start
    def launch() -> None:
        for value in (5, 3, 4, 1, 2):
            task(value)
        for value in ({"loss": 0.5, "acc": 0.1}, {"loss": 0.7, "acc": 0.4}, {"loss": 0.2, "acc": 0.3}):
            other(value)

    board = Dashboard(scheduler, task, other, best="max", metric="acc")
    scheduler.run()
    by_task = {series.name: series for series in board._data.series}
    assert by_task["identity"].values == [5, 3, 4, 1, 2]
    assert by_task["identity"].best == [5, 5, 5, 5, 5]
    assert by_task["other"].values == [0.1, 0.4, 0.3] and by_task["other"].best == [0.1, 0.4, 0.4]
    assert board._renderer._layout == ("ended", "values")
    board.close()

    data = LiveData()  # best="min", the first numeric key
    data.update([other], scheduler.started_at)
    assert data.series[0].metric == "loss" and data.series[0].best == [0.5, 0.5, 0.2]


def test_a_new_run_starts_the_plots_afresh():
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    calls = iter([3, 2])

    @scheduler.on_start
    def launch() -> None:
        for _ in range(next(calls)):
            task(1.5)

    board = Dashboard(scheduler, task)
    scheduler.run()
    assert board._data.n_ended == 3
    scheduler.run()
    assert board._data.n_ended == 2 and len(task.history) == 5
    board.close()


def test_user_plot_gets_the_live_dataframe_and_its_errors_never_stop_the_run():
    scheduler = Scheduler.with_threads(2)
    task = Task(pause, scheduler, call_limit=40)
    keep_busy(scheduler, task, 0.02)
    frames: list[int] = []

    def my_plot(df, ax) -> None:
        frames.append(len(df))
        ax.plot(df["call"], df["result"])

    board = Dashboard(scheduler, task, plot=my_plot, interval=0.1)
    scheduler.run()
    assert frames and frames[-1] == 40 and frames == sorted(frames)
    assert board._renderer._layout == ("ended", "user") and board.plot_error is None

    def broken_plot(df, ax) -> None:
        raise RuntimeError("my plot is broken")

    task2 = Task(pause, scheduler, name="second", call_limit=10)
    keep_busy(scheduler, task2, 0.01)
    board2 = Dashboard(scheduler, task2, plot=broken_plot)
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert isinstance(board2.plot_error, RuntimeError)
    assert board2.last_error == "plot: RuntimeError: my plot is broken"
    assert bytes(board2.plot_image.value).startswith(PNG)
    board.close()
    board2.close()


def test_a_failing_dashboard_never_breaks_the_run(monkeypatch):
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    keep_busy(scheduler, task, 2.0, in_flight=1)
    board = Dashboard(scheduler, task, interval=0.1)

    def broken(*args: Any) -> bytes:
        raise MemoryError("no memory for pictures")

    monkeypatch.setattr(board._renderer, "render", broken)
    assert scheduler.run(timeout=0.5) is ExitCode.TIMEOUT
    assert board.last_error == "dashboard: MemoryError: no memory for pictures"
    board.close()


def test_callback_error_ends_a_started_run_and_shows_in_the_status_line():
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    keep_busy(scheduler, task, 2.0, in_flight=1)

    @task.on_returned
    def check(result: float) -> None:
        if task.n_called >= 5:
            raise ZeroDivisionError("bad callback")

    board = Dashboard(scheduler, task)

    async def body() -> None:
        board.start_button.click()
        with pytest.raises(ZeroDivisionError):
            await board.handle

    run_async(body)
    assert board.last_error == "callback: ZeroDivisionError: bad callback"
    assert "exit code: stopped" in status_text(board) and not board.start_button.disabled
    with pytest.raises(ZeroDivisionError):
        board.handle.result()

    task.event_manager.remove("test_callback_error_ends_a_started_run_and_shows_in_the_status_line.<locals>.check")
    late: list[Dashboard] = []

    @task.on_returned
    def make_late(result: float) -> None:
        if not late:
            late.append(Dashboard(scheduler, task))

    scheduler.run(timeout=0.3)  # a later run: the old error is no longer shown, not even by a dashboard made in it
    assert board.last_error is None and late[0].last_error is None
    assert Dashboard(scheduler).last_error is None  # nor by one made after it
    board.close()
    late[0].close()


def test_several_dashboards_and_a_late_one_show_the_same_state():
    scheduler = Scheduler.with_threads(2)
    task = Task(fails_on_odd, scheduler, call_limit=200)
    numbers = iter(range(1000))

    @scheduler.on_start(repeat=2)
    @task.on_done
    def again() -> None:
        task(next(numbers))

    first = Dashboard(scheduler)
    second = Dashboard(scheduler, task)
    late: list[Dashboard] = []

    @task.on_returned
    def make_late(result: dict) -> None:
        if task.n_called >= 120 and not late:
            late.append(Dashboard(scheduler))  # made in the middle of the run

    scheduler.run()
    boards = [first, second, late[0]]
    assert len({board.counters_html.value for board in boards}) == 1
    assert len({board.status_html.value for board in boards}) == 1
    assert len({board.progress_html.value for board in boards}) == 1
    assert {board._data.n_ended for board in boards} == {200}
    assert len({bytes(board.plot_image.value) for board in boards}) == 1  # the same final picture
    for board in boards:
        board.close()


def test_close_detaches_the_dashboard_from_the_scheduler():
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    keep_busy(scheduler, task, 2.0, in_flight=1)
    manager = scheduler.event_manager
    before = {event: manager.callbacks(event) for event in (Scheduler.STARTED, Scheduler.FINISHED)}
    kept = Dashboard(scheduler, task)
    closed = Dashboard(scheduler, task)
    closed.close()
    assert closed.closed and closed.stop_button.comm is None
    assert manager.callbacks(Scheduler.STARTED) == [*before[Scheduler.STARTED], kept._on_started]
    assert manager.callbacks(Scheduler.FINISHED) == [*before[Scheduler.FINISHED], kept._on_finished]
    status, redraws = closed.status_html.value, closed.n_redraws
    scheduler.run(timeout=0.3)
    assert closed.status_html.value == status and closed.n_redraws == redraws
    assert "finished" in status_text(kept)
    closed.close()  # twice is fine
    kept.close()
    assert all(manager.callbacks(event) == callbacks for event, callbacks in before.items())


def test_dashboard_checks_its_arguments():
    scheduler = Scheduler.with_threads(1)
    other = Task(square, Scheduler.with_threads(1))
    with pytest.raises(TypeError, match="Scheduler"):
        Dashboard("not a scheduler")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="another scheduler"):
        Dashboard(scheduler, other)
    with pytest.raises(TypeError, match="Task objects"):
        Dashboard(scheduler, square)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="plot="):
        Dashboard(scheduler, plot="line")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval="):
        Dashboard(scheduler, interval=0)
    with pytest.raises(ValueError, match="draw_budget="):
        Dashboard(scheduler, draw_budget=0)
    with pytest.raises(ValueError, match="timeout="):
        Dashboard(scheduler, timeout=-1)
    with pytest.raises(ValueError, match="best="):
        Dashboard(scheduler, best="median")  # type: ignore[arg-type]


def test_scheduler_dashboard_and_plot_false():
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    board = scheduler.dashboard(task, plot=False, timeout=5)
    assert isinstance(board, Dashboard) and board.timeout == 5 and board.tasks == [task]
    assert board.plot_image not in board.children and board.n_redraws == 0
    board.close()


# -- the log pane ------------------------------------------------------------------------


def log_lines_of(board: Dashboard) -> list[str]:
    """The lines the log pane's Output widget holds in its kernel-side state (what a notebook saves)."""
    return "".join(output["text"] for output in board.log_output.outputs).splitlines()


def test_an_empty_log_pane_is_collapsed_and_says_so():
    scheduler = Scheduler.with_threads(1)
    board = Dashboard(scheduler, plot=False)
    assert board.log_pane in board.children and board.log_pane.children == (board.log_output,)
    assert board.log_pane.selected_index is None  # collapsed
    assert board.log_pane.titles == ("log: empty",) and board.log_output.outputs == () and board.log_text == ""
    board.close()
    assert board.log_output.comm is None and board.log_pane.comm is None


def test_a_background_runs_callback_output_goes_to_the_log_pane_not_to_stdout(capsys):
    scheduler = Scheduler.with_threads(2)
    task = Task(fails_on_odd, scheduler)
    streams: list[Any] = []

    @scheduler.on_start
    def launch() -> None:
        print("launching")
        streams.append(sys.stdout)
        task.map(range(4))

    @task.on_returned
    def show(result: dict) -> None:
        print(f"returned {result['value']}")

    @task.on_exception
    def complain(exception: BaseException) -> None:
        print(f"raised {exception}", file=sys.stderr)

    @scheduler.on_finished
    def goodbye() -> None:
        print("finished")

    board = Dashboard(scheduler, task, plot=False)
    before = sys.stdout

    async def body() -> None:
        assert await board.start() is ExitCode.EXHAUSTED

    run_async(body)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    lines = log_lines_of(board)
    assert lines[0] == "launching" and lines[-1] == "finished"
    # The run's end counts the failed calls, handled or not (issue 22): that line goes to the pane too.
    said = "WARNING byop_nb.scheduling.scheduler: 2 of 4 calls of 'fails_on_odd' raised; first: ValueError: odd <"
    assert [line for line in lines if line.startswith(said)] == lines[-2:-1]
    assert sorted(lines[1:-2]) == ["raised odd <1>", "raised odd <3>", "returned 0", "returned 2"]
    assert board.log_text.splitlines() == lines
    streams_of = {output["name"] for output in board.log_output.outputs if "raised" in output["text"]}
    assert streams_of == {"stderr"}
    assert board.log_pane.titles == ("log: 7 lines",)
    assert streams[0] is not before and sys.stdout is before  # replaced during the batch, put back after it

    # A blocking run prints where its cell prints; the pane keeps what it had.
    assert scheduler.run() is ExitCode.EXHAUSTED
    assert capsys.readouterr().out.splitlines()[0] == "launching"
    assert len(log_lines_of(board)) == 7

    # A second background run: its lines follow a line that says where it begins.
    run_async(body)
    lines = log_lines_of(board)
    assert len(lines) == 15 and lines[7].startswith("--- run started at ") and lines[8] == "launching"
    board.clear_log()
    assert board.log_output.outputs == () and board.log_pane.titles == ("log: empty",)
    board.close()


def test_the_log_pane_keeps_the_last_log_lines_of_a_chatty_run_each_line_bounded():
    from byop_nb.notebook._log import MAX_LINE_CHARS

    scheduler = Scheduler.with_threads(2)
    task = Task(square, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task.map(range(50))

    calls = iter(range(1000))

    @task.on_returned
    def chatter(result: float) -> None:
        n = next(calls)
        for i in range(100):
            print(f"callback {n} line {i}")

    @scheduler.on_finished
    def shout() -> None:
        print("x" * (10 * MAX_LINE_CHARS))
        print("y", end="")
        print("z" * (10 * MAX_LINE_CHARS), end="")  # written on the cut line: dropped, not grown
        print()

    board = Dashboard(scheduler, task, plot=False, log_lines=20)

    async def body() -> None:
        await board.start()

    run_async(body)
    lines = log_lines_of(board)
    assert len(lines) == 20 and board._log.lines.n_lines == 50 * 100 + 2
    assert board.log_pane.titles == ("log: 5002 lines (the last 20 kept)",)
    assert lines[:-2] == [f"callback 49 line {i}" for i in range(82, 100)]
    for line in lines[-2:]:
        assert len(line) < MAX_LINE_CHARS + 100 and line.endswith("characters]")
    assert lines[-1].startswith("yzzz")
    board.close()


def test_a_callback_error_and_byop_nb_warnings_of_a_background_run_go_to_the_log_pane(caplog):
    scheduler = Scheduler.with_threads(1)
    task = Task(fails_on_odd, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task.map([1, 2])

    board = Dashboard(scheduler, task, plot=False)

    async def body() -> None:
        await board.start()

    run_async(body)  # call 1 failed, and nothing handled it: byop_nb warns at the end of the run
    assert "WARNING byop_nb.scheduling.scheduler: 1 of 2 calls of 'fails_on_odd' raised; first:" in board.log_text

    @task.on_returned
    def broken(result: dict) -> None:
        raise KeyError("no such key")

    async def failing() -> None:
        with pytest.raises(KeyError):
            await board.start()
        await asyncio.sleep(0)  # the run's task is done: its done callback logs the error

    run_async(failing)
    text = board.log_text
    assert "ERROR byop_nb.scheduling.scheduler: the background run ended with an error" in text
    assert "KeyError: 'no such key'" in text and "in broken" in text
    board.close()


def test_without_a_dashboard_nothing_is_captured_and_streams_stay_untouched(capsys):
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)
    seen: list[Any] = []

    @scheduler.on_start
    def launch() -> None:
        task(2)

    @task.on_returned
    def show(result: float) -> None:
        seen.append(sys.stdout)
        print(f"returned {result}")

    board = Dashboard(scheduler, task, plot=False)
    board.close()  # a closed dashboard no longer listens

    async def body() -> None:
        assert not scheduler.output.active
        await scheduler.start()

    run_async(body)
    assert capsys.readouterr().out == "returned 4\n"
    assert seen == [sys.stdout] and board.log_text == ""


def test_writes_from_other_threads_or_after_the_batch_pass_through():
    import threading

    from byop_nb.scheduling.engine._output import RunOutput

    output = RunOutput()
    got: list[Any] = []
    output.listen("test", got.extend)
    output.begin_run(background=True)
    elsewhere: list[str] = []

    class Stream:
        def write(self, text: str) -> int:
            elsewhere.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    saved = sys.stdout
    sys.stdout = Stream()  # type: ignore[assignment]
    try:
        with output.capture():
            print("from the loop")
            worker = threading.Thread(target=print, args=("from a worker thread",))
            worker.start()
            worker.join()
            kept = sys.stdout  # e.g. a logging.StreamHandler made in a callback
        print("after the batch", file=kept)
    finally:
        sys.stdout = saved
    assert got == [("stdout", "from the loop\n")]
    assert "".join(elsewhere) == "from a worker thread\nafter the batch\n"
    output.begin_run(background=False)
    assert not output.active and isinstance(output.capture(), contextlib.nullcontext)


def test_log_lines_keeps_the_last_lines_and_joins_partial_writes():
    from byop_nb.notebook._log import LogLines

    log = LogLines(max_lines=3)
    log.add([("stdout", "a"), ("stdout", "b\nc"), ("stderr", "oops\n"), ("stdout", "d\n"), ("stdout", "e\nf\n")])
    assert log.n_lines == 6 and len(log) == 3
    assert log.text() == "d\ne\nf\n"
    assert log.title() == "log: 6 lines (the last 3 kept)"
    log.clear()
    log.add([("stdout", "a"), ("stdout", "b\nc"), ("stderr", "oops\n")])
    assert log.text() == "ab\ncoops\n" and log.n_lines == 3
    assert [o["name"] for o in log.outputs()] == ["stdout", "stderr"]
    with pytest.raises(ValueError, match="log_lines="):
        Dashboard(Scheduler.with_threads(1), log_lines=0)


# -- a real kernel -----------------------------------------------------------------------


class WidgetKernel:
    """An ipykernel, a client, and the widget state updates it sent, by model id."""

    def __init__(self) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel()
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.updates: list[tuple[float, str, dict[str, Any], int]] = []  # (time, model id, state, buffers)

    def _drain(self, until_idle_of: str | None, timeout: float) -> tuple[str, str | None]:
        stdout, error = [], None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if until_idle_of is None:
                    return "".join(stdout), error
                raise AssertionError(f"the cell did not finish in {timeout} s; printed: {''.join(stdout)}")
            try:
                msg = self.client.get_iopub_msg(timeout=min(remaining, 0.2))
            except Empty:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_msg" and content["data"].get("method") == "update":
                state = content["data"]["state"]
                self.updates.append((time.monotonic(), content["comm_id"], state, len(msg.get("buffers") or [])))
            parent = msg["parent_header"].get("msg_id")
            if parent != until_idle_of:
                continue
            if kind == "stream":
                stdout.append(content["text"])
            elif kind == "error":
                error = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                return "".join(stdout), error

    def run(self, code: str, timeout: float = 60) -> str:
        stdout, error = self._drain(self.client.execute(code), timeout)
        assert error is None, error
        return stdout

    def listen(self, seconds: float) -> None:
        """Collect widget updates for `seconds` while no cell runs."""
        self._drain(None, seconds)

    def click(self, model_id: str) -> None:
        """What JupyterLab sends when a Button view is clicked."""
        content = {"comm_id": model_id, "data": {"method": "custom", "content": {"event": "click"}}}
        self.client.session.send(self.client.shell_channel.socket, self.client.session.msg("comm_msg", content))

    def values(self, model_id: str, key: str = "value") -> list[tuple[float, Any]]:
        return [(when, state[key]) for when, mid, state, _ in self.updates if mid == model_id and key in state]

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


@pytest.fixture
def widget_kernel(no_orphans) -> Iterator[WidgetKernel]:
    kernel = WidgetKernel()
    try:
        yield kernel
    finally:
        kernel.close()


KERNEL_SETUP = """
import json, time
from byop_nb import Scheduler, Task
from byop_nb.notebook import Dashboard

def pause(seconds):
    time.sleep(seconds)
    return {"loss": seconds}

scheduler = Scheduler.with_processes(2)
task = Task(pause, scheduler)

@scheduler.on_start(repeat=2)
@task.on_done
def again():
    if scheduler.state == "running":
        task(0.05)

dashboard = Dashboard(scheduler, task, timeout=120, interval=0.25, draw_budget=0.5)
display(dashboard)
print(json.dumps({name: getattr(dashboard, name).model_id
                  for name in ("start_button", "stop_button", "status_html", "plot_image")}))
"""


@pytest.mark.kernel
def test_start_and_stop_clicked_over_the_widget_comm_in_a_real_kernel(widget_kernel):
    kernel = widget_kernel
    ids = json.loads(kernel.run(KERNEL_SETUP).strip().splitlines()[-1])
    kernel.click(ids["start_button"])
    kernel.listen(2.0)  # the kernel is idle; the run goes on in the background
    statuses = kernel.values(ids["status_html"])
    assert any("byop-state-running" in value for _, value in statuses), statuses
    images = [item for item in kernel.updates if item[1] == ids["plot_image"] and item[3]]
    assert images, "the plot image was not sent while the run went on"

    kernel.click(ids["stop_button"])
    kernel.listen(1.5)
    out = kernel.run("print(scheduler.exit_code, dashboard.handle.done(), dashboard.handle.result())")
    assert out.split() == ["ExitCode.STOPPED", "True", "ExitCode.STOPPED"]
    last_status = kernel.values(ids["status_html"])[-1][1]
    assert "byop-state-finished" in last_status and "exit code: stopped" in last_status
    disabled = kernel.values(ids["start_button"], "disabled")
    assert disabled[-1][1] is False  # Start is enabled again


@pytest.mark.kernel
def test_a_blocking_run_streams_widget_updates_before_the_cell_ends(widget_kernel):
    kernel = widget_kernel
    ids = json.loads(kernel.run(KERNEL_SETUP).strip().splitlines()[-1])
    began = time.monotonic()
    out = kernel.run("print(scheduler.run(timeout=3))")
    ended = time.monotonic()
    assert out.strip() == "ExitCode.TIMEOUT"
    running = [when for when, value in kernel.values(ids["status_html"]) if "byop-state-running" in value]
    # received while the cell was still running, spread over the run rather than flushed at its end
    assert len(running) >= 6 and began < running[0] and running[-1] < ended and running[-1] - running[0] > 1.5
    images = [when for when, mid, _, buffers in kernel.updates if mid == ids["plot_image"] and buffers]
    assert any(when < ended - 0.5 for when in images)


@pytest.mark.kernel
def test_start_clicked_sends_the_callbacks_output_to_the_log_panes_widget_state(widget_kernel):
    kernel = widget_kernel
    setup = """
import json
from byop_nb import Scheduler, Task
from byop_nb.notebook import Dashboard

scheduler = Scheduler.with_threads(2)
task = Task(abs, scheduler)
scheduler.on_start(lambda: task.map(range(-3, 0)))
task.on_returned(lambda result: print(f"abs: {result}"))
dashboard = Dashboard(scheduler, task, plot=False, interval=0.1)
display(dashboard)
print(json.dumps({name: getattr(dashboard, name).model_id for name in ("start_button", "log_output", "log_pane")}))
"""
    ids = json.loads(kernel.run(setup).strip().splitlines()[-1])
    kernel.click(ids["start_button"])
    kernel.listen(2.0)
    outputs = kernel.values(ids["log_output"], "outputs")
    assert outputs, "the log pane's outputs were not sent to the front end"
    text = "".join(output["text"] for output in outputs[-1][1])
    assert sorted(text.splitlines()) == ["abs: 1", "abs: 2", "abs: 3"]
    assert kernel.values(ids["log_pane"], "titles")[-1][1] == ["log: 3 lines"]
    out = kernel.run("print(dashboard.handle.result(), dashboard.log_text.count('abs'))")
    assert out.split() == ["ExitCode.EXHAUSTED", "3"]


def test_a_redraw_draws_only_what_changed_until_the_data_outgrows_the_axes():
    from byop_nb.notebook.plots import PlotRenderer

    scheduler = Scheduler.with_sequential()
    task = Task(identity, scheduler)
    values = iter([0.45, 0.4, 0.35, 0.42, 5.0, 0.1])

    @scheduler.on_start
    def launch() -> None:
        task(0.5)
        task(0.3)  # the range of values the axes start with

    scheduler.run()
    data = LiveData()
    renderer = PlotRenderer()
    data.update([task], scheduler.started_at)
    first = renderer.render(data)
    assert (renderer.n_full_draws, renderer.n_relabels) == (1, 1)
    assert renderer.render(data) == first  # nothing changed: the same picture, from the kept background
    ticks = renderer._ticks[renderer._axes["values"]][1]
    labels = list(ticks)

    for _ in range(4):  # values inside the axes' limits, the best unchanged: only the lines are drawn again
        task_history_grows(task, next(values))
        data.update([task], scheduler.started_at)
        picture = renderer.render(data)
        assert picture != first
    assert (renderer.n_full_draws, renderer.n_relabels) == (1, 1)

    task_history_grows(task, next(values))  # 5.0: outside the limits, which grow; the frame stays
    data.update([task], scheduler.started_at)
    renderer.render(data)
    assert (renderer.n_full_draws, renderer.n_relabels) == (1, 2)
    assert ticks != labels and ticks[-1] != labels[-1]  # the y labels say what the new limits are

    task_history_grows(task, next(values))  # 0.1: a new best, so a new title
    data.update([task], scheduler.started_at)
    renderer.render(data)
    assert renderer._titles[renderer._axes["values"]] == "result: best (min) 0.1  \u00b7  x: seconds"
    assert (renderer.n_full_draws, renderer.n_relabels) == (1, 3)
    renderer.close()


def task_history_grows(task: Task, value: float) -> None:
    """One more ended call in the task's history, as if it had run now (keeps the test free of timing)."""
    now = time.time()
    task.history.record_call(task.name, len(task.history) + 1, (value,), {}, "returned", value, None, None, now, now)


def test_scheduler_and_task_html_list_the_callbacks_per_event_with_their_options():
    scheduler = Scheduler.with_threads(1)
    task = Task(square, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task(2)

    task.on_returned(print, every=2)
    board = Dashboard(scheduler, task)  # its own registrations are not the user's: not listed
    shown = scheduler_html(scheduler)
    assert '<td>scheduler-started</td><td class="byop-text">test_scheduler_and_task_html_list' in shown
    assert "Dashboard" not in shown
    assert '<td>task-returned</td><td class="byop-text">print (every=2)</td>' in task_html(task)
    board.close()


def test_counters_and_plots_tell_the_same_story_per_run_and_a_spent_call_limit_disables_start():
    scheduler = Scheduler.with_threads(1)
    task = Task(fails_on_odd, scheduler, call_limit=7)
    sizes = iter([4, 3])

    @scheduler.on_start
    def launch() -> None:
        task.map(range(next(sizes)))

    board = Dashboard(scheduler, task)
    scheduler.run()
    assert "<td>4</td><td>0</td><td>2</td><td>2</td>" in board.counters_html.value
    assert not board.start_button.disabled
    scheduler.run()  # the second run: counters and plots both show its 3 calls, not 7
    board.refresh()
    assert "<td>fails_on_odd</td><td>3</td><td>0</td><td>2</td><td>1</td>" in board.counters_html.value
    assert board._data.n_ended == 3
    assert "<td>7</td><td>0</td><td>4</td><td>3</td>" in task_html(task)  # the task's own table: all runs
    # Both runs spent the call_limit: a third would end at once, so Start says why instead.
    assert board.start_button.disabled
    assert "'fails_on_odd' spent its call_limit=7" in board.start_button.tooltip
    assert "nothing left to run: 'fails_on_odd' spent its call_limit=7" in status_text(board)
    board.close()


# -- issue 22: what a researcher watches ------------------------------------------------------


def accuracy_by_x(trial: Trial) -> Trial.Report:
    x = trial.config["x"]
    if x < 0:
        raise KeyError("learning_rate")
    return trial.success(accuracy=x)


def run_trials(xs: list[float], **options: Any) -> tuple[Scheduler, Any, Dashboard]:
    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(accuracy_by_x, scheduler)
    board = Dashboard(scheduler, task, **options)

    @scheduler.on_start
    def launch() -> None:
        for i, x in enumerate(xs):
            task(Trial(name=f"t-{i}", config={"x": x}))

    scheduler.run()
    return scheduler, task, board


def test_value_axes_follow_the_data_and_their_tick_labels_are_unique_and_exact():
    def limits_and_labels(values: list[float]) -> tuple[tuple[float, float], list[str]]:
        _, _, board = run_trials(values, best="max")
        renderer = board._renderer
        assert renderer is not None
        ax = renderer._axes["values"]
        limits, labels = ax.get_ylim(), list(renderer._ticks[ax][1])
        board.close()
        return limits, labels

    (low, high), labels = limits_and_labels([0.1, 0.5, 0.976])  # an accuracy: not -0.4 to 1.2
    assert 0.0 <= low <= 0.1 and 0.976 <= high <= 1.0, (low, high)
    assert labels == ["0", "0.25", "0.5", "0.75", "1"]
    (low, high), labels = limits_and_labels([0.5431, 0.5432, 0.5431])  # close values: not "0.543, 0.543"
    assert len(set(labels)) == len(labels) and 0.5431 >= low and high - low < 0.001, (labels, low, high)
    (low, high), labels = limits_and_labels([1.0, 1.0, 1.0])  # the same value: not "1, 1, 1"
    assert len(set(labels)) == len(labels) and low < 1.0 < high, labels


def test_a_trial_task_plots_against_the_trial_number_with_the_best_in_its_direction():
    _, task, board = run_trials([0.2, 0.9, 0.5, 0.7], best="max")
    series = board._data.series[0]
    assert board._data.x == "number" and series.value_numbers == [1.0, 2.0, 3.0, 4.0]
    title = board._renderer._titles[board._renderer._axes["values"]]
    assert title == "accuracy: best (max) 0.9  \u00b7  x: trial"
    assert board.best_html.value == '<span class="byop-best-text">accuracy: best (max) <b>0.9</b></span>'
    board.close()
    _, _, plain = run_trials([0.2], x="time")
    assert plain._data.x == "time"
    plain.close()


def test_the_first_ended_call_is_drawn_at_once_whatever_the_throttle_says():
    scheduler = Scheduler.with_threads(1)
    task = Task(identity, scheduler)
    board = Dashboard(scheduler, task, interval=5.0)
    board._redraw_costs.extend([10.0] * 8)  # a slow machine: throttled redraws would wait 10 s
    drawn = board.n_redraws

    @scheduler.on_start
    def launch() -> None:
        task(0.5)

    @task.on_returned
    def look(_: Any) -> None:
        board.refresh()  # what the timer does while the run goes on
        assert board.n_redraws == drawn + 1 and board._data.has_values

    scheduler.run()
    assert task.counts[task.RETURNED] == 1 and not scheduler.last_error
    board.close()


def test_progress_says_trials_done_of_the_budget_with_the_time_left_and_the_rate():
    scheduler, task, board = run_trials([0.1] * 6, total=10)
    text = board.progress_html.value
    assert re.search(r"6/10 trials \[00:00, \d+ trials/s\]", text), text
    assert board.progress_bar.description == "trials" and board.progress_bar.value == pytest.approx(0.6)
    board.close()
    from byop_nb.notebook.dashboard import progress_text

    assert progress_text(12, 50, 12, 7.0, unit="trials") == "12/50 trials [00:07<00:22, 1.71 trials/s]"
    assert progress_text(3, 50, 1, 4.0) == "3/50 calls [00:04<03:08, 4.00 s/call]"
    assert progress_text(0, 50, 0, 0.0) == "0/50 calls [00:00<?, ? calls/s]"


def test_crashed_trials_show_live_in_a_red_line_with_the_first_error():
    def accuracy_slowly(trial: Trial) -> Trial.Report:
        time.sleep(0.05)  # one call ends at a time
        return accuracy_by_x(trial)

    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(accuracy_slowly, scheduler, name="accuracy_by_x")
    board = Dashboard(scheduler, task, plot=False)
    seen: list[tuple[str, bool]] = []

    @scheduler.on_start
    def launch() -> None:
        for i, x in enumerate([0.5, -1.0, -2.0, 0.7, -3.0]):
            task(Trial(name=f"t-{i}", config={"x": x}))

    @task.on_report
    def handled(report: Trial.Report) -> None:  # a callback handles them: the dashboard still says so
        board.refresh()
        seen.append((board.failures_html.value, "byop-failing" in board._dom_classes))

    scheduler.run()
    assert seen[0] == ("", False)
    assert (
        "1 of 2 trials of &#x27;accuracy_by_x&#x27; crashed; first: KeyError: &#x27;learning_rate&#x27;" in seen[1][0]
    )
    assert seen[1][1] is True
    assert "3 of 5 trials of &#x27;accuracy_by_x&#x27; crashed" in board.failures_html.value
    board.close()


def test_the_table_lists_the_best_and_the_latest_trials_with_parameters_and_metrics():
    _, _, board = run_trials([0.2, 0.9, -1.0, 0.5, 0.7, 0.1], best="max", table_rows=2)
    table = board.trials_html.value
    best_part, latest_part = table.split("latest 2, newest first")
    assert "best (max) 2 of this run by accuracy" in best_part
    assert best_part.index(">t-1<") < best_part.index(">t-4<") and ">t-3<" not in best_part
    assert latest_part.index(">t-5<") < latest_part.index(">t-4<") and ">t-1<" not in latest_part
    assert "<th>x</th>" in table and "<th>accuracy</th>" in table and "<th>status</th>" in table
    board.close()
    _, _, crashed = run_trials([-1.0], table_rows=3)
    assert "crashed" in crashed.trials_html.value and "KeyError" in crashed.trials_html.value
    assert 'class="byop-text byop-bad"' in crashed.trials_html.value  # a failure, as Trial.Task.FAILURES says
    crashed.close()


def test_start_during_a_run_says_so_in_one_line_and_returns_the_runs_handle(capsys):
    scheduler = Scheduler.with_threads(1)
    task = Task(pause, scheduler)
    board = Dashboard(scheduler, task, plot=False)
    scheduler.on_start(lambda: task(0.3))

    async def main() -> tuple[Any, Any]:
        first = board.start()
        again = board.start()
        await first
        return first, again

    first, again = run_async(main)
    assert again is first
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the run is going on already" in err and "Traceback" not in err
    board.close()


def test_calls_cancelled_by_stop_are_counted_as_the_study_counts_them_and_limit_hits_are_resource_limits():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from byop_nb.optimization import OptunaOptimizer

    def slow(trial: Trial) -> Trial.Report:
        time.sleep(0.1)
        return trial.success(loss=trial.config["x"])

    scheduler = Scheduler.with_threads(2)
    task = Trial.Task(slow, scheduler, call_limit=30)
    optimizer = OptunaOptimizer({"x": (0.0, 1.0)})

    @scheduler.on_start(repeat=2)
    def launch() -> None:
        task(optimizer.ask())

    @task.on_report
    def tell(report: Trial.Report) -> None:
        optimizer.tell(report)
        task(optimizer.ask())

    scheduler.on_finished(optimizer.fail_pending)
    board = Dashboard(scheduler, task, optimizer=optimizer, plot=False)

    async def main() -> None:
        handle = board.start()
        await asyncio.sleep(0.55)
        board.stop()
        await handle

    run_async(main)
    df = optimizer.study.trials_dataframe()
    cancelled_in_study = int((df["user_attrs_byop_nb.status"] == "cancelled").sum())
    counters = task_counters(task, run=True)
    assert cancelled_in_study >= 1 and counters["cancelled"] == cancelled_in_study
    assert counters["succeeded"] == int((df["state"] == "COMPLETE").sum())
    assert counters["limit hits"] == 0
    board.close()


def test_against_the_call_number_the_best_so_far_never_steps_back_when_calls_end_out_of_order():
    from byop_nb.notebook.plots import PlotRenderer

    scheduler = Scheduler.with_threads(1)
    task = Task(identity, scheduler)
    now = time.time()
    for number, value in [(2, 0.9), (1, 0.2), (4, 0.5), (3, 0.95), (5, 0.1)]:  # ended in this order
        task.history.record_call(task.name, number, (value,), {}, "returned", value, None, None, now, now)
    data = LiveData(best="max", x="number")
    data.update([task], None)
    renderer = PlotRenderer()
    renderer.render(data)
    points, best = renderer._lines[("values", 0)]
    assert list(points.get_xdata()) == [1, 2, 3, 4, 5] and list(points.get_ydata()) == [0.2, 0.9, 0.95, 0.5, 0.1]
    assert list(best.get_ydata()) == [0.2, 0.9, 0.95, 0.95, 0.95]
    renderer.close()


def test_optimizers_give_their_best_value_over_all_they_were_told_in_their_direction():
    from byop_nb.optimization import RandomSearch

    search = RandomSearch({"x": (0.0, 1.0)}, metric="acc", direction="maximize")
    assert search.best_value is None
    for acc in (0.5, 0.75, 0.6):
        search.tell(search.ask().success(acc=acc))
    assert search.best_value == 0.75
    assert RandomSearch({"x": (0.0, 1.0)}, metric=None).best_value is None
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from byop_nb.optimization import OptunaOptimizer

    optimizer = OptunaOptimizer({"x": (0.0, 1.0)}, metric="acc", direction="maximize")
    assert optimizer.best_value is None
    for acc in (0.5, 0.75, 0.6):
        optimizer.tell(optimizer.ask().success(acc=acc))
    assert optimizer.best_value == 0.75
    two = OptunaOptimizer({"x": (0.0, 1.0)}, metric=["a", "b"], direction=["minimize", "maximize"])
    two.tell(two.ask().success(a=1.0, b=2.0))
    assert two.best_value is None  # a front, not one best


def test_a_value_axis_that_grows_is_rounded_from_the_values_not_from_its_old_limits():
    from byop_nb.notebook.plots import PlotRenderer

    scheduler = Scheduler.with_threads(1)
    task = Task(identity, scheduler)
    data = LiveData(best="max")
    renderer = PlotRenderer()
    for value in (0.78, 0.97):
        task_history_grows(task, value)
    data.update([task], None)
    renderer.render(data)
    first = renderer._axes["values"].get_ylim()
    assert first[0] > 0.5 and first[1] > 1.0, first  # 0.72 to 1.04
    task_history_grows(task, 0.13)  # outside: new limits, for 0.13 to 0.97
    data.update([task], None)
    renderer.render(data)
    assert renderer._axes["values"].get_ylim() == (0.0, 1.0)  # not 0 to 1.2
    renderer.close()


def test_a_trial_is_plotted_at_its_optimizers_number():
    from byop_nb.optimization import RandomSearch

    search = RandomSearch({"x": (0.0, 1.0)}, seed=0, metric="accuracy", direction="maximize")
    for _ in range(3):  # an earlier run's trials: this run's are trial-3 and trial-4
        search.tell(search.ask().success(accuracy=0.5))
    scheduler = Scheduler.with_threads(1)
    task = Trial.Task(accuracy_by_x, scheduler)
    board = Dashboard(scheduler, task, optimizer=search, plot=True)

    @scheduler.on_start
    def launch() -> None:
        task(search.ask())
        task(search.ask())

    task.on_report(search.tell)
    scheduler.run()
    assert board._data.series[0].value_numbers == [3.0, 4.0]
    board.close()


def always_fails(x: int) -> int:
    raise KeyError(f"learning_rate {x}")


def test_start_passes_end_after_failures_and_the_failure_line_is_the_engines():
    """Start ends the run after N failed calls in a row when the dashboard was given
    end_after_failures=N; its red line is the engine's FailureSummary line."""
    with pytest.raises(ValueError, match="end_after_failures"):
        Dashboard(Scheduler.with_threads(1), end_after_failures=0)
    scheduler = Scheduler.with_threads(1)
    task = Task(always_fails, scheduler)
    keep_busy(scheduler, task, 5.0, in_flight=1)
    board = Dashboard(scheduler, task, end_after_failures=3)

    async def body() -> ExitCode:
        board.start_button.click()
        return await board.handle

    assert run_async(body) is ExitCode.EXCEPTION
    assert "end_after_failures=3" in str(scheduler.last_error)
    board.refresh()
    summary = task.failure_summary()
    assert summary.in_a_row >= 3 and summary.line in board.failures_html.value.replace("&#x27;", "'")
    board.close()


def test_a_title_too_long_for_the_picture_gets_the_smaller_font_then_an_ellipsis() -> None:
    """A panel's title never runs off the picture's edge (the learning-curves panel is the last)."""
    from PIL import Image, ImageDraw

    from byop_nb.notebook import plots

    renderer = plots.PlotRenderer()
    draw = ImageDraw.Draw(Image.new("RGBA", (400, 100)))
    big, small = renderer._font(8), renderer._font(7)
    short = "error by step: 3 trials"
    assert plots._fitted(draw, short, 300, (big, small)) == (short, big)
    long = "error by step: 30 trials, 13 pruned (grey), y clipped"
    width_big, width_small = draw.textlength(long, font=big), draw.textlength(long, font=small)
    assert width_small < width_big
    assert plots._fitted(draw, long, (width_small + width_big) / 2, (big, small)) == (long, small)
    cut, font = plots._fitted(draw, long, width_small / 2, (big, small))
    assert font is small and cut.endswith("\u2026") and long.startswith(cut[:-1].rstrip())
    assert draw.textlength(cut, font=small) <= width_small / 2
