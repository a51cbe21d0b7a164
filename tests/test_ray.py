"""The engine on Ray: RayExecutor and the Scheduler on one real local Ray (2 CPUs) shared by this module.

Every test checks that it left no Ray task of ours running, no limited call alive and no other
process behind (`ray_checks.assert_nothing_of_ours_runs`); the module checks that the Ray it
started left nothing behind once shut down. Never skipped: Ray is in the `ray` extra, which
`.ci/run` installs (through `all`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, as_completed
from typing import Any

import pandas as pd
import pynisher
import pytest
from conftest import live_children
from helpers import nap, raise_in_worker, square
from pruning_checks import run_and_check_a_pruned_study
from ray_checks import assert_nothing_of_ours_runs, local_ray

from byop_nb.optimization import OptunaOptimizer, Trial
from byop_nb.scheduling import Comm, CommTask, ExitCode, RayExecutor, Scheduler, Task

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray() -> Iterator[Any]:
    with local_ray(2) as ray:
        yield ray


@pytest.fixture
def nothing_left(ray: Any) -> Iterator[None]:
    """The test leaves no Ray task of ours running and no process of ours alive (Ray's own pool aside)."""
    before = live_children()
    yield
    assert_nothing_of_ours_runs(before)


# -- functions the workers run (this module is importable there: the tests folder is on their path) --


def hog(n_bytes: int) -> int:
    return len(bytearray(n_bytes))


def spin(cpu_seconds: float) -> str:
    start = time.process_time()
    while time.process_time() - start < cpu_seconds:
        pass
    return "spun"


def chatty(comm: Comm, n: int) -> int:
    for i in range(n):
        comm.send(i)
    answer = comm.request(("sum", n))
    comm.send(("got", answer))
    return answer


def quadratic(trial: Trial) -> Trial.Report:
    with trial.begin():
        loss = (trial.config["x"] - 1.0) ** 2 + (trial.config["y"] + 2.0) ** 2
    return trial.success(loss=loss)


# -- RayExecutor on its own ------------------------------------------------------------


def test_submit_and_map_return_futures_and_results(ray: Any, nothing_left: None) -> None:
    with RayExecutor(num_cpus=1) as executor:
        future = executor.submit(square, 7)
        assert isinstance(future, Future) and future.result(timeout=60) == 49
        assert list(executor.map(square, range(6), timeout=60)) == [0, 1, 4, 9, 16, 25]
        futures = [executor.submit(square, i) for i in range(10)]
        assert sorted(f.result() for f in as_completed(futures, timeout=60)) == [i * i for i in range(10)]
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)


def test_an_exception_arrives_as_raised_with_the_workers_traceback(ray: Any, nothing_left: None) -> None:
    with RayExecutor() as executor:
        error = executor.submit(raise_in_worker, 3).exception(timeout=60)
    assert type(error) is ValueError and str(error) == "x cannot be 3"
    assert "raise_in_worker" in error.remote_traceback  # type: ignore[union-attr]


def test_functions_and_classes_defined_locally_travel_by_value(ray: Any, nothing_left: None) -> None:
    class Point:  # like a class of a notebook cell: no worker can import it
        def __init__(self, x: int) -> None:
            self.x = x

    def double(point: Point) -> Point:
        return Point(point.x * 2)

    with RayExecutor() as executor:
        result = executor.submit(double, Point(21)).result(timeout=60)
    assert result.x == 42


def test_options_reach_ray_and_bad_ones_are_refused_at_construction(ray: Any, nothing_left: None) -> None:
    with pytest.raises(ValueError, match=r"Ray refused the task options .*'colour'"):
        RayExecutor(colour="blue")
    with pytest.raises(ValueError, match=r"RayExecutor\(num_cpus=-1\): num_cpus must be a non-negative number"):
        RayExecutor(num_cpus=-1)
    # A call that asks for more CPUs than the cluster has is never placed: cancelling it still ends it.
    with RayExecutor(num_cpus=1, memory=10 * 2**20, max_retries=0) as executor:
        assert executor.submit(square, 3).result(timeout=60) == 9
    big = RayExecutor(num_cpus=64)
    waiting = big.submit(square, 3)
    time.sleep(0.5)
    assert not waiting.done()
    big.shutdown(wait=True, cancel_futures=True)
    assert waiting.cancelled()


def test_shutdown_with_cancel_futures_ends_pending_and_running_calls(ray: Any, nothing_left: None) -> None:
    executor = RayExecutor()
    futures = [executor.submit(nap, 60) for _ in range(4)]  # 2 run, 2 wait for a CPU
    time.sleep(2)
    start = time.monotonic()
    executor.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - start < 20
    assert all(f.cancelled() for f in futures)
    with pytest.raises(CancelledError):
        futures[0].result()


