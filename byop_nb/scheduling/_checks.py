"""Checks of the options users pass to the scheduling API: one wording for each kind of mistake."""

from __future__ import annotations

from typing import Any

__all__ = ["positive_int", "check_run_options"]


def positive_int(option: str, value: Any) -> int | None:
    """`value` when it is a positive int or None; else a TypeError/ValueError naming `option` and the value."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option}= must be a positive int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{option}= must be a positive int or None, got {value!r}")
    return value


def check_run_options(timeout: float | None, end_on_empty: bool, wait: bool) -> None:
    """The options of `run`, `start` and `async_run`, checked at the call."""
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout= must be a number of seconds or None, got {timeout!r}")
        if not timeout > 0:
            raise ValueError(f"timeout= must be positive seconds or None, got {timeout!r}")
    for option, value in (("end_on_empty", end_on_empty), ("wait", wait)):
        if not isinstance(value, bool):
            raise TypeError(f"{option}= must be True or False, got {value!r}")
