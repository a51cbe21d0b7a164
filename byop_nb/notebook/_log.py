"""The Dashboard's log: the latest lines a background run's callbacks wrote, bounded.

[`LogLines`][byop_nb.notebook._log.LogLines] keeps the last `max_lines` lines
(each cut to `MAX_LINE_CHARS`) of the text handed over batch by batch, and
gives them as the `outputs` of an `ipywidgets.Output` (stream outputs, the
kernel-side state a notebook saves with its widgets). It needs no ipywidgets.

```python
from byop_nb.notebook._log import LogLines

log = LogLines(max_lines=2)
log.add([("stdout", "one\\ntwo\\n"), ("stderr", "three\\n")])
assert log.text() == "two\\nthree\\n" and log.n_lines == 3
assert log.outputs() == (
    {"output_type": "stream", "name": "stdout", "text": "two\\n"},
    {"output_type": "stream", "name": "stderr", "text": "three\\n"},
)
```
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

__all__ = ["LogLines", "MAX_LINE_CHARS"]

MAX_LINE_CHARS = 2000
"""A longer line is cut (a repr of a big object printed by a callback), with a note of its length."""


class LogLines:
    """The last `max_lines` lines written, each with its stream ("stdout" or "stderr")."""

    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines
        self._lines: collections.deque[list[str]] = collections.deque(maxlen=max_lines)  # [stream, text]
        self._open = False  # the last line has no newline yet: the next text of its stream goes on it
        self.n_lines = 0
        """Lines written since the log was made or cleared, the ones no longer kept included."""
        self.version = 0
        """Goes up with every change (a view redraws when it differs from the one it showed)."""

    def add(self, chunks: Iterable[tuple[str, str]]) -> None:
        """Add `(stream, text)` chunks in the order they were written."""
        lines = self._lines
        for stream, text in chunks:
            if not text:
                continue
            parts = text.split("\n")
            last = parts.pop()  # "" when the text ended with a newline
            pieces = [part + "\n" for part in parts] + ([last] if last else [])
            for piece in pieces:
                if self._open and lines and lines[-1][0] == stream:
                    lines[-1][1] = _joined(lines[-1][1], piece)
                else:
                    lines.append([stream, _cut(piece)])
                    self.n_lines += 1
                self._open = not piece.endswith("\n")
            self.version += 1

    def clear(self) -> None:
        self._lines.clear()
        self._open = False
        self.n_lines = 0
        self.version += 1

    def __len__(self) -> int:
        return len(self._lines)

    def text(self) -> str:
        """The lines kept, as one text."""
        return "".join(text for _, text in self._lines)

    def outputs(self) -> tuple[dict[str, str], ...]:
        """The lines kept as the stream outputs of an `ipywidgets.Output`, a stream's consecutive lines in one."""
        outputs: list[dict[str, str]] = []
        for stream, text in self._lines:
            if outputs and outputs[-1]["name"] == stream:
                outputs[-1]["text"] += text
            else:
                outputs.append({"output_type": "stream", "name": stream, "text": text})
        return tuple(outputs)

    def title(self) -> str:
        """What the pane's title says: how many lines, and how many of them are still kept."""
        if not self.n_lines:
            return "log: empty"
        unit = "line" if self.n_lines == 1 else "lines"
        if self.n_lines > len(self._lines):
            return f"log: {self.n_lines} {unit} (the last {len(self._lines)} kept)"
        return f"log: {self.n_lines} {unit}"


_CUT = f" [... cut: a line keeps at most {MAX_LINE_CHARS} characters]"


def _cut(text: str) -> str:
    if len(text) <= MAX_LINE_CHARS:
        return text
    return text[:MAX_LINE_CHARS] + _CUT + ("\n" if text.endswith("\n") else "")


def _joined(line: str, piece: str) -> str:
    """An open line written on: a line cut already drops the rest of its text (but not its end)."""
    if line.endswith(_CUT):
        return line + ("\n" if piece.endswith("\n") else "")
    return _cut(line + piece)
