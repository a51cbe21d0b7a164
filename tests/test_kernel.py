"""The Jupyter runtime against a real ipykernel: run() and start() in cells, live DataFrames, re-run cells.

Each test starts its own kernel through jupyter_client, sends cells the way a
notebook front end does, and reads what the cells printed from the iopub
channel. Between two cells the kernel is idle, exactly as when a user is
looking at the notebook.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

import pytest
from jupyter_client.manager import KernelManager


@dataclass
class CellOutput:
    """What one executed cell produced."""

    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # "Name: value" of an exception the cell raised
    traceback: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)  # execute_result / display_data bundles
    seconds: float = 0.0  # from sending the cell to the kernel being idle again
    msg_id: str = ""  # the execute request's id: the parent of everything the cell printed

    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def value(self, key: str) -> str:
        """The text after `key=` on the line that starts with it (cells print `key=value`)."""
        for line in self.lines():
            if line.startswith(f"{key}="):
                return line[len(key) + 1 :]
        raise AssertionError(f"the cell printed no {key}=...; stdout:\n{self.stdout}\nstderr:\n{self.stderr}")


class Kernel:
    """A started ipykernel and a client talking to it."""

    def __init__(self, cwd: str) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=cwd)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.late_output: dict[str, str] = {}  # stdout and stderr that reached a cell after it finished, by msg_id

    def run(self, code: str, *, timeout: float = 60, check: bool = True, cell_id: str | None = None) -> CellOutput:
        """Execute `code` as one cell and wait until the kernel is idle again.

        With `check`, a cell that raised fails the test with its traceback. With `cell_id`, the
        request carries the cell's id in its metadata, as JupyterLab sends it.
        """
        out = CellOutput()
        start = time.perf_counter()
        if cell_id is None:
            msg_id = self.client.execute(code)
        else:
            content = {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            }
            message = self.client.session.msg("execute_request", content, metadata={"cellId": cell_id})
            self.client.shell_channel.send(message)
            msg_id = message["header"]["msg_id"]
        out.msg_id = msg_id
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"the cell did not finish within {timeout} s:\n{code}\nstdout so far:\n{out.stdout}"
                )
            try:
                msg = self.client.get_iopub_msg(timeout=remaining)
            except Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                self._note_late(msg)
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    out.stdout += content["text"]
                else:
                    out.stderr += content["text"]
            elif kind == "error":
                out.error = f"{content['ename']}: {content['evalue']}"
                out.traceback = "\n".join(content["traceback"])
            elif kind in ("execute_result", "display_data"):
                out.results.append(content["data"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        out.seconds = time.perf_counter() - start
        if check and out.error is not None:
            raise AssertionError(f"the cell raised {out.error}:\n{code}\n{out.traceback}\nstderr:\n{out.stderr}")
        return out

    def _note_late(self, msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            parent = msg["parent_header"].get("msg_id", "")
            self.late_output[parent] = self.late_output.get(parent, "") + msg["content"]["text"]

    def listen(self, seconds: float) -> None:
        """Read what the kernel sends for `seconds` while no cell runs (late output goes to `late_output`)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self._note_late(self.client.get_iopub_msg(timeout=remaining))
            except Empty:
                pass

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=False)


@pytest.fixture
def kernel(no_orphans, tmp_path) -> Iterator[Kernel]:
    """A fresh kernel; shut down after the test, which `no_orphans` then checks left no process behind."""
    started = Kernel(cwd=str(tmp_path))
    try:
        yield started
    finally:
        started.shutdown()


SETUP = """
import asyncio, time, warnings
import pandas  # imported here so that timing a cell measures byop_nb, not the first pandas import
from byop_nb.scheduling import ExitCode, Scheduler, Task
"""


@pytest.mark.kernel
def test_blocking_run_in_a_cell(kernel):
    kernel.run(SETUP)
    out = kernel.run(
        """
def square(x):
    return x * x

scheduler = Scheduler.with_threads(2)
task = Task(square, scheduler)

@scheduler.on_start
def launch():
    for x in range(5):
        task(x)

code = scheduler.run()
print(f"exit={code}")
print(f"rows={len(task.df())}")
print(f"results={sorted(task.df()['result'])}")
"""
    )
    assert out.value("exit") == "ExitCode.EXHAUSTED"
    assert out.value("rows") == "5"
    assert out.value("results") == "[0, 1, 4, 9, 16]"
    # The kernel's loop survives the nested run: the next cell works, and so does a second run.
    again = kernel.run("print(f'exit={scheduler.run()}'); print(f'rows={len(task.df())}')")
    assert again.value("exit") == "ExitCode.EXHAUSTED" and again.value("rows") == "10"


