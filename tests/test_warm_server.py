"""Limited calls are forked from a warm server: what the function imports is imported already.

A call with a memory, CPU-time or wall-time limit runs in a child of its worker's warm
server (`byop_nb.scheduling.workers._warm`), a single-threaded interpreter that imported what the
function's code imports before the first call, and learns what calls import beyond that.
Each script runs in a fresh interpreter, so that what these tests import cannot warm it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import _in_ci, run_script
from test_kernel import kernel  # noqa: F401  (the fixture)

from byop_nb.scheduling.workers._warm import modules_for

LIMITS = '[{"memory_limit": (1, "GB")}, {"cpu_time_limit": 60}, {"wall_time_limit": 60}]'

WARM_SCRIPT = textwrap.dedent(
    f"""
    import sys
    from byop_nb.scheduling import Scheduler, Task
    from probe_module import probe as probe_from_module  # travels by reference

    def probe():  # defined in __main__: travels by value
        import sys
        warm = "wave" in sys.modules  # before this body's own import runs
        import wave
        return warm

    def control():  # imports nothing: the server does not import what nobody asked for
        import sys
        return "wave" in sys.modules

    if __name__ == "__main__":
        assert "wave" not in sys.modules
        runs = [(lambda: Scheduler.with_processes(1), {{"memory_limit": (1, "GB")}}, control)]
        for make in (lambda: Scheduler.with_processes(1), lambda: Scheduler.with_threads(1)):
            for limit in {LIMITS}:
                runs += [(make, limit, probe), (make, limit, probe_from_module)]
        for make, limit, function in runs:
            scheduler = make()
            task = Task(function, scheduler, **limit)
            scheduler.on_start(lambda: task())
            task.on_done(lambda: task() if task.n_called < 2 else None)
            scheduler.run(timeout=120)
            df = task.df()
            assert (df["status"] == "returned").all(), df["traceback"].tolist()
            print(function.__name__, list(limit), df["result"].tolist())
    """
)

PROBE_MODULE = """
def probe():
    import sys
    warm = "wave" in sys.modules
    import wave
    return warm
