"""How finished work reaches the scheduler's loop: the Doorbell, batched hand-over, and its edge cases."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import run_script

from byop_nb.scheduling import Scheduler, Task
from byop_nb.scheduling.engine._doorbell import Doorbell


def sleep_then_return(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


# -- the Doorbell ------------------------------------------------------------------


def test_rings_from_many_threads_before_the_loop_looks_are_answered_together() -> None:
    async def main() -> int:
        answers = 0

        def answer() -> None:
            nonlocal answers
            answers += 1

        bell = Doorbell()
        threads = [threading.Thread(target=bell.ring) for _ in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert bell.attach(asyncio.get_running_loop(), answer)
        await asyncio.sleep(0.1)
        bell.detach()
        return answers

    assert asyncio.run(main()) == 1


def test_a_ring_while_detached_waits_for_the_next_attach_on_another_loop() -> None:
    bell = Doorbell()
    heard: list[str] = []

    async def listen(name: str) -> None:
        bell.attach(asyncio.get_running_loop(), lambda: heard.append(name))
        await asyncio.sleep(0.05)
        bell.detach()

    asyncio.run(listen("first"))
    assert heard == []
    bell.ring()  # nobody listens now
    asyncio.run(listen("second"))
    assert heard == ["second"]


def test_each_ring_after_an_answer_is_answered_again() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        times: list[float] = []
        bell = Doorbell()
        bell.attach(loop, lambda: times.append(loop.time()))
        for _ in range(3):
            threading.Thread(target=bell.ring).start()
            await asyncio.sleep(0.05)
        bell.detach()
        return times

    assert len(asyncio.run(main())) == 3


@pytest.mark.parametrize("kind", ["eventfd", "socket pair"])
def test_a_doorbell_rings_across_threads_with_an_eventfd_or_a_socket_pair(kind: str, monkeypatch: Any) -> None:
    """Where there is no eventfd (macOS, Windows) a socket pair does the same."""
    if kind == "socket pair":
        monkeypatch.delattr(os, "eventfd")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        answered = asyncio.Event()
        answers = 0

        def answer() -> None:
            nonlocal answers
            answers += 1
            answered.set()

        bell = Doorbell()
        assert bell.attach(loop, answer)
        for _ in range(3):
            answered.clear()
            threading.Thread(target=bell.ring).start()
            await asyncio.wait_for(answered.wait(), 5)
        bell.detach()
        return answers

    assert asyncio.run(main()) == 3


def test_a_doorbell_closes_its_descriptors_when_collected() -> None:
    before = open_fds()
    bell = Doorbell()
    assert len(open_fds() - before) >= 1
    del bell
    gc.collect()
    assert open_fds() - before == set()


# -- the Scheduler's hand-over -------------------------------------------------------


def test_calls_that_finish_while_a_callback_holds_the_loop_are_reported_in_the_order_they_finished() -> None:
    scheduler = Scheduler.with_threads(4)
    task = Task(sleep_then_return, scheduler)
    returned: list[float] = []

    @scheduler.on_start
    def launch() -> None:
        for seconds in (0.4, 0.1, 0.3, 0.2):
            task(seconds)
        time.sleep(0.8)  # every call ends while this callback holds the loop

    task.on_returned(returned.append)
    scheduler.run()
    assert returned == [0.1, 0.2, 0.3, 0.4]
    assert task.df()["result"].tolist() == [0.1, 0.2, 0.3, 0.4]


def test_runs_of_one_scheduler_reuse_one_doorbell_and_leave_no_descriptor_behind() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(sleep_then_return, scheduler)

    @scheduler.on_start
    def launch() -> None:
        task(0.0)

    scheduler.run()  # the first run makes the doorbell
    before = open_fds()
    for _ in range(10):
        scheduler.run()
    assert task.counts[task.RETURNED] == 11
    assert open_fds() - before == set()


class NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch file descriptors (as the Proactor loop on Windows cannot)."""

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:
        raise NotImplementedError("this loop does not watch file descriptors")


def test_a_loop_that_cannot_watch_descriptors_is_woken_with_call_soon_threadsafe() -> None:
    scheduler = Scheduler.with_threads(2)
    task = Task(sleep_then_return, scheduler)

    @scheduler.on_start(repeat=2)
    def launch() -> None:
        task(0.01)

    @task.on_done
    def again(_future: Future[float]) -> None:
        if task.n_called < 20:
            task(0.001)

    loop = NoReaderLoop()
    try:
        loop.run_until_complete(scheduler.async_run(timeout=30))
    finally:
        loop.close()
    assert task.counts[task.RETURNED] == 20 and task.n_running == 0


class ResultPlusOne(Future):  # type: ignore[type-arg]
    """A Future subclass that changes what result() gives: the scheduler must ask it, not read its fields."""

    def result(self, timeout: float | None = None) -> Any:
        return super().result(timeout) + 1


class PlusOneExecutor(Executor):
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(2)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        outer: Future[Any] = ResultPlusOne()

        def copy(inner: Future[Any]) -> None:
            exception = inner.exception()
            if exception is not None:
                outer.set_exception(exception)
            else:
                outer.set_result(inner.result())

        self._pool.submit(fn, *args, **kwargs).add_done_callback(copy)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def test_futures_of_other_classes_are_asked_through_their_methods() -> None:
    scheduler = Scheduler(PlusOneExecutor())
    task = Task(sleep_then_return, scheduler)
    results: list[float] = []
    task.on_returned(results.append)

    @scheduler.on_start
    def launch() -> None:
        task(1.0)

    scheduler.run()
    assert results == [2.0]


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_a_burst_of_calls_is_counted_once_each(how: str, no_orphans: None) -> None:
    scheduler = Scheduler.with_threads(2) if how == "threads" else Scheduler.with_processes(2)
    task = Task(sleep_then_return, scheduler)

    @scheduler.on_start
    def launch() -> None:
        for _ in range(300):
            task(0.0)

    scheduler.run()
    assert task.counts == {task.SUBMITTED: 300, task.DONE: 300, task.RETURNED: 300}
    assert sorted(task.df()["call"].tolist()) == list(range(1, 301))


