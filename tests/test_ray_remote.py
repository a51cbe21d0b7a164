"""CommTask with a Ray worker node that cannot see this machine: its own network and mount namespaces.

As `test_comms_remote.py` does for dask: the Ray head runs here, on this machine's
end of a veth pair (`_node_ip_address`), with no CPUs of its own; a second Ray node
(`ray start --address ... --block`) runs in a network namespace made here, joined by
that veth pair, and in a mount namespace of its own with a private tmpfs on the
temporary folder, so it sees neither this machine's loopback, nor its Unix sockets,
nor its temporary folder. Every call runs on that node (its custom resource), and a
CommTask's messages and requests must still round-trip, through the TCP listener the
hub opens on the head's address.

Needs root, `ip` (iproute2) and `unshare` (util-linux): skipped otherwise, but with
CI=true (`.ci/run`) it fails instead, so CI never silently drops it.
"""

from __future__ import annotations

import os
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
from conftest import assert_no_new_children, live_children
from test_comms_remote import (
    SEARCH_PATH,
    _free_subnet,
    _program,
    _unavailable,
    hide_temporary_folders,
    join_by_veth,
    tcp_listeners,
)

from byop_nb.scheduling import Comm, CommTask, ExitCode, RayExecutor, Scheduler

pytestmark = [pytest.mark.ray, pytest.mark.netns]

TESTS = Path(__file__).resolve().parent
WORKTREE = TESTS.parent


# -- what the isolated node runs (imported there by name: this folder is on its PYTHONPATH) --


def talk_from_elsewhere(comm: Comm, n: int) -> dict[str, Any]:
    """Send n messages and one request; say what this worker can see of the driver's machine."""
    sees_unix_socket = comm._path is not None and os.path.exists(comm._path)
    for i in range(n):
        comm.send(i)
    answer = comm.request(("sum", n))
    comm.send(("got", answer))
    addresses = sorted(a.address for nic in psutil.net_if_addrs().values() for a in nic if a.family.name == "AF_INET")
    return {
        "answer": answer,
        "sees_unix_socket": sees_unix_socket,
        "via_tcp": comm._via_tcp,
        "addresses": addresses,
        "temporary_folder": sorted(os.listdir(tempfile.gettempdir())),
    }


# -- the isolated Ray node ----------------------------------------------------------------


@dataclass
class IsolatedRay:
    head_host: str  # this machine's end of the veth pair, where the Ray head runs
    worker_host: str  # the node's end, inside its namespace
    node: subprocess.Popen[bytes]  # `ray start --block` of the isolated node


