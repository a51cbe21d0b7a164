"""The forkserver start method for memory-limited calls, without importing the user's main script again.

multiprocessing prepares a forkserver's (or spawn's) child like a new
interpreter: it imports the parent's `__main__` script again, as
`__mp_main__`, so a script without `if __name__ == "__main__":` would run its
whole experiment a second time in every memory-limited call. The call needs
none of it (it travels by value, see `worker._Shipped`), so the preparation data
that [`CONTEXT`][byop_nb.scheduling.workers._forkserver.CONTEXT] sends leaves the main
module out. Everything else is multiprocessing's forkserver.

Imported only where the forkserver start method exists (not on Windows), lazily.
"""

from __future__ import annotations

import io
import os
import socket
from multiprocessing import (
    connection,
    context,
    forkserver,
    popen_forkserver,
    reduction,
    resource_tracker,
    spawn,
    util,
)
from typing import Any

from byop_nb import _compat

__all__ = ["CONTEXT", "start_server", "launch_server"]


def start_server(preload: list[str]) -> None:
    """Start this process's forkserver (none may be running), importing `preload` (module names) before it serves.

    `forkserver.ensure_running()` (CPython 3.11-3.13) when no server runs, but without the
    main module's preparation data, which it reads off `sys.modules["__main__"]`: a
    Jupyter kernel's `__main__` (and a process-pool worker forked from one) has no
    `__spec__`, and ensure_running fails there with AttributeError. Our children never
    import the main module (see `_Popen`), and `_warm` hands the server its `sys.path`.
    """
    server = _compat.forkserver()
    with _compat.forkserver_lock(server):
        launch_server(server, preload)


def launch_server(server: Any, preload: list[str]) -> None:
    """Start the forkserver `server` (a `multiprocessing.forkserver.ForkServer`, its lock held, none running).

    The body of `ForkServer.ensure_running` (CPython 3.11-3.13) without the main module's preparation data.
    """
    resource_tracker.ensure_running()
    command = "from multiprocessing.forkserver import main; main(%d, %d, %r)"
    with socket.socket(socket.AF_UNIX) as listener:
        address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        # Every client holds the write end of the "alive" pipe: when all are gone, the server ends.
        alive_r, alive_w = os.pipe()
        try:
            executable = spawn.get_executable()
            args = [executable, *_compat.interpreter_flags()]
            args += ["-c", command % (listener.fileno(), alive_r, preload)]
            pid = util.spawnv_passfds(executable, args, [listener.fileno(), alive_r])  # type: ignore[arg-type]
        except BaseException:
            os.close(alive_w)
            raise
        finally:
            os.close(alive_r)
        _compat.set_forkserver_state(server, _compat.ForkServerState(pid, alive_w, address))


class _Popen(popen_forkserver.Popen):
    @property
    def server(self) -> Any:
        """The forkserver that forks the children: multiprocessing's own (this process's warm server)."""
        return _compat.forkserver()

    def _launch(self, process_obj: Any) -> None:
        # popen_forkserver.Popen._launch (CPython 3.11-3.13), but for the two keys left out of the preparation data
        prep_data = _compat.preparation_data_without_main(process_obj.name)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        fds: list[int] = self._fds  # type: ignore[attr-defined]
        self.sentinel, w = self.server.connect_to_new_process(fds)
        # Keep a duplicate of the data pipe's write end as a sentinel of the parent process used by the child.
        parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))  # type: ignore[attr-defined]
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _ChildProcess(context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _Popen(process_obj)


class _Context(context.ForkServerContext):
    Process = _ChildProcess


CONTEXT: Any = _Context()
"""A multiprocessing context like `get_context("forkserver")` whose children skip the main script."""
