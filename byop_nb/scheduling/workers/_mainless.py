"""Process pools whose workers do not import the user's main script again.

multiprocessing starts a spawn or forkserver worker like a new interpreter and
prepares it by importing the parent's `__main__` script again (as
`__mp_main__`): a script whose top level is not under
`if __name__ == "__main__":` would run its whole experiment again in every
worker (and in the forkserver, which imports `__main__` too). byop_nb's workers
need none of it: functions and values defined in `__main__` travel by value
(see `_shipping`). So a process pool that a Scheduler takes, while it has not
started a worker yet, gets a context of the same start method whose children
leave the main module out of their preparation data
([`adopt`][byop_nb.scheduling.workers._mainless.adopt]); forkserver pools fork from a
server of their own that preloads byop_nb's worker side, not `__main__`.

The experiment then runs once, in the main process, under every start method.
POSIX only: on Windows multiprocessing's own spawn stays, and an unguarded
script is refused with a message saying why (`_executors.check_main_guard`).
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import context, forkserver, popen_spawn_posix, reduction, resource_tracker, spawn, util
from typing import Any

from byop_nb import _compat
from byop_nb.scheduling.workers._forkserver import _Popen as _ForkServerPopen
from byop_nb.scheduling.workers._forkserver import launch_server

__all__ = ["adopt", "SPAWN", "FORKSERVER", "POOL_SERVER_PRELOAD"]

POOL_SERVER_PRELOAD = ["byop_nb.scheduling.workers._worker", "concurrent.futures.process"]
"""What the pools' forkserver imports before it forks workers (not `__main__`)."""


class _PoolServer(forkserver.ForkServer):
    """A forkserver for process pools' workers, started without the main module (one per process, on demand).

    Like multiprocessing's own forkserver it lives until this process ends (its alive pipe),
    a per-interpreter helper like the resource tracker.
    """

    def ensure_running(self) -> None:
        with _compat.forkserver_lock(self):
            resource_tracker.ensure_running()
            pid, alive_fd, _address = _compat.forkserver_state(self)
            if pid is not None:
                try:
                    ended, _status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # inherited from the process this one was forked from: not ours
                    ended = pid
                if not ended:
                    return
                try:
                    os.close(alive_fd)  # type: ignore[arg-type]
                except (OSError, TypeError):
                    pass
                _compat.set_forkserver_state(self, _compat.NO_FORKSERVER)
            launch_server(self, POOL_SERVER_PRELOAD)


_POOL_SERVER = _PoolServer()


class _PoolForkServerPopen(_ForkServerPopen):
    server = _POOL_SERVER


class _ForkServerProcess(context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _PoolForkServerPopen(process_obj)


class _ForkServerContext(context.ForkServerContext):
    Process = _ForkServerProcess


class _SpawnPopen(popen_spawn_posix.Popen):
    def _launch(self, process_obj: Any) -> None:
        # popen_spawn_posix.Popen._launch (CPython 3.11-3.13), but for the preparation data without `__main__`
        tracker_fd: int = resource_tracker.getfd()  # type: ignore[assignment]
        fds: list[int] = self._fds  # type: ignore[attr-defined]
        fds.append(tracker_fd)
        prep_data = _compat.preparation_data_without_main(process_obj.name)
        fp = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, fp)
            reduction.dump(process_obj, fp)
        finally:
            context.set_spawning_popen(None)
        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            cmd = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
            fds.extend([child_r, child_w])
            self.pid = util.spawnv_passfds(spawn.get_executable(), cmd, fds)  # type: ignore[arg-type]
            self.sentinel = parent_r
            with open(parent_w, "wb", closefd=False) as f:
                f.write(fp.getbuffer())
        finally:
            close_fds: Any = util.close_fds  # type: ignore[attr-defined]
            self.finalizer = util.Finalize(self, close_fds, [fd for fd in (parent_r, parent_w) if fd is not None])
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


class _SpawnProcess(context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _SpawnPopen(process_obj)


class _SpawnContext(context.SpawnContext):
    Process = _SpawnProcess


SPAWN: Any = _SpawnContext()
"""Like `multiprocessing.get_context("spawn")`, but its children do not import the main script."""

FORKSERVER: Any = _ForkServerContext()
"""Like `multiprocessing.get_context("forkserver")`, but its children (and their server) skip the main script."""

_STOCK = {context.SpawnContext: SPAWN, context.ForkServerContext: FORKSERVER}


def adopt(executor: ProcessPoolExecutor) -> bool:
    """Give a process pool that started no worker yet a context whose workers skip the main script.

    Returns:
        True when the pool's workers will not import `__main__` (its start method is fork,
        or its context was replaced or is one of ours already); False when they will
        (a pool that started its workers already, a context of the user's own kind, Windows).
    """
    mp_context = _compat.pool_context(executor)
    if mp_context is None:
        return False
    if mp_context in (SPAWN, FORKSERVER) or mp_context.get_start_method() == "fork":
        return True
    ours = _STOCK.get(type(mp_context))
    if ours is None or not _compat.LAUNCH_WITHOUT_MAIN:
        return False
    return _compat.set_pool_context(executor, ours)