CALLBACK_RAISES = """
def square(x):
    return x * x

scheduler = Scheduler.with_threads(1)
task = Task(square, scheduler)

@scheduler.on_start
def launch():
    task(3)

@task.on_returned
def check(result):
    raise ValueError(f"too big: {result}")

scheduler.run()
"""
"""A cell whose run ends with a callback's error (also used by test_kernel_display.py)."""


@pytest.mark.kernel
def test_a_callback_error_in_a_cell_shows_the_cell_run_and_the_callback_not_the_machinery(kernel):
    kernel.run(SETUP)
    out = kernel.run(CALLBACK_RAISES, check=False)
    assert out.error == "ValueError: too big: 9"
    shown = re.sub(r"\x1b\[[0-9;]*m", "", out.traceback)  # IPython colours its tracebacks
    assert "scheduler.run()" in shown and 'raise ValueError(f"too big: {result}")' in shown
    assert "raised by the callback 'check' of the event 'task-returned' (Task(square))" in shown
    for machinery in ("asyncio", "nest_asyncio2", "events.py", "task.py", "_handoff.py"):
        assert machinery not in shown, machinery
    assert len(shown.splitlines()) < 30, shown


@pytest.mark.kernel
def test_start_returns_at_once_and_the_run_goes_on_while_the_kernel_is_idle(kernel):
    kernel.run(SETUP)
    started = kernel.run(
        """
def slow_square(x):
    time.sleep(0.02)
    return {"x": x, "square": x * x}

scheduler = Scheduler.with_threads(2)
task = Task(slow_square, scheduler)

@scheduler.on_start(repeat=2)
@task.on_done
def again():
    task(task.n_called)

t = time.perf_counter()
handle = scheduler.start()
print(f"start_seconds={time.perf_counter() - t}")
print(f"rows={len(task.df())}")
print(f"running={scheduler.running()}")
"""
    )
    assert float(started.value("start_seconds")) < 1.0
    assert started.seconds < 1.0, f"the cell took {started.seconds:.2f} s: start() must not block it"
    assert started.value("running") == "True"
    rows_at_start = int(started.value("rows"))

    time.sleep(2.0)  # no cell executes: the kernel is idle, the run must go on
    later = kernel.run("print(f'rows={len(task.df())}'); print(f'done={handle.done()}')")
    rows_later = int(later.value("rows"))
    assert later.value("done") == "False"
    # 2 workers x 2 s / 0.02 s would be ~200 calls; ask for a fraction of it (a busy machine).
    assert rows_later >= rows_at_start + 20, (rows_at_start, rows_later)

    # A later cell reads the live DataFrame.
    frame = kernel.run(
        """
df = task.df()
print(f"columns={list(df.columns)}")
print(f"statuses={sorted(set(df['status']))}")
print(f"squares_ok={bool((df['result.square'] == df['result.x'] ** 2).all())}")
print(f"dtype={df['finished'].dtype}")
"""
    )
    assert frame.value("statuses") == "['returned']"
    assert frame.value("squares_ok") == "True"
    assert "'result.square'" in frame.value("columns")
    assert frame.value("dtype") == "datetime64[ns, UTC]"

    # stop() from another cell ends the run; await the handle in a following cell.
    kernel.run("scheduler.stop()")
    ended = kernel.run(
        """
code = await handle
print(f"exit={code}")
print(f"result={handle.result()}")
print(f"running={scheduler.running()}")
n = len(task.df())
"""
    )
    assert ended.value("exit") == "ExitCode.STOPPED"
    assert ended.value("result") == "ExitCode.STOPPED"
    assert ended.value("running") == "False"
    time.sleep(0.3)
    still = kernel.run("print(f'same={len(task.df()) == n}')")
    assert still.value("same") == "True", "rows kept arriving after the run was stopped"


@pytest.mark.kernel
def test_re_executing_a_registration_cell_does_not_double_callbacks(kernel):
    kernel.run(SETUP)
    kernel.run(
        """
def square(x):
    return x * x

scheduler = Scheduler.with_threads(2)
task = Task(square, scheduler)
seen, first_lambda, second_lambda = [], [], []

@scheduler.on_start
def launch():
    for x in range(3):
        task(x)
"""
    )
    registration = """
@task.on_returned
def remember(result):
    seen.append(result)

task.on_returned(lambda result: first_lambda.append(result))
task.on_returned(lambda result: second_lambda.append(-result))
"""
    kernel.run(registration)
    kernel.run(registration)  # the user runs the cell again
    out = kernel.run(
        """
scheduler.run()
print(f"seen={sorted(seen)}")
print(f"first={sorted(first_lambda)}")
print(f"second={sorted(second_lambda)}")
print(f"callbacks={len(task.event_manager.callbacks(task.RETURNED))}")
"""
    )
    assert out.value("seen") == "[0, 1, 4]"
    assert out.value("first") == "[0, 1, 4]"
    assert out.value("second") == "[-4, -1, 0]"  # two different lambdas both stay
    assert out.value("callbacks") == "3"


