"""Killing a family of processes, and saying how a worker process died.

Imported in worker processes too (the wall-time watchdog kills its limited
child's family with it): psutil is imported only when something is killed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["kill_family", "describe_deaths"]


def kill_family(roots: Iterable[Any], *, reap_roots: bool = True, timeout: float = 5.0) -> None:
    """SIGKILL each process in `roots` (objects with a `.pid`) and all its descendants, then reap them.

    Descendants are listed before anything is killed, so none is missed by
    being re-parented to init. With `reap_roots=False` only the descendants are
    waited for: a root that is a `multiprocessing.Process` must be left for
    multiprocessing to reap, or its `is_alive()` never turns False.
    """
    import psutil

    roots = list(roots)
    family: list[psutil.Process] = []
    root_pids = set()
    for root in roots:
        try:
            process = root if isinstance(root, psutil.Process) else psutil.Process(root.pid)
            family.extend(process.children(recursive=True))
            family.append(process)
            root_pids.add(process.pid)
        except (psutil.NoSuchProcess, TypeError, ValueError):  # gone, or never started (pid None)
            continue
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family if reap_roots else [p for p in family if p.pid not in root_pids], timeout=timeout)


def describe_deaths(processes: list[Any], *, wait: float = 1.0) -> str:
    """Say how the processes in `processes` that died on their own ended.

    The pool reports a death as soon as the worker's sentinel closes, which can be
    a moment before the kernel has its exit status; so wait (at most `wait`
    seconds, only on a broken pool) until a death is known or every exit status is.
    """
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        codes = [p.exitcode for p in processes]
        if None not in codes or any(c is not None and c != -signal.SIGTERM for c in codes):
            break
        time.sleep(0.005)
    reasons = []
    for p in processes:
        code = p.exitcode
        if code is None or code == -signal.SIGTERM:  # alive, or terminated by the pool itself
            continue
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            extra = " (possibly the out-of-memory killer)" if -code == signal.SIGKILL else ""
            reasons.append(f"worker process {p.pid} was killed by {name}{extra}")
        else:
            reasons.append(f"worker process {p.pid} exited with code {code} (os._exit or sys.exit in the worker)")
    if not reasons:
        return "a worker process died abruptly"
    return "; ".join(reasons)