"""


def test_a_limited_call_finds_what_its_function_imports_already_imported(tmp_path: Path, no_orphans: None) -> None:
    """The first call too, for each limit, on processes and threads, by value and by reference."""
    (tmp_path / "probe_module.py").write_text(PROBE_MODULE)
    lines = run_script(tmp_path, WARM_SCRIPT).strip().splitlines()
    assert len(lines) == 1 + 2 * 3 * 2, lines
    assert lines[0].startswith("control"), lines
    for line in lines:
        name, _, rest = line.partition(" ")
        expected = "[False, False]" if name == "control" else "[True, True]"
        assert rest.endswith(expected), line


LEARN_SCRIPT = textwrap.dedent(
    """
    from byop_nb.scheduling import Scheduler, Task
    import lazy_helper

    def learner():
        import sys
        warm = "unittest" in sys.modules
        lazy_helper.load("unit" + "test")  # not in the function's code: learned from the first call
        return warm

    if __name__ == "__main__":
        scheduler = Scheduler.with_processes(1)
        task = Task(learner, scheduler, memory_limit=(1, "GB"))
        scheduler.on_start(lambda: task())
        task.on_done(lambda: task() if task.n_called < 3 else None)
        scheduler.run(timeout=120)
        print(task.df()["result"].tolist())
    """
)


def test_what_a_call_imported_is_imported_by_the_server_for_the_next_calls(tmp_path: Path, no_orphans: None) -> None:
    (tmp_path / "lazy_helper.py").write_text("import importlib\n\ndef load(name):\n    importlib.import_module(name)\n")
    assert run_script(tmp_path, LEARN_SCRIPT).strip() == "[False, True, True]"


DEATH_SCRIPT = textwrap.dedent(
    """
    from byop_nb.scheduling import Scheduler, Task

    def kill_my_server():
        import os, signal, time
        os.kill(os.getppid(), signal.SIGKILL)  # the warm server is the limited child's parent
        time.sleep(30)

    def ok():
        return 1

    if __name__ == "__main__":
        scheduler = Scheduler.with_processes(1)
        doomed = Task(kill_my_server, scheduler, memory_limit=(1, "GB"))
        after = Task(ok, scheduler, wall_time_limit=30)
        scheduler.on_start(lambda: doomed())
        doomed.on_done(lambda: after())
        after.on_done(lambda: after() if after.n_called < 2 else None)
        scheduler.run(timeout=60)
        row = doomed.df().iloc[0]
        print(row["status"], "|", row["exception_type"], "|", row["exception_message"])
        print(after.df()["result"].tolist())
    """
)


def test_a_dead_warm_server_fails_only_its_call_clearly_and_a_new_one_serves_the_next(
    tmp_path: Path, no_orphans: None
) -> None:
    first, second = run_script(tmp_path, DEATH_SCRIPT).strip().splitlines()
    assert first.startswith("exception | RuntimeError |"), first
    assert "the warm process" in first and "killed by SIGKILL" in first and "kill_my_server()" in first, first
    assert second == "[1, 1]"


PARENT_SCRIPT = textwrap.dedent(
    f"""
    import os
    import threading
    from byop_nb.scheduling import Scheduler, Task

    def parentage():
        import os
        parent = os.getppid()
        with open(f"/proc/{{parent}}/status") as file:
            threads = int(file.read().split("Threads:")[1].split()[0])
        return parent, threads

    if __name__ == "__main__":
        threading.Thread(target=threading.Event().wait, daemon=True).start()  # as a kernel has
        for make in (lambda: Scheduler.with_processes(1), lambda: Scheduler.with_threads(1)):
            for limit in {LIMITS}:
                scheduler = make()
                where = Task(os.getpid, scheduler)
                task = Task(parentage, scheduler, **limit)
                scheduler.on_start(lambda: (where(), task()))
                scheduler.run(timeout=60)
                runner = where.df()["result"].iloc[0]
                parent, threads = task.df()["result"].iloc[0]
                print(parent != runner and parent != os.getpid(), threads)
    """
)


def test_a_limited_call_is_forked_from_a_single_threaded_process_not_its_threaded_worker(
    tmp_path: Path, no_orphans: None
) -> None:
    lines = run_script(tmp_path, PARENT_SCRIPT).strip().splitlines()
    assert lines == ["True 1"] * 6


def _newer_pythons() -> list[str]:
    """Interpreters of Python 3.12 and 3.13 that can import byop_nb (`.ci/run` installs it in them)."""
    found = []
    for version in ("3.12", "3.13"):
        candidates = [shutil.which(f"python{version}")]
        root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
        candidates += sorted(str(p / "bin" / "python") for p in root.glob(f"{version}.*"))
        for candidate in filter(None, candidates):
            probe = subprocess.run([candidate, "-c", "import byop_nb"], capture_output=True, check=False, cwd="/")
            if probe.returncode == 0:
                found.append(candidate)
                break
    return found


FORK_WARNING_SCRIPT = textwrap.dedent(
    f"""
    import threading
    from byop_nb.scheduling import Scheduler, Task

    def square(x):
        return x * x

    if __name__ == "__main__":
        threading.Thread(target=threading.Event().wait, daemon=True).start()  # as a kernel has
        results = []
        for make in (
            lambda: Scheduler.with_threads(2),
            lambda: Scheduler.with_processes(2),  # Python's default (fork), but this process has threads
            lambda: Scheduler.with_processes(2, start_method="forkserver"),
            lambda: Scheduler.with_processes(2, start_method="spawn"),
        ):
            for limit in [{{}}, *{LIMITS}]:  # a plain call, and each limit
                scheduler = make()
                task = Task(square, scheduler, **limit)
                scheduler.on_start(lambda: (task(3), task(4)))
                scheduler.run(timeout=120)
                df = task.df()
                assert (df["status"] == "returned").all(), df["traceback"].tolist()
                results.append(sorted(df["result"].tolist()))
        print(results)
    """
)


def test_no_limited_call_forks_a_multi_threaded_process_on_python_3_12_and_3_13(tmp_path: Path) -> None:
    """Python 3.12+ warns (DeprecationWarning) at a fork of a multi-threaded process; shown here in
    every process of the run (PYTHONWARNINGS is inherited, and passed on to the warm servers). As an
    error it would not show: os.fork() swallows it. Before the warm server, 12 showed; before
    `with_processes()` left fork for a forkserver in a process with threads, its plain calls showed 2."""
    interpreters = _newer_pythons()
    if len(interpreters) < 2:
        problem = f"needs Python 3.12 and 3.13 with byop_nb installed (found {interpreters})"
        if _in_ci():
            pytest.fail(f"{problem}; .ci/run installs it in them", pytrace=False)
        pytest.skip(problem)
    script = tmp_path / "script.py"
    script.write_text(FORK_WARNING_SCRIPT)
    for interpreter in interpreters:
        env = dict(os.environ, PYTHONWARNINGS="always::DeprecationWarning")
        out = subprocess.run(
            [interpreter, "-W", "always::DeprecationWarning", str(script)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        assert out.returncode == 0 and "multi-threaded" not in out.stderr, (interpreter, out.stderr[-3000:])
        assert out.stdout.strip() == str([[9, 16]] * 16), (interpreter, out.stdout)


def test_the_modules_a_function_needs_are_read_off_its_code() -> None:
    import json

    def body_imports():
        import xml.dom.minidom  # noqa: F401
        from email import message  # noqa: F401

        def nested():
            import wave  # noqa: F401

        return json.dumps(nested)

    found = modules_for(body_imports)
    assert {"xml.dom.minidom", "email", "email.message", "wave", "json"} <= found


def test_reading_the_modules_off_a_function_imports_none_and_skips_what_cannot_be_found() -> None:
    def opens_a_browser():
        import antigravity  # noqa: F401

        import no_such_top_level_package_here  # noqa: F401

    found = modules_for(opens_a_browser)
    assert "antigravity" in found and "antigravity" not in sys.modules
    assert "no_such_top_level_package_here" not in found


FD_SCRIPT = textwrap.dedent(
    """
    import os
    import time
    from byop_nb.scheduling import Scheduler, Task

    def busy():
        while True:
            pass

    if __name__ == "__main__":
        counts = []
        for function, arguments in [(time.sleep, (30,)), (busy, ())] * 10:
            scheduler = Scheduler.with_threads(2)
            task = Task(function, scheduler, wall_time_limit=0.2)
            scheduler.on_start(lambda: task(*arguments))
            scheduler.run(timeout=60)
            assert task.df()["status"].tolist() == ["wall_time_limit"], task.df()
            counts.append(len(os.listdir("/proc/self/fd")))
        print(counts)
    """
)


def test_wall_time_limited_runs_on_threads_leave_no_file_descriptor_open(tmp_path: Path, no_orphans: None) -> None:
    """Each killed call's Process kept two pipe ends open until the garbage collector ran (6 -> 8 per run)."""
    counts = eval(run_script(tmp_path, FD_SCRIPT).strip())
    assert len(counts) == 20 and len(set(counts[1:])) == 1, counts


@pytest.mark.kernel
def test_a_cell_defined_function_finds_its_imports_warm_in_a_kernel(kernel) -> None:  # noqa: F811 (the fixture)
    """In a kernel (threads, a loop, an address space of its own), on a process pool and on threads:
    a limited call of a function defined in a cell, travelling by value, finds what it imports imported."""
    kernel.run("from byop_nb.scheduling import Scheduler, Task")
    out = kernel.run(
        """
def probe():
    import sys
    warm = "wave" in sys.modules
    import wave
    return warm

for make in (lambda: Scheduler.with_processes(1), lambda: Scheduler.with_threads(1)):
    for limit in [{"memory_limit": (1, "GB")}, {"cpu_time_limit": 60}, {"wall_time_limit": 60}]:
        scheduler = make()
        task = Task(probe, scheduler, **limit)
        scheduler.on_start(lambda: task())
        task.on_done(lambda: task() if task.n_called < 2 else None)
        scheduler.run(timeout=120)
        print("warm=", task.df()["status"].tolist(), task.df()["result"].tolist())
""",
        timeout=240,
    )
    lines = [line for line in out.lines() if line.startswith("warm=")]
    assert lines == ["warm= ['returned', 'returned'] [True, True]"] * 6, out.stdout + out.stderr
