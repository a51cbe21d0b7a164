"""Checks of the options users pass to the scheduling API: one wording for each kind of mistake."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias, TypedDict

__all__ = [
    "no_such_attribute",
    "positive_int",
    "check_run_options",
    "exception_policy",
    "byop_era_on_exception",
    "ByopEraRunOptions",
    "OnException",
    "Policy",
]

Policy: TypeAlias = Literal["continue", "end", "raise"]
OnException: TypeAlias = Policy | Mapping[type[BaseException], Policy]
_POLICIES = ("continue", "end", "raise")


def positive_int(option: str, value: Any) -> int | None:
    """`value` when it is a positive int or None; else a TypeError/ValueError naming `option` and the value."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option}= must be a positive int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{option}= must be a positive int or None, got {value!r}")
    return value


def check_run_options(
    timeout: float | None,
    end_on_empty: bool,
    wait: bool,
    on_exception: OnException = "continue",
    end_after_failures: int | None = None,
) -> None:
    """The options of `run`, `start` and `async_run`, checked at the call."""
    exception_policy(on_exception)
    positive_int("end_after_failures", end_after_failures)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout= must be a number of seconds or None, got {timeout!r}")
        if not timeout > 0:
            raise ValueError(f"timeout= must be positive seconds or None, got {timeout!r}")
    for option, value in (("end_on_empty", end_on_empty), ("wait", wait)):
        if not isinstance(value, bool):
            raise TypeError(f"{option}= must be True or False, got {value!r}")


class ByopEraRunOptions(TypedDict, total=False):
    """The byop-era run options, accepted by `run()`, `start()` and `async_run()` as aliases of `on_exception`."""

    end_on_exception: bool | None
    raises: bool | None


def byop_era_on_exception(on_exception: OnException, end_on_exception: bool | None, raises: bool | None) -> OnException:
    """The `on_exception` that the byop-era run options `end_on_exception=` / `raises=` stand for.

    The byop-era `run(end_on_exception=True, raises=True)` (its defaults) is
    `on_exception="raise"`; `raises=False` is `"end"` (the run ends with
    `ExitCode.EXCEPTION`, the exception in `scheduler.last_error`);
    `end_on_exception=False` is `"continue"` (`raises` then does nothing). Neither
    given: `on_exception` as it is. Both kinds given: a ValueError naming them.
    """
    if end_on_exception is None and raises is None:
        return on_exception
    for option, value in (("end_on_exception", end_on_exception), ("raises", raises)):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{option}= must be True or False (the byop-era alias of on_exception=), got {value!r}")
    if not (isinstance(on_exception, str) and on_exception == "continue"):
        raise ValueError(
            f"run() got on_exception={on_exception!r} and the byop-era end_on_exception={end_on_exception!r}, "
            f'raises={raises!r}, which stand for on_exception too; pass one of them: on_exception="raise" is '
            'end_on_exception=True, raises=True; "end" is raises=False; "continue" is end_on_exception=False'
        )
    if end_on_exception is False:
        return "continue"
    return "end" if raises is False else "raise"


def exception_policy(on_exception: OnException) -> Callable[[BaseException], Policy] | None:
    """What a run does when a call raises, as a function of the exception; None for "continue" always.

    A mapping is matched along the exception's class hierarchy, most specific
    class first; exceptions it does not match continue.
    """
    accepted = (
        'accepted: "continue", "end", "raise", or a mapping from exception types to these, '
        'e.g. {MemoryError: "end", ValueError: "raise"}'
    )
    if isinstance(on_exception, str):
        if on_exception not in _POLICIES:
            raise ValueError(f"on_exception={on_exception!r} is not a policy; {accepted}")
        if on_exception == "continue":
            return None
        policy: Policy = on_exception
        return lambda exception: policy
    if not isinstance(on_exception, Mapping):
        raise TypeError(f"on_exception={on_exception!r} is not a policy; {accepted}")
    for kind, value in on_exception.items():
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"on_exception has the key {kind!r}, which is not an exception type; {accepted}")
        if value not in _POLICIES:
            raise ValueError(f"on_exception[{kind.__name__}]={value!r} is not a policy; {accepted}")
    table = dict(on_exception)

    def choose(exception: BaseException) -> Policy:
        for cls in type(exception).__mro__:
            found = table.get(cls)
            if found is not None:
                return found
        return "continue"

    return choose


def no_such_attribute(owner: object, name: str) -> str:
    """The message for an attribute `owner` does not have: with the subscribers it does have, when
    `name` looks like one (the guide's `on_<event>` rule: `scheduler.on_started` means `on_start`)."""
    kind = type(owner).__name__
    message = f"{kind!r} object has no attribute {name!r}"
    if not name.startswith("on_"):
        return message
    import difflib

    subscribers = sorted(n for n in dir(owner) if n.startswith("on_") and not n.startswith("on__"))
    close = difflib.get_close_matches(name, subscribers, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return f"{message}{hint} The subscribers of a {kind}: {', '.join(subscribers)}"
