"""What runs inside the worker: the user's function, its limits, and its traceback.

Every submission goes through [`call`][byop_nb.scheduling.worker.call] so that,
whatever the executor,

* a function pickled by value (defined in `__main__` / a notebook cell) is loaded once per worker,
* memory and CPU-time limits are enforced by pynisher in a child process,
* a wall-time limit is enforced by a watchdog that kills that child at the limit
  (pynisher alone only notices after the function returns or ~5 s late),
* an exception carries its traceback text as ``remote_traceback``, which
  survives pickling back to the main process.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Limits", "call"]

# Functions shipped by value, keyed by their pickled bytes: unpickled once per worker.
_LOADED: dict[bytes, Callable[..., Any]] = {}
_LOADED_MAX = 64


@dataclass(frozen=True)
class Limits:
    """Resource limits for one call, already validated and converted.

    Attributes:
        memory: bytes, or None.
        cpu_time: whole seconds (pynisher's resolution), or None.
        wall_time: seconds, or None.
    """

    memory: int | None = None
    cpu_time: int | None = None
    wall_time: float | None = None


def _load(function: Callable[..., Any] | bytes) -> Callable[..., Any]:
    if not isinstance(function, bytes):
        return function
    loaded = _LOADED.get(function)
    if loaded is None:
        import cloudpickle

        loaded = cloudpickle.loads(function)
        if len(_LOADED) >= _LOADED_MAX:
            _LOADED.clear()
        _LOADED[function] = loaded
    return loaded


def call(
    function: Callable[..., Any] | bytes,
    limits: Limits | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run `function(*args, **kwargs)` under `limits`; the entry point of every submission."""
    try:
        fn = _load(function)
        if limits is None:
            return fn(*args, **kwargs)
        return _call_limited(fn, limits, args, kwargs)
    except BaseException as e:
        if getattr(e, "remote_traceback", None) is None:
            try:
                e.remote_traceback = traceback.format_exc()  # type: ignore[attr-defined]
            except AttributeError:  # exception types without a __dict__
                pass
        raise


def _call_limited(fn: Callable[..., Any], limits: Limits, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import multiprocessing

    import pynisher

    if multiprocessing.current_process().daemon:
        raise RuntimeError(
            "byop_nb: memory/CPU/wall-time limits run the function in a child process, but this "
            "worker is a daemonic process, which may not have children. With dask, start the "
            "cluster with dask.config.set({'distributed.worker.daemon': False}) or use "
            "processes=False / a ProcessPoolExecutor."
        )
    limited = pynisher.limit(
        fn,
        memory=limits.memory,
        cpu_time=limits.cpu_time,
        wall_time=None,  # enforced below, precisely
        terminate_child_processes=True,
        wrap_errors=False,
        # Fork where it exists: the limited child then needs no pickling of `fn`. A worker
        # started by spawn/forkserver would otherwise use its own start method, and a
        # function from __main__ or a notebook cell cannot be pickled by reference.
        context="fork" if "fork" in multiprocessing.get_all_start_methods() else None,
    )
    if limits.wall_time is None:
        return limited(*args, **kwargs)

    finished = threading.Event()
    killed = threading.Event()

    def watchdog() -> None:
        if finished.wait(limits.wall_time):
            return
        # pynisher sets `_process` right after starting its child; it is there by now
        # unless the limit is shorter than a process start.
        while not finished.is_set():
            process = getattr(limited, "_process", None)
            if process is not None:
                killed.set()
                _kill_tree(process)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watchdog, name="byop_nb-wall-time", daemon=True)
    start = time.monotonic()
    thread.start()
    try:
        result = limited(*args, **kwargs)
    except BaseException:
        if not killed.is_set():
            raise
        result = None
    finally:
        finished.set()
    if killed.is_set():
        raise pynisher.WallTimeoutException(
            f"The call exceeded its wall-time limit of {limits.wall_time}s "
            f"(stopped after {time.monotonic() - start:.2f}s)."
        )
    return result


def _kill_tree(process: Any) -> None:
    import psutil

    try:
        family = [*process.children(recursive=True), process]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    # Reap only the grandchildren: pynisher's own child must be left for multiprocessing to
    # reap, or its `is_alive()` never turns False (waitpid says ECHILD) and the call hangs.
    psutil.wait_procs([p for p in family if p.pid != process.pid], timeout=2)
