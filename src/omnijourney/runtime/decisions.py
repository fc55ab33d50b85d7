"""What the worker logs about its decisions, and how.

One canonical line per evaluation (``evaluated``: customer, what came in, its event id,
and each decision as ``kind journey/step``), at info when the core decided something a
person may ask about (``LOGGED_DECISIONS``), at debug otherwise (most product views decide
nothing). Beside it, one detail line per such decision with its reason, cap, window or
command id. Never an address: the trace holds none (the core keeps digests), and the
decision lines carry only what the trace says.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

from omnijourney.core.trace import TraceEntry, TraceKind, shown
from omnijourney.logs import LineWriter, held
from omnijourney.logs import lines as logs_lines
from omnijourney.runtime.engine import BatchResult, Evaluated

log = structlog.get_logger("omnijourney.worker")

LOGGED_DECISIONS = frozenset({TraceKind.SENT, TraceKind.SUPPRESSED, TraceKind.DEFERRED,
                              TraceKind.EXITED, TraceKind.GOAL, TraceKind.ERROR,
                              TraceKind.ERASED, TraceKind.RUNAWAY, TraceKind.MERGED,
                              TraceKind.MERGED_INTO, TraceKind.MERGE_REFUSED})


def _decision(x: TraceEntry) -> str:
    where = f"{x.journey}/{x.step}" if x.journey and x.step else x.journey or x.step
    return f"{x.kind} {where}" if where else str(x.kind)


def log_evaluation(e: Evaluated, lines: LineWriter | None = None) -> None:
    """``lines``: write straight to the log's sink (``logs.lines``); else through structlog."""
    decisions = [x for x in e.trace if x.kind in LOGGED_DECISIONS]
    if not decisions and not (lines.enabled(logging.DEBUG) if lines is not None
                              else log.is_enabled_for(logging.DEBUG)):
        return  # most evaluations (a product view) decide nothing: no line to build
    fields = {"customer_id": e.customer_id, "input": e.input, "event_id": e.event_id,
              "decisions": [_decision(x) for x in decisions],
              "journeys": sorted({x.journey for x in e.trace if x.journey}),
              "ms": round(e.seconds * 1000, 3)}
    _emit(lines, logging.INFO if decisions else logging.DEBUG, "evaluated", fields)
    for x in decisions:
        # "event" is structlog's message key; the trace's event type is renamed. Values
        # as ``TraceEntry.text_detail`` shows them, in the same pass.
        detail = {"customer_id": x.customer_id, "journey": x.journey, "step": x.step}
        for k, v in x.detail.items():
            detail["event_type" if k == "event" else k] = shown(v)
        _emit(lines, logging.INFO, str(x.kind), detail)


def _emit(lines: LineWriter | None, level: int, event: str, fields: dict[str, Any]) -> None:
    if lines is not None:
        lines.write(level, event, fields)
    elif level == logging.INFO:
        log.info(event, **fields)
    else:
        log.debug(event, **fields)


def log_batch(result: BatchResult) -> None:
    """A batch's lines, written together (``logs.held``), straight to the log's sink
    when it can (``logs.lines``)."""
    with held():
        lines = logs_lines()
        if lines is not None:
            lines.hold()  # rendered compiled (linetext.py), handed to the sink at once
        try:
            for e in result.evaluated:
                log_evaluation(e, lines)
        finally:
            if lines is not None:
                lines.release()
        for reason in result.dead_reasons:
            log.warning("dead_letter", reason=reason)
