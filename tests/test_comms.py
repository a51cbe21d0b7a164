"""CommTask and Comm: two-way messages with running calls, on every executor, through every ending."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import psutil
import pytest
from helpers import identity

from byop_nb.scheduling import Comm, CommError, CommTask, ExitCode, Scheduler, Task
from byop_nb.scheduling import comms as comms_module
from byop_nb.scheduling.comm._hub import DIRECTORY_PREFIX

# -- functions the workers run (module level: importable by spawned workers) ---------


def chatty(comm: Comm, n: int) -> int:
    for i in range(n):
        comm.send(i)
    answer = comm.request(("sum", n))
    comm.send(("got", answer))  # sent right before returning: must still come before DONE
    return answer


def ask(comm: Comm) -> Any:
    return comm.request("anyone?")


def closes_early(comm: Comm) -> str:
    with comm:
        comm.send("inside")
    time.sleep(0.5)
    try:
        comm.send("after close")
    except CommError as e:
        return f"refused: {e}"
    return "sent after close"


def talks_then_raises(comm: Comm) -> None:
    comm.send("last words")
    raise ValueError("worker failed")


def talks_then_hangs(comm: Comm) -> None:
    comm.send("before the limit")
    time.sleep(30)


def request_forms(comm: Comm) -> tuple[Any, Any, Any]:
    at_once = comm.request("now-or-never", block=False, default="no answer yet")
    timed_out = comm.request("slow", block=0.2, default="gave up")
    time.sleep(0.6)  # the late answer to "slow" arrives meanwhile and must be dropped
    fresh = comm.request("fast")
    return at_once, timed_out, fresh


def big_exchange(comm: Comm, size: int) -> tuple[int, int]:
    comm.send(b"m" * size)
    answer = comm.request(b"q" * size)
    return len(answer), answer.count(b"a")


THREAD_ENDINGS: list[str] = []


def flood(comm: Comm) -> None:
    i = 0
    try:
        while True:
            comm.send(i)
            i += 1
            time.sleep(0.001)
    except CommError as e:
        THREAD_ENDINGS.append(f"flood: {e}")


def ask_and_record(comm: Comm) -> Any:
    try:
        return comm.request("never answered")
    except CommError as e:
        THREAD_ENDINGS.append(f"ask: {e}")
        raise


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def resource_tracker() -> None:
    """Start multiprocessing's resource tracker up front: the first spawn pool starts it once per
    process and it stays by design, so it must not count as a process the test left behind."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(
        host="127.0.0.1",
        protocol="tcp",
        dashboard_address="127.0.0.1:0",
        processes=False,
        n_workers=1,
        threads_per_worker=2,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def make_scheduler(kind: str, request: pytest.FixtureRequest) -> Scheduler:
    if kind == "threads":
        return Scheduler.with_threads(2)
    if kind in ("fork", "spawn"):
        return Scheduler.with_processes(2, start_method=kind)
    if kind == "dask":
        return Scheduler.with_dask(request.getfixturevalue("dask_client"))
    raise AssertionError(kind)


def comm_sockets() -> list[str]:
    """Unix sockets of this process that belong to a Comm listener."""
    return [
        c.laddr
        for c in psutil.Process().net_connections(kind="unix")
        if isinstance(c.laddr, str) and "byop_nb-comm-" in c.laddr
    ]