def test_future_cancel_cancels_the_ray_task(ray: Any, nothing_left: None) -> None:
    executor = RayExecutor()
    running = executor.submit(nap, 60)
    time.sleep(1)
    assert running.cancel() and running.cancelled()
    assert executor.submit(square, 4).result(timeout=60) == 16
    executor.shutdown()


def test_a_function_ray_cannot_serialize_fails_its_call_naming_it(ray: Any, nothing_left: None) -> None:
    lock = threading.Lock()

    def holds_a_lock() -> bool:
        return lock.locked()

    with RayExecutor() as executor:
        error = executor.submit(holds_a_lock).exception(timeout=60)
        assert "holds_a_lock" in str(error) and "cannot be sent" in str(error)
        error = executor.submit(square, threading.Lock()).exception(timeout=60)
        assert isinstance(error, TypeError) and "Ray could not serialize the call of square" in str(error)


# -- the Scheduler on Ray ----------------------------------------------------------------


def test_task_events_counts_dataframe_and_a_second_run(ray: Any, nothing_left: None) -> None:
    scheduler = Scheduler(RayExecutor())
    task = Task(square, scheduler)
    failing = Task(raise_in_worker, scheduler)
    results: list[int] = []
    errors: list[BaseException] = []
    task.on_returned(results.append)
    failing.on_exception(errors.append)
    n = 8

    @scheduler.on_start(repeat=2)
    @task.on_done
    def submit_next() -> None:
        if task.n_called < n:
            task(task.n_called)

    scheduler.on_start(lambda: failing(0))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert sorted(results) == [i * i for i in range(n)]
    (error,) = errors
    assert type(error) is ValueError and "raise_in_worker" in error.remote_traceback  # type: ignore[attr-defined]
    assert scheduler.counts == {
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
    df = task.df()
    assert isinstance(df, pd.DataFrame) and len(df) == n
    assert set(df.status) == {"returned"} and sorted(df.result) == sorted(results)
    assert list(failing.df().status) == ["exception"] and list(failing.df().exception_type) == ["ValueError"]
    assert ray.is_initialized()  # Ray started by the user stays up between runs

    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED  # a fresh RayExecutor on the same Ray
    assert len(task.df()) == n and len(failing.df()) == 2


def test_memory_cpu_and_wall_time_limits_on_ray_workers(ray: Any, nothing_left: None) -> None:
    scheduler = Scheduler.with_ray()  # on the Ray running here
    assert not scheduler.executor.owns_ray  # type: ignore[attr-defined]
    memory = Task(hog, scheduler, memory_limit=(300, "MB"))
    cpu = Task(spin, scheduler, cpu_time_limit=1)
    wall = Task(nap, scheduler, wall_time_limit=(0.5, "s"))
    fine = Task(hog, scheduler, name="small", memory_limit=(300, "MB"), wall_time_limit=10)
    seen: list[tuple[str, type]] = []
    memory.on_memory_limit_reached(lambda f, e: seen.append(("memory", type(e))))
    cpu.on_cpu_time_limit_reached(lambda f, e: seen.append(("cpu", type(e))))
    wall.on_wall_time_limit_reached(lambda f, e: seen.append(("wall", type(e))))

    @scheduler.on_start
    def launch() -> None:
        memory(2**30)
        cpu(30)
        wall(30)
        fine(1000)

    start = time.monotonic()
    assert scheduler.run(timeout=90) is ExitCode.EXHAUSTED
    assert time.monotonic() - start < 45
    assert sorted(seen) == sorted(
        [
            ("memory", pynisher.MemoryLimitException),
            ("cpu", pynisher.CpuTimeoutException),
            ("wall", pynisher.WallTimeoutException),
        ]
    )
    assert list(memory.df().status) == ["memory_limit"]
    assert list(cpu.df().status) == ["cpu_time_limit"]
    assert list(wall.df().status) == ["wall_time_limit"]
    assert list(fine.df().status) == ["returned"] and list(fine.df().result) == [1000]
    assert scheduler.counts[(Task.TIMEOUT, "nap")] == 1 == scheduler.counts[(Task.TIMEOUT, "spin")]


def test_comm_task_round_trip_on_ray(ray: Any, nothing_left: None) -> None:
    scheduler = Scheduler(RayExecutor())
    task = CommTask(chatty, scheduler)
    log: list[tuple[str, Any]] = []
    futures: list[Future[Any]] = []

    @scheduler.on_start
    def launch() -> None:
        futures.extend(task(n) for n in (20, 40))

    task.on_message(lambda msg: log.append(("message", msg.data)))

    @task.on_request
    def answer(msg: Comm.Msg) -> None:
        log.append(("request", msg.data))
        msg.respond(sum(range(msg.data[1])))

    task.on_close(lambda msg: log.append(("close", None)))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert sorted(f.result() for f in futures) == [sum(range(20)), sum(range(40))]
    assert sorted(data for kind, data in log if kind == "request") == [("sum", 20), ("sum", 40)]
    assert len([1 for kind, _ in log if kind == "message"]) == 20 + 40 + 2
    assert [kind for kind, _ in log].count("close") == 2
    assert task._hub is None


def test_trial_task_with_an_optuna_optimizer(ray: Any, nothing_left: None) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = 8
    optimizer = OptunaOptimizer({"x": (-5.0, 5.0), "y": (-5.0, 5.0)}, sampler=optuna.samplers.TPESampler(seed=0))
    scheduler = Scheduler(RayExecutor())
    task = Trial.Task(quadratic, scheduler)

    @scheduler.on_start(repeat=2)
    def launch() -> None:
        task(optimizer.ask())

    @task.on_report
    def tell_and_ask(report: Trial.Report) -> None:
        optimizer.tell(report)
        if task.n_called < n:
            task(optimizer.ask())

    assert scheduler.run(timeout=90) is ExitCode.EXHAUSTED
    trials = optimizer.study.get_trials(deepcopy=False)
    assert len(trials) == n and all(t.state.name == "COMPLETE" for t in trials)
    df = task.df()
    assert len(df) == n and set(df.status) == {"success"}
    assert optimizer.study.best_value == df["result.loss"].min()


def test_trials_on_ray_report_steps_and_are_pruned(ray: Any, nothing_left: None) -> None:
    run_and_check_a_pruned_study(Scheduler(RayExecutor()), timeout=90)


def test_stop_without_waiting_leaves_no_ray_task_of_ours_running(ray: Any, nothing_left: None) -> None:
    scheduler = Scheduler(RayExecutor())
    plain = Task(nap, scheduler)
    limited = Task(nap, scheduler, name="limited", wall_time_limit=120)  # a child of the worker's warm server

    @scheduler.on_start
    def launch() -> None:
        plain(60)
        limited(60)
        plain(60)  # waits for a CPU

    start = time.monotonic()
    assert scheduler.run(timeout=4, wait=False) is ExitCode.TIMEOUT
    assert time.monotonic() - start < 20
    assert set(plain.df().status) == {"cancelled"} and list(limited.df().status) == ["cancelled"]
    # `nothing_left` then checks that the CPUs are free and no limited call lives on.


def test_a_call_ray_cannot_serialize_fails_with_a_row_naming_it(ray: Any, nothing_left: None) -> None:
    lock = threading.Lock()

    def holds_a_lock() -> bool:
        return lock.locked()

    scheduler = Scheduler(RayExecutor())
    task = Task(holds_a_lock, scheduler)
    squares = Task(square, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task()
        squares(threading.Lock())
        squares(3)

    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    (row,) = task.history.rows
    assert row["status"] == "exception" and "holds_a_lock" in row["exception_message"]
    statuses = list(squares.df().status)
    assert sorted(statuses) == ["exception", "returned"]
    message = squares.df().exception_message.dropna().iloc[0]
    assert "Ray could not serialize the call of square" in message


def test_with_ray_refuses_to_start_another_ray_beside_a_running_one(ray: Any) -> None:
    with pytest.raises(RuntimeError, match=r"Ray is running in this process already .* ray.shutdown\(\) first"):
        Scheduler.with_ray(2)


def test_the_dashboards_buttons_drive_a_background_run_on_ray(ray: Any, nothing_left: None) -> None:
    from test_dashboard import keep_busy, run_async, status_text, until

    from byop_nb._html import task_counters
    from byop_nb.notebook import Dashboard

    scheduler = Scheduler(RayExecutor())
    task = Task(nap, scheduler)
    keep_busy(scheduler, task, 0.05)
    board = Dashboard(scheduler, task, timeout=60, interval=0.1)

    async def body() -> None:
        board.start_button.click()
        assert board.handle is not None and scheduler.state == "running"
        await until(lambda: task_counters(task)["succeeded"] >= 10, timeout=60)
        assert status_text(board).startswith("running")
        board.stop_button.click()
        assert await board.handle is ExitCode.STOPPED

    run_async(body)
    assert status_text(board).startswith("finished") and "exit code: stopped" in status_text(board)
    returned = task_counters(task)["succeeded"]
    assert returned >= 10 and f"<td>{returned}</td>" in board.counters_html.value
    board.close()


def test_the_docstring_example_runs_as_written(
    ray: Any, nothing_left: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import textwrap

    def python_blocks(text: str) -> list[str]:
        blocks = textwrap.dedent("\n".join(text.splitlines()[1:])).split("```python\n")[1:]
        return [textwrap.dedent(block.split("```")[0]) for block in blocks]

    (example,) = python_blocks(RayExecutor.__doc__ or "")
    # Ray runs already (this module's): the example's own ray.init / ray.shutdown lines are left out.
    lines = [line for line in example.splitlines() if not line.startswith(("ray.init", "ray.shutdown"))]
    exec(compile("\n".join(lines), "<RayExecutor docstring>", "exec"), {})
    assert capsys.readouterr().out == "[1, 2]\n"
