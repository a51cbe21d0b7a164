"""CommTask with a dask worker that cannot see this machine: its own network and mount namespaces.

The worker runs in a network namespace this module creates (`ip netns`), joined
to this machine by a veth pair with private addresses, and in a mount namespace
of its own with a private tmpfs on the temporary folder (`unshare --mount`). It
reaches the dask scheduler, which listens on this end of the veth pair, and
nothing else of this machine: not its loopback, not its Unix sockets, not its
temporary folder. Messages and requests must still round-trip, through the
TCP listener the CommTask opens on the scheduler's address, and nothing may
listen anywhere else.

Needs root, `ip` (iproute2) and `unshare` (util-linux): skipped otherwise, but
with CI=true (`.ci/run`) it fails instead, so CI never silently drops it.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import _in_ci, assert_no_new_children, live_children

from byop_nb.scheduling import Comm, CommError, CommTask, ExitCode, Scheduler
from byop_nb.scheduling import comms as comms_module

pytestmark = [pytest.mark.dask, pytest.mark.netns]

TESTS = Path(__file__).resolve().parent
WORKTREE = TESTS.parent
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])


def _program(name: str) -> str:
    return shutil.which(name, path=SEARCH_PATH) or name


# -- what the isolated worker runs (imported there by name: this folder is on its PYTHONPATH) --


def talk_from_elsewhere(comm: Comm, n: int) -> dict[str, Any]:
    """Send n messages and one request; say what this worker can see of the scheduler's machine."""
    sees_unix_socket = comm._path is not None and os.path.exists(comm._path)
    pid = os.getpid()
    for i in range(n):
        comm.send(i)
    answer = comm.request(("sum", n))
    comm.send(("got", answer))  # right before returning: must still arrive before CLOSE and DONE
    addresses = sorted(a.address for nic in psutil.net_if_addrs().values() for a in nic if a.family.name == "AF_INET")
    return {
        "answer": answer,
        "sees_unix_socket": sees_unix_socket,
        "via_tcp": comm._via_tcp,
        "addresses": addresses,
        "temporary_folder": sorted(os.listdir(tempfile.gettempdir())),
        "pid": pid,
    }


def send_one(comm: Comm) -> str:
    comm.send("hello")
    return "sent"


# -- the isolated worker ----------------------------------------------------------------


def join_by_veth(
    namespace: str, host_end: str, worker_end: str, host_addresses: list[str], worker_host: str, cleanup: list[Any]
) -> None:
    """Make the network namespace `namespace`, joined to this machine by a veth pair (`host_end` here
    with `host_addresses`, `worker_end` inside with `worker_host`, all /24); each step's undo goes on
    `cleanup` as it is made, so a failing step leaves nothing behind that the caller does not undo."""
    try:
        _run("ip", "netns", "add", namespace)
    except RuntimeError as e:
        _unavailable(f"cannot create a network namespace here: {e}")
    cleanup.append(("namespace", lambda: _run("ip", "netns", "del", namespace)))
    _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", worker_end)
    cleanup.append(("veth pair", lambda: _run("ip", "link", "del", host_end)))  # takes its peer with it
    _run("ip", "link", "set", worker_end, "netns", namespace)
    for address in host_addresses:
        _run("ip", "addr", "add", f"{address}/24", "dev", host_end)
    _run("ip", "link", "set", host_end, "up")
    inside = ["ip", "netns", "exec", namespace, _program("ip")]
    _run(*inside, "addr", "add", f"{worker_host}/24", "dev", worker_end)
    _run(*inside, "link", "set", worker_end, "up")
    _run(*inside, "link", "set", "lo", "up")


def hide_temporary_folders() -> str:
    """Shell commands, for a process in a mount namespace of its own, that hide this machine's temporary
    folders (and every Unix socket and file of ours in them) behind a private tmpfs, but for what it
    needs to run (`_needed_by_the_worker`)."""
    temporary = tempfile.gettempdir()
    hidden = ["/tmp"] if Path(temporary).is_relative_to("/tmp") else ["/tmp", temporary]
    return _hide(hidden, _needed_by_the_worker(hidden))