def _end_node(node: subprocess.Popen[bytes]) -> None:
    """End `ray start --block` and every process of that node (never `ray stop`: it ends every Ray here)."""
    try:
        family = psutil.Process(node.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if node.poll() is None:
        node.terminate()
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(15)
    _gone, alive = psutil.wait_procs(family, timeout=10)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def isolated_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IsolatedRay]:
    """A Ray head here on a veth address (no CPUs), and one Ray node (1 CPU, resource `isolated`) in its own
    namespaces. Everything is removed at the end, each step on its own."""
    if os.geteuid() != 0:
        _unavailable("creating a network namespace needs root")
    missing = [program for program in ("ip", "unshare", "mount") if shutil.which(program, path=SEARCH_PATH) is None]
    if missing:
        _unavailable(f"the isolated-node test needs {', '.join(missing)} (Debian: apt-get install iproute2 util-linux)")
    import ray

    assert not ray.is_initialized()
    x = _free_subnet()
    head_host, worker_host = f"10.201.{x}.1", f"10.201.{x}.2"
    tag = f"{os.getpid() % 100000}"
    namespace, host_end, worker_end = f"byop-nb-ray-{tag}", f"brh{tag}", f"brw{tag}"
    children_before = live_children()
    cleanup: list[tuple[str, Any]] = []
    try:
        join_by_veth(namespace, host_end, worker_end, [head_host], worker_host, cleanup)

        environment = {**os.environ, "PYTHONPATH": f"{WORKTREE}{os.pathsep}{TESTS}"}
        old_path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = environment["PYTHONPATH"]
        try:
            ray.init(
                address="local",
                num_cpus=0,
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address=head_host,
            )
        finally:
            if old_path is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = old_path
        cleanup.append(("ray head", ray.shutdown))
        gcs = ray.get_runtime_context().gcs_address
        environment = {**os.environ, "PYTHONPATH": f"{WORKTREE}{os.pathsep}{TESTS}"}  # ray.init may have set auth

        mounts = hide_temporary_folders()  # every Unix socket and file of ours, but what the node needs to run
        node_command = (
            f"{mounts} && exec {sys.executable} -m ray.scripts.scripts start --address {gcs} "
            f"--node-ip-address {worker_host} --num-cpus 1 --resources '{{\"isolated\": 1}}' "
            "--disable-usage-stats --block"
        )
        log = tmp_path_factory.mktemp("isolated-ray") / "node.log"
        with log.open("wb") as output:
            node = subprocess.Popen(
                [_program("ip"), "netns", "exec", namespace, _program("unshare"), "--mount"]
                + [_program("sh"), "-c", node_command],
                env=environment,
                stdout=output,
                stderr=output,
            )
        cleanup.append(("ray node", lambda: _end_node(node)))
        deadline = time.monotonic() + 90
        while ray.cluster_resources().get("isolated", 0) < 1:
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the isolated Ray node did not join: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield IsolatedRay(head_host, worker_host, node)
    finally:
        problems = []
        for what, undo in reversed(cleanup):
            try:
                undo()
            except Exception as e:
                problems.append(f"{what}: {e}")
        listed = subprocess.run([_program("ip"), "netns", "list"], capture_output=True, text=True).stdout
        assert namespace not in listed
        assert_no_new_children(children_before, grace=20)
        assert not problems, problems


@pytest.mark.parametrize("limits", [{}, {"wall_time_limit": 60}], ids=["in-the-worker", "in-a-limited-child"])
def test_a_comm_task_round_trips_with_a_ray_node_that_sees_nothing_of_this_machine(
    limits: dict[str, Any], isolated_ray: IsolatedRay
) -> None:
    before = tcp_listeners()
    scheduler = Scheduler(RayExecutor(resources={"isolated": 1}))
    task = CommTask(talk_from_elsewhere, scheduler, **limits)
    log: list[tuple[str, Any]] = []
    hubs: list[Any] = []
    task.on_message(lambda msg: log.append(("message", msg.data)))
    task.on_close(lambda msg: log.append(("close", None)))
    task.on_done(lambda future: log.append(("done", None)))

    @task.on_request
    def answer(msg: Comm.Msg) -> None:
        hubs.append((task._hub.tcp_address, task._hub.directory))
        log.append(("request", msg.data))
        msg.respond(sum(range(msg.data[1])))

    results: list[dict[str, Any]] = []
    task.on_returned(results.append)
    task.on_exception(lambda e: log.append(("exception", e)))
    scheduler.on_start(lambda: task(30))
    assert scheduler.run(timeout=120) is ExitCode.EXHAUSTED, log

    assert log == [
        *(("message", i) for i in range(30)),
        ("request", ("sum", 30)),
        ("message", ("got", sum(range(30)))),
        ("close", None),
        ("done", None),
    ]
    (result,) = results
    assert result["answer"] == sum(range(30))
    # It really ran elsewhere: the node's own addresses only, none of our files, and through TCP.
    assert result["addresses"] == sorted(["127.0.0.1", isolated_ray.worker_host])
    (((hub_host, _hub_port), hub_directory),) = hubs
    assert hub_directory is not None and os.path.basename(hub_directory) not in result["temporary_folder"]
    assert result["sees_unix_socket"] is False and result["via_tcp"] is True
    assert hub_host == isolated_ray.head_host  # on the head's address: no wildcard, no loopback
    assert tcp_listeners() == before  # closed with the run