def comm_dirs() -> set[str]:
    """This process's comm socket directories (each named by its hub's pid: not another process's, in a shared /tmp)."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"{DIRECTORY_PREFIX}{os.getpid()}-*")))


@pytest.fixture
def no_comm_leftovers() -> Iterator[None]:
    """The test leaves no Comm socket open and no socket directory on disk."""
    dirs = comm_dirs()
    yield
    assert comm_sockets() == []
    assert comm_dirs() - dirs == set()


DASK = pytest.param("dask", marks=pytest.mark.dask)
EXECUTORS = ["threads", "fork", "spawn", DASK]


# -- messages and requests --------------------------------------------------------------


@pytest.mark.parametrize("kind", EXECUTORS)
def test_messages_arrive_in_order_then_close_then_done_on_every_executor(
    kind: str, request: pytest.FixtureRequest, no_orphans: None, no_comm_leftovers: None
) -> None:
    scheduler = make_scheduler(kind, request)
    task = CommTask(chatty, scheduler)
    log: list[tuple[str, Future[Any] | None, Any]] = []
    futures: list[Future[Any]] = []
    loop_threads: set[int] = set()

    @scheduler.on_start
    def launch() -> None:
        futures.extend(task(n) for n in (50, 100, 150))

    @task.on_message
    def on_message(msg: Comm.Msg) -> None:
        loop_threads.add(threading.get_ident())
        assert msg.kind == "message" and msg.task is task
        log.append(("message", msg.future, msg.data))

    @task.on_request
    def on_request(msg: Comm.Msg) -> None:
        log.append(("request", msg.future, msg.data))
        op, n = msg.data
        msg.respond(sum(range(n)))

    task.on_close(lambda msg: log.append(("close", msg.future, msg.data)))
    task.on_done(lambda future: log.append(("done", future, None)))

    for run in range(2):  # a second run of the same scheduler talks through a new listener
        log.clear()
        futures.clear()
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
        assert sorted(f.result() for f in futures) == [sum(range(n)) for n in (50, 100, 150)]
        for future, n in zip(futures, (50, 100, 150)):
            mine = [(kind_, data) for kind_, f, data in log if f is future]
            assert mine == [
                *(("message", i) for i in range(n)),
                ("request", ("sum", n)),
                ("message", ("got", sum(range(n)))),
                ("close", None),
                ("done", None),
            ], f"run {run}, call with n={n}"
        assert loop_threads == {threading.get_ident()}  # callbacks run in the scheduler's loop thread
        assert task._hub is None

    counts = scheduler.counts
    assert counts[(CommTask.MESSAGE, "chatty")] == 2 * (300 + 3)
    assert counts[(CommTask.REQUEST, "chatty")] == 2 * 3
    assert counts[(CommTask.CLOSE, "chatty")] == counts[(Task.SUBMITTED, "chatty")] == 2 * 3


def test_a_function_defined_in_a_notebook_cell_or_main_runs_in_spawned_workers(no_orphans: None) -> None:
    offset = 1000

    def local_chatty(comm: Comm, n: int) -> int:  # a closure: pickle cannot find it by name
        for i in range(n):
            comm.send(i + offset)
        return n

    scheduler = Scheduler.with_processes(1, start_method="spawn")
    task = CommTask(local_chatty, scheduler)
    seen: list[int] = []
    task.on_message(lambda msg: seen.append(msg.data))
    scheduler.on_start(lambda: task(3))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert seen == [1000, 1001, 1002]


def test_calls_submitted_as_others_end_share_one_listener_that_closes_with_the_run(no_comm_leftovers: None) -> None:
    scheduler = Scheduler.with_threads(1)
    task = CommTask(chatty, scheduler, call_limit=5)
    hubs: list[Any] = []
    task.on_request(lambda msg: msg.respond(0))
    task.on_submitted(lambda future: hubs.append(task._hub))

    @scheduler.on_start
    @task.on_done
    def one_after_another() -> None:
        task(2)

    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED
    assert len(hubs) == 5 and all(hub is hubs[0] for hub in hubs)
    assert task._hub is None and not hubs[0].open


def test_a_request_waits_while_the_loop_keeps_running_other_work(no_orphans: None, no_comm_leftovers: None) -> None:
    scheduler = Scheduler.with_processes(2)
    asking = CommTask(ask, scheduler)
    other = Task(identity, scheduler)
    pending: list[Comm.Msg] = []
    order: list[str] = []

    @scheduler.on_start
    def launch() -> None:
        asking()

    @asking.on_request
    def hold(msg: Comm.Msg) -> None:
        order.append("request held")
        pending.append(msg)
        other(1)  # the loop is free: this call is submitted, runs and returns meanwhile

    @other.on_returned
    def answer_now(result: int) -> None:
        order.append("other returned")
        pending[0].respond("answered after other work")

    results: list[Any] = []
    asking.on_returned(results.append)
    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED
    assert order == ["request held", "other returned"]
    assert results == ["answered after other work"]
    assert pending[0].answered


def test_request_forms_non_blocking_timed_and_late_answers_dropped(no_comm_leftovers: None) -> None:
    scheduler = Scheduler.with_threads(1)
    task = CommTask(request_forms, scheduler)
    timers: list[threading.Timer] = []

    @scheduler.on_start
    def launch() -> None:
        task()

    @task.on_request
    def answer(msg: Comm.Msg) -> None:
        if msg.data == "slow":  # answered late, from another thread
            timer = threading.Timer(0.4, msg.respond, args=("late answer",))
            timers.append(timer)
            timer.start()
        elif msg.data == "fast":
            msg.respond("fresh answer")
        # "now-or-never" is answered by nobody before the worker stops looking

    results: list[Any] = []
    task.on_returned(results.append)
    scheduler.run(timeout=30)
    for timer in timers:
        timer.join()
    assert results == [("no answer yet", "gave up", "fresh answer")]


def test_request_rejects_a_bad_block_value() -> None:
    comm = Comm("/nonexistent", None, b"0" * 16, 1, "host")
    with pytest.raises(ValueError, match="block= must be True, False or non-negative seconds"):
        comm.request(block=-1)


def test_with_comm_signals_close_at_once_and_further_sends_fail(no_comm_leftovers: None) -> None:
    scheduler = Scheduler.with_processes(1)
    task = CommTask(closes_early, scheduler)
    seen: list[tuple[str, Any, float]] = []
    task.on_message(lambda msg: seen.append(("message", msg.data, time.monotonic())))
    task.on_close(lambda msg: seen.append(("close", msg.kind, time.monotonic())))
    task.on_returned(lambda result: seen.append(("returned", result, time.monotonic())))
    scheduler.on_start(lambda: task())
    scheduler.run(timeout=30)
    kinds = [kind for kind, _, _ in seen]
    assert kinds == ["message", "close", "returned"]  # CLOSE once, not again when the call ended
    assert seen[0][1] == "inside" and seen[1][1] == "close"
    assert seen[2][1].startswith("refused: this Comm is closed")
    assert seen[2][2] - seen[1][2] > 0.3  # CLOSE came when the block ended, not with the return


def test_large_messages_and_answers_go_through_whole(no_orphans: None, no_comm_leftovers: None) -> None:
    size = 8 * 2**20  # far more than a socket buffer: both sides send in pieces
    scheduler = Scheduler.with_processes(1)
    task = CommTask(big_exchange, scheduler)
    sizes: list[int] = []
    task.on_message(lambda msg: sizes.append(len(msg.data)))

    @task.on_request
    def answer(msg: Comm.Msg) -> None:
        sizes.append(len(msg.data))
        msg.respond(b"a" * size)

    results: list[Any] = []
    task.on_returned(results.append)
    scheduler.on_start(lambda: task(size))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert sizes == [size, size] and results == [(size, size)]


# -- endings ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["threads", "fork"])
def test_an_exception_in_the_worker_still_delivers_its_messages_and_close(
    kind: str, request: pytest.FixtureRequest, no_orphans: None, no_comm_leftovers: None
) -> None:
    scheduler = make_scheduler(kind, request)
    task = CommTask(talks_then_raises, scheduler)
    log: list[Any] = []
    task.on_message(lambda msg: log.append(msg.data))
    task.on_close(lambda msg: log.append("close"))
    task.on_exception(lambda e: log.append(e))
    scheduler.on_start(lambda: task())
    scheduler.run(timeout=30)
    assert log[:2] == ["last words", "close"]
    assert isinstance(log[2], ValueError) and str(log[2]) == "worker failed"


@pytest.mark.parametrize("kind", ["threads", "fork"])
def test_a_wall_time_limit_hit_ends_the_comm_after_delivering_what_was_sent(
    kind: str, request: pytest.FixtureRequest, no_orphans: None, no_comm_leftovers: None
) -> None:
    scheduler = make_scheduler(kind, request)
    task = CommTask(talks_then_hangs, scheduler, wall_time_limit=1)
    log: list[Any] = []
    task.on_message(lambda msg: log.append(msg.data))
    task.on_close(lambda msg: log.append("close"))
    task.on_done(lambda future: log.append("done"))
    task.on_wall_time_limit_reached(lambda future, e: log.append("wall time"))
    scheduler.on_start(lambda: task())
    start = time.monotonic()
    scheduler.run(timeout=30)
    assert time.monotonic() - start < 10
    assert log == ["before the limit", "close", "done", "wall time"]


@pytest.mark.parametrize("kind", ["threads", "fork", DASK])
def test_a_request_nobody_answers_ends_when_the_run_times_out(
    kind: str, request: pytest.FixtureRequest, no_orphans: None, no_comm_leftovers: None
) -> None:
    scheduler = make_scheduler(kind, request)
    task = CommTask(ask, scheduler)
    held: list[Comm.Msg] = []
    errors: list[BaseException] = []
    task.on_request(held.append)  # subscribed, but never answers
    task.on_exception(errors.append)
    scheduler.on_start(lambda: task())
    start = time.monotonic()
    assert scheduler.run(timeout=1) is ExitCode.TIMEOUT  # waits for the running call (wait=True)
    assert time.monotonic() - start < 10
    (error,) = errors
    assert isinstance(error, CommError) and "scheduler is finishing" in str(error)
    held[0].respond("too late")  # does nothing: the worker stopped waiting
    assert not held[0].answered


def test_a_request_nobody_answers_ends_when_a_callback_stops_the_scheduler(
    no_orphans: None, no_comm_leftovers: None
) -> None:
    scheduler = Scheduler.with_processes(1)
    task = CommTask(ask, scheduler)
    errors: list[BaseException] = []
    task.on_request(lambda msg: scheduler.stop())
    task.on_exception(errors.append)
    scheduler.on_start(lambda: task())
    assert scheduler.run(timeout=30) is ExitCode.STOPPED
    assert isinstance(errors[0], CommError)


def test_a_request_without_any_on_request_callback_fails_at_once() -> None:
    scheduler = Scheduler.with_threads(1)
    task = CommTask(ask, scheduler)
    errors: list[BaseException] = []
    task.on_exception(errors.append)
    scheduler.on_start(lambda: task())
    start = time.monotonic()
    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED
    assert time.monotonic() - start < 5
    (error,) = errors
    assert isinstance(error, CommError) and "has no on_request callback" in str(error)


def test_stop_without_waiting_cancels_process_calls_and_leaves_nothing(
    no_orphans: None, no_comm_leftovers: None
) -> None:
    scheduler = Scheduler.with_processes(2)
    flooding = CommTask(flood, scheduler)
    asking = CommTask(ask, scheduler)
    log: list[str] = []
    flooding.on_message(lambda msg: scheduler.stop(), limit=1)

    @asking.on_request
    def start_the_flood(msg: Comm.Msg) -> None:  # the asking worker now waits for an answer
        log.append("request")
        flooding()

    flooding.on_close(lambda msg: log.append("flood closed"))
    asking.on_close(lambda msg: log.append("ask closed"))
    flooding.on_cancelled(lambda future: log.append("flood cancelled"))
    asking.on_cancelled(lambda future: log.append("ask cancelled"))
    scheduler.on_start(lambda: asking())

    start = time.monotonic()
    assert scheduler.run(timeout=30, wait=False) is ExitCode.STOPPED
    assert time.monotonic() - start < 10
    assert sorted(log) == sorted(["request", "flood closed", "flood cancelled", "ask closed", "ask cancelled"])
    assert log.index("flood closed") < log.index("flood cancelled")
    assert flooding._hub is None and asking._hub is None


def test_stop_without_waiting_ends_thread_workers_that_talk_or_wait(no_comm_leftovers: None) -> None:
    THREAD_ENDINGS.clear()
    before = threading.active_count()
    scheduler = Scheduler.with_threads(2)
    flooding = CommTask(flood, scheduler)
    asking = CommTask(ask_and_record, scheduler)
    asking.on_request(lambda msg: flooding())  # the thread is waiting; now start the flood
    flooding.on_message(lambda msg: scheduler.stop(), limit=1)
    scheduler.on_start(lambda: asking())
    assert scheduler.run(timeout=30, wait=False) is ExitCode.STOPPED
    deadline = time.monotonic() + 5
    while (len(THREAD_ENDINGS) < 2 or threading.active_count() > before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(ending.split(":")[0] for ending in THREAD_ENDINGS) == ["ask", "flood"]
    # refused as the run finished, or told goodbye when the call was cancelled: either way, by the scheduler
    assert all(any(w in e for w in ("finishing", "closed", "gone")) for e in THREAD_ENDINGS), THREAD_ENDINGS
    assert threading.active_count() <= before  # the abandoned worker threads ended


def test_a_callback_error_ends_the_run_and_closes_the_comm(no_orphans: None, no_comm_leftovers: None) -> None:
    scheduler = Scheduler.with_processes(1)
    task = CommTask(flood, scheduler)

    @task.on_message
    def explode(msg: Comm.Msg) -> None:
        raise LookupError("callback failed")

    scheduler.on_start(lambda: task())
    with pytest.raises(LookupError, match="callback failed"):
        scheduler.run(timeout=30)
    assert task._hub is None


# -- misuse and reach ------------------------------------------------------------------


def test_respond_only_answers_requests_and_only_once() -> None:
    scheduler = Scheduler.with_threads(1)
    task = CommTask(chatty, scheduler)
    problems: list[BaseException] = []

    @task.on_message
    def respond_to_a_message(msg: Comm.Msg) -> None:
        try:
            msg.respond("no")
        except TypeError as e:
            problems.append(e)

    @task.on_request
    def respond_twice(msg: Comm.Msg) -> None:
        msg.respond(1)
        try:
            msg.respond(2)
        except RuntimeError as e:
            problems.append(e)

    results: list[int] = []
    task.on_returned(results.append)
    scheduler.on_start(lambda: task(1))
    scheduler.run(timeout=30)
    assert results == [1]
    assert isinstance(problems[0], TypeError) and "only requests can be answered" in str(problems[0])
    assert isinstance(problems[1], RuntimeError) and "answered already" in str(problems[1])


def test_a_comm_task_refuses_the_sequential_executor_when_created() -> None:
    scheduler = Scheduler.with_sequential()
    with pytest.raises(TypeError, match=r"sequential executor.*with_threads\(1\)"):
        CommTask(chatty, scheduler)
    assert "chatty" not in scheduler.tasks


@pytest.mark.dask
def test_a_dask_cluster_on_loopback_is_reached_through_the_unix_socket_only(
    request: pytest.FixtureRequest, no_comm_leftovers: None
) -> None:
    scheduler = make_scheduler("dask", request)  # its dask scheduler listens on 127.0.0.1
    task = CommTask(chatty, scheduler)
    listening: list[Any] = []

    @task.on_request
    def answer(msg: Comm.Msg) -> None:
        listening.append((task._hub.address, task._hub.tcp_address, tcp_listeners()))
        msg.respond(0)

    scheduler.on_start(lambda: task(1))
    before = set(tcp_listeners())  # dask's own
    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED
    ((path, tcp_address, listeners),) = listening
    assert path is not None and tcp_address is None
    assert set(listeners) <= before  # no TCP port of the hub while the call ran


def test_where_a_hub_listens_for_the_workers_of_a_dask_scheduler() -> None:
    from byop_nb.scheduling.workers._network import tcp_host_for

    assert tcp_host_for("inproc://10.0.0.1/123/1") is None  # workers in this process
    assert tcp_host_for("tcp://127.0.0.1:8786") is None  # workers on this machine: the Unix socket
    assert tcp_host_for("tcp://localhost:8786") is None
    assert tcp_host_for("tcp://[::1]:8786") is None
    here = [
        a.address
        for addresses in psutil.net_if_addrs().values()
        for a in addresses
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]
    for address in here:  # the scheduler runs here (dask-jobqueue): the address it listens on
        assert tcp_host_for(f"tcp://{address}:8786") == address
        assert tcp_host_for(f"tls://{address}:8786") == address
    with pytest.raises(OSError, match="names no host"):
        tcp_host_for("tcp://0.0.0.0:8786")  # never a wildcard


def tcp_listeners() -> list[tuple[str, int]]:
    """(address, port) of every TCP socket of this process that listens."""
    return [
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]


def tcp_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every CommTask hub listen on TCP at 127.0.0.1 and not on a Unix socket (the path of remote workers)."""
    real = comms_module._Hub
    monkeypatch.setattr(
        comms_module, "_Hub", lambda *args, **kwargs: real(*args, **{**kwargs, "tcp_host": "127.0.0.1", "unix": False})
    )


