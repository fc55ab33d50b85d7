"""structlog: pretty on a terminal, JSON lines otherwise. Never log addresses in clear:
log customer ids, journey, step, event and command ids only.

Each line is written and flushed as it is logged, except inside ``held()``: the worker's
decision lines of one batch (two per send in a herd) are written together at its end, one
write instead of a thousand. Nothing awaits inside, so no line waits longer than the
synchronous code that logs it."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import structlog

from omnijourney import wallclock
from omnijourney.linetext import LineWriter, render_json

__all__ = ["Direct", "LineSink", "LineWriter", "configure", "held", "lines", "render_json"]


class LineSink:
    """Where the lines go: a text stream, one write and one flush per line, or per
    ``held()`` block. Threads may log too (Faust's consumer thread, the snapshot writer):
    a lock keeps lines whole and in order."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.lock = threading.Lock()
        self.depth = 0
        self.pending: list[str] = []

    def write(self, line: str) -> None:
        with self.lock:
            if self.depth:
                self.pending.append(line)
                return
            self.file.write(line + "\n")
            self.file.flush()

    def write_all(self, lines: Sequence[str]) -> None:
        """``lines`` in order, as one write (or kept with a ``held()`` block's)."""
        if not lines:
            return
        with self.lock:
            if self.depth:
                self.pending.extend(lines)
                return
            self.file.write("\n".join(lines) + "\n")
            self.file.flush()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self.lock:
            self.depth += 1
        try:
            yield
        finally:
            with self.lock:
                self.depth -= 1
                if not self.depth and self.pending:
                    lines, self.pending = self.pending, []
                    self.file.write("\n".join(lines) + "\n")
                    self.file.flush()


class LineLogger:
    """structlog's logger: hands each rendered line to the sink."""

    def __init__(self, sink: LineSink) -> None:
        self.sink = sink

    def msg(self, message: str) -> None:
        self.sink.write(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class Direct:
    """Lines written straight to the sink, rendered as ``configure``'s chain renders them
    (the fields, ``event``, ``level``, ``timestamp``; contextvars first), for code that logs
    many lines at once: the worker's decision lines, two per send in a herd. structlog's
    chain took ~4 us a line (copying the context, three processors, the renderer); this
    takes a dict and the renderer. Their timestamp is the moment ``lines()`` was called."""

    def __init__(self, sink: LineSink, processors: list[Any], level: int) -> None:
        self.sink = sink
        # The chain configure set, to tell when it is not: structlog's ``capture_logs``
        # swaps the processors inside the same list, so its content is compared.
        self.processors = tuple(processors)
        self.level = level

    def writer(self) -> LineWriter | None:
        """A writer for a batch of lines, or None when structlog is not configured as
        ``configure`` left it (tests capturing logs, a later ``structlog.configure``)."""
        if tuple(structlog.get_config()["processors"]) != self.processors:
            return None
        stamp = wallclock.now().isoformat().replace("+00:00", "Z")
        return LineWriter(self.sink, self.level, stamp,
                          structlog.contextvars.get_contextvars())


_current: dict[str, Any] = {}  # "sink": the one ``configure`` made; "direct" with JSON lines


def configure(level: str = "info") -> None:
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if sys.stderr.isatty()
        else structlog.processors.JSONRenderer(serializer=render_json))
    sink = _current["sink"] = LineSink(sys.stderr)

    def factory(*_: Any) -> LineLogger:
        return LineLogger(sink)

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
    level_no = logging.getLevelNamesMapping()[level.upper()]
    _current.pop("direct", None)
    if not isinstance(renderer, structlog.dev.ConsoleRenderer):
        _current["direct"] = Direct(sink, processors, level_no)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def lines() -> LineWriter | None:
    """A writer of JSON lines straight to the sink (``Direct``), or None: log through
    structlog (not configured here, a console, tests capturing logs)."""
    direct: Direct | None = _current.get("direct")
    return direct.writer() if direct is not None else None


@contextlib.contextmanager
def held() -> Iterator[None]:
    """The lines logged inside are written together when it ends (see the module's
    docstring); without ``configure`` (tests, structlog's defaults) it does nothing."""
    sink = _current.get("sink")
    if sink is None:
        yield
        return
    with sink.held():
        yield
