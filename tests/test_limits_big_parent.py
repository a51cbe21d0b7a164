"""A memory limit counts what the call allocates, not the address space of the process that runs it.

A Jupyter kernel (or this test process) easily holds gigabytes of address space;
a limited call forked from it would start with all of it and fail at once.
"""

from __future__ import annotations

import textwrap

from conftest import run_script

SCRIPT = textwrap.dedent(
    """
    import mmap
    import psutil
    from byop_nb.scheduling import Scheduler, Task

    class Payload:  # a class from __main__, as an argument
        pass

    def small(payload):
        block = bytearray(50 * 2**20)
        return type(payload).__name__, len(block)

    def hog(n):
        return len(bytearray(n))

    def starting_size():
        return psutil.Process().memory_info().vms

    if __name__ == "__main__":
        reserved = mmap.mmap(-1, 3 * 2**30)  # 3 GB of address space, as a big kernel has
        assert psutil.Process().memory_info().vms > 3 * 2**30
        for make in (
            lambda: Scheduler.with_threads(2),
            lambda: Scheduler.with_processes(2),
            lambda: Scheduler.with_processes(2, start_method="spawn"),
        ):
            scheduler = make()
            ok = Task(small, scheduler, memory_limit=(300, "MB"))
            bad = Task(hog, scheduler, memory_limit=(300, "MB"))
            probe = Task(starting_size, scheduler, memory_limit=(4, "GB"))
            seen = []
            probe.on_returned(lambda vms: seen.append(("starts below 1 GiB", vms < 2**30)))
            ok.on_returned(lambda result: seen.append(("returned", result)))
            ok.on_exception(lambda exc: seen.append(("failed", repr(exc))))
            bad.on_memory_limit_reached(lambda future, exc: seen.append(("memory limit", type(exc).__name__)))
            scheduler.on_start(lambda: (ok(Payload()), bad(2**30), probe()))
            scheduler.run(timeout=60)
            print(type(scheduler.executor).__name__, sorted(seen, key=str))
    """
)


def test_memory_limited_calls_start_small_in_a_big_process(tmp_path, no_orphans: None) -> None:
    stdout = run_script(tmp_path, SCRIPT)
    lines = stdout.strip().splitlines()
    assert len(lines) == 3, stdout
    expected = (
        "[('memory limit', 'MemoryLimitException'), ('returned', ('Payload', 52428800)), ('starts below 1 GiB', True)]"
    )
    for line in lines:
        assert line.endswith(expected), line


INHERITED_SCRIPT = textwrap.dedent(
    """
    from byop_nb.scheduling import Scheduler, Task

    def one():
        return 1

    def hog(n):
        return len(bytearray(n))

    if __name__ == "__main__":
        # This process starts a forkserver (a forkserver pool); fork workers made
        # afterwards inherit multiprocessing's record of it.
        scheduler = Scheduler.with_processes(1, start_method="forkserver")
        task = Task(one, scheduler)
        scheduler.on_start(lambda: task())
        scheduler.run()

        scheduler = Scheduler.with_processes(1, start_method="fork")
        task = Task(hog, scheduler, memory_limit=(300, "MB"))
        seen = []
        task.on_returned(lambda n: seen.append("returned"))
        task.on_memory_limit_reached(lambda future, exc: seen.append("memory limit"))
        task.on_exception(lambda exc: seen.append(type(exc).__name__))
        scheduler.on_start(lambda: (task(2**30), task(10)))
        scheduler.run()
        print(sorted(seen))
    """
)


def test_a_worker_forked_from_a_forkserver_user_starts_its_own(tmp_path, no_orphans: None) -> None:
    stdout = run_script(tmp_path, INHERITED_SCRIPT)
    assert stdout.strip() == "['MemoryLimitException', 'memory limit', 'returned']", stdout
