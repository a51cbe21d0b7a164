"""Killing a family of processes, and saying how a worker process died.

Imported in worker processes too (the wall-time watchdog kills its limited
child's family with it): psutil is imported only when something is killed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from byop_nb._compat import exit_code_read

__all__ = ["kill_family", "kill_session", "describe_deaths", "DeathWatch"]


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
        codes = [exit_code_read(p) for p in processes]  # a forkserver child's: once the pool's thread read it
        if None not in codes or any(c is not None and c != -signal.SIGTERM for c in codes):
            break
        time.sleep(0.005)
    reasons = []
    for p in processes:
        code = exit_code_read(p)
        if code is None and time.monotonic() >= deadline:
            code = p.exitcode  # the pool's thread did not read it in time: read it here
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


class DeathWatch:
    """Kills what a process pool's worker leaves behind the moment it dies (Linux; elsewhere it does nothing).

    A worker killed from outside (the out-of-memory killer, a SIGKILL) leaves its
    children running under init, and a child forked from it holds the worker's
    pipes: the pool then never notices the death, and the run hangs until that
    child ends. Workers started by byop_nb lead their own process group
    (`worker.start_worker`); this watch waits on each worker's pidfd in one thread
    and, when one ends other than by exiting with 0, kills its group, so the pipes
    close and the pool reports the death at once.

    The group is killed only while the dead worker is still an unreaped zombie,
    whose pid (and so its group's id) cannot have been reused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._selector: Any = None  # with the thread: made by the first watch(), gone after close()
        self._wakeup_fd: int | None = None

    def watch(self, pid: int) -> None:
        """Watch the worker `pid` (a child of this process) until it ends or `close()`."""
        if not hasattr(os, "pidfd_open"):
            return
        import selectors

        with self._lock:
            if self._selector is None:
                read_fd, self._wakeup_fd = os.pipe()
                self._selector = selectors.DefaultSelector()
                self._selector.register(read_fd, selectors.EVENT_READ, None)
                thread = threading.Thread(target=self._run, args=(self._selector,), name="byop_nb-death-watch")
                thread.daemon = True
                thread.start()
            if any(key.data == pid for key in self._selector.get_map().values()):
                return
            try:
                fd = os.pidfd_open(pid)
            except OSError:  # gone already, or a kernel without pidfds
                return
            self._selector.register(fd, selectors.EVENT_READ, pid)

    def close(self) -> None:
        """Stop watching (the pool is shut down); idempotent. The thread ends at once, on its own."""
        with self._lock:
            wakeup_fd, self._wakeup_fd, self._selector = self._wakeup_fd, None, None
        if wakeup_fd is not None:
            # A byte, not end of file: workers forked meanwhile hold copies of this end.
            os.write(wakeup_fd, b"x")
            os.close(wakeup_fd)

    def _run(self, selector: Any) -> None:
        try:
            while True:
                for key, _ in selector.select():
                    if key.data is None:  # close()
                        return
                    with self._lock:
                        selector.unregister(key.fd)
                    os.close(key.fd)
                    _kill_group_of_dead(key.data)
        finally:
            for key in list(selector.get_map().values()):
                os.close(key.fd)
            selector.close()


def _kill_group_of_dead(pid: int) -> None:
    """`pid`, a child of this process, ended: kill its group unless it exited with 0 or was reaped already."""
    try:
        # WNOWAIT: the zombie stays for multiprocessing to reap; ECHILD: it was reaped already.
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return
    if info is None or (info.si_code == os.CLD_EXITED and info.si_status == 0):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # nothing left in its group, or it had none
        pass
    kill_session(pid)  # the groups its limited calls' children lead


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session `sid` but this one (Linux: read from /proc; elsewhere nothing).

    A worker started by byop_nb leads a session; the child of a limited call leads a
    process group inside it. When the worker dies, this reaches them all.
    """
    if not os.path.isdir("/proc"):
        return
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if len(fields) > 3 and int(fields[3]) == sid:  # state, ppid, pgrp, session
            try:
                os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
