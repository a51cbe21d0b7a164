"""Ray: a `concurrent.futures.Executor` over Ray remote functions, and the Ray that byop_nb starts.

Ray (2.60) has no `concurrent.futures.Executor` of its own. [`RayExecutor`][byop_nb.scheduling.RayExecutor]
is one: `submit` runs the function as a Ray task through one remote function of
ours (`_run`, which takes the function as its first argument) and returns a
Future settled from the task's `ObjectRef.future()`; `shutdown` cancels what is
still outstanding with `ray.cancel`.

Where things happen:

* a function from `__main__` or a notebook cell travels by value, as for process
  pools (`_shipping.payload`); Ray's own pickling of it is not relied upon, so its
  classes are the same ones the scheduler's other executors use;
* a task's exception reaches the Future as the function raised it (Ray's
  `RayTaskError` wrapper is taken off, `_unwrapped`), with the worker's traceback
  text as `remote_traceback`;
* a Ray started by byop_nb (`Scheduler.with_ray`) is a [`RaySession`][byop_nb.scheduling.workers._ray.RaySession],
  stopped by the executor's `shutdown` and started again by `fresh()` for the next run.

Limited calls (memory, CPU or wall-time limits) run in the Ray worker exactly as in
a process pool's worker: each is a child of the worker's warm server (`_warm`).
A Ray worker is no daemonic process, so it may have children; Ray kills a worker's
children when the worker exits.

Nothing here imports Ray until an executor is made (`import byop_nb` stays light).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import Executor as _Executor
from types import FunctionType
from typing import Any

from byop_nb.scheduling.workers import _shipping

__all__ = ["RayExecutor", "RaySession", "import_ray", "start_ray", "CONNECT_TIMEOUT"]

CONNECT_TIMEOUT = 10.0
"""Seconds `Scheduler.with_ray(address=...)` waits for the Ray head to answer before it gives up."""

_INSTALL_HINT = "pip install 'byop_nb[ray]'"


def import_ray() -> Any:
    """The `ray` module.

    Raises:
        ImportError: Ray is not installed; the message names the extra that installs it.
    """
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            f"byop_nb runs on Ray only where Ray is installed: {_INSTALL_HINT} (byop_nb's `ray` extra) "
            f"or pip install ray. ({type(e).__name__}: {e})"
        ) from e
    return ray


def _run(function: Callable[..., Any] | bytes, /, *args: Any, **kwargs: Any) -> Any:
    """The body of every Ray task of a RayExecutor: `function(*args, **kwargs)` (loaded once per worker)."""
    try:
        return _shipping.load(function)(*args, **kwargs)
    except BaseException as e:
        _shipping.attach_traceback(e, _shipping.worker_traceback(e))
        raise


_remote_lock = threading.Lock()
_remote: Any = None  # ray.remote(_run), made once per process


def _remote_run() -> Any:
    global _remote
    with _remote_lock:
        if _remote is None:
            _remote = import_ray().remote(_run)
        return _remote


_CACHE_MAX = 256
_remote_functions: dict[Callable[..., Any], Any] = {}  # an importable function -> ray.remote(it)


def _remote_function(function: Callable[..., Any]) -> Any:
    """`ray.remote(function)`, made once per process (Ray exports each remote function once per job)."""
    with _remote_lock:
        remote = _remote_functions.get(function)
        if remote is None:
            if len(_remote_functions) >= _CACHE_MAX:
                _remote_functions.clear()
            remote = _remote_functions[function] = import_ray().remote(function)
        return remote


class RaySession:
    """A Ray that byop_nb started (`ray.init(**init_kwargs)`) and so stops (`ray.shutdown()`).

    With an `address`, `ray.init` connects this process to a running cluster, and
    `ray.shutdown()` only disconnects it.
    """

    def __init__(self, init_kwargs: Mapping[str, Any]) -> None:
        self.init_kwargs = dict(init_kwargs)
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start (or connect to) Ray in this process, unless Ray is running here already."""
        ray = import_ray()
        with self._lock:
            if not ray.is_initialized():
                ray.init(**self.init_kwargs)

    def stop(self) -> None:
        """Shut Ray down in this process (idempotent)."""
        ray = import_ray()
        with self._lock:
            if ray.is_initialized():
                ray.shutdown()

    def __repr__(self) -> str:
        return f"RaySession({self.init_kwargs!r})"


class _RayFuture(Future[Any]):
    """The Future of one Ray task; `cancel()` also cancels the task (`ray.cancel(force=True)`).

    It stays PENDING until the task ends (Ray does not say when a task starts to run), so
    `cancel()` works until then, as for a dask future; `running()` is always False.
    """

    def __init__(self, object_ref: Any, label: str) -> None:
        super().__init__()
        self.object_ref = object_ref
        self.label = label

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        _cancel(self.object_ref)
        return True


