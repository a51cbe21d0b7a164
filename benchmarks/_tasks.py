"""Functions the benchmarks run in worker processes (importable, so both sides pickle them by reference)."""


def noop() -> None:
    return None
