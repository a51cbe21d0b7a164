"""Scheduler.with_ray starting (and so stopping) its own Ray, and the errors of Ray missing or out of reach.

No Ray runs in this process between these tests: each that needs one starts it through
`with_ray`, which must shut it down when a run ends, leaving no process behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import assert_no_new_children, live_children
from helpers import nap, square
from ray_checks import workers_import_tests

from byop_nb.scheduling import ExitCode, RayExecutor, Scheduler, Task

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def no_ray_running() -> None:
    import ray

    assert not ray.is_initialized(), "a Ray from an earlier test is still running"


def test_with_ray_starts_ray_for_each_run_and_shuts_it_down_after(no_orphans: None) -> None:
    import ray

    before = live_children()
    with workers_import_tests():
        scheduler = Scheduler.with_ray(2)
    executor = scheduler.executor
    assert isinstance(executor, RayExecutor) and executor.owns_ray and ray.is_initialized()
    assert ray.cluster_resources()["CPU"] == 2
    task = Task(square, scheduler)
    scheduler.on_start(lambda: [task(i) for i in range(4)])
    assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
    assert not ray.is_initialized()
    assert_no_new_children(before, grace=15)

    with workers_import_tests():  # the next run starts Ray again (the workers' path is read then)
        assert scheduler.run(timeout=90) is ExitCode.EXHAUSTED
    assert sorted(task.df().result) == sorted([i * i for i in range(4)] * 2)
    assert scheduler.executor is not executor and not ray.is_initialized()


def test_stop_without_waiting_shuts_an_owned_ray_down_at_once(no_orphans: None) -> None:
    import ray

    with workers_import_tests():
        scheduler = Scheduler.with_ray(2)
    task = Task(nap, scheduler, wall_time_limit=120)
    scheduler.on_start(lambda: [task(60), task(60)])
    start = time.monotonic()
    assert scheduler.run(timeout=3, wait=False) is ExitCode.TIMEOUT
    assert time.monotonic() - start < 20 and not ray.is_initialized()
    assert set(task.df().status) == {"cancelled"}


def test_ray_executor_without_a_running_ray_says_how_to_start_one() -> None:
    with pytest.raises(RuntimeError, match=r"call ray.init\(...\) first .* or use Scheduler.with_ray"):
        RayExecutor()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_address_fails_within_a_bounded_time_naming_it(no_orphans: None) -> None:
    import ray

    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"with_ray\(address='127.0.0.1:{port}'\): no Ray head answered"):
        Scheduler.with_ray(address=f"127.0.0.1:{port}")
    assert time.monotonic() - start < 5
    # An address nobody answers at (on this machine's own subnet, unused): the connect times out.
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"192.0.2.250:6379.* within 10 s"):
        Scheduler.with_ray(address="192.0.2.250:6379")
    assert time.monotonic() - start < 15
    assert not ray.is_initialized()


def test_bad_arguments_are_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match=r"n_workers= must be a positive int or None, got 0"):
        Scheduler.with_ray(0)
    with pytest.raises(ValueError, match=r"n_workers sizes a local Ray .* Give one of them"):
        Scheduler.with_ray(2, address="10.0.0.1:6379")
    with pytest.raises(ValueError, match=r"with_ray\(address='nowhere'\): expected the Ray head's 'host:port'"):
        Scheduler.with_ray(address="nowhere")
    with pytest.raises(TypeError, match=r"address=...\) must be a 'host:port' string or None, got 6379"):
        Scheduler.with_ray(address=6379)  # type: ignore[arg-type]


def test_without_ray_installed_the_error_names_the_extra_and_import_stays_light() -> None:
    script = (
        "import sys\n"
        "import byop_nb, byop_nb.scheduling\n"
        "assert 'ray' not in sys.modules, 'import byop_nb imported ray'\n"
        "sys.modules['ray'] = None  # as if Ray were not installed\n"
        "from byop_nb.scheduling import Scheduler\n"
        "try:\n"
        "    Scheduler.with_ray(2)\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ImportError: byop_nb runs on Ray only where Ray is installed: pip install 'byop_nb[ray]'" in result.stdout


def test_a_scripts_main_functions_classes_and_exceptions_run_on_ray(tmp_path, no_orphans: None) -> None:
    from conftest import run_script

    source = """
import os
from byop_nb.scheduling import Scheduler, Task


class Point:
    def __init__(self, x):
        self.x = x


class Refused(Exception):
    pass


def double(point):
    if point.x < 0:
        raise Refused(f"negative: {point.x}")
    return Point(point.x * 2)


def dies(x):
    os._exit(3)


if __name__ == "__main__":
    scheduler = Scheduler.with_ray(2, log_to_driver=False)
    task = Task(double, scheduler)
    limited = Task(double, scheduler, name="limited", memory_limit=(500, "MB"))
    dying = Task(dies, scheduler)
    results, errors = [], []
    for t in (task, limited):
        t.on_returned(results.append)
        t.on_exception(errors.append)
    dying.on_exception(errors.append)
    scheduler.on_start(lambda: [task(Point(1)), task(Point(-1)), limited(Point(5)), limited(Point(-5)), dying(0)])
    print(">", scheduler.run(timeout=120))
    print(">", sorted(r.x for r in results), all(type(r) is Point for r in results))
    print(">", sorted(f"{type(e).__name__}: {e}".splitlines()[0][:60] for e in errors))
    print(">", sorted(r["status"] for r in dying.history.rows))
"""
    with workers_import_tests():
        # Ray's raylet prints to this stdout too (a worker that died): only our lines count
        out = [line[2:] for line in run_script(tmp_path, source).splitlines() if line.startswith("> ")]
    assert out[0] == "ExitCode.EXHAUSTED"
    assert out[1] == "[2, 10] True"
    assert "'Refused: negative: -1'" in out[2] and "'Refused: negative: -5'" in out[2]
    assert "WorkerCrashedError" in out[2], out[2]
    assert out[3] == "['exception']"


def test_with_ray_at_an_address_connects_and_only_disconnects_after_a_run(tmp_path, no_orphans: None) -> None:
    import ray
    from test_ray_remote import _end_node

    port = _closed_port()
    with workers_import_tests():
        # A head without token authentication: this driver reads its own mode once, when Ray is imported.
        environment = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    log = tmp_path / "head.log"
    with log.open("wb") as output:
        head = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--port", str(port)]
            + ["--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--block"],
            env=environment,
            stdout=output,
            stderr=output,
        )
    try:
        deadline = time.monotonic() + 90
        while True:  # the head's GCS answers on its port
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        scheduler = Scheduler.with_ray(address=f"127.0.0.1:{port}")
        assert scheduler.executor.owns_ray  # type: ignore[attr-defined]
        task = Task(square, scheduler)
        scheduler.on_start(lambda: [task(i) for i in range(3)])
        assert scheduler.run(timeout=60) is ExitCode.EXHAUSTED
        assert sorted(task.df().result) == [0, 1, 4]
        assert not ray.is_initialized()  # disconnected: the cluster is not ours to stop
        assert head.poll() is None
    finally:
        _end_node(head)
        # `ray start --head` wrote its address where a later bare ray.init() looks for a cluster to join
        # (what `ray stop` would remove, but that ends every Ray of the machine): gone with the head.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()
