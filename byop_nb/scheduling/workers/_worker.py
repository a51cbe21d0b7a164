"""What runs inside the worker: the user's function, its limits, and its traceback.

Every submission goes through [`call`][byop_nb.scheduling.workers._worker.call] so that,
whatever the executor,

* a function pickled by value (defined in `__main__` / a notebook cell) is loaded once per worker,
* memory and CPU-time limits are enforced by pynisher in a child process, forked
  from the worker's warm server (`_warm`), never from the worker itself (its result
  is read even when the child exits while pynisher looks away: `_ResultAware`),
* a wall-time limit is enforced by a watchdog that kills that child at the limit
  (pynisher alone only notices after the function returns or ~5 s late),
* an exception carries its traceback text as ``remote_traceback``, which
  survives pickling back to the main process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from byop_nb import _compat
from byop_nb.scheduling.workers._processes import kill_family, kill_session
from byop_nb.scheduling.workers._shipping import (
    attach_traceback,
    cloudpickle_dumps,
    load,
    sendable,
    sendable_exception,
    worker_traceback,
)

__all__ = ["Limits", "call", "call_and_ship"]


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


def call(
    function: Callable[..., Any] | bytes,
    limits: Limits | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run `function(*args, **kwargs)` under `limits`; the entry point of every submission."""
    try:
        fn = load(function)
        if limits is None:
            return fn(*args, **kwargs)
        return _call_limited(fn, limits, args, kwargs)
    except BaseException as e:
        attach_traceback(e, worker_traceback(e))
        raise


