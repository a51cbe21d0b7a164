"""What byop_nb changes inside a stdlib process pool (`scheduling/workers/_pool_tuning.py`): each tuning
takes its shortcut where it is safe, falls back to the stdlib's own path elsewhere, and loses,
reorders or blocks nothing."""

from __future__ import annotations

import collections
import functools
import threading
import types
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures import process as stdlib_pool
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import pytest
from conftest import run_script
from helpers import identity, sleep_then_return

from byop_nb.scheduling import Scheduler, Task
from byop_nb.scheduling.workers._pool_tuning import _CoalescedWakeup, _plain_call, tune


def length(data: bytes) -> int:
    return len(data)


class _CountingBuffer(collections.deque):  # type: ignore[type-arg]
    """The call queue's buffer (what the feeder thread writes), counting what is put in it."""

    def __init__(self) -> None:
        super().__init__()
        self.kinds: collections.Counter[str] = collections.Counter()

    def append(self, item: Any) -> None:
        self.kinds[type(item).__name__] += 1
        super().append(item)


def tuned_pool(workers: int, buffer: _CountingBuffer | None = None) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(workers)
    if buffer is not None:
        pool._call_queue._buffer = buffer  # type: ignore[attr-defined]
    tune(pool)
    return pool


# -- the call queue: written by the manager thread, or by the feeder ------------------------


def test_small_plain_calls_skip_the_feeder_thread_and_large_ones_take_it(no_orphans: None) -> None:
    buffer = _CountingBuffer()
    pool = tuned_pool(2, buffer)
    try:
        assert "put" in vars(pool._call_queue)  # type: ignore[attr-defined]
        small = [pool.submit(identity, i) for i in range(300)]
        assert [f.result(timeout=60) for f in small] == list(range(300))
        # the first call starts the feeder the stdlib's way; later small calls mostly go straight to the pipe
        assert 1 <= buffer.kinds["_CallItem"] < 150, buffer.kinds
        before = buffer.kinds["_CallItem"]
        sizes = [10, 5_000, 100_000, 3_000_000]  # under PIPE_BUF, over it, over the pipe, far over it
        for n in sizes:  # one at a time: the feeder is idle, so each is up to `put` alone
            assert pool.submit(length, b"x" * n).result(timeout=60) == n
        # each call too large to write at once went to the feeder as it was (pickled once, by the feeder)
        assert buffer.kinds["_CallItem"] - before == 3, buffer.kinds
    finally:
        pool.shutdown()


_LOCK = threading.Lock()


class _Guarded:
    """An argument whose pickling takes a lock (a thread-safe object taking a snapshot of its state)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        with _LOCK:
            return _Guarded, (self.value,)


def unwrap(guarded: _Guarded) -> int:
    return guarded.value


def test_an_argument_that_pickles_itself_is_pickled_by_the_feeder_not_the_manager(no_orphans: None) -> None:
    """Its `__reduce__` may wait (here for a lock the submitting thread holds while it waits for an
    earlier result): the manager thread must go on delivering results meanwhile, as without tuning."""
    pool = tuned_pool(1)
    try:
        assert pool.submit(unwrap, _Guarded(0)).result(timeout=60) == 0  # the feeder has started
        with _LOCK:
            first = pool.submit(sleep_then_return, 0.3, 1)
            second = pool.submit(unwrap, _Guarded(2))  # its pickling waits for _LOCK
            assert first.result(timeout=30) == 1, "the manager thread was stuck pickling the next call"
        assert second.result(timeout=30) == 2
    finally:
        pool.shutdown()


def test_a_plain_call_is_told_apart_from_one_whose_pickling_runs_code() -> None:
    budget = 4092

    def call(*args: Any, **kwargs: Any) -> Any:
        return stdlib_pool._CallItem(1, identity, args, kwargs)

    class Number(int):
        pass

    for plain in (call(), call(1, 2.5, True, None, "text", b"bytes"), call([1, (2, {"a": [3]})], key="value")):
        assert _plain_call(plain, budget)
    assert _plain_call(None, budget)  # the stop sign
    for not_plain in (
        call(object()),
        call(Number(3)),  # a subclass may pickle itself
        call(x=_Guarded(1)),
        call([[[[[1]]]]]),  # nested deeper than is worth looking
        call("x" * 5000),  # pickles to more than PIPE_BUF bytes
        call(b"x" * 5000),
        stdlib_pool._CallItem(1, functools.partial(identity, 1), (), {}),  # pickled by its own reducer
        "something else",
    ):
        assert not _plain_call(not_plain, budget), not_plain
    # what the estimate lets through does pickle within the budget
    for fits in (
        call(list(range(200))),
        call({str(i): float(i) for i in range(100)}),
        call("é" * 1000),
        call("x" * 2000),
    ):
        assert _plain_call(fits, budget)
        assert len(ForkingPickler.dumps(fits)) <= budget


def test_without_fcntl_the_package_imports_and_pools_keep_the_stdlib_insides(tmp_path: Path) -> None:
    """As on Windows, where neither fcntl nor termios exists."""
    out = run_script(
        tmp_path,
        """
import sys
sys.modules["fcntl"] = sys.modules["termios"] = None  # imports of them fail, as on Windows
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import process as stdlib_pool
from byop_nb.scheduling import Scheduler
from byop_nb.scheduling.workers._pool_tuning import tune

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1)
    tune(pool)
    assert type(pool._executor_manager_thread_wakeup) is stdlib_pool._ThreadWakeup
    assert "put" not in vars(pool._call_queue)
    assert pool.submit(abs, -3).result(timeout=60) == 3
    pool.shutdown()
    print("ok")