@pytest.mark.kernel
def test_a_cell_run_again_replaces_what_it_registered_edited_lambdas_and_renamed_defs_too(kernel):
    kernel.run(SETUP)
    kernel.run(
        """
def square(x):
    return x * x

scheduler = Scheduler.with_threads(2)
task = Task(square, scheduler)
log = []

@scheduler.on_start
def launch():
    task(3)
""",
        cell_id="setup-cell",
    )
    kernel.run(
        """
task.on_returned(lambda result: log.append(("lambda", result)))

@task.on_returned
def show(result):
    log.append(("show", result))
""",
        cell_id="callbacks-cell",
    )
    # The user edits the cell: the lambda changes, `show` is renamed to `display`.
    kernel.run(
        """
task.on_returned(lambda result: log.append(("edited lambda", result)))

@task.on_returned
def display(result):
    log.append(("display", result))
""",
        cell_id="callbacks-cell",
    )
    # Another cell registers too: its callback stays when the first cell is run again.
    kernel.run("task.on_returned(lambda result: log.append(('other cell', result)))", cell_id="other-cell")
    out = kernel.run(
        """
scheduler.run()
print(f"log={sorted(log)}")
print(f"registered={task.event_manager.registrations()[task.RETURNED]}")
"""
    )
    assert out.value("log") == "[('display', 9), ('edited lambda', 9), ('other cell', 9)]"
    assert out.value("registered") == "['<lambda>', 'display', '<lambda>']"


@pytest.mark.kernel
def test_running_only_the_task_cell_again_keeps_the_callbacks_registered_in_other_cells(kernel):
    kernel.run(SETUP)
    task_cell = """
def square(x):
    return x * x

task = Task(square, scheduler)
"""
    kernel.run("scheduler = Scheduler.with_threads(2)\nlog = []")
    kernel.run(task_cell, cell_id="task-cell")
    kernel.run(
        """
@scheduler.on_start
def launch():
    task(4)

@task.on_returned
def show(result):
    log.append(result)
""",
        cell_id="callbacks-cell",
    )
    again = kernel.run(task_cell, cell_id="task-cell")  # the user runs only the Task cell again
    assert "takes over its callbacks" in again.stderr
    out = kernel.run("scheduler.run()\nprint(f'log={log}')\nprint(f'rows={len(task.df())}')")
    assert out.value("log") == "[16]" and out.value("rows") == "1"


@pytest.mark.kernel
def test_a_task_created_again_under_the_same_name_replaces_the_old_one_with_a_warning(kernel):
    kernel.run(SETUP + "scheduler = Scheduler.with_threads(1)\ndef square(x):\n    return x * x\n")
    cell = "task = Task(square, scheduler)\nprint(f'tasks={list(scheduler.tasks)}')"
    first = kernel.run(cell)
    assert "already exists" not in first.stderr
    second = kernel.run(cell)
    assert "A Task named 'square' already exists on this scheduler" in second.stderr
    assert second.value("tasks") == "['square']"
    out = kernel.run(
        """
print(f"same={scheduler.tasks['square'] is task}")

@scheduler.on_start
def launch():
    task(4)

scheduler.run()
print(f"rows={len(task.df())}")
"""
    )
    assert out.value("same") == "True" and out.value("rows") == "1"


@pytest.mark.kernel
def test_a_function_defined_in_a_cell_runs_in_process_workers_also_under_spawn(kernel):
    kernel.run(SETUP)
    out = kernel.run(
        """
OFFSET = 100

def shifted_cube(x):
    return x ** 3 + OFFSET

for method in (None, "spawn"):
    scheduler = Scheduler.with_processes(2, start_method=method)
    task = Task(shifted_cube, scheduler)

    @scheduler.on_start
    def launch():
        for x in range(4):
            task(x)

    code = scheduler.run()
    df = task.df()
    print(f"{method}={code} {sorted(df['result'])} {sorted(set(df['status']))}")
""",
        timeout=120,
    )
    assert out.value("None") == "ExitCode.EXHAUSTED [100, 101, 108, 127] ['returned']"
    assert out.value("spawn") == "ExitCode.EXHAUSTED [100, 101, 108, 127] ['returned']"


