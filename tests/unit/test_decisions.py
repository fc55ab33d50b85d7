"""The worker's log: one canonical line per evaluation, the decisions in it, no address."""

from __future__ import annotations

import json
from pathlib import Path

from structlog.testing import capture_logs

from omnijourney.codecs import clock_record, encode_event, tick_record
from omnijourney.config import load
from omnijourney.core import CustomerState
from omnijourney.runtime.decisions import log_batch
from omnijourney.runtime.engine import Engine, Record
from omnijourney.runtime.timers import Clock
from omnijourney.settings import Topics
from tests.helpers import ev, signup, t

REPO = Path(__file__).resolve().parents[2]
JS = load(REPO / "journeys").journey_set
assert JS is not None
TOPICS = Topics.with_prefix("x-")


def test_one_canonical_line_per_evaluation_with_its_decisions_and_no_address() -> None:
    engine = Engine(JS, TOPICS, Clock("event"))
    states: dict[str, CustomerState] = {}
    new = signup(at="2026-03-02T10:00:00Z", email="ana.secret@example.com", phone="+15550123")
    records = [Record(TOPICS.touchpoints, 0, 0, b"c1", encode_event(new)),
               Record(TOPICS.touchpoints, 0, 1, b"c1", encode_event(
                   ev("product.viewed", "2026-03-02T10:05:00Z", product_id="p1"))),
               Record(TOPICS.touchpoints, 0, 2, None, clock_record(t("2026-03-04T10:00:00Z"))),
               Record(TOPICS.ticks, 0, 3, b"c1", tick_record("c1", t("2026-03-04T10:00:00Z")))]
    result = engine.process(records, states.get)
    with capture_logs() as logs:
        log_batch(result)
    lines = [x for x in logs if x["event"] == "evaluated"]
    assert len(lines) == result.evaluations == 3  # the clock record is not an evaluation
    first, view, tick = lines
    assert (first["customer_id"], first["input"], first["event_id"]) == (
        "c1", "customer.signed_up", new.event_id)
    assert first["log_level"] == "info" and "sent welcome/welcome_sms" in first["decisions"]
    assert view["input"] == "product.viewed" and view["event_id"]
    assert tick["input"] == "tick" and tick["event_id"] is None
    # A decision's detail line follows its canonical line; nothing names an address.
    sent = [x for x in logs if x["event"] == "sent"]
    assert sent and all(x["command_id"] for x in sent)
    text = json.dumps(logs, default=str)
    assert "ana.secret" not in text and "15550123" not in text
    # At debug when nothing was decided that a person asks about (a view starting a wait).
    quiet = engine.process([Record(TOPICS.touchpoints, 0, 4, b"c2", encode_event(
        ev("product.viewed", "2026-03-04T11:00:00Z", customer="c2", product_id="p2")))],
        lambda cid: None)
    with capture_logs() as logs:
        log_batch(quiet)
    assert [(x["event"], x["log_level"], x["decisions"]) for x in logs] == [
        ("evaluated", "debug", [])]


def test_detail_lines_carry_the_trace_as_shown_anywhere_else() -> None:
    """Over the decisions of 200 synthetic customers (sends, suppressions, deferrals
    with their times, exits, goals): each detail line is the decision's customer,
    journey and step, then its detail as ``TraceEntry.text_detail`` shows it (times as
    RFC 3339 text, the event type renamed); each canonical line names the journeys the
    evaluation touched, sorted, and its decisions as ``kind journey/step``."""
    from omnijourney.runtime.decisions import LOGGED_DECISIONS
    from omnijourney.synthetic import synth

    engine = Engine(JS, TOPICS, Clock("event"))
    states: dict[str, CustomerState] = {}
    events = sorted((e for tl in synth(200) for e in tl), key=lambda e: e.occurred_at)
    records = [Record(TOPICS.touchpoints, 0, i, e.customer_id.encode(), encode_event(e))
               for i, e in enumerate(events)]
    kinds: set[str] = set()
    timed = 0
    for i in range(0, len(records), 500):
        result = engine.process(records[i:i + 500], states.get)
        for cid, (_, st, _) in result.states.items():
            states[cid] = st
        with capture_logs() as logs:
            log_batch(result)
        details = iter(x for x in logs if x["event"] != "evaluated")
        canonical = iter(x for x in logs if x["event"] == "evaluated")
        for e in result.evaluated:  # capture_logs takes debug too: a line for each
            decisions = [x for x in e.trace if x.kind in LOGGED_DECISIONS]
            line = next(canonical)
            assert line["customer_id"] == e.customer_id
            assert line["journeys"] == sorted({x.journey for x in e.trace if x.journey})
            assert line["decisions"] == [
                f"{x.kind} {'/'.join(p for p in (x.journey, x.step) if p)}".strip()
                for x in decisions]
            for x in decisions:
                got = next(details)
                shown = {("event_type" if k == "event" else k): v
                         for k, v in x.text_detail().items()}
                assert got == {"customer_id": x.customer_id, "journey": x.journey,
                               "step": x.step, **shown, "event": str(x.kind),
                               "log_level": "info"}
                kinds.add(str(x.kind))
                timed += any(isinstance(v, str) and v.endswith("Z") and "T" in v
                             for v in shown.values())
    assert {"sent", "suppressed", "deferred", "goal"} <= kinds and timed