def test_calls_that_end_as_fast_as_they_are_resubmitted_do_not_starve_the_loop(tmp_path: Path) -> None:
    """A timeout and stop() from another thread still end a run whose calls end at once, on every resubmit."""
    out = run_script(
        tmp_path,
        """
import threading
from byop_nb.scheduling import ExitCode, Scheduler, Task

def noop() -> None:
    return None

for kind in ("sequential", "threads"):
    for how in ("timeout", "stop"):
        scheduler = Scheduler.with_sequential() if kind == "sequential" else Scheduler.with_threads(2)
        task = Task(noop, scheduler)

        @scheduler.on_start(repeat=2)
        @task.on_done
        def again() -> None:
            task()

        if how == "stop":
            threading.Timer(0.3, scheduler.stop).start()
            code = scheduler.run(timeout=60)
            assert code is ExitCode.STOPPED, code
        else:
            code = scheduler.run(timeout=0.3)
            assert code is ExitCode.TIMEOUT, code
        assert task.n_called > 10, task.n_called
print("ok")
""",
        timeout=60,
    )
    assert out.strip() == "ok"


class StaleEndAtBegin(Scheduler):
    """Makes a call of an earlier run end at the worst moment: while the next run sets up its wake-ups."""

    stale: Future[Any] | None = None

    def _wake_up_on(self, loop: asyncio.AbstractEventLoop) -> Any:
        ring = super()._wake_up_on(loop)
        if self.stale is not None:
            self._future_done_threadsafe(self.stale)  # as the pool's thread would, for the abandoned call
        return ring


@pytest.mark.timeout(60)
def test_a_call_of_an_earlier_run_that_ends_as_the_next_run_begins_does_not_silence_it() -> None:
    scheduler = StaleEndAtBegin(ThreadPoolExecutor(2))
    task = Task(sleep_then_return, scheduler)
    stale: Future[Any] = Future()
    stale.set_result(None)
    scheduler.stale = stale

    @scheduler.on_start
    def launch() -> None:
        task(0.01)

    for _ in range(3):
        assert scheduler.run(timeout=20).name == "EXHAUSTED"
    assert task.counts[task.RETURNED] == 3


@pytest.mark.timeout(120)
def test_a_run_nested_in_a_callback_lets_the_outer_run_report_calls_meanwhile(caplog: Any) -> None:
    """In Jupyter a callback may run another scheduler (run() nests into the running loop)."""
    outer = Scheduler.with_threads(4)
    inner = Scheduler.with_threads(1)
    outer_task = Task(sleep_then_return, outer)
    inner_task = Task(sleep_then_return, inner)
    reported: list[tuple[float, float]] = []
    inner_ended: list[float] = []
    cpu: list[float] = []

    @outer.on_start
    def launch() -> None:
        for seconds in (0.0, 0.0, 0.0, 0.3, 1.5):  # the last keeps the outer run going past the nested one
            outer_task(seconds)
        time.sleep(0.2)  # the three instant calls end now, to be reported in one turn of the loop

    @inner.on_start
    def slow() -> None:
        inner_task(0.8)

    @outer_task.on_returned
    def note(result: float) -> None:
        reported.append((result, time.monotonic()))
        if len(reported) == 1:  # the first of the three: the two others wait in the same batch
            start = time.process_time()
            inner.run()
            cpu.append(time.process_time() - start)
            inner_ended.append(time.monotonic())

    outer.run(timeout=60)
    assert sorted(r for r, _ in reported) == [0.0, 0.0, 0.0, 0.3, 1.5]
    slow_reported = next(t for r, t in reported if r == 0.3)
    assert slow_reported < inner_ended[0], "the outer run's call that ended meanwhile waited for the nested run"
    assert cpu[0] < 0.4, f"the loop spun during the nested run: {cpu[0]:.2f} s of CPU in 0.8 s"
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


@pytest.mark.timeout(60)
def test_a_run_ends_only_after_its_callback_that_runs_another_scheduler_returns() -> None:
    """The outer run's last call ends while a callback runs an inner scheduler: the outer run waits for the callback."""
    outer = Scheduler.with_threads(2)
    inner = Scheduler.with_threads(1)
    outer_task = Task(sleep_then_return, outer)
    inner_task = Task(sleep_then_return, inner)
    happened: list[str] = []

    @outer.on_start
    def launch() -> None:
        outer_task(0.0)
        outer_task(0.2)  # the outer run's last call: it ends while the inner run goes on

    @inner.on_start
    def slow() -> None:
        inner_task(0.5)

    @outer_task.on_returned
    def nested(result: float) -> None:
        if result == 0.0:
            happened.append(f"inner {inner.run().name}")
        else:
            happened.append("outer's last call")

    outer.on_finished(lambda: happened.append("outer finished"))
    assert outer.run(timeout=30).name == "EXHAUSTED"
    assert happened == ["outer's last call", "inner EXHAUSTED", "outer finished"]


# -- the process pool's own wake-up ----------------------------------------------------
