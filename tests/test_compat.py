"""Each accessor of CPython's private parts (byop_nb._compat) works on the running Python.

`.ci/run` runs this file on every version in `_compat.TESTED` (3.11 in the full suite, 3.12 and
3.13 in the core suite), so a Python that moved one of these parts fails here, by name.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import process as stdlib_pool

import psutil
import pytest

from byop_nb import _compat
from byop_nb.scheduling import SequentialExecutor


def remember(value: int) -> None:
    os.environ["BYOP_NB_COMPAT_TEST"] = str(value)


def remembered() -> str | None:
    return os.environ.get("BYOP_NB_COMPAT_TEST")


def test_this_python_is_one_the_accessors_were_tested_on() -> None:
    assert sys.version_info[:2] in _compat.TESTED
    assert _compat.IS_TESTED_VERSION
    assert _compat.LAUNCH_WITHOUT_MAIN is (sys.platform != "win32")


def test_the_finished_state_of_a_future_is_the_one_the_hot_path_compares() -> None:
    done: Future[int] = Future()
    assert done._state != _compat.FUTURE_FINISHED  # type: ignore[attr-defined]
    done.set_result(3)
    assert done._state == _compat.FUTURE_FINISHED  # type: ignore[attr-defined]
    assert (done._result, done._exception) == (3, None)  # type: ignore[attr-defined]
    failed: Future[int] = Future()
    error = ValueError("x")
    failed.set_exception(error)
    assert failed._state == _compat.FUTURE_FINISHED and failed._exception is error  # type: ignore[attr-defined]
    cancelled: Future[int] = Future()
    cancelled.cancel()
    assert cancelled._state != _compat.FUTURE_FINISHED  # type: ignore[attr-defined]


def test_process_pool_settings_are_read_back_as_they_were_given() -> None:
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(3, mp_context=context, initializer=remember, initargs=(7,), max_tasks_per_child=5)
    try:
        settings = _compat.process_pool_settings(pool)
        assert settings.max_workers == 3 and settings.mp_context is context
        assert (settings.initializer, settings.initargs, settings.max_tasks_per_child) == (remember, (7,), 5)
        assert _compat.pool_max_workers(pool) == 3
        assert _compat.pool_context(pool) is context
        assert _compat.pool_initializer(pool) == (remember, (7,))
    finally:
        pool.shutdown()


def test_thread_pool_settings_are_read_back_as_they_were_given() -> None:
    pool = ThreadPoolExecutor(4, thread_name_prefix="mine", initializer=remember, initargs=(1,))
    try:
        settings = _compat.thread_pool_settings(pool)
        assert (settings.max_workers, settings.thread_name_prefix) == (4, "mine")
        assert (settings.initializer, settings.initargs) == (remember, (1,))
        assert _compat.pool_max_workers(pool) == 4
        assert _compat.pool_processes(pool) is None
    finally:
        pool.shutdown()
    assert _compat.pool_max_workers(SequentialExecutor()) is None


def test_a_pool_takes_a_new_context_and_initializer_until_it_starts_workers(no_orphans: None) -> None:
    fork, spawn = multiprocessing.get_context("fork"), multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(1, mp_context=spawn)
    try:
        assert _compat.pool_processes(pool) == {}
        assert _compat.set_pool_context(pool, fork)
        _compat.set_pool_initializer(pool, remember, (42,))
        assert pool.submit(remembered).result(timeout=60) == "42"
        processes = _compat.pool_processes(pool)
        assert processes is not None and len(processes) == 1
        (worker,) = processes.values()
        assert isinstance(worker, fork.Process)  # started with the context set, not the one given
        assert not _compat.set_pool_context(pool, spawn)  # too late: its workers run
        assert _compat.pool_context(pool) is fork
    finally:
        pool.shutdown()


def test_shut_down_pools_are_told_apart_from_running_ones() -> None:
    for pool in (ProcessPoolExecutor(1), ThreadPoolExecutor(1), SequentialExecutor()):
        assert not _compat.is_shut_down(pool)
        pool.shutdown()
        assert _compat.is_shut_down(pool)


def test_the_pool_parts_that_the_tunings_replace_are_found() -> None:
    assert _compat.THREAD_WAKEUP is stdlib_pool._ThreadWakeup
    assert _compat.SAFE_QUEUE is stdlib_pool._SafeQueue
    assert _compat.CALL_ITEM is stdlib_pool._CallItem
    pool = ProcessPoolExecutor(1)
    try:
        assert type(_compat.pool_wakeup(pool)) is stdlib_pool._ThreadWakeup
        assert type(_compat.pool_call_queue(pool)) is stdlib_pool._SafeQueue
    finally:
        pool.shutdown()
    threads = ThreadPoolExecutor(1)
    assert _compat.pool_wakeup(threads) is None  # type: ignore[arg-type]
    assert _compat.pool_call_queue(threads) is None  # type: ignore[arg-type]
    threads.shutdown()


def test_a_pool_without_the_known_parts_gets_an_error_naming_the_part_and_the_python() -> None:
    hollow = object.__new__(ProcessPoolExecutor)  # a pool whose insides are not the known ones
    with pytest.raises(_compat.InternalsChanged, match=r"ProcessPoolExecutor\._max_workers.*Python 3\.\d+\.\d+"):
        _compat.process_pool_settings(hollow)
    with pytest.raises(_compat.InternalsChanged, match="tested on CPython 3.11, 3.12, 3.13"):
        _compat.set_pool_initializer(hollow, remember, (1,))
    assert _compat.pool_processes(hollow) is None
    assert _compat.pool_max_workers(hollow) is None
    assert not _compat.set_pool_context(hollow, multiprocessing.get_context("spawn"))
    assert _compat.pool_wakeup(hollow) is None and _compat.pool_call_queue(hollow) is None


PRIVATE_PARTS = (
    r"(?<!self)(?<!scheduling)(?<!workers)\._(max_workers|mp_context|processes|initializer|initargs|max_tasks_per_child"
    r"|thread_name_prefix|shutdown_thread|executor_manager_thread_wakeup|executor_manager_thread|call_queue"
    r"|result_queue|pending_work_items|work_queue|idle_semaphore)\b"
    r"|_ThreadWakeup|_SafeQueue|_CallItem|futures\._base|futures import _base"
    r"|(?<!workers)\._forkserver\b|_forkserver_(pid|alive_fd|address)|_args_from_interpreter_flags"
    r"|_check_not_importing_main|_log_to_stderr|_default_context"
)


def test_no_module_but_compat_reaches_the_pools_private_parts() -> None:
    """The one place: a new use of a pool's, a future's or the forkserver's insides goes through `_compat`."""
    import re
    from pathlib import Path

    import byop_nb

    package = Path(byop_nb.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "_compat.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(PRIVATE_PARTS, code) and not code.lstrip().startswith(('"', "'")):
                found.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert found == [], "\n".join(found)


def test_a_forkserver_childs_exit_code_is_only_looked_at_until_someone_joined_it(no_orphans: None) -> None:
    """Two threads reading a forkserver child's exit code at once could record 255 over it: byop_nb
    looks at what the pool's thread read, and reads it only where nobody else does."""
    import multiprocessing

    process = multiprocessing.get_context("forkserver").Process(target=os._exit, args=(3,))
    process.start()
    deadline = time.monotonic() + 30

    def running() -> bool:  # the forkserver, its parent, reaps it at any moment: gone counts as ended
        try:
            return psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    while running():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert _compat.exit_code_read(process) is None  # it ended, but nobody read its code yet
    process.join()
    assert _compat.exit_code_read(process) == 3 == process.exitcode
    forked = multiprocessing.get_context("fork").Process(target=os._exit, args=(4,))
    forked.start()
    forked.join()
    assert _compat.exit_code_read(forked) == 4  # a forked child's code is its wait status: no race


def test_the_forkserver_keeps_its_server_where_byop_nb_reads_and_sets_it(no_orphans: None) -> None:
    """The warm server of limited calls is a ForkServer that byop_nb starts and stops: its state is where
    CPython 3.11-3.13 keep it."""
    from multiprocessing import forkserver

    process = multiprocessing.get_context("forkserver").Process(target=os._exit, args=(0,))
    process.start()  # multiprocessing's own forkserver: it records its server in the singleton
    process.join()
    pid, alive_fd, address = _compat.forkserver_state(_compat.forkserver())
    assert pid is not None and psutil.Process(pid).ppid() == os.getpid()
    assert isinstance(alive_fd, int) and os.fstat(alive_fd) and address is not None
    with _compat.forkserver_lock(_compat.forkserver()):  # the lock the ForkServer itself takes
        pass
    other = forkserver.ForkServer()  # a fresh one, never started
    assert _compat.forkserver_state(other) == (None, None, None)
    _compat.set_forkserver_state(other, _compat.ForkServerState(1, 2, "there"))
    assert _compat.forkserver_state(other) == (1, 2, "there")
    _compat.renew_forkserver_lock(other)
    assert _compat.forkserver_lock(other).acquire(False)


def test_the_preparation_data_is_multiprocessings_without_the_main_module() -> None:
    from multiprocessing import spawn

    ours = _compat.preparation_data_without_main("a-child")
    theirs = spawn.get_preparation_data("a-child")
    main_keys = {"init_main_from_name", "init_main_from_path"}
    assert set(ours) == set(theirs) - main_keys
    assert all(ours[key] == theirs[key] for key in ours)
    assert _compat.interpreter_flags() == list(multiprocessing.util._args_from_interpreter_flags())  # type: ignore[attr-defined]


def test_without_the_known_forkserver_a_limited_call_runs_in_a_child_of_the_default_start_method(
    monkeypatch: pytest.MonkeyPatch, no_orphans: None
) -> None:
    """Another Python (3.14 moved the forkserver's insides): limits still work, without the warm server."""
    import pynisher

    from byop_nb.scheduling import ExitCode, Scheduler, Task
    from byop_nb.scheduling.workers import _warm

    def no_warm_server(function: object) -> None:
        raise AssertionError("the warm server was used on a Python whose forkserver byop_nb does not know")

    monkeypatch.setattr(_compat, "LAUNCH_WITHOUT_MAIN", False)
    monkeypatch.setattr(_warm, "preload", no_warm_server)
    with pytest.raises(_compat.InternalsChanged, match=r"multiprocessing\.forkserver\._forkserver"):
        _compat.forkserver()
    scheduler = Scheduler.with_threads(2)
    task = Task(bytearray, scheduler, memory_limit=(300, "MB"))
    futures = []

    @scheduler.on_start
    def launch() -> None:
        futures.extend([task(1000), task(2**30)])

    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    small, big = futures
    assert small.result() == bytearray(1000)
    assert isinstance(big.exception(), pynisher.MemoryLimitException)
