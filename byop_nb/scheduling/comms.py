"""Comm and CommTask: two-way messages between a running call and the scheduler.

A [`CommTask`][byop_nb.scheduling.CommTask] passes a [`Comm`][byop_nb.scheduling.Comm]
as the first argument of its function. In the worker, `comm.send(obj)` emits
`MESSAGE` in the main process and `comm.request(obj)` emits `REQUEST` and waits
for a callback to answer with `msg.respond(x)`:

```python
from byop_nb.scheduling import Comm, CommTask, Scheduler

def train(comm: Comm, epochs: int) -> str:
    with comm:                                  # CLOSE is emitted when the block ends
        for epoch in range(epochs):
            comm.send({"epoch": epoch})         # -> on_message
        lr = comm.request("learning rate?")     # -> on_request; waits for the answer
    return f"done with lr={lr}"

scheduler = Scheduler.with_processes(2)
task = CommTask(train, scheduler)

@scheduler.on_start
def launch() -> None:
    task(3)

@task.on_message
def progress(msg: Comm.Msg) -> None:
    print(msg.data)

@task.on_request
def answer(msg: Comm.Msg) -> None:
    msg.respond(0.01)

scheduler.run()
```

How it works: each CommTask listens on a Unix socket in a private temporary
directory while it has calls running, and, on a dask cluster whose scheduler
listens on a network address (its workers may be on other machines: Slurm
jobs, a remote cluster), on TCP at that address of this machine too. A call's
`Comm` connects the first time it is used, from whatever process or thread
runs the function (a process pool worker, pynisher's limited child, a thread,
a dask worker here or elsewhere): through the Unix socket when it can, else
through TCP. Every connection proves with its first bytes that it was given
the task's secret token, before anything it sends is unpickled. The main end
of every connection is a non-blocking socket read by the scheduler's event
loop (`loop.add_reader`), so callbacks run in the loop's thread like every
other event and the loop never waits on a worker. When a call ends, whatever
it sent is read and emitted first, then `CLOSE`, then the Task's own
`DONE`/`RETURNED`/`EXCEPTION`/`CANCELLED` events; its connections are closed,
and the sockets are closed when no call of the task runs.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeAlias, TypeVar

from byop_nb._text import bounded_repr
from byop_nb.events import Event, Subscriber
from byop_nb.scheduling.comm._hub import _CallComms, _Conn, _Hub
from byop_nb.scheduling.comm._wire import ANSWER, CLOSE, MESSAGE, REFUSAL, REQUEST, CommError
from byop_nb.scheduling.comm._worker import Comm, _CommCall
from byop_nb.scheduling.engine._call import Call
from byop_nb.scheduling.task import Task, TaskOptions
from byop_nb.scheduling.workers._executors import SequentialExecutor
from byop_nb.scheduling.workers._network import tcp_host_for
from byop_nb.scheduling.workers._shipping import dumps

if TYPE_CHECKING:
    from typing import Unpack

    from byop_nb.scheduling.scheduler import Scheduler

__all__ = ["Comm", "CommError", "CommTask", "Msg"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_Kind = Literal["message", "request", "close"]

# The states of a request's Msg; every transition is a method of Msg.
_OPEN = "open"  # a request waiting for an answer
_ANSWERED = "answered"  # msg.respond(...) answered it
_REFUSED = "refused"  # nobody will answer (no on_request callback, or the run is finishing)
_NOT_A_REQUEST = "-"  # a "message" or "close" Msg


class Msg:
    """A message from a running call, as given to `on_message`, `on_request` and `on_close`.

    Attributes:
        kind: "message" (from `comm.send`), "request" (from `comm.request`) or
            "close" (the comm was closed or the call ended).
        data: the object the worker sent (None for "close").
        task: the [`CommTask`][byop_nb.scheduling.CommTask] of the call.
        future: the call's Future.

    Example:
        ```python
        @task.on_request
        def answer(msg: Comm.Msg) -> None:
            msg.respond(msg.data * 2)
        ```
    """

    __slots__ = ("_call", "_conn", "_request_id", "_state", "data", "future", "kind", "task")

    def __init__(
        self,
        kind: _Kind,
        data: Any,
        task: CommTask[Any, Any],
        future: Future[Any] | None,
        call: _CallComms,
        conn: _Conn | None = None,
        request_id: int = 0,
    ) -> None:
        self.kind: _Kind = kind
        self.data = data
        self.task = task
        self.future: Future[Any] | None = future
        self._call = call
        self._conn = conn
        self._request_id = request_id
        self._state = _OPEN if kind == "request" else _NOT_A_REQUEST

    def __repr__(self) -> str:
        return f"Msg({self.kind}, data={bounded_repr(self.data)}, task={self.task.name!r})"

    @property
    def args(self) -> tuple[Any, ...]:
        """The arguments the call was submitted with, as the caller gave them (a CommTask's Comm not
        among them); for a [`Trial.Task`][byop_nb.optimization.Trial.Task], `msg.args[0]` is the trial."""
        return self._call.owner.args

    @property
    def answered(self) -> bool:
        """Whether `respond` was called on this request."""
        return self._state == _ANSWERED

    @property
    def waiting(self) -> bool:
        """Whether this is a request that no one answered or refused yet, and whose worker may still
        wait for the answer (its call has not ended, nor its connection closed)."""
        return self._state == _OPEN and not self._gone()

    def _gone(self) -> bool:
        """The call ended, or the request's connection closed: nobody waits for an answer any more."""
        conn = self._conn
        return self._call.ended or (conn is not None and conn.closed)

    def respond(self, response: Any) -> None:
        """Answer this request: the worker's `comm.request(...)` returns `response`.

        Safe from any thread. Answering after the worker stopped waiting (the call
        ended, the request timed out, or it was refused because the run is
        finishing) does nothing.

        Raises:
            TypeError: this is not a request (a "message" or "close" message), or
                `response` cannot be pickled.
            RuntimeError: this request was answered already.
        """
        if self.kind != "request":
            raise TypeError(
                f"only requests can be answered, and this is a {self.kind!r} message; the worker sends "
                "requests with comm.request(...) and they arrive at on_request"
            )
        if self._state == _ANSWERED:
            raise RuntimeError(f"this request was answered already: {self!r}")
        if self._state != _OPEN or self._gone():
            return
        try:
            body = dumps((self._request_id, response))  # by value when its class is the notebook's
        except Exception as e:
            raise TypeError(f"msg.respond() needs a picklable answer, got {bounded_repr(response)}: {e}") from e
        self._close_request(_ANSWERED, ANSWER, body)

    def refuse(self, reason: str) -> None:
        """Tell the waiting worker that no answer will come: its `comm.request(...)` raises
        `CommError(reason)` (with `block=True`) or returns its `default`. Does nothing when the
        request was answered or refused already, or nobody waits any more.

        ```python
        @task.on_request
        def answer(msg: Comm.Msg) -> None:
            if msg.data != "learning rate?":
                msg.refuse(f"unknown request {msg.data!r}")
        ```

        Raises:
            TypeError: this is not a request.
        """
        if self.kind != "request":
            raise TypeError(f"only requests can be refused, and this is a {self.kind!r} message")
        if self._state == _OPEN and not self._gone():
            self._close_request(_REFUSED, REFUSAL, pickle.dumps((self._request_id, str(reason))))

    def _close_request(self, state: str, kind: int, body: bytes) -> None:
        self._state = state
        self._call.requests.pop(self._request_id, None)
        if self._conn is not None:
            self._conn.send(kind, body)


