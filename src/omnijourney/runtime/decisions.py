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

import structlog

from omnijourney.core.trace import TraceEntry, TraceKind
from omnijourney.logs import held
from omnijourney.runtime.engine import BatchResult, Evaluated

log = structlog.get_logger("omnijourney.worker")

LOGGED_DECISIONS = frozenset({TraceKind.SENT, TraceKind.SUPPRESSED, TraceKind.DEFERRED,
                              TraceKind.EXITED, TraceKind.GOAL, TraceKind.ERROR,
                              TraceKind.ERASED, TraceKind.RUNAWAY, TraceKind.MERGED,
                              TraceKind.MERGED_INTO, TraceKind.MERGE_REFUSED})


def _decision(x: TraceEntry) -> str:
    where = "/".join(p for p in (x.journey, x.step) if p)
    return f"{x.kind} {where}" if where else str(x.kind)


def log_evaluation(e: Evaluated) -> None:
    decisions = [x for x in e.trace if x.kind in LOGGED_DECISIONS]
    if not decisions and not log.is_enabled_for(logging.DEBUG):
        return  # most evaluations (a product view) decide nothing: no line to build
    emit = log.info if decisions else log.debug
    emit("evaluated", customer_id=e.customer_id, input=e.input, event_id=e.event_id,
         decisions=[_decision(x) for x in decisions],
         journeys=sorted({x.journey for x in e.trace if x.journey}),
         ms=round(e.seconds * 1000, 3))
    for x in decisions:
        # "event" is structlog's message key; the trace's event type is renamed.
        detail = {("event_type" if k == "event" else k): v
                  for k, v in x.text_detail().items()}
        log.info(x.kind, customer_id=x.customer_id, journey=x.journey, step=x.step, **detail)


def log_batch(result: BatchResult) -> None:
    """A batch's lines, written together (``logs.held``)."""
    with held():
        for e in result.evaluated:
            log_evaluation(e)
        for reason in result.dead_reasons:
            log.warning("dead_letter", reason=reason)