@pytest.mark.parametrize("kind", ["threads", "fork", "spawn"])
def test_over_tcp_messages_requests_and_large_frames_arrive_whole_and_before_done(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, no_orphans: None
) -> None:
    tcp_only(monkeypatch)
    size = 8 * 2**20
    scheduler = make_scheduler(kind, request)
    talking = CommTask(chatty, scheduler)
    big = CommTask(big_exchange, scheduler)
    log: list[tuple[str, Any]] = []
    listening: list[Any] = []
    talking.on_message(lambda msg: log.append(("message", msg.data)))
    talking.on_close(lambda msg: log.append(("close", None)))
    talking.on_done(lambda future: log.append(("done", None)))

    @talking.on_request
    def answer(msg: Comm.Msg) -> None:
        listening.append((talking._hub.address, talking._hub.tcp_address, tcp_listeners()))
        msg.respond(sum(range(msg.data[1])))

    big.on_request(lambda msg: msg.respond(b"a" * size))
    results: list[Any] = []
    big.on_returned(results.append)
    scheduler.on_start(lambda: (talking(200), big(size)))
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert log == [
        *(("message", i) for i in range(200)),
        ("message", ("got", sum(range(200)))),  # sent right before returning: still before CLOSE and DONE
        ("close", None),
        ("done", None),
    ]
    assert results == [(size, size)]
    ((path, (host, port), listeners),) = listening
    assert path is None and host == "127.0.0.1" and (host, port) in listeners
    assert comm_sockets() == [] and (host, port) not in tcp_listeners()  # closed with the run


