"""JSON log lines rendered, compiled (native.py's ``MODULES``): the renderer structlog's
chain ends with (``render_json``) and the writer of lines straight to the sink
(``LineWriter``, made by ``logs.Direct``) that the worker's decision lines take, two a
send in a herd. Interpreted, building and rendering a line took ~3.5 us; the line is the
same. No I/O here: a writer hands its lines to the sink (``logs.LineSink``), which
writes them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import orjson

LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
               logging.ERROR: "error", logging.CRITICAL: "critical"}


def fallback(value: Any) -> Any:
    return repr(value)  # as structlog's JSONRenderer writes what JSON cannot


def render_json(event: dict[str, Any], default: Callable[[Any], Any] | None = None,
                **_: Any) -> str:
    """One line of JSON: orjson's (a fifth of ``json``'s time, a herd logs two lines a
    send), else ``json``'s for what orjson refuses (a key that is not a string, an int
    past 64 bits, a string with a lone surrogate), with structlog's fallback for objects
    neither knows: a line is never lost to its content."""
    try:
        return orjson.dumps(event, default=default).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(event, default=default or repr)


class LineWriter:
    """Lines at ``level`` or above, rendered as structlog's chain renders them (the
    context's fields, the line's, ``event``, ``level``, ``timestamp``: ``stamp``), for the
    sink: each written as it comes, or, between ``hold`` and ``release``, kept and handed
    over at once (``LineSink.write_all``)."""

    def __init__(self, sink: Any, level: int, stamp: str, context: dict[str, Any]) -> None:
        self.sink = sink
        self.level = level
        self.stamp = stamp
        self.context = context
        self.held: list[str] | None = None

    def hold(self) -> None:
        """Keep the lines written from now on, until ``release``."""
        if self.held is None:
            self.held = []

    def release(self) -> None:
        """The lines kept since ``hold`` to the sink, in one call; each written as it
        comes again."""
        held, self.held = self.held, None
        if held:
            self.sink.write_all(held)

    def enabled(self, level: int) -> bool:
        return level >= self.level

    def write(self, level: int, event: str, fields: dict[str, Any]) -> None:
        """One line at ``level`` (logging's numbers), if the configured level lets it."""
        if level < self.level:
            return
        line = {**self.context, **fields} if self.context else fields
        line["event"] = event
        line["level"] = LEVEL_NAMES[level]
        line["timestamp"] = self.stamp
        text = render_json(line, fallback)
        if self.held is not None:
            self.held.append(text)
        else:
            self.sink.write(text)