class CommTask(Task[P, R]):
    """A Task whose function gets a [`Comm`][byop_nb.scheduling.Comm] first, to talk with the scheduler.

    Takes every [`Task`][byop_nb.scheduling.Task] option (limits included).
    Calling it submits `function(comm, *args, **kwargs)` with a fresh Comm.

    Events (each with a [`Msg`][byop_nb.scheduling.comms.Msg]), in the order a
    call's worker sent them:

    * `MESSAGE(msg)` `on_message`: the worker called `comm.send(obj)`.
    * `REQUEST(msg)` `on_request`: the worker called `comm.request(obj)` and
      waits for `msg.respond(answer)`. A request that no callback answered is
      refused when the run is finishing (`stop()` or a timeout), so a waiting
      worker never holds the run; with no `on_request` callback at all it is
      refused at once.
    * `CLOSE(msg)` `on_close`: the comm was closed (`with comm:` ended,
      `comm.close()`) or the call ended; exactly once per submitted call, after
      its last MESSAGE/REQUEST and before its DONE or CANCELLED.

    Works with thread pools, process pools (any start method), and dask
    clusters, their workers on this machine or on others (dask-jobqueue's
    Slurm jobs, a remote cluster): on a dask cluster whose scheduler listens on
    a network address, the task also listens on TCP at the address of this
    machine that the workers reach (see `Comm`). A worker that cannot connect
    (a firewall) fails its call with a `CommError` naming the address it
    tried. The sequential executor runs the function inside the scheduler's
    own thread, where nobody could answer, so a CommTask refuses it when
    created.

    Example:
        ```python
        from byop_nb.scheduling import Comm, CommTask, Scheduler

        def count(comm: Comm, n: int) -> int:
            for i in range(n):
                comm.send(i)
            return n

        scheduler = Scheduler.with_threads(1)
        task = CommTask(count, scheduler)
        seen = []

        @scheduler.on_start
        def launch() -> None:
            task(3)

        @task.on_message
        def collect(msg: Comm.Msg) -> None:
            seen.append(msg.data)

        scheduler.run()
        assert seen == [0, 1, 2]
        ```
    """

    Msg: TypeAlias = Msg
    """The message class (`CommTask.Msg` is `Comm.Msg`), for annotating callbacks."""

    _ARGS_GIVEN_BY_TASK = 1  # the Comm: the function's first parameter is not the caller's
    _COMM_REQUIRED = True  # refuse the sequential executor when created (a Trial.Task only refuses a comm's use)

    MESSAGE: Event[[Msg]] = Event("comm-message")
    """The worker sent a message: `on_message(msg)`."""
    REQUEST: Event[[Msg]] = Event("comm-request")
    """The worker asks and waits: `on_request(msg)`, answer with `msg.respond(x)`."""
    CLOSE: Event[[Msg]] = Event("comm-close")
    """The call's comm closed (by the worker, or because the call ended): `on_close(msg)`."""

    def __init__(
        self,
        function: Callable[Concatenate[Comm, P], R],
        scheduler: Scheduler,
        **options: Unpack[TaskOptions],
    ) -> None:
        if self._COMM_REQUIRED and isinstance(getattr(scheduler, "executor", None), SequentialExecutor):
            raise TypeError(
                "a CommTask cannot run on the sequential executor: it runs the function inside the "
                "scheduler's own thread, so nothing could receive its messages or answer its requests. "
                "For debugging, use Scheduler.with_threads(1) instead."
            )
        super().__init__(function, scheduler, **options)  # type: ignore[arg-type]  # the Comm is given at the call
        em = self.event_manager
        self.on_message: Subscriber[[Msg]] = em.subscriber(self.MESSAGE)
        self.on_request: Subscriber[[Msg]] = em.subscriber(self.REQUEST)
        self.on_close: Subscriber[[Msg]] = em.subscriber(self.CLOSE)
        self._hub: _Hub | None = None
        self._tcp_host_of: tuple[Any, str | None] | None = None  # (executor, its workers' way here)
        # Registered by name, so a task that replaces this one (same name) replaces these too.
        scheduler.event_manager.on(
            scheduler.FINISHING, self._refuse_waiting, name=f"byop_nb.CommTask({self.name}): refuse requests"
        )
        scheduler.event_manager.on(
            scheduler.FINISHED, self._close_hub, name=f"byop_nb.CommTask({self.name}): close comms"
        )

    # -- the Task hooks (in the loop's thread) ---------------------------------------
    def _function_for(self, call: Call) -> Callable[..., Any]:
        """The function with a fresh Comm first."""
        return _CommCall(self.function, self._comm_for(call))

    def _comm_for(self, call: Call) -> Comm:
        """A fresh Comm for `call`; the call's comm state goes in `call.comm`.

        Only the hub's record of the call is made here: the worker's Comm connects the
        first time it is used, so a call that never uses it costs no connection.
        """
        scheduler = self.scheduler
        run = scheduler.latest_run
        assert run is not None  # the scheduler accepted the call: it runs
        hub = self._hub
        if hub is None or not hub.open or hub.run is not run:
            self._close_hub()
            hub = self._hub = _Hub(self._on_frame, run, scheduler.output, tcp_host=self._tcp_host())
        comms = call.comm = hub.new_call(call)
        return Comm(hub.address, hub.tcp_address, hub.token, comms.id, hub.host)

    def _emit(self, call: Call) -> None:
        """What the call sent is emitted first (MESSAGE, REQUEST), then CLOSE, then the Task's events."""
        try:
            self._end_comm(call.comm)
        finally:
            super()._emit(call)

    def _tcp_host(self) -> str | None:
        """The address the hub also listens on with TCP, or None when its Unix socket reaches every worker.

        Only dask and Ray executors can have workers on other machines. Their workers reach the
        dask scheduler, so the hub listens where they already reach this machine
        (`tcp_host_for`): the scheduler's own address when it runs here. Asked once per
        executor (a round trip to the dask scheduler).
        """
        executor = self.scheduler.executor
        if self._tcp_host_of is not None and self._tcp_host_of[0] is executor:
            return self._tcp_host_of[1]
        host = None
        if type(executor).__module__ == "distributed.cfexecutor":
            client = executor._client  # type: ignore[attr-defined]
            try:
                info = client.scheduler_info(n_workers=0)  # its own address; no list of workers needed
            except TypeError:  # distributed before 2025
                info = client.scheduler_info()
            address = info.get("address") or client.scheduler.address
            try:
                host = tcp_host_for(address)
            except OSError as e:
                raise CommError(
                    f"CommTask {self.name!r} found no address of this machine that the workers of the dask "
                    f"scheduler at {address!r} could reach ({type(e).__name__}: {e}); give the cluster an "
                    "address on a network its workers share with this machine (e.g. SLURMCluster(interface=...))"
                ) from e
        elif callable(getattr(executor, "comm_host", None)):  # a RayExecutor (Ray's nodes may be elsewhere)
            try:
                host = executor.comm_host()  # type: ignore[attr-defined]
            except OSError as e:
                raise CommError(
                    f"CommTask {self.name!r} found no address of this machine that the workers of "
                    f"{executor!r} could reach ({type(e).__name__}: {e})"
                ) from e
        self._tcp_host_of = (executor, host)
        return host

    # -- receiving (in the loop's thread) --------------------------------------
    def _on_frame(self, conn: _Conn, call: _CallComms | None, kind: int, body: bytes | memoryview) -> None:
        if call is None or call.closed:
            return  # nothing of a call is emitted after its CLOSE
        em = self.event_manager
        if kind == MESSAGE:
            em.emit(self.MESSAGE, Msg("message", self._loads(body, call), self, call.future, call))
        elif kind == REQUEST:
            request_id, data = self._loads(body, call)
            msg = Msg("request", data, self, call.future, call, conn, request_id)
            call.requests[request_id] = msg
            handled, answer = self._answer_own(call.owner, data)
            if handled:  # the task's own protocol (a Trial.Task's steps): never the user's callbacks
                msg.respond(answer)
                return
            em.emit(self.REQUEST, msg)
            if msg.waiting:
                if not em.callbacks(self.REQUEST):
                    msg.refuse(
                        f"CommTask {self.name!r} has no on_request callback, so nothing will answer this "
                        "request; subscribe one with @task.on_request and answer with msg.respond(...)"
                    )
                elif self.scheduler.state == "finishing":
                    msg.refuse(self._finishing_reason())
        elif kind == CLOSE:
            self._emit_close(call)
        else:
            conn.hub.drop(conn)

    def _answer_own(self, call: Call, data: Any) -> tuple[bool, Any]:
        """Hook: answer a request of the task's own protocol, or (False, None) to emit it as `REQUEST`.

        A subclass whose worker-side helpers talk through the call's comm (a Trial.Task's
        `trial.report_step` and `trial.should_prune`) answers their requests here, in the loop's
        thread, so that the user's `on_request` callbacks see only the user's own requests.
        """
        return False, None

    def _loads(self, body: bytes | memoryview, call: _CallComms) -> Any:
        try:
            return pickle.loads(body)
        except Exception as e:
            raise CommError(
                f"a message from call {call.id} of CommTask {self.name!r} could not be unpickled in the "
                f"main process ({type(e).__name__}: {e}); send objects whose classes the main process can "
                "import"
            ) from e

    def _emit_close(self, call: _CallComms) -> None:
        if call.closed:
            return
        call.closed = True
        self.event_manager.emit(self.CLOSE, Msg("close", None, self, call.future, call))

    def _finishing_reason(self) -> str:
        return (
            f"the scheduler is finishing (stop() or a timeout) and no callback of CommTask {self.name!r} "
            "answered this request; requests are answered only while the run goes on"
        )

    # -- ending (in the loop's thread) -----------------------------------------
    def _end_comm(self, call: _CallComms | None) -> None:
        if call is None:
            return
        hub = call.hub
        try:
            if hub.open:
                hub.drain(call)
            self._emit_close(call)
        finally:
            hub.end(call)
            if not hub.calls and hub is self._hub:
                self._close_when_idle(hub)

    def _refuse_waiting(self) -> None:
        hub = self._hub
        if hub is None:
            return
        reason = self._finishing_reason()
        for call in list(hub.calls.values()):
            for msg in list(call.requests.values()):
                msg.refuse(reason)

    def _close_when_idle(self, hub: _Hub) -> None:
        # Not at once: a callback of the call that just ended (on_done, on_returned) often submits
        # the next call, which can then use this listener. FINISHED closes it in any case.
        try:
            hub.loop.call_soon(self._close_if_idle, hub)
        except RuntimeError:  # the loop is closed
            self._close_hub()

    def _close_if_idle(self, hub: _Hub) -> None:
        if hub is self._hub and not hub.calls:
            self._close_hub()

    def _close_hub(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.close()


Comm.Msg = Msg  # the worker-side module cannot import this one