def call_and_ship(
    function: Callable[..., Any] | bytes,
    limits: Limits | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """`call`, in a worker process: what it returns or raises travels back by value where it needs to.

    A result or exception of a class defined in `__main__` or a notebook cell (the
    function travelled by value, and its classes with it) cannot be pickled by
    reference on its way back; an exception that could not be unpickled there
    would break the process pool. See `_shipping.sendable` / `sendable_exception`.
    """
    try:
        result = call(function, limits, args, kwargs)
    except BaseException as e:
        sent = sendable_exception(e)
        if sent is e:
            raise
        raise sent from None
    return sendable(result)


def start_worker(parent: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    """The initializer of a process pool's worker started by byop_nb; then the pool's own `initializer`.

    The worker becomes the leader of its own session (and process group), so that
    everything it starts (a limited call's child, which leads a group of its own, a
    forkserver, the children of those) can be killed with it, even after it died
    (`_processes.DeathWatch`); and it watches `parent`, the process that started
    it: when that one ends, even by SIGKILL, the worker ends with its whole session
    instead of living on under init.
    """
    if sys.platform != "win32":
        try:
            os.setsid()
        except OSError:  # a session leader already, or not allowed: a group of its own, at least
            try:
                os.setpgid(0, 0)
            except OSError:
                pass
    threading.Thread(target=_end_with, args=(parent,), name="byop_nb-parent-watch", daemon=True).start()
    if initializer is not None:  # itself, or its bytes when it travelled by value
        load(initializer)(*initargs)


def _end_with(owner: int) -> None:
    """Wait until the process `owner` ends (blocked on its pidfd where there are pidfds); then end this worker's group.

    `owner` is the process that made the pool: this worker's parent, or (forkserver) its grandparent.
    """
    import select

    try:
        fd = os.pidfd_open(owner)  # readable when the process ends
    except ProcessLookupError:  # it ended before the watch began
        pass
    except (AttributeError, OSError):  # no pidfds here: look every half second
        while _exists(owner):
            time.sleep(0.5)
    else:
        select.select([fd], [], [])
    if os.getsid(0) == os.getpid():
        kill_session(os.getpid())  # what this worker started, limited calls' groups included
    if os.getpgrp() == os.getpid():
        os.killpg(0, signal.SIGKILL)  # this worker's whole group, itself included
    kill_family([_this_process()])


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _this_process() -> Any:
    import psutil

    return psutil.Process()


def make_limit_exceptions_picklable() -> None:
    """Let pynisher's MemoryLimitException survive tblib's pickling; idempotent.

    Importing dask.distributed installs tblib's pickling for every exception
    class, which rebuilds an exception with `cls.__new__(cls)`. For
    `MemoryLimitException(PynisherException, MemoryError)` that call is refused
    ("MemoryError.__new__(MemoryLimitException) is not safe"), so the exception
    could not travel back from the limited child or the worker, and the process
    pool broke instead of reporting the memory limit. A `__new__` that goes
    through `Exception.__new__` (the same instance layout) is safe. Called in
    every process that may unpickle one: the worker and the main process.
    """
    import pynisher

    cls: Any = pynisher.MemoryLimitException
    if "__new__" not in vars(cls):
        cls.__new__ = staticmethod(_limit_exception_new)


def _limit_exception_new(cls: type[BaseException], *args: Any, **kwargs: Any) -> BaseException:
    return Exception.__new__(cls, *args)


def _call_limited(fn: Callable[..., Any], limits: Limits, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import multiprocessing

    import pynisher

    make_limit_exceptions_picklable()
    if multiprocessing.current_process().daemon:
        raise RuntimeError(
            "byop_nb: memory/CPU/wall-time limits run the function in a child process, but this "
            "worker is a daemonic process, which may not have children. With dask, start the "
            "cluster with dask.config.set({'distributed.worker.daemon': False}) or use "
            "processes=False / a ProcessPoolExecutor."
        )
    if _compat.LAUNCH_WITHOUT_MAIN:
        # Every limited call is a child of this process's warm server (see _warm): a fresh,
        # single-threaded interpreter that imported what the calls need. Not a fork of this
        # process: a worker has threads (a kernel too), and a memory limit caps the child's
        # whole address space, which a fork of a big process would have spent already. The
        # call travels by value (see _Shipped), so functions from __main__ or a notebook cell
        # work too; nor does the child import the main script again.
        from byop_nb.scheduling.workers import _warm
        from byop_nb.scheduling.workers._forkserver import CONTEXT

        _warm.preload(fn)
        try:
            return _run_on_warm_server(fn, limits, args, kwargs, CONTEXT)
        finally:
            _warm.finished()
    # No warm server (Windows, or a Python whose forkserver insides byop_nb does not know, see
    # _compat.LAUNCH_WITHOUT_MAIN): a child of the default start method, which imports what the call
    # needs itself.
    context = multiprocessing.get_context()
    function = _Call(fn, args, kwargs, parent=None)
    try:
        return _run_limited(function, limits, context)
    except pynisher.PynisherException as e:
        _explain(e, function, limits, fn, args, kwargs)
        raise


def _run_on_warm_server(
    fn: Callable[..., Any], limits: Limits, args: tuple[Any, ...], kwargs: dict[str, Any], context: Any
) -> Any:
    import pynisher

    from byop_nb.scheduling.workers import _warm

    server = _warm.server_pid()
    # The child's parent is the server, which ends when this process does (its alive pipe).
    function = _Shipped(fn, args, kwargs, parent=server)
    try:
        outcome = _run_limited(function, limits, context)
    except BaseException as e:
        _warm.learn(e.__dict__.pop("_byop_nb_imported", ()) if hasattr(e, "__dict__") else ())
        died = _warm.server_died(server) if server is not None else None
        if died is not None:
            raise RuntimeError(
                f"byop_nb: the warm process (pid {server}) that forks this worker's limited calls {died} "
                f"while {_callstring(fn, args, kwargs)} ran; the call is lost with it. "
                "The next limited call starts a new warm process."
            ) from None
        if isinstance(e, pynisher.PynisherException):
            _explain(e, function, limits, fn, args, kwargs)
        raise
    _warm.learn(outcome.imported)
    return outcome.result


def _explain(
    e: BaseException,
    function: _Call,
    limits: Limits,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Reword a pynisher error for the user: a limit hit as one sentence naming the call and the
    limit (`hog(400) exceeded its memory limit of 100 MB`), any other with the user's call named.

    pynisher's own words vary by limit ("Not enough memory to run function (104857600B).",
    "Did not finish in cpu time (1s)") and end with the call it ran, which is our wrapper.
    """
    import pynisher

    call = _callstring(fn, args, kwargs)
    if isinstance(e, pynisher.MemoryLimitException) and limits.memory is not None:
        e.args = (f"{call} exceeded its memory limit of {_bytes(limits.memory)}",)
    elif isinstance(e, pynisher.CpuTimeoutException) and limits.cpu_time is not None:
        e.args = (f"{call} exceeded its CPU-time limit of {limits.cpu_time} s",)
    elif isinstance(e, pynisher.WallTimeoutException) and limits.wall_time is not None:
        stopped = getattr(e, "stopped_after", None)  # set by our watchdog (_run_watched)
        after = f" (stopped after {stopped:.2f} s)" if stopped is not None else ""
        e.args = (f"{call} exceeded its wall-time limit of {limits.wall_time:g} s{after}",)
    elif e.args and isinstance(e.args[0], str):
        e.args = (e.args[0].replace(function.callstring, call), *e.args[1:])


def _bytes(n: int) -> str:
    """`n` bytes as the largest whole unit that says it exactly, e.g. 100 MB, 1.5 GB, 1000 B."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def _run_limited(function: _Call, limits: Limits, context: Any) -> Any:
    import pynisher

    _end_without_waiting()

    result_aware: Any = _ResultAware(context)  # duck-typed: pynisher uses only its Pipe and Process
    limited = pynisher.limit(
        function,
        memory=limits.memory,
        cpu_time=limits.cpu_time,
        wall_time=None,  # enforced below, precisely
        # Not pynisher's own clean-up: it lists the child's descendants by reading every process
        # in /proc (about half of a no-op limited call's time). The child leads a process group
        # (see _Call), which is killed in one system call when the call ends.
        terminate_child_processes=False,
        wrap_errors=False,
        context=result_aware,
    )
    _ending.ours = True
    try:
        return _run_watched(limited, limits, result_aware)
    finally:
        _ending.ours = False


def _run_watched(limited: Any, limits: Limits, result_aware: _ResultAware) -> Any:
    """Run pynisher's `limited` call; with a wall-time limit, a watchdog kills its child at the limit."""
    import pynisher

    if limits.wall_time is None:
        try:
            return limited()
        finally:
            _end_group(limited)
            _retire(result_aware.child)

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
                # Only the grandchildren are reaped: pynisher's own child is left for multiprocessing
                # to reap, or its `is_alive()` never turns False (waitpid says ECHILD) and the call hangs.
                kill_family([process], reap_roots=False, timeout=2)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watchdog, name="byop_nb-wall-time", daemon=True)
    start = time.monotonic()
    thread.start()
    try:
        result = limited()
    except BaseException:
        if not killed.is_set():
            raise
        result = None
    finally:
        finished.set()
        _end_group(limited)
        _retire(result_aware.child)
    if killed.is_set():
        stopped_after = time.monotonic() - start
        error = pynisher.WallTimeoutException(
            f"The call exceeded its wall-time limit of {limits.wall_time}s (stopped after {stopped_after:.2f} s)"
        )
        error.stopped_after = stopped_after  # type: ignore[attr-defined]
        raise error
    return result


class _ResultAware:
    """The multiprocessing `context` given to pynisher: its child counts as alive while the
    result it sent is unread.

    pynisher waits for a call's result by polling the result pipe for 10 ms and then asking
    whether the child is still alive. A child that sends its result and exits between those
    two steps (its parent descheduled, on a busy machine) was taken for one that ended without
    a result ("Function ended properly but no result was recieved"), and the call's result was
    lost. Told that such a child is alive, pynisher polls once more and reads the result.
    A wrapper of one call's context: `Pipe` and `Process` are each made once per call, in order.
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self._results: Any = None  # the receiving end of the call's result pipe
        self.child: Any = None  # the multiprocessing Process of the call, once made

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]:
        receive, send = self._context.Pipe(duplex)
        self._results = receive
        return receive, send

    def Process(self, *args: Any, **kwargs: Any) -> Any:
        self.child = self._context.Process(*args, **kwargs)
        return _ChildWithResult(self.child, self._results)


_retired: list[Any] = []  # the Process objects of ended calls whose child may still be exiting
_retired_lock = threading.Lock()


def _retire(process: Any, wait: float = 0.0) -> None:
    """Release the pipes that `process` (a limited call's child, or None) and earlier calls' children hold.

    A Process keeps its sentinel pipes open until it is closed or collected, and a call
    that ended with an exception can keep it alive in a reference cycle until the garbage
    collector runs: two file descriptors per call (seen: a thread pool's wall-time-limited
    runs grew by 2 each). The child may still be exiting when the call ends, and waiting
    for that would slow every call; so each child is closed as soon as it has exited, at
    this call's end or a later one's (with `wait`, at a run's end, each is waited for).
    """
    with _retired_lock:
        if process is not None and getattr(process, "_popen", None) is not None:
            _retired.append(process)
        for each in list(_retired):
            try:
                if each.exitcode is None and wait:
                    each.join(wait)
                if each.exitcode is not None:
                    each.close()
                    _retired.remove(each)
            except (ValueError, OSError):  # closed already
                _retired.remove(each)


class _ChildWithResult:
    """A pynisher child process (delegated to) that is alive until it ended and its result, if any, was read."""

    def __init__(self, process: Any, results: Any) -> None:
        self._process = process
        self._results = results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._process, name)

    def is_alive(self) -> bool:
        if self._process.is_alive():
            return True
        if self._process.exitcode != 0:  # killed: it may have sent part of a message, not to be waited for
            return False
        try:  # it exited, having sent its whole result (or nothing): is one waiting in the pipe?
            return self._results is not None and bool(self._results.poll(0))
        except (OSError, ValueError):  # the pipe is closed: the call is over
            return False


_ending = threading.local()  # `.ours`: this thread is ending a limited call of byop_nb's (see _end_without_waiting)


def _end_without_waiting() -> None:
    """Have pynisher end our calls' children without waiting for them to exit (once per process).

    With `terminate_child_processes=False`, pynisher ends each call by sending its child
    SIGTERM through psutil and waiting until it is gone, after the result was read. A
    child of a warm server that imported scikit-learn takes 10-15 ms to tear down its
    address space, which every call waited for. Our child needs no waiting: it is sent
    SIGKILL, its group is killed right after (`_end_group`), its server reaps it, and its
    pipes are closed once it has exited (`_retire`). Nor is a child that was reaped
    already an error (always a race for a server's child). Other uses of pynisher in the
    same process (a user's own, in an unlimited call) keep pynisher's behaviour.
    """
    import psutil
    import pynisher.pynisher as module

    original = module.terminate_process
    if getattr(original, "_byop_nb_tolerant", False):
        return

    def terminate_process(pid: Any = None, *args: Any, **kwargs: Any) -> Any:
        if getattr(_ending, "ours", False):
            try:
                os.kill(pid.pid if isinstance(pid, psutil.Process) else pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, TypeError):
                pass
            return [], []
        try:
            return original(pid, *args, **kwargs)
        except psutil.NoSuchProcess:
            return [], []

    terminate_process._byop_nb_tolerant = True  # type: ignore[attr-defined]
    module.terminate_process = terminate_process


def _end_group(limited: Any) -> None:
    """Kill what the call's child left running: its process group (the child leads one, see `_Call`)."""
    process = getattr(limited, "_process", None)
    pid = getattr(process, "pid", None)
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # nothing left in it (the common case), or not ours
        pass


def release_forkserver() -> None:
    """Stop the warm server that limited calls in this process started, if any.

    The scheduler calls this when a run ends, so that calls run in the main
    process (thread pools) leave no process behind. Worker processes need not:
    their server exits with them.
    """
    from byop_nb.scheduling.workers import _warm

    _retire(None, wait=1.0)
    _warm.release()


def _callstring(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The user's call as text for a message, e.g. `square(3)` (each argument's text bounded)."""
    from byop_nb._text import bounded_repr

    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    parts = [bounded_repr(a, 80) for a in args] + [f"{k}={bounded_repr(v, 80)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


class _Call:
    """One call, the function and its arguments, run in pynisher's limited child.

    The child must never outlive the process it was started from (`parent`): killed
    from outside, as the out-of-memory killer does, a worker would leave it running
    under init, holding the worker's pipes (so the pool never notices the death)
    and, with a wall-time limit, without the watchdog that would have ended it. On
    Linux the child asks the kernel for SIGKILL when its parent ends
    (PR_SET_PDEATHSIG), then checks that the parent did not end before it asked.
    """

    callstring = "byop_nb_limited_call()"  # what pynisher calls this in its messages: replaced by the user's call

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, parent: int | None
    ) -> None:
        self.fn, self.args, self.kwargs, self.parent = fn, args, kwargs, parent
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__qualname__ = "byop_nb_limited_call"  # pynisher's name for it (on the instance: the class stays findable)

    def __call__(self) -> Any:
        if self.parent is not None:
            die_with_parent(self.parent)
        if sys.platform != "win32":
            # A group of its own: whatever the call starts is killed with one killpg when it ends.
            try:
                os.setpgid(0, 0)
            except OSError:
                pass
        # What the call returns or raises goes back to the worker through a pipe: by value where it must.
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as e:
            attach_traceback(e, worker_traceback(e))
            sent = sendable_exception(e)
            if sent is e:
                raise
            raise sent from None
        return sendable(result)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent (`parent`, by pid) ends; exit now if it did.

    Linux only (elsewhere it does nothing). The signal is tied to the parent's thread
    that started this process, which in a worker is the thread that waits for it.
    """
    if sys.platform != "linux":
        return
    global _PRCTL
    if _PRCTL is None:
        import ctypes

        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent ended before the request: nobody waits for this call
        os._exit(1)


def _let_the_forkserver_go() -> None:
    """In a forkserver's child: close the forkserver's alive pipe, which the child was handed.

    The forkserver ends when no process holds that pipe's writing end. Its children
    are handed one, so a child would keep the forkserver, its parent, alive (and its
    parent-death signal unsent) after the worker that asked for the child died.
    """
    server = _compat.forkserver()
    pid, fd, address = _compat.forkserver_state(server)
    _compat.set_forkserver_state(server, _compat.ForkServerState(pid, None, address))
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


_PR_SET_PDEATHSIG = 1
_PRCTL: Any = None


class _Outcome(NamedTuple):
    """What a warm server's child sends back: the call's result, and the modules it imported that the server had not."""

    result: Any
    imported: tuple[str, ...]


class _Shipped(_Call):
    """A `_Call` that pickles by value with cloudpickle (for a warm server's child), and reports what it imported.

    Unpickling loads the function (and imports what it needs) in the child before
    pynisher sets its limits, so only what the call itself allocates counts; it also
    asks for the parent-death signal at once. The child returns an `_Outcome`, or
    raises with the names in `_byop_nb_imported`: the worker learns from them what its
    server should import (`_warm.learn`).
    """

    server_modules: frozenset[str] | None = None  # in the child: the modules it had when forked

    def __reduce__(self) -> tuple[Any, ...]:
        # cloudpickle's, with code that keeps its file's name: the child's traceback shows the user's file and line
        return (_unship, (cloudpickle_dumps((self.fn, self.args, self.kwargs)), self.parent))

    def __call__(self) -> Any:
        try:
            result = super().__call__()
        except BaseException as e:
            try:
                e._byop_nb_imported = self._imported()  # type: ignore[attr-defined]
            except AttributeError:  # an exception without a __dict__
                pass
            raise
        return _Outcome(result, self._imported())

    def _imported(self) -> tuple[str, ...]:
        if self.server_modules is None:
            return ()
        known = self.server_modules
        return tuple(
            name
            for name, module in list(sys.modules.items())
            if name not in known and name != "__main__" and getattr(module, "__spec__", None) is not None
        )


def _unship(data: bytes, parent: int | None) -> _Shipped:
    server_modules = frozenset(sys.modules)
    import cloudpickle

    if parent is not None:
        _let_the_forkserver_go()
        die_with_parent(parent)
    fn, args, kwargs = cloudpickle.loads(data)
    shipped = _Shipped(fn, args, kwargs, parent=None)  # asked already
    shipped.server_modules = server_modules
    return shipped