def test_over_tcp_the_end_of_a_call_waits_until_the_other_machine_has_its_bytes() -> None:
    # Over TCP, what sendall returned from may still be on the way when the call's result (which
    # travels through the executor) reaches the scheduler: the end of a call waits for it.
    from byop_nb.scheduling.comm._worker import _wait_delivered

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the receiver takes little at a time
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()) as sender, listener.accept()[0] as receiver:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            start = time.monotonic()
            _wait_delivered(sender, 5)
            assert time.monotonic() - start < 0.1  # nothing sent: nothing to wait for
            size = 200_000
            sender.sendall(b"x" * size)  # returns with most of it still in this side's buffer
            waiter = threading.Thread(target=_wait_delivered, args=(sender, 10))
            waiter.start()
            time.sleep(0.3)
            assert waiter.is_alive()  # the receiver's window is full: not delivered yet
            received = 0
            while received < size:
                received += len(receiver.recv(1 << 16))
            waiter.join(2)
            assert not waiter.is_alive()
            sender.sendall(b"y" * size)
            start = time.monotonic()
            _wait_delivered(sender, 0.3)  # nobody reads: it gives up after its timeout
            assert 0.25 < time.monotonic() - start < 2


class Poison:
    """Records that it was unpickled: nothing a connection sends may be unpickled before its hello is checked."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (poisoned, ())


UNPICKLED: list[str] = []


def poisoned() -> None:
    UNPICKLED.append("poison")


def intrude(comm: Comm) -> list[str]:
    """Connect to this call's hub as strangers would; return what happened to each connection."""
    import pickle
    import socket as socket_module

    from byop_nb.scheduling.comm._wire import HEADER, HELLO, MESSAGE, hello_mac

    def connect() -> socket_module.socket:
        if comm._path is not None:
            sock = socket_module.socket(socket_module.AF_UNIX)
            sock.connect(comm._path)
            return sock
        return socket_module.create_connection(comm._tcp)

    def frame(obj: Any) -> bytes:
        body = pickle.dumps(obj)
        return HEADER.pack(len(body), MESSAGE) + body

    def dropped(sock: socket_module.socket) -> str:
        sock.settimeout(10)
        try:
            return "dropped" if sock.recv(1) == b"" else "answered"
        except ConnectionResetError:
            return "dropped"
        finally:
            sock.close()

    nonce = os.urandom(16)
    good = HELLO.pack(comm._call_id, nonce, hello_mac(comm._token, comm._call_id, nonce))
    outcomes = []
    wrong = connect()  # a hello made with another token
    wrong.sendall(HELLO.pack(comm._call_id, nonce, hello_mac(b"x" * 16, comm._call_id, nonce)) + frame(Poison()))
    outcomes.append(dropped(wrong))
    first = connect()  # the real thing
    first.sendall(good + frame("let in"))
    replayed = connect()  # the same hello again, as if seen on the network
    replayed.sendall(good + frame(Poison()))
    outcomes.append(dropped(replayed))
    first.close()
    comm.send("done")
    return outcomes


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_connection_without_the_token_or_replaying_a_hello_is_dropped_before_anything_is_unpickled(
    transport: str, monkeypatch: pytest.MonkeyPatch, no_comm_leftovers: None
) -> None:
    if transport == "tcp":
        tcp_only(monkeypatch)
    UNPICKLED.clear()
    scheduler = Scheduler.with_threads(1)
    task = CommTask(intrude, scheduler)
    messages: list[Any] = []
    task.on_message(lambda msg: messages.append(msg.data))
    results: list[Any] = []
    task.on_returned(results.append)
    scheduler.on_start(lambda: task())
    assert scheduler.run(timeout=30) is ExitCode.EXHAUSTED
    assert results == [["dropped", "dropped"]]
    assert sorted(messages) == ["done", "let in"]
    assert UNPICKLED == []


