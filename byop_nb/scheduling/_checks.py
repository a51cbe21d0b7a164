"""Checks of the options users pass to the scheduling API: one wording for each kind of mistake."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias

__all__ = ["positive_int", "check_run_options", "exception_policy", "OnException", "Policy"]

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
    timeout: float | None, end_on_empty: bool, wait: bool, on_exception: OnException = "continue"
) -> None:
    """The options of `run`, `start` and `async_run`, checked at the call."""
    exception_policy(on_exception)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout= must be a number of seconds or None, got {timeout!r}")
        if not timeout > 0:
            raise ValueError(f"timeout= must be positive seconds or None, got {timeout!r}")
    for option, value in (("end_on_empty", end_on_empty), ("wait", wait)):
        if not isinstance(value, bool):
            raise TypeError(f"{option}= must be True or False, got {value!r}")


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
