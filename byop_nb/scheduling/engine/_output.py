"""What a background run's callbacks write, handed to listeners (a Dashboard's log pane).

A run started with `start()` lives in the kernel's event loop; its callbacks run
there after the cell that started it has finished, so what they print goes to
that old cell (or, for a run started by a widget button, to no cell at all), and
it is gone when the notebook is opened again. While someone listens, the
scheduler *captures* it instead: around each *batch* of callbacks (one drain of
finished futures, one scheduler event, the comm messages read at once)
`sys.stdout` and `sys.stderr` are replaced by writers that keep what the loop's
thread writes, records of the `byop_nb` loggers (warnings and up) are kept too,
and the batch's text is handed to the listeners once, when the batch ends.

Nothing is captured for a blocking `run()` (its cell is running: the text is in
its output already) or when nobody listens; the engine then pays one attribute
read per batch, never anything per call. Writes from other threads (a thread
pool's workers) pass through to the streams they would have reached.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["RunOutput", "Chunks", "MAX_BATCH_CHARS"]

Chunks = list[tuple[str, str]]
"""A batch's text: `(stream, text)` in the order written, stream "stdout" or "stderr"."""

MAX_BATCH_CHARS = 1_000_000
"""A batch keeps at most this much of its text (the latest): a callback that prints in a loop
fills no memory; listeners keep less still."""

_LOGGER = logging.getLogger("byop_nb")


class RunOutput:
    """The listeners of one scheduler's callback output, and its capture for a background run.

    `active` tells the engine whether to capture a batch: the run is a background
    run and someone listens. `capture()` gives the context manager to run a batch in.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, Callable[[Chunks], Any]] = {}
        self._background = False
        self.active = False
        """Capture batches now: the latest run is a background one, and someone listens."""
        self._captures: list[_Capture] = []  # the batches in progress (nested: a callback ran another run)
        self._handler = _Handler(self)

    def listen(self, name: str, listener: Callable[[Chunks], Any]) -> None:
        """Hand every captured batch's text to `listener` (replacing one of the same name)."""
        self._listeners[name] = listener
        self.active = self._background

    def forget(self, name: str) -> None:
        """Stop handing text to the listener named `name` (if any)."""
        self._listeners.pop(name, None)
        self.active = self._background and bool(self._listeners)

    def begin_run(self, *, background: bool) -> None:
        """A run begins: background runs (`start()`) are captured while someone listens; blocking ones never.

        A background run stays captured after it ended, until the next run begins: its
        error is logged when its asyncio task is done.
        """
        self._background = background
        self.active = background and bool(self._listeners)

    def capture(self) -> contextlib.AbstractContextManager[None]:
        """The context to run one batch of callbacks in: captures it when `active`, else does nothing."""
        return _Capture(self) if self.active else contextlib.nullcontext()

    def _deliver(self, chunks: Chunks) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(chunks)
            except Exception:  # a listener's failure must not end the run; say it where it cannot loop back
                if sys.__stderr__ is not None:
                    sys.__stderr__.write(f"byop_nb: a callback output listener failed: {listener!r}\n")


class _Capture:
    """One batch: the loop thread's writes to stdout and stderr, and byop_nb's log records, kept in order."""

    def __init__(self, output: RunOutput) -> None:
        self._output = output
        self._thread = threading.get_ident()
        self._open = True  # until the batch ends: then a writer kept by a callback passes through
        self._chunks: collections.deque[tuple[str, str]] = collections.deque()
        self._size = 0
        self._dropped = 0
        self._saved: tuple[TextIO, TextIO] | None = None
        self._writers: tuple[_Writer, _Writer] | None = None

    def write(self, stream: str, text: str) -> None:
        chunks = self._chunks
        chunks.append((stream, text))
        self._size += len(text)
        while self._size > MAX_BATCH_CHARS and len(chunks) > 1:
            _, old = chunks.popleft()
            self._size -= len(old)
            self._dropped += len(old)

    def __enter__(self) -> None:
        output = self._output
        self._saved = (sys.stdout, sys.stderr)
        self._writers = (_Writer(self, "stdout", sys.stdout), _Writer(self, "stderr", sys.stderr))
        sys.stdout, sys.stderr = self._writers
        if not output._captures:
            _LOGGER.addHandler(output._handler)
        output._captures.append(self)

    def __exit__(self, *exc_info: object) -> None:
        output = self._output
        assert self._saved is not None and self._writers is not None
        self._open = False
        # Put back what was there, unless a callback replaced our writer and left its own (then it is its).
        if sys.stdout is self._writers[0]:
            sys.stdout = self._saved[0]
        if sys.stderr is self._writers[1]:
            sys.stderr = self._saved[1]
        if output._captures and output._captures[-1] is self:
            output._captures.pop()
        if not output._captures:
            _LOGGER.removeHandler(output._handler)
        if self._chunks:
            output._deliver(self._merged())

    def _merged(self) -> Chunks:
        """The batch's chunks, consecutive ones of a stream joined."""
        merged: Chunks = []
        if self._dropped:
            merged.append(("stderr", f"[byop_nb: {self._dropped} earlier characters of this batch were dropped]\n"))
        for stream, text in self._chunks:
            if merged and merged[-1][0] == stream:
                merged[-1] = (stream, merged[-1][1] + text)
            else:
                merged.append((stream, text))
        return merged


class _Writer:
    """Stands in for `sys.stdout` / `sys.stderr` during a batch: keeps what the batch's thread writes."""

    def __init__(self, capture: _Capture, stream: str, original: TextIO) -> None:
        self._capture = capture
        self._stream = stream
        self._original = original

    def write(self, text: str) -> int:
        capture = self._capture
        if not capture._open or threading.get_ident() != capture._thread:
            return self._original.write(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            capture.write(self._stream, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._capture._open or threading.get_ident() != self._capture._thread:
            self._original.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ...: the stream's own
        return getattr(self._original, name)


class _Handler(logging.Handler):
    """byop_nb's log records (warnings and up) of the loop's thread, into the innermost batch."""

    def __init__(self, output: RunOutput) -> None:
        super().__init__(logging.WARNING)
        self._output = output
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        captures = self._output._captures
        if not captures or captures[-1]._thread != threading.get_ident():
            # Another thread's record: where it would have gone without this handler (its level permitting).
            last_resort = logging.lastResort
            if last_resort is not None and not logging.getLogger().handlers and record.levelno >= last_resort.level:
                last_resort.handle(record)
            return
        try:
            captures[-1].write("stderr", self.format(record) + "\n")
        except Exception:
            self.handleError(record)
