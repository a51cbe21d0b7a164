"""The forkserver start method for memory-limited calls, without importing the user's main script again.

multiprocessing prepares a forkserver's (or spawn's) child like a new
interpreter: it imports the parent's `__main__` script again, as
`__mp_main__`, so a script without `if __name__ == "__main__":` would run its
whole experiment a second time in every memory-limited call. The call needs
none of it (it travels by value, see `worker._Shipped`), so the preparation data
that [`CONTEXT`][byop_nb.scheduling._forkserver.CONTEXT] sends leaves the main
module out. Everything else is multiprocessing's forkserver.

Imported only where the forkserver start method exists (not on Windows), lazily.
"""

from __future__ import annotations

import io
import os
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from typing import Any

__all__ = ["CONTEXT"]


class _Popen(popen_forkserver.Popen):
    def _launch(self, process_obj: Any) -> None:
        # popen_forkserver.Popen._launch (CPython 3.11-3.13), but for the two keys left out of the preparation data
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        fds: list[int] = self._fds  # type: ignore[attr-defined]
        self.sentinel, w = forkserver.connect_to_new_process(fds)
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