def test_a_comm_used_on_another_machine_says_why() -> None:
    comm = Comm("/nonexistent", None, b"0" * 16, 1, "the-scheduler-host")
    with pytest.raises(CommError, match="runs on 'the-scheduler-host'.*only on a Unix socket"):
        comm.send(1)


@pytest.mark.dask
def test_dask_worker_processes_on_this_machine_work(no_orphans: None, no_comm_leftovers: None) -> None:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            host="127.0.0.1", dashboard_address="127.0.0.1:0", processes=True, n_workers=1, threads_per_worker=1
        ) as cluster,
        Client(cluster) as client,
    ):
        scheduler = Scheduler.with_dask(client)
        task = CommTask(chatty, scheduler)
        seen: list[int] = []
        task.on_message(lambda msg: seen.append(msg.data))
        task.on_request(lambda msg: msg.respond("from main"))
        results: list[Any] = []
        task.on_returned(results.append)
        scheduler.on_start(lambda: task(20))
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
        assert seen == [*range(20), ("got", "from main")] and results == ["from main"]


def test_comm_task_msg_is_the_message_class_for_annotations() -> None:
    # byop-era code annotates callbacks with CommTask.Msg.
    from byop_nb.scheduling.comms import Msg

    assert CommTask.Msg is Msg and Comm.Msg is Msg
    scheduler = Scheduler.with_threads(1)
    task = CommTask(chatty, scheduler)
    seen: list[Any] = []

    @task.on_message
    def got(msg: CommTask.Msg) -> None:
        assert isinstance(msg, CommTask.Msg)
        seen.append(msg.data)

    @scheduler.on_start
    def launch() -> None:
        task(2)

    assert scheduler.run() is ExitCode.EXHAUSTED
    assert seen[:2] == [0, 1]


