"""Events: named things that happen, and the callbacks that react to them.

An [`EventManager`][byop_nb.events.EventManager] keeps, per event, the callbacks
subscribed to it and the number of times the event was emitted. Emitting calls
the callbacks in registration order, in the thread that emits.

```python
from byop_nb.events import Event, EventManager

HELLO: Event[int, str] = Event("hello")
manager = EventManager(name="manager")

@manager.subscriber(HELLO)
def greet(n: int, who: str) -> None:
    print(n, who)

manager.emit(HELLO, 1, "world")   # prints: 1 world
assert manager.counts == {HELLO: 1}
```

This module imports nothing else from `byop_nb`; it is the hot path of the
engine (every submitted call emits a few events), so `emit` keeps a fast path
for events whose callbacks have no options.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Hashable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from byop_nb import _jupyter

__all__ = ["Event", "CountedAs", "EventManager", "Subscriber"]

P = ParamSpec("P")
C = TypeVar("C", bound=Callable[..., Any])
R = TypeVar("R")
F0 = TypeVar("F0", bound=Callable[[], Any])


class Event(Generic[P]):
    """A named event, compared and hashed by identity.

    The type parameters are the arguments emitted with the event, so mypy can
    check that callbacks subscribed to it accept them:

    ```python
    from byop_nb.events import Event

    USER_JOINED: Event[str] = Event("user-joined")
    ```

    Two `Event("x")` objects are different events; keep the one you made.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Event name must be a non-empty str, got {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"Event({self.name!r})"

    def __str__(self) -> str:
        return self.name


class CountedAs(Event[P]):
    """An event with callbacks of its own that is counted as another: equal to it, with its hash.

    For a second view of one happening with other arguments: `Task.F_RETURNED`
    (`(future, result)`) is counted as `Task.RETURNED` (`(result)`), so a `counts`
    dict has one entry for both, and `counts[Task.F_RETURNED]` reads it. Subscribe to
    it through its own subscriber (`task.on_f_returned`), whose manager keeps it
    apart from the event it is counted as.

    ```python
    from byop_nb.events import CountedAs, Event

    RETURNED: Event[[int]] = Event("returned")
    F_RETURNED: CountedAs[[object, int]] = CountedAs("future-returned", RETURNED)
    assert {RETURNED: 1} == {RETURNED: 1, F_RETURNED: 1}
    ```
    """

    __slots__ = ("counted_as",)

    def __init__(self, name: str, counted_as: Event[Any]) -> None:
        super().__init__(name)
        self.counted_as = counted_as

    def __eq__(self, other: object) -> bool:
        return other is self or other is self.counted_as

    def __hash__(self) -> int:
        return hash(self.counted_as)


def _positive_int(option: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option}= must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{option}= must be a positive int (1 or more), got {value!r}")
    return value


def _takes_arguments(callback: Callable[..., Any]) -> bool:
    """False only for a callback that provably takes no parameters at all."""
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # builtins without a signature
        return True
    return bool(signature.parameters)


def _identity(callback: Callable[..., Any], name: str | None) -> Hashable:
    """What makes two registrations "the same callback" on one event.

    Re-running a notebook cell defines a new function object with the same
    module and qualified name; it must replace the old registration instead of
    doubling it. Lambdas are told apart by their code, closures made inside a
    function (``<locals>``), bound methods and other callables by identity.
    """
    if name is not None:
        return ("name", name)
    if isinstance(callback, types.FunctionType):
        qualname = callback.__qualname__
        if "<locals>" not in qualname:
            if qualname.endswith("<lambda>"):
                code = callback.__code__
                return ("lambda", callback.__module__, code.co_code, code.co_consts, code.co_names)
            return ("def", callback.__module__, qualname)
    try:
        hash(callback)
    except TypeError:
        return ("id", id(callback))
    return ("object", callback)


def _cell_run() -> tuple[str, int] | None:
    """The notebook cell being run now (see `byop_nb._jupyter.cell_run`)."""
    return _jupyter.cell_run()


def _callback_name(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


class _Handler:
    """One registration of a callback on an event, with its options."""

    __slots__ = (
        "callback",
        "calls",
        "cell",
        "every",
        "key",
        "limit",
        "name",
        "repeat",
        "seen",
        "takes_args",
        "when",
    )

    def __init__(
        self,
        callback: Callable[..., Any],
        *,
        name: str | None,
        when: Callable[[], bool] | None,
        limit: int | None,
        repeat: int,
        every: int,
    ) -> None:
        self.callback = callback
        self.key = _identity(callback, name)
        self.name = name if name is not None else _callback_name(callback)
        self.when = when
        self.limit = limit
        self.repeat = repeat
        self.every = every
        self.takes_args = _takes_arguments(callback)
        self.seen = 0
        self.calls = 0
        self.cell: tuple[str, int] | None = None  # the notebook cell run it was registered from

    def describe(self) -> str:
        """The name and the options that are set, e.g. `show (every=2, limit=5)`."""
        options = [
            f"{option}={value}"
            for option, value, default in (
                ("when", getattr(self.when, "__qualname__", self.when), None),
                ("limit", self.limit, None),
                ("repeat", self.repeat, 1),
                ("every", self.every, 1),
            )
            if value != default
        ]
        return f"{self.name} ({', '.join(options)})" if options else self.name

    @property
    def plain(self) -> bool:
        """No options, takes the event's arguments: eligible for the fast path."""
        return self.takes_args and self.when is None and self.limit is None and self.repeat == 1 and self.every == 1

    def fire(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.seen += 1
        if self.every != 1 and (self.seen - 1) % self.every:
            return
        if self.when is not None and not self.when():
            return
        for _ in range(self.repeat):
            if self.limit is not None and self.calls >= self.limit:
                return
            self.calls += 1
            if self.takes_args:
                self.callback(*args, **kwargs)
            else:
                self.callback()


def _name_the_callback(error: BaseException, callback: str, event: Hashable, manager: str) -> None:
    """Mark `error` with the callback and event that raised it (the innermost emission's), as
    `error.byop_nb_raised_by = (callback, event, manager name)`, for the scheduler's note."""
    if isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit)) or hasattr(error, "byop_nb_raised_by"):
        return
    try:
        error.byop_nb_raised_by = (callback, str(event), manager)  # type: ignore[attr-defined]
    except AttributeError:  # exception types without a __dict__
        pass


def _explain_mismatch(
    error: TypeError, callback: Callable[..., Any], event: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Add a note to `error` when it came from calling `callback` with the wrong arguments."""
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        error.add_note(
            f"byop_nb: callback {_callback_name(callback)}{signature} is subscribed to {event!r} "
            f"but cannot take the arguments it was emitted with: ({shown}). Give the callback "
            "parameters that match the event, or no parameters at all."
        )


class EventManager:
    """Keeps callbacks per event, calls them on `emit`, and counts emissions.

    Args:
        name: a name for logs and reprs.

    Example:
        ```python
        from byop_nb.events import EventManager

        manager = EventManager(name="demo")
        seen = []
        manager.on("hello", seen.append)
        manager.emit("hello", 1)
        assert seen == [1] and manager.counts == {"hello": 1}
        ```
    """

    def __init__(self, name: str = "event-manager") -> None:
        self.name = name
        self.counts: dict[Hashable, int] = {}
        """How many times each event was emitted; only events emitted at least once appear."""
        self._handlers: dict[Hashable, list[_Handler]] = {}
        # What `emit` does for each event that has handlers, found with one lookup: the callbacks
        # to call directly while every handler of the event is plain (no options, takes the event's
        # arguments), else None (through the handlers). An event without handlers is absent.
        self._fast: dict[Hashable, tuple[Callable[..., Any], ...] | None] = {}
        # The Events this manager made subscribers for, by name: a str of one of these names is a mistake.
        self._named: dict[str, Event[Any]] = {}

    def __repr__(self) -> str:
        return f"EventManager(name={self.name!r}, events={len(self._handlers)})"

    # -- subscribing -------------------------------------------------------
    @overload
    def on(
        self,
        event: Event[P],
        callback: Callable[P, Any],
        *,
        name: str | None = ...,
        when: Callable[[], bool] | None = ...,
        limit: int | None = ...,
        repeat: int = ...,
        every: int = ...,
    ) -> Callable[P, Any]: ...

    @overload
    def on(
        self,
        event: Hashable,
        callback: C,
        *,
        name: str | None = ...,
        when: Callable[[], bool] | None = ...,
        limit: int | None = ...,
        repeat: int = ...,
        every: int = ...,
    ) -> C: ...

    def on(
        self,
        event: Hashable,
        callback: Callable[..., Any],
        *,
        name: str | None = None,
        when: Callable[[], bool] | None = None,
        limit: int | None = None,
        repeat: int = 1,
        every: int = 1,
    ) -> Callable[..., Any]:
        """Subscribe `callback` to `event`; returns `callback` unchanged.

        Args:
            event: any hashable, usually an [`Event`][byop_nb.events.Event].
            callback: called with the event's arguments, or with none when it
                takes no parameters at all.
            name: the registration's name, for `remove()`; registering under a
                name already on the event replaces that registration.
            when: a zero-argument predicate checked at each emission (after the
                emission was counted); the callback runs only when it is true.
            limit: call the callback at most this many times in total.
            repeat: call the callback this many times per emission.
            every: call only on emissions 1, 1 + every, 1 + 2*every, ... counted
                from when the callback was subscribed.

        Registering the same definition again (a re-run notebook cell defines a
        function with the same module and qualified name, or an identical
        lambda) replaces the earlier registration in place, so callbacks never
        double. Two different lambdas, closures made inside a function and
        bound methods of different objects are distinct.

        In a Jupyter kernel whose frontend names its cells (JupyterLab, Notebook
        7, VS Code send a cell id), a cell run again first drops what its earlier
        run registered on this manager: an edited lambda replaces the old one,
        and a renamed function no longer leaves the old name registered.

        Raises:
            TypeError: `callback` or `when` is not callable, an option is not an int, or
                `event` is a str naming one of this manager's Events (which a str never matches).
            ValueError: `limit`, `repeat` or `every` is less than 1.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        if type(event) is str and event in self._named:
            raise TypeError(
                f"{event!r} is the name of the event {self._named[event]!r} of {self.name}, and events are "
                "compared by identity: a callback subscribed to the str would never be called. Subscribe to the "
                "Event itself, e.g. event_manager.on(Scheduler.STARTED, callback), or use its subscriber "
                "(scheduler.on_start(callback), task.on_returned(callback), ...)"
            )
        if when is not None and not callable(when):
            raise TypeError(f"when= must be a callable taking no arguments and returning a bool, got {when!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name= must be a str, got {name!r}")
        handler = _Handler(
            callback,
            name=name,
            when=when,
            limit=_positive_int("limit", limit),
            repeat=_positive_int("repeat", repeat) or 1,
            every=_positive_int("every", every) or 1,
        )
        cell = handler.cell = _cell_run()
        if cell is not None:
            self._forget_earlier_runs_of(cell)
        handlers = self._handlers.setdefault(event, [])
        for i, existing in enumerate(handlers):
            if existing.key == handler.key:
                handlers[i] = handler
                break
        else:
            handlers.append(handler)
        self._refresh(event)
        return callback

    def _forget_earlier_runs_of(self, cell: tuple[str, int]) -> None:
        """Remove what an earlier run of this notebook cell registered here: the cell is run again."""
        cell_id, run = cell
        for event, handlers in list(self._handlers.items()):
            kept = [h for h in handlers if h.cell is None or h.cell[0] != cell_id or h.cell[1] == run]
            if len(kept) != len(handlers):
                self._handlers[event] = kept
                self._refresh(event)

    def subscriber(self, event: Event[P]) -> Subscriber[P]:
        """A [`Subscriber`][byop_nb.events.Subscriber] for `event` on this manager.

        ```python
        from byop_nb.events import Event, EventManager

        USER_JOINED: Event[str] = Event("user-joined")
        manager = EventManager(name="event_manager")
        on_user_joined = manager.subscriber(USER_JOINED)

        @on_user_joined
        def print_hello(username: str) -> None:
            print(f"hello {username}, welcome!")
        ```
        """
        if isinstance(event, Event):
            self._named.setdefault(event.name, event)
        return Subscriber(self, event)

    def remove(self, name: str, event: Hashable | None = None) -> bool:
        """Remove the registrations named `name` (from `event` only, if given).

        A registration's name is its `name=` option, or else the callback's
        qualified name. Returns whether anything was removed.
        """
        removed = False
        events = [event] if event is not None else list(self._handlers)
        for ev in events:
            handlers = self._handlers.get(ev)
            if not handlers:
                continue
            kept = [h for h in handlers if h.name != name]
            if len(kept) != len(handlers):
                removed = True
                self._handlers[ev] = kept
                self._refresh(ev)
        return removed

    def remove_callback(self, callback: Callable[..., Any], event: Hashable | None = None) -> bool:
        """Remove every registration of the `callback` object itself."""
        removed = False
        events = [event] if event is not None else list(self._handlers)
        for ev in events:
            handlers = self._handlers.get(ev, [])
            kept = [h for h in handlers if h.callback is not callback]
            if len(kept) != len(handlers):
                removed = True
                self._handlers[ev] = kept
                self._refresh(ev)
        return removed

    def adopt(self, other: EventManager) -> None:
        """Take over `other`'s registrations (with their options and counts of calls so far), after this
        manager's own; a registration this manager already has (the same callback) is kept as it is.

        A Task created again under the same name (its notebook cell run again) adopts the callbacks of
        the task it replaces.
        """
        for event, handlers in other._handlers.items():
            mine = self._handlers.setdefault(event, [])
            keys = {h.key for h in mine}
            mine.extend(h for h in handlers if h.key not in keys)
            self._refresh(event)

    def registrations(self) -> dict[Hashable, list[str]]:
        """Each event's registrations as text, in call order: the name and the options that are set.

        ```python
        manager.on("tick", print, every=2)
        manager.registrations()     # {"tick": ["print (every=2)"]}
        ```
        """
        described: dict[Hashable, list[str]] = {}
        for event, handlers in self._handlers.items():
            if handlers:
                described[event] = [h.describe() for h in handlers]
        return described

    def callbacks(self, event: Hashable) -> list[Callable[..., Any]]:
        """The callbacks subscribed to `event`, in the order they will be called."""
        return [h.callback for h in self._handlers.get(event, [])]

    def forward(self, frm: Hashable, to: Hashable) -> None:
        """Emit `to` with the same arguments each time `frm` is emitted."""

        def _forward(*args: Any, **kwargs: Any) -> None:
            self.emit(to, *args, **kwargs)

        self.on(frm, _forward, name=f"forward {frm!r} -> {to!r}")

    def _refresh(self, event: Hashable) -> None:
        handlers = self._handlers.get(event, [])
        if not handlers:
            self._fast.pop(event, None)
        elif all(h.plain for h in handlers):
            self._fast[event] = tuple(h.callback for h in handlers)
        else:
            self._fast[event] = None

    # -- emitting ----------------------------------------------------------
    def emit(self, event: Hashable, *args: Any, **kwargs: Any) -> None:
        """Count one emission of `event` and call its callbacks in registration order.

        An exception raised by a callback propagates to the caller of `emit`
        and the remaining callbacks of this emission are not called. When the
        callback could not take the arguments, the `TypeError` carries a note
        naming the callback, its signature and the arguments.
        """
        counts = self.counts
        counts[event] = counts.get(event, 0) + 1
        # One lookup whatever the event has: most events of a call have no handlers.
        fast = self._fast.get(event, ())
        if fast is not None:
            for callback in fast:
                try:
                    callback(*args, **kwargs)
                except BaseException as e:
                    if isinstance(e, TypeError):
                        _explain_mismatch(e, callback, event, args, kwargs)
                    _name_the_callback(e, _callback_name(callback), event, self.name)
                    raise
            return
        for handler in tuple(self._handlers[event]):
            try:
                handler.fire(args, kwargs)
            except BaseException as e:
                if isinstance(e, TypeError) and handler.takes_args:
                    _explain_mismatch(e, handler.callback, event, args, kwargs)
                _name_the_callback(e, handler.name, event, self.name)
                raise


class _Decorator(Protocol[P]):
    """What `subscriber(name=..., ...)` returns: a decorator with the Subscriber's type checks."""

    @overload
    def __call__(self, callback: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def __call__(self, callback: F0, /) -> F0: ...


class Subscriber(Generic[P]):
    """Subscribes callbacks to one event of one manager: `scheduler.on_start`, `task.on_returned`, ...

    Use it as a plain decorator, a decorator with options, or a function:

    ```python
    from byop_nb.events import Event, EventManager

    manager = EventManager(name="demo")
    on_tick = manager.subscriber(Event("tick"))

    @on_tick
    def a() -> None: ...

    @on_tick(limit=1, name="only-once")
    def b() -> None: ...

    on_tick(print)
    on_tick.remove("only-once")
    ```
    """

    __slots__ = ("event", "manager")

    def __init__(self, manager: EventManager, event: Event[P]) -> None:
        self.manager = manager
        self.event = event

    def __repr__(self) -> str:
        return f"Subscriber({self.event!r}, {self.manager.name!r})"

    # A callback taking no parameters may subscribe to any event (and keeps its type, so
    # decorators stack); any other callback must take the event's arguments, which mypy checks.
    @overload
    def __call__(
        self,
        callback: Callable[P, R],
        /,
        *,
        name: str | None = ...,
        when: Callable[[], bool] | None = ...,
        limit: int | None = ...,
        repeat: int = ...,
        every: int = ...,
    ) -> Callable[P, R]: ...

    @overload
    def __call__(
        self,
        callback: F0,
        /,
        *,
        name: str | None = ...,
        when: Callable[[], bool] | None = ...,
        limit: int | None = ...,
        repeat: int = ...,
        every: int = ...,
    ) -> F0: ...

    @overload
    def __call__(
        self,
        callback: None = None,
        /,
        *,
        name: str | None = ...,
        when: Callable[[], bool] | None = ...,
        limit: int | None = ...,
        repeat: int = ...,
        every: int = ...,
    ) -> _Decorator[P]: ...

    def __call__(
        self,
        callback: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        when: Callable[[], bool] | None = None,
        limit: int | None = None,
        repeat: int = 1,
        every: int = 1,
    ) -> Any:
        """Subscribe `callback` (see [`EventManager.on`][byop_nb.events.EventManager.on] for the options).

        Returns the callback itself, so decorators stack; called with only
        options, returns a decorator.
        """
        options = {"name": name, "when": when, "limit": limit, "repeat": repeat, "every": every}
        if callback is None:
            # Validate now so a bad option fails at the decorator line.
            _positive_int("limit", limit)
            _positive_int("repeat", repeat)
            _positive_int("every", every)

            def decorator(fn: C) -> C:
                self.manager.on(self.event, fn, **options)  # type: ignore[arg-type]
                return fn

            return decorator
        return self.manager.on(self.event, callback, **options)  # type: ignore[arg-type]

    def remove(self, name: str) -> bool:
        """Remove this event's registrations named `name`; returns whether any was removed."""
        return self.manager.remove(name, self.event)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Emit this subscriber's event with `args` on its manager."""
        self.manager.emit(self.event, *args, **kwargs)

    @property
    def count(self) -> int:
        """How many times the event was emitted."""
        return self.manager.counts.get(self.event, 0)