def _needed_by_the_worker(hidden: list[str]) -> list[Path]:
    """What the isolated worker needs to see under the folders hidden from it: the interpreter, its
    environment and this checkout, when they live there (a venv made in /tmp, say), as another host
    would have its own install. The outermost folders only; our sockets and files stay hidden."""
    wanted = {Path(sys.executable).parent, Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), WORKTREE}
    wanted |= {Path(entry) for entry in sys.path if entry and Path(entry).is_dir()}
    inside = {p.resolve() for p in wanted if any(p.resolve().is_relative_to(folder) for folder in hidden)}
    inside |= {p for p in wanted if any(p.is_relative_to(folder) for folder in hidden)}
    return sorted(p for p in inside if not any(p != q and p.is_relative_to(q) for q in inside))


def _hide(hidden: list[str], kept: list[Path]) -> str:
    """Shell commands (in the worker's own mount namespace) that put a private tmpfs over each of
    `hidden`, then bind each of `kept` back at its place, by way of a private tmpfs on /mnt."""
    mount = _program("mount")
    steps = []
    if kept:
        steps.append(f"{mount} -t tmpfs tmpfs /mnt")
        for i, path in enumerate(kept):
            steps += [f"mkdir -p /mnt/kept{i}", f"{mount} --bind {shlex.quote(str(path))} /mnt/kept{i}"]
    steps += [f"{mount} -t tmpfs tmpfs {folder}" for folder in hidden]
    for i, path in enumerate(kept):
        where = shlex.quote(str(path))
        steps += [f"mkdir -p {where}", f"{mount} --bind /mnt/kept{i} {where}"]
    return " && ".join(steps)


@dataclass
class Isolated:
    client: Any  # a dask Client of the scheduler below
    scheduler_host: str  # this machine's end of the veth pair, where the dask scheduler listens
    worker_host: str  # the worker's end, inside its namespace
    unreachable_host: str  # an address of this machine the worker has no route to
    namespace: str
    worker: subprocess.Popen[bytes]


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason}; CI=true, where the isolated-worker tests must run, not skip", pytrace=False)
    pytest.skip(reason)