# -- what a killed process leaves -------------------------------------------------------------

HOLDS_A_CALL = """
from byop_nb.scheduling import CommTask, Scheduler

def ask(comm):
    comm.request("never answered")

scheduler = Scheduler.with_threads(1)
task = CommTask(ask, scheduler)
task.on_request(lambda msg: print("holding", flush=True))
scheduler.on_start(lambda: task())
scheduler.run()
"""

SAYS_HELLO = """
from byop_nb.scheduling import CommTask, Scheduler

scheduler = Scheduler.with_threads(1)
task = CommTask(lambda comm: comm.send("hello"), scheduler)
scheduler.on_start(lambda: task())
scheduler.run()
"""


def test_the_next_hub_removes_the_socket_directory_a_sigkilled_process_left(no_orphans: None) -> None:
    """A process killed by SIGKILL cannot remove its hub's directory; the next process's first hub does."""
    import shutil
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from conftest import python_command

    folder = Path(tempfile.mkdtemp(prefix="bn-"))  # short: Unix socket paths are
    env = {**os.environ, "TMPDIR": str(folder), "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        (folder / "a.py").write_text(HOLDS_A_CALL)
        (folder / "b.py").write_text(SAYS_HELLO)
        holder = subprocess.Popen(python_command(folder / "a.py"), env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
            (left,) = folder.glob(f"byop_nb-comm-{holder.pid}-*")
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
        assert (left / "s").exists()  # SIGKILL: nobody removed it
        other_users_style = folder / "byop_nb-comm-abc_12"  # a name without a pid (older versions): left alone
        other_users_style.mkdir()
        subprocess.run(python_command(folder / "b.py"), env=env, check=True, timeout=120)
        assert not left.exists()
        assert sorted(p.name for p in folder.iterdir()) == ["a.py", "b.py", other_users_style.name]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_sweep_keeps_directories_whose_process_runs_and_sweeps_a_folder_once() -> None:
    from pathlib import Path

    tmp_path = Path(tempfile.mkdtemp(prefix="bn-"))  # short: a Unix socket's path is
    try:
        check_the_sweep(tmp_path)
    finally:
        import shutil

        shutil.rmtree(tmp_path, ignore_errors=True)


def check_the_sweep(tmp_path: Any) -> None:
    import subprocess
    import sys

    from byop_nb.scheduling.comm._hub import sweep_dead_directories

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    gone = tmp_path / f"byop_nb-comm-{ended.pid}-x1"
    running = tmp_path / f"byop_nb-comm-{os.getpid()}-x2"
    for folder in (gone, running):
        folder.mkdir()
        (folder / "knock").write_bytes(b"\0" * 16)
    # A pid that is gone, but a socket that takes connections: a process in another PID namespace.
    elsewhere = tmp_path / f"byop_nb-comm-{ended.pid}-x3"
    elsewhere.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(elsewhere / "s"))
    listener.listen()
    with listener:
        assert sweep_dead_directories(str(tmp_path)) == [str(gone)]
    assert not gone.exists() and running.exists() and elsewhere.exists()
    gone.mkdir()
    assert sweep_dead_directories(str(tmp_path)) == [] and gone.exists()  # once per folder and process
