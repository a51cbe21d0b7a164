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
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from byop_nb.scheduling.scheduler import Scheduler

__all__ = ["LogLines", "SchedulerLog", "scheduler_log", "MAX_LINE_CHARS"]

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

    def keep(self, max_lines: int) -> None:
        """Keep at least the last `max_lines` lines from now on (never fewer than before)."""
        if max_lines > self.max_lines:
            self.max_lines = max_lines
            self._lines = collections.deque(self._lines, maxlen=max_lines)

    def clear(self) -> None:
        self._lines.clear()
        self._open = False
        self.n_lines = 0
        self.version += 1

    def __len__(self) -> int:
        return len(self._lines)

    def _last(self, last: int | None) -> list[list[str]]:
        lines = self._lines
        if last is None or last >= len(lines):
            return list(lines)
        return list(lines)[len(lines) - last :]

    def text(self, last: int | None = None) -> str:
        """The lines kept (the `last` of them), as one text."""
        return "".join(text for _, text in self._last(last))

    def outputs(self, last: int | None = None) -> tuple[dict[str, str], ...]:
        """The lines kept (the `last` of them) as the stream outputs of an `ipywidgets.Output`, a stream's
        consecutive lines in one."""
        outputs: list[dict[str, str]] = []
        for stream, text in self._last(last):
            if outputs and outputs[-1]["name"] == stream:
                outputs[-1]["text"] += text
            else:
                outputs.append({"output_type": "stream", "name": stream, "text": text})
        return tuple(outputs)

    def title(self, last: int | None = None) -> str:
        """What the pane's title says: how many lines, and how many of them are still kept (shown)."""
        if not self.n_lines:
            return "log: empty"
        unit = "line" if self.n_lines == 1 else "lines"
        kept = len(self._lines) if last is None else min(last, len(self._lines))
        if self.n_lines > kept:
            return f"log: {self.n_lines} {unit} (the last {kept} kept)"
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


class SchedulerLog:
    """One scheduler's log, shared by all its dashboards: a dashboard made later shows what came before.

    Listens to the scheduler's callback output (`scheduler.output`) while at least one
    view is open (only then is a background run's output captured), keeps the lines in
    one [`LogLines`][byop_nb.notebook._log.LogLines] (as many as the most any view asked
    for), marks where each run's lines begin, and tells every view when lines came in.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = weakref.ref(scheduler)
        self.lines = LogLines(1)
        self._run: object = None  # the run whose output came last (`scheduler.latest_run`)
        self._views: dict[str, Callable[[], Any]] = {}
        self._name = f"byop_nb.Dashboard.log[{id(self):x}]"

    def open(self, name: str, max_lines: int, changed: Callable[[], Any]) -> None:
        """A view named `name` shows the last `max_lines` lines; `changed()` is called when lines come in."""
        self.lines.keep(max_lines)
        self._views[name] = changed
        scheduler = self._scheduler()
        if scheduler is not None:
            scheduler.output.listen(self._name, self._add)

    def close(self, name: str) -> None:
        """The view named `name` is gone; with the last one, the capture of the output ends."""
        self._views.pop(name, None)
        scheduler = self._scheduler()
        if not self._views and scheduler is not None:
            scheduler.output.forget(self._name)

    def clear(self) -> None:
        self.lines.clear()
        self._run = None
        self._changed()

    def _add(self, chunks: Iterable[tuple[str, str]]) -> None:
        scheduler = self._scheduler()
        run = scheduler.latest_run if scheduler is not None else None
        if run is not self._run:
            if self.lines.n_lines and run is not None:  # an earlier run's lines are there: say where this one's begin
                began = time.strftime("%H:%M:%S", time.localtime(run.started_at))
                self.lines.add([("stdout", f"--- run started at {began} ---\n")])
            self._run = run
        self.lines.add(chunks)
        self._changed()

    def _changed(self) -> None:
        for changed in list(self._views.values()):
            changed()


_LOGS: weakref.WeakKeyDictionary[Any, SchedulerLog] = weakref.WeakKeyDictionary()


def scheduler_log(scheduler: Scheduler) -> SchedulerLog:
    """The log all dashboards of `scheduler` share (made on first use, gone with the scheduler)."""
    log = _LOGS.get(scheduler)
    if log is None:
        log = _LOGS[scheduler] = SchedulerLog(scheduler)
    return log