@pytest.mark.kernel
def test_a_worker_traceback_of_a_function_defined_in_a_cell_shows_its_source_line(kernel):
    kernel.run(SETUP)
    out = kernel.run(
        """
def divide(x):
    ratio = 10 / x  # the line the traceback should show
    return ratio

scheduler = Scheduler.with_processes(1, start_method="spawn")
task = Task(divide, scheduler)
scheduler.on_start(lambda: task(0))
scheduler.run()
(text,) = task.df()["traceback"].tolist()
print(f"shown={'ratio = 10 / x  # the line the traceback should show' in text}")
print(f"error={text.strip().splitlines()[-1]}")
""",
        timeout=120,
    )
    assert out.value("error") == "ZeroDivisionError: division by zero"
    assert out.value("shown") == "True", out.stdout


@pytest.mark.kernel
def test_scheduler_task_and_history_display_as_html(kernel):
    kernel.run(SETUP + "scheduler = Scheduler.with_threads(1)\ndef square(x):\n    return x * x\n")
    kernel.run(
        """
task = Task(square, scheduler)

@scheduler.on_start
def launch():
    task(7)

scheduler.run()
"""
    )
    history = kernel.run("task.history")
    assert len(history.results) == 1
    assert "History" in history.results[0]["text/html"] and "returned 1" in history.results[0]["text/html"]
    assert history.results[0]["text/plain"] == "History('square', rows=1: returned=1)"
    for name in ("scheduler", "task"):
        shown = kernel.run(name)
        assert len(shown.results) == 1 and "text/html" in shown.results[0], name
        assert "square" in shown.results[0]["text/html"]


LOG_PANE_SETUP = """
import json
from byop_nb.notebook import Dashboard

def slow_square(x):
    time.sleep(0.05)
    return x * x

scheduler = Scheduler.with_processes(2)
task = Task(slow_square, scheduler)

@scheduler.on_start
def launch():
    print("launching")
    task.map(range(6))

@task.on_returned
def show(result):
    print(f"squared: {result}")

@task.on_exception
def complain(exception):
    print(f"failed: {exception}", file=sys.stderr)

dashboard = Dashboard(scheduler, task, plot=False)
"""

LOG_PANE_STATE = """
print(f"exit={await handle}")
print("outputs=" + json.dumps(dashboard.log_output.outputs))
print(f"title={dashboard.log_pane.titles[0]}")
"""


@pytest.mark.kernel
@pytest.mark.parametrize("start", ["dashboard.start()", "scheduler.start()"])
def test_a_background_runs_prints_go_to_the_dashboards_log_pane_not_to_the_cell_that_started_it(kernel, start):
    kernel.run(SETUP + "import sys\n" + LOG_PANE_SETUP)
    started = kernel.run(f"handle = {start}\nprint('started')")
    ended = kernel.run(LOG_PANE_STATE, timeout=120)
    kernel.listen(1.0)  # whatever may still be on its way to the cell that started the run

    assert ended.value("exit") == "ExitCode.EXHAUSTED"
    outputs = json.loads(ended.value("outputs"))
    text = "".join(output["text"] for output in outputs)
    assert text.splitlines()[0] == "launching"
    assert sorted(text.splitlines()[1:]) == sorted(f"squared: {x * x}" for x in range(6))
    assert {output["output_type"] for output in outputs} == {"stream"}
    assert ended.value("title") == "log: 7 lines"
    # Neither the cell that started the run nor the one that awaited it got the callbacks' lines.
    assert started.stdout == "started\n" and started.stderr == ""
    for cell in (started, ended):
        printed = [line for line in cell.lines() if not line.startswith("outputs=")]
        printed += (cell.stderr + kernel.late_output.get(cell.msg_id, "")).splitlines()
        assert not any("launching" in line or "squared" in line for line in printed), printed
    assert not any("squared" in text for text in kernel.late_output.values()), kernel.late_output

    # The same scheduler run blocking in a cell prints there, as any code in that cell does.
    blocking = kernel.run("print(f'exit={scheduler.run()}')\nprint(f'lines={len(dashboard.log_text.splitlines())}')")
    assert blocking.lines()[0] == "launching" and blocking.value("lines") == "7"


def test_start_without_a_running_loop_says_to_use_run_or_async_run():
    from byop_nb.scheduling import Scheduler

    scheduler = Scheduler.with_threads(1)
    with pytest.raises(RuntimeError, match=r"run\(\).*async_run\(\)") as error:
        scheduler.start()
    assert "there is none here" in str(error.value)
    assert not scheduler.running()