def _run(*command: str) -> None:
    result = subprocess.run([_program(command[0]), *command[1:]], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")


def _free_subnet() -> int:
    """x such that nothing on this machine has an address in 10.201.x.0/24 or 10.202.x.0/24 (others may run this)."""
    used = {a.address for nic in psutil.net_if_addrs().values() for a in nic}
    taken = {
        int(address.split(".")[2])
        for address in used
        if address.startswith(("10.201.", "10.202.")) and address.count(".") == 3
    }
    start = os.getpid() % 250
    for offset in range(250):
        x = (start + offset) % 250
        if x not in taken:
            return x
    raise RuntimeError("no free 10.201.x.0/24 subnet for the test's veth pair")


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    """A dask scheduler on this machine's end of a veth pair, and one worker in its own namespaces.

    Everything it made is removed at the end (worker process, cluster, veth pair, namespace),
    each step on its own so one failing does not leave the others behind.
    """
    if os.geteuid() != 0:
        _unavailable("creating a network namespace needs root")
    missing = [program for program in ("ip", "unshare", "mount") if shutil.which(program, path=SEARCH_PATH) is None]
    if missing:
        _unavailable(
            f"the isolated-worker tests need {', '.join(missing)} (Debian: apt-get install iproute2 util-linux mount)"
        )
    from dask.distributed import Client, LocalCluster

    x = _free_subnet()
    scheduler_host, worker_host, unreachable_host = f"10.201.{x}.1", f"10.201.{x}.2", f"10.202.{x}.1"
    tag = f"{os.getpid() % 100000}"
    namespace, host_end, worker_end = f"byop-nb-{tag}", f"bnh{tag}", f"bnw{tag}"
    children_before = live_children()
    cleanup: list[tuple[str, Any]] = []
    try:
        # A second address on this end, in another subnet: no route to it from inside.
        join_by_veth(namespace, host_end, worker_end, [scheduler_host, unreachable_host], worker_host, cleanup)

        cluster = LocalCluster(
            n_workers=0, host=scheduler_host, protocol="tcp", dashboard_address=f"{scheduler_host}:0"
        )
        cleanup.append(("cluster", cluster.close))
        client = Client(cluster)
        cleanup.append(("client", client.close))

        # The worker's private temporary folder hides every Unix socket and file of ours under it.
        mounts = hide_temporary_folders()
        worker_command = (
            f"{mounts} && exec {sys.executable} -m distributed.cli.dask_worker {cluster.scheduler_address} "
            f"--host {worker_host} --nthreads 1 --no-nanny --no-dashboard --name isolated"
        )
        environment = {**os.environ, "PYTHONPATH": f"{WORKTREE}{os.pathsep}{TESTS}"}
        log = tmp_path_factory.mktemp("isolated-worker") / "worker.log"  # a file: a full pipe would stall it
        # `ip netns exec` and `unshare` exec what follows (as does `sh -c ... exec`): the worker is our child.
        with log.open("wb") as stderr:  # the worker has its own copy of the file
            worker = subprocess.Popen(
                [
                    _program("ip"),
                    "netns",
                    "exec",
                    namespace,
                    _program("unshare"),
                    "--mount",
                    _program("sh"),
                    "-c",
                    worker_command,
                ],
                env=environment,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        cleanup.append(("worker", lambda: _end(worker)))
        try:
            client.wait_for_workers(1, timeout=60)
        except Exception:
            _end(worker)
            raise RuntimeError(f"the isolated dask worker did not join: {log.read_text()[-3000:]}")
        yield Isolated(client, scheduler_host, worker_host, unreachable_host, namespace, worker)
    finally:
        problems = []
        for what, undo in reversed(cleanup):
            try:
                undo()
            except Exception as e:
                problems.append(f"{what}: {e}")
        listed = subprocess.run([_program("ip"), "netns", "list"], capture_output=True, text=True).stdout
        assert namespace not in listed
        assert_no_new_children(children_before)
        assert not problems, problems


def _end(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(15)


def tcp_listeners() -> set[tuple[str, int]]:
    """(address, port) of every TCP socket of this process that listens."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


@pytest.fixture
def no_orphans(isolated: Isolated) -> Iterator[None]:
    """conftest's `no_orphans`, but for the isolated worker's warm server: a worker keeps the server
    its limited calls fork from (warm) for as long as it lives, and this worker lives for the module;
    when it ends, the module's own check (`isolated`) sees that its server ended with it."""
    before = live_children()
    yield
    try:
        servers = {
            child.pid
            for child in psutil.Process(isolated.worker.pid).children()
            if "multiprocessing.forkserver import main" in " ".join(child.cmdline())
        }
    except psutil.NoSuchProcess:
        servers = set()
    assert_no_new_children(before | servers)


# -- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("limits", [{}, {"wall_time_limit": 60}], ids=["in-the-worker", "in-a-limited-child"])
def test_messages_and_requests_round_trip_with_a_worker_that_sees_nothing_of_this_machine(
    limits: dict[str, Any], isolated: Isolated, no_orphans: None
) -> None:
    before = tcp_listeners()  # the dask scheduler's own (and its dashboard), on the veth address
    cluster_hosts = {host for host, _ in before}
    assert cluster_hosts == {isolated.scheduler_host}
    scheduler = Scheduler.with_dask(isolated.client)
    task = CommTask(talk_from_elsewhere, scheduler, **limits)  # a limit: the call runs in a child of the worker
    log: list[tuple[str, Any]] = []
    during: list[set[tuple[str, int]]] = []
    hubs: list[Any] = []
    task.on_message(lambda msg: log.append(("message", msg.data)))
    task.on_close(lambda msg: log.append(("close", None)))
    task.on_done(lambda future: log.append(("done", None)))

    @task.on_request
    def answer(msg: Comm.Msg) -> None:
        during.append(tcp_listeners())
        hubs.append((task._hub.tcp_address, task._hub.directory))
        log.append(("request", msg.data))
        msg.respond(sum(range(msg.data[1])))

    results: list[dict[str, Any]] = []
    task.on_returned(results.append)
    scheduler.on_start(lambda: task(50))
    assert scheduler.run(timeout=120) is ExitCode.EXHAUSTED

    assert log == [
        *(("message", i) for i in range(50)),
        ("request", ("sum", 50)),
        ("message", ("got", sum(range(50)))),
        ("close", None),
        ("done", None),
    ]
    (result,) = results
    assert result["answer"] == sum(range(50))
    assert (result["pid"] == isolated.worker.pid) == (not limits)  # the worker itself, or its limited child
    # The worker really was elsewhere: its own addresses only, none of our files, and through TCP.
    assert result["addresses"] == sorted(["127.0.0.1", isolated.worker_host])
    (((hub_host, hub_port), hub_directory),) = hubs
    assert hub_directory is not None and os.path.basename(hub_directory) not in result["temporary_folder"]
    assert result["sees_unix_socket"] is False and result["via_tcp"] is True
    # The hub listened on the scheduler's address and nowhere else: no wildcard, no loopback.
    assert hub_host == isolated.scheduler_host
    (listening,) = during
    new = listening - before
    assert new == {(hub_host, hub_port)}
    for host, _ in listening:
        assert not ipaddress.ip_address(host).is_unspecified and not ipaddress.ip_address(host).is_loopback
    assert {host for host, _ in listening} == cluster_hosts
    assert tcp_listeners() == before  # closed with the run


def test_without_its_tcp_listener_the_isolated_worker_cannot_reach_the_comm(
    isolated: Isolated, monkeypatch: pytest.MonkeyPatch, no_orphans: None
) -> None:
    # What the TCP listener is for: the hub's Unix socket alone is out of the worker's sight.
    monkeypatch.setattr(comms_module, "tcp_host_for", lambda address: None)
    scheduler = Scheduler.with_dask(isolated.client)
    task = CommTask(send_one, scheduler)
    errors: list[BaseException] = []
    task.on_exception(errors.append)
    scheduler.on_start(lambda: task())
    assert scheduler.run(timeout=120) is ExitCode.EXHAUSTED
    (error,) = errors
    message = str(error)
    assert isinstance(error, CommError) and "the Unix socket" in message and "FileNotFoundError" in message, message
    assert "does not see the scheduler's temporary folder" in message, message


def test_a_worker_with_no_route_to_the_comm_fails_its_call_naming_the_address(
    isolated: Isolated, monkeypatch: pytest.MonkeyPatch, no_orphans: None
) -> None:
    # The hub listens on an address of this machine that the worker has no route to (as behind a
    # firewall, or with the cluster on a network the workers do not share).
    monkeypatch.setattr(comms_module, "tcp_host_for", lambda address: isolated.unreachable_host)
    scheduler = Scheduler.with_dask(isolated.client)
    task = CommTask(send_one, scheduler)
    errors: list[BaseException] = []
    task.on_exception(errors.append)
    start = time.monotonic()
    scheduler.on_start(lambda: task())
    assert scheduler.run(timeout=120) is ExitCode.EXHAUSTED
    assert time.monotonic() - start < 30
    (error,) = errors
    assert isinstance(error, CommError)
    message = str(error)
    assert "cannot reach the scheduler" in message and f"TCP {isolated.unreachable_host}:" in message, message
    assert "firewall" in message


def test_a_pruned_study_runs_on_a_worker_that_sees_nothing_of_this_machine(
    isolated: Isolated, no_orphans: None
) -> None:
    """Multi-fidelity trials need no database on the worker: each step and each "prune?" goes through the comm."""
    pytest.importorskip("optuna")
    from pruning_checks import run_and_check_a_pruned_study

    run_and_check_a_pruned_study(Scheduler.with_dask(isolated.client), timeout=180)
