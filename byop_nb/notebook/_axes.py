"""The numbers on the Dashboard's plot axes: round ranges, short tick labels, and which points get drawn.

Pure functions of numbers (no matplotlib): `PlotRenderer` (`plots.py`) grows an
axis's limits with `round_range` and writes its labels with `tick_labels`; every
panel draws at most about `MAX_POINTS` points of a line, chosen by `picks`.
"""

from __future__ import annotations

import math

MAX_POINTS = 600  # a panel is a few hundred pixels wide: more points than pixels only cost drawing time
X_TICKS = 6  # tick marks per axis, at fixed fractions of it (the labels say what they stand for)
Y_TICKS = 5


def round_range(low: float, high: float, intervals: int = Y_TICKS - 1) -> tuple[float, float]:
    """The narrowest range holding [low, high] whose ticks (at `intervals` fixed fractions) fall on round
    numbers: its step is 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten, and it starts at a
    multiple of it. An accuracy between 0.1 and 0.98 gets 0 to 1, not -0.4 to 1.2. Limits that grow in
    such steps change now and then, not at every new point."""
    power = 10.0 ** math.floor(math.log10(max(high - low, 1e-12) / intervals))
    for factor in (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0):
        step = factor * power
        start = math.floor(low / step + 1e-9) * step
        if start + intervals * step >= high - 1e-12 * max(1.0, abs(high)):
            return start, start + intervals * step
    return low, high  # (not reached: a step of 25 powers always holds the range)


def tick_labels(low: float, high: float, n: int) -> list[str]:
    """`n` labels for ticks evenly spaced from `low` to `high`, short and each different from the others:
    0.3, 1.5, 2500, 12k, 1.5M; as many decimals as the step needs, so that each label says its tick's
    value (0, 0.25, 0.5, not 0, 0.2, 0.5) and no two are alike (0.5431, 0.5432, not 0.543 twice).

    ```python
    from byop_nb.notebook._axes import tick_labels
    assert tick_labels(0.0, 1.0, 5) == ["0", "0.25", "0.5", "0.75", "1"]
    assert tick_labels(0.5431, 0.5435, 5) == ["0.5431", "0.5432", "0.5433", "0.5434", "0.5435"]
    ```
    """
    values = [low + (high - low) * i / (n - 1) for i in range(n)]
    size = max(abs(low), abs(high))
    scale, suffix = (1e6, "M") if size >= 1e6 else (1e3, "k") if size >= 1e4 else (1.0, "")
    step = abs(high - low) / (n - 1) / scale
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    while decimals < 12 and abs(round(step, decimals) - step) > step * 1e-6:  # 0.25 needs 2, 1.5 needs 1
        decimals += 1
    labels: list[str] = []
    for extra in range(4):  # (labels the step tells apart are unique already; this is a safety net)
        labels = [number_text(v / scale, decimals + extra) for v in values]
        labels = [text + suffix if text != "0" else text for text in labels]
        if len(set(labels)) == n:
            break
    return labels


def number_text(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def picks(n: int) -> range | list[int]:
    """The indices of at most about `MAX_POINTS` of `n` points, evenly spaced, always with the last one."""
    if n <= MAX_POINTS:
        return range(n)
    step = math.ceil(n / MAX_POINTS)
    return [*range(0, n - 1, step), n - 1]
