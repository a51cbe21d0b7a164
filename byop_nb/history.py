"""Recording one row per call, and turning the rows into pandas DataFrames.

(Minimal version: a fuller one with journals and dtypes is on its way.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["History"]


class History:
    """The calls of one task, one row each, in the order they ended."""

    def __init__(self, name: str = "history") -> None:
        self.name = name
        self.rows: list[dict[str, Any]] = []

    def record(self, row: dict[str, Any]) -> None:
        """Append one row (O(1))."""
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def df(self) -> pd.DataFrame:
        """The rows as a DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)