""",
    )
    assert out.strip() == "ok"


def test_a_call_that_cannot_be_pickled_fails_on_its_future_as_without_tuning(no_orphans: None) -> None:
    """The stdlib's feeder reports an unpicklable call on the call's future; so it still does, and the
    pool goes on working."""
    errors = []
    for tuned in (False, True):
        pool = tuned_pool(1) if tuned else ProcessPoolExecutor(1)
        try:
            assert pool.submit(identity, 1).result(timeout=60) == 1  # the feeder has started
            bad = pool.submit(identity, threading.Lock())
            with pytest.raises(TypeError) as caught:
                bad.result(timeout=60)
            errors.append((type(caught.value), str(caught.value), type(caught.value.__cause__)))
            assert pool.submit(identity, 2).result(timeout=60) == 2
        finally:
            pool.shutdown()
    assert errors[0] == errors[1]


def test_a_full_pipe_never_blocks_the_manager_thread(tmp_path: Path) -> None:
    """Slow workers, calls whose arguments fill the workers' pipe several times over, small calls in
    between: every call ends, with its own result (a blocked manager thread would hang the script)."""
    out = run_script(
        tmp_path,
        """
import time
from concurrent.futures import ProcessPoolExecutor
from byop_nb.scheduling.workers._pool_tuning import tune

def work(i, data):
    time.sleep(0.002)
    return i, len(data)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(2)
    tune(pool)
    futures = [pool.submit(work, i, b"x" * (60_000 if i % 3 == 0 else 10)) for i in range(300)]
    results = [f.result(timeout=120) for f in futures]
    assert results == [(i, 60_000 if i % 3 == 0 else 10) for i in range(300)], results
    pool.shutdown()
    print("ok")
""",
        timeout=180,
    )
    assert out.strip() == "ok"


def test_tuning_twice_or_a_pool_of_other_insides_changes_nothing(no_orphans: None) -> None:
    pool = tuned_pool(1)
    try:
        put = vars(pool._call_queue)["put"]  # type: ignore[attr-defined]
        tune(pool)
        assert vars(pool._call_queue)["put"] is put  # type: ignore[attr-defined]
        assert pool.submit(identity, 5).result(timeout=60) == 5
    finally:
        pool.shutdown()
    wakeup, queue = object(), object()
    other = types.SimpleNamespace(_executor_manager_thread_wakeup=wakeup, _call_queue=queue)
    tune(other)  # type: ignore[arg-type]
    assert vars(other) == {
        "_executor_manager_thread_wakeup": other._executor_manager_thread_wakeup,
        "_call_queue": other._call_queue,
    }


# -- the manager thread's wake-up ------------------------------------------------------------


def test_clear_drains_every_wakeup_with_one_read_and_a_closed_wakeup_is_left_alone() -> None:
    wakeup = stdlib_pool._ThreadWakeup()
    tune(types.SimpleNamespace(_executor_manager_thread_wakeup=wakeup, _call_queue=None))  # type: ignore[arg-type]
    assert type(wakeup) is _CoalescedWakeup
    for _ in range(3000):  # 12,000 bytes of empty messages: more than one read's worth
        wakeup._writer.send_bytes(b"")
    wakeup.clear()
    assert not wakeup._reader.poll()
    wakeup.wakeup()
    wakeup.wakeup()  # coalesced: one message until the next clear()
    assert wakeup._reader.poll()
    wakeup.clear()
    assert not wakeup._reader.poll()
    wakeup.close()
    wakeup.clear()  # after close: nothing to read, and nothing read from a reused descriptor


class _CountingWriter:
    """A stand-in for the pool's wake-up pipe end that counts its writes."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.writes = 0

    def send_bytes(self, data: bytes) -> None:
        self.writes += 1
        self.writer.send_bytes(data)

    def close(self) -> None:
        self.writer.close()


def test_a_process_pool_is_woken_once_per_look_and_never_misses_a_submission(no_orphans: None) -> None:
    """A burst of submissions writes to the manager thread's pipe far fewer times than it submits; and
    calls submitted one at a time into an idle pool (whose manager waits only for the pipe) all run."""
    scheduler = Scheduler.with_processes(1)
    wakeup = scheduler.executor._executor_manager_thread_wakeup  # type: ignore[attr-defined]
    assert type(wakeup) is _CoalescedWakeup
    counting = wakeup._writer = _CountingWriter(wakeup._writer)
    task = Task(sleep_then_return, scheduler)
    one_by_one = 0

    @scheduler.on_start
    def burst() -> None:
        for _ in range(200):
            task(0.0)

    @task.on_done
    def then_one_at_a_time(_future: Any) -> None:
        nonlocal one_by_one
        if task.n_running == 0 and one_by_one < 50:  # the pool is idle: only the pipe can wake it
            one_by_one += 1
            task(0.001)

    exit_code = scheduler.run(timeout=60)
    assert exit_code.name == "EXHAUSTED", f"{exit_code}: a submission was never picked up"
    assert task.n_called == 250 and len(task.history) == 250 and one_by_one == 50
    assert (task.df()["status"] == "returned").all()
    assert counting.writes < 200, f"{counting.writes} writes for 250 submissions"


def test_one_at_a_time_calls_into_an_idle_tuned_pool_all_run(no_orphans: None) -> None:
    """Each call submitted only after the previous one ended: the manager sleeps on its pipe each time,
    so a lost wake-up or a call left unwritten would stall this loop."""
    pool = tuned_pool(2)
    try:
        for i in range(200):
            done, _ = wait([pool.submit(identity, i)], timeout=30)
            assert done, f"call {i} was never picked up"
    finally:
        pool.shutdown()