def _cancel(object_ref: Any) -> None:
    """End the task of `object_ref`: taken out of Ray's queue, or its worker process ended if it runs."""
    ray = import_ray()
    with contextlib.suppress(Exception):  # finished already, Ray shut down, ...
        ray.cancel(object_ref, force=True, recursive=True)


class RayExecutor(_Executor):
    """A `concurrent.futures.Executor` that runs each call as a Ray task.

    Needs Ray running in this process (`ray.init(...)`, which stays yours to shut
    down), or use `Scheduler.with_ray(...)`, which starts Ray for the scheduler and
    shuts it down when a run ends.

    Args:
        num_cpus: CPUs each call reserves (Ray's `num_cpus`; default 1).
        memory: bytes of memory each call reserves (Ray's logical `memory`
            resource, used to place calls; the byop_nb Task's `memory_limit`
            is what enforces a limit).
        **options: any other option of a Ray task (`ray.remote(...).options`):
            `num_gpus`, `resources`, `scheduling_strategy`, `runtime_env`,
            `max_retries` (default 0 here: a call whose worker died fails,
            as on a process pool, instead of running again), ...

    Raises:
        ImportError: Ray is not installed (the message names the `ray` extra).
        RuntimeError: Ray is not running in this process.
        ValueError: Ray refused an option (the message names it).

    Example:
        ```python
        import ray
        from byop_nb.scheduling import RayExecutor, Scheduler

        ray.init(num_cpus=2, include_dashboard=False)
        with RayExecutor(num_cpus=1) as executor:
            print(list(executor.map(abs, [-1, -2])))   # [1, 2]
        scheduler = Scheduler(RayExecutor())           # Ray stays up between runs
        ...
        ray.shutdown()
        ```

    `submit` returns a Future that stays pending until the task ends (Ray does
    not report when a task starts), so `future.cancel()` works until then and
    cancels the Ray task too: taken out of Ray's queue, or its worker process
    ended if it already runs (Ray starts a new one). An exception the function
    raised is set on the Future as itself (not Ray's `RayTaskError`), with the
    worker's traceback text in its `remote_traceback` attribute. A call Ray
    cannot serialize fails its Future with a TypeError naming the call.
    """

    def __init__(self, *, num_cpus: float | None = None, memory: int | None = None, **options: Any) -> None:
        self._init(num_cpus=num_cpus, memory=memory, options=options, session=None)

    def _init(
        self, *, num_cpus: float | None, memory: int | None, options: Mapping[str, Any], session: RaySession | None
    ) -> None:
        ray = self._ray = import_ray()
        if session is None and not ray.is_initialized():
            raise RuntimeError(
                "RayExecutor needs Ray running in this process: call ray.init(...) first (Ray then stays yours "
                "to shut down), or use Scheduler.with_ray(n_workers) / Scheduler.with_ray(address=...), which "
                "starts Ray for the scheduler and shuts it down after each run"
            )
        for name, value in (("num_cpus", num_cpus), ("memory", memory)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"RayExecutor({name}={value!r}): {name} must be a non-negative number or None")
        chosen: dict[str, Any] = {"max_retries": 0, **options}
        if num_cpus is not None:
            chosen["num_cpus"] = num_cpus
        if memory is not None:
            chosen["memory"] = memory
        try:
            self._remote = _remote_run().options(**chosen)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"Ray refused the task options {chosen!r}: {e}. RayExecutor takes num_cpus=, memory= and the "
                "options of a Ray task (ray.remote(...).options: num_gpus, resources, scheduling_strategy, "
                "runtime_env, max_retries, ...)"
            ) from e
        self.num_cpus, self.memory, self.options = num_cpus, memory, dict(options)
        self._chosen = chosen
        self._direct: dict[Callable[..., Any], Any] = {}  # an importable function -> its remote, with the options
        self._session = session
        self._lock = threading.Lock()
        self._outstanding: set[_RayFuture] = set()
        self._shutdown = False
        self._cancelled_all = False

    @property
    def owns_ray(self) -> bool:
        """Whether this executor started Ray (`Scheduler.with_ray`) and so shuts it down in `shutdown()`."""
        return self._session is not None

    # -- submitting -------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run `fn(*args, **kwargs)` as a Ray task; returns its Future.

        Raises:
            RuntimeError: the executor was shut down.
        """
        return self.submit_labelled(_name_of(fn), fn, *args, **kwargs)

    def submit_labelled(self, label: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """`submit`, naming the call `label` in errors (byop_nb's scheduler names the user's
        function there, not the worker wrapper that runs it)."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if not self._ray.is_initialized():  # else Ray would start (or join) some other Ray by itself
            raise RuntimeError(
                f"{self!r} cannot run {label}: Ray is not running in this process any more (ray.shutdown() was "
                "called). Start it again (ray.init(...)) and make a new RayExecutor, or use Scheduler.with_ray(...)"
            )
        # Not under the lock: Ray's thread that settles futures takes it (`_settle`), and `.remote()` may wait on Ray.
        try:
            shipped = _shipping.payload(fn)
            if shipped is fn and isinstance(fn, FunctionType):
                # A remote function of its own: Ray then sends no function with each call (a tenth of
                # a no-op's dispatch time). A function that travels by value goes through `_run`.
                remote = self._direct.get(fn)
                if remote is None:
                    if len(self._direct) >= _CACHE_MAX:
                        self._direct.clear()
                    remote = self._direct[fn] = _remote_function(fn).options(**self._chosen)
                object_ref = remote.remote(*args, **kwargs)
            else:
                object_ref = self._remote.remote(shipped, *args, **kwargs)
        except Exception as e:
            return _failed(_not_serializable(label, e))
        future = _RayFuture(object_ref, label)
        with self._lock:
            self._outstanding.add(future)
            cancelled = self._cancelled_all  # a shutdown(cancel_futures=True) came while this call was sent
        if cancelled:
            future.cancel()
        object_ref.future().add_done_callback(lambda inner: self._settle(future, inner))
        return future

    def _settle(self, future: _RayFuture, inner: Future[Any]) -> None:
        """In Ray's thread, when the task ended: settle our Future as the task ended."""
        with self._lock:
            self._outstanding.discard(future)
        if future.done():  # cancelled
            return
        try:
            exception = inner.exception()
        except CancelledError as e:
            exception = e
        with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
            if exception is None:
                future.set_result(inner.result())
            else:
                future.set_exception(_unwrapped(exception, future.label))

    # -- ending -----------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; with `cancel_futures`, cancel every outstanding call with `ray.cancel`.

        `cancel_futures=True` cancels pending and running calls alike (their Futures are
        cancelled; a running call's worker process is ended). `wait=True` returns once every
        outstanding call ended. An executor that started Ray (`owns_ray`) then shuts Ray
        down: at once when `wait` or `cancel_futures`, else once the outstanding calls ended.
        Calling it again does nothing more.
        """
        with self._lock:
            self._shutdown = True
            self._cancelled_all = self._cancelled_all or cancel_futures
            outstanding = list(self._outstanding)
        if cancel_futures:
            for future in outstanding:
                future.cancel()
        if wait or cancel_futures:
            self._wait_for_tasks(outstanding)
            if self._session is not None:
                self._session.stop()
        elif self._session is not None:
            session = self._session

            def stop_when_done() -> None:
                self._wait_for_tasks(outstanding)
                session.stop()

            threading.Thread(target=stop_when_done, name="byop_nb-ray-shutdown", daemon=True).start()

    def _wait_for_tasks(self, futures: Iterable[_RayFuture], timeout: float = 60.0) -> None:
        """Wait until the Ray tasks of `futures` ended (a cancelled one ends within moments)."""
        refs = [f.object_ref for f in futures]
        if not refs:
            return
        ray = import_ray()
        with contextlib.suppress(Exception):  # Ray shut down meanwhile
            if ray.is_initialized():
                ray.wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=False)

    def fresh(self) -> RayExecutor | None:
        """A new executor with these settings, for the scheduler's next run; None when it cannot be made.

        One that started Ray starts it again, and hands it to the new executor: its own
        `shutdown()` then leaves Ray to the new one. Otherwise Ray must still be running here.
        """
        session = self._session
        if session is not None:
            session.start()
        elif not import_ray().is_initialized():
            return None
        new = RayExecutor.__new__(RayExecutor)
        new._init(num_cpus=self.num_cpus, memory=self.memory, options=self.options, session=session)
        self._session = None
        return new

    # -- CommTask -----------------------------------------------------------------------
    def comm_host(self) -> str | None:
        """The address of this machine the Ray workers reach it on, for a CommTask's hub; None when
        every Ray node runs on this machine (the hub's Unix socket reaches them).

        Raises:
            OSError: no address of this machine is on the route to the Ray head.
        """
        from byop_nb.scheduling.workers._network import local_addresses, tcp_host_for

        ray = import_ray()
        local = local_addresses() | {"127.0.0.1", "::1"}
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        if all(str(node.get("NodeManagerAddress", "")) in local for node in nodes):
            return None
        gcs = ray.get_runtime_context().gcs_address
        if all(str(node.get("NodeManagerAddress", "")) not in local for node in nodes):
            return tcp_host_for(gcs)  # this driver runs off the cluster: the address on the route to its head
        head_host = gcs.rpartition(":")[0].strip("[]")
        return head_host if head_host in local else tcp_host_for(gcs)

    def __repr__(self) -> str:
        options = {k: v for k, v in (("num_cpus", self.num_cpus), ("memory", self.memory)) if v is not None}
        options.update(self.options)
        parts = [f"{k}={v!r}" for k, v in options.items()]
        parts += ["owns Ray"] * (self._session is not None) + ["shut down"] * self._shutdown
        return f"RayExecutor({', '.join(parts)})"


def _name_of(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)


def _failed(exception: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()
    future.set_exception(exception)
    return future


def _not_serializable(label: str, error: Exception) -> BaseException:
    if isinstance(error, _shipping.FunctionNotShippable):
        return error  # it names the function already
    return TypeError(
        f"Ray could not serialize the call of {label} (the function or one of its arguments): "
        f"{type(error).__name__}: {error}. Make what the call is given picklable, or create it inside the function"
    )


def _unwrapped(exception: BaseException, label: str) -> BaseException:
    """The exception a Ray task ended with, as the function raised it (Ray's `RayTaskError` taken off)."""
    ray = import_ray()
    if isinstance(exception, ray.exceptions.RayTaskError):
        cause = getattr(exception, "cause", None)
        if isinstance(cause, BaseException):
            if not getattr(cause, "remote_traceback", None):
                _shipping.attach_traceback(cause, getattr(exception, "traceback_str", None) or str(exception))
            return cause
    if isinstance(exception, (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError)):
        exception.add_note(f"byop_nb: the Ray worker process died while it ran {label}; the call is lost.")
    return exception


def _check_reachable(address: str, timeout: float) -> None:
    """Raise a ConnectionError naming `address` when no Ray head answers there within `timeout` seconds.

    `ray.init(address=...)` itself retries an unreachable head for a minute or more.
    """
    location = address.split("://", 1)[-1]
    host, _, port = location.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"with_ray(address={address!r}): expected the Ray head's 'host:port' (as `ray start --head` prints it, "
            "e.g. '10.0.0.5:6379'), 'ray://host:port', or 'auto'"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConnectionError(
            f"with_ray(address={address!r}): no Ray head answered at {host}:{port} within {timeout:g} s "
            f"({type(e).__name__}: {e}). Give the address of a running Ray head (`ray start --head` prints it), "
            "or address=None to start a local Ray"
        ) from None


def start_ray(
    n_workers: int | None, address: str | None, init_kwargs: Mapping[str, Any], task_options: Mapping[str, Any]
) -> RayExecutor:
    """The executor of `Scheduler.with_ray`: on a Ray it starts (or connects to), or on the one running here."""
    ray = import_ray()
    if ray.is_initialized():
        if n_workers is not None or address is not None or init_kwargs:
            raise RuntimeError(
                "Ray is running in this process already (someone called ray.init), so Scheduler.with_ray("
                f"n_workers={n_workers!r}, address={address!r}, ...) cannot start or connect to another. Use "
                "Scheduler.with_ray() without arguments to run on it (it stays yours to shut down), or call "
                "ray.shutdown() first"
            )
        executor = RayExecutor.__new__(RayExecutor)
        executor._init(num_cpus=None, memory=None, options=task_options, session=None)
        return executor
    kwargs: dict[str, Any] = {"include_dashboard": False}
    if address is None:
        kwargs["address"] = "local"  # never RAY_ADDRESS's cluster: a Ray of our own
        if n_workers is not None:
            kwargs["num_cpus"] = n_workers
    else:
        if n_workers is not None:
            raise ValueError(
                f"with_ray(n_workers={n_workers!r}, address={address!r}): n_workers sizes a local Ray that "
                "with_ray starts; a cluster at an address has its workers already. Give one of them"
            )
        if address not in ("auto", "local"):
            _check_reachable(address, CONNECT_TIMEOUT)
        kwargs["address"] = address
        kwargs.pop("include_dashboard")  # a setting of the head, not of a process that connects
    kwargs.update(init_kwargs)
    session = RaySession(kwargs)
    try:
        session.start()
    except ConnectionError as e:  # something answered at the address, but no Ray head (Ray gives up after ~20 s)
        causes = f"{e} {e.__cause__ or ''} {e.__context__ or ''}"
        hint = (
            "The cluster uses token authentication and this process has no (or another) token: set "
            "RAY_AUTH_MODE=token and give it the cluster's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token)"
            if "InvalidAuthToken" in causes or "AuthenticationError" in causes
            else "Give the address of a running Ray head (`ray start --head` prints it), or address=None to start "
            "a local Ray"
        )
        raise ConnectionError(
            f"with_ray(address={address!r}): Ray could not connect to a Ray head there ({e}). {hint}"
        ) from e
    executor = RayExecutor.__new__(RayExecutor)
    try:
        executor._init(num_cpus=None, memory=None, options=task_options, session=session)
    except BaseException:
        session.stop()
        raise
    return executor
