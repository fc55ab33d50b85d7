"""Forgetting a customer: the erasure event empties the state (the runtime tombstones it),
and a trait set to null leaves no copy in the events live journey runs keep."""

from __future__ import annotations

import json

from omnijourney.codecs import encode_event
from omnijourney.core import evaluate
from omnijourney.core.events import ERASURE_EVENT
from omnijourney.runtime.engine import Engine, Record
from omnijourney.runtime.timers import Clock
from tests.helpers import ev, signup
from tests.unit.test_engine import JS, TOPICS


def test_nulling_a_trait_removes_it_from_the_events_live_runs_keep() -> None:
    first = evaluate(JS, None, signup(), signup().occurred_at)
    running = [i for i in first.state.instances.values() if "email" in i.trigger.properties]
    assert running, "the welcome journey keeps its trigger, addresses included"
    cleared = ev("customer.updated", "2026-03-02T10:05:00Z", email=None, phone=None)
    after = evaluate(JS, first.state, cleared, cleared.occurred_at).state
    assert "email" not in after.profile and "phone" not in after.profile
    doc = json.dumps(after.to_dict())
    assert "c1@example.com" not in doc and "+15550001" not in doc
    assert after.instances  # the runs go on, without the addresses


def test_an_erasure_leaves_an_empty_state_and_the_engine_a_tombstone() -> None:
    engine = Engine(JS, TOPICS, Clock("event"))
    first = engine.process([Record(TOPICS.touchpoints, 1, 0, b"c1", encode_event(signup()))],
                           lambda cid: None)
    stored = {cid: st for cid, (_, st, _doc) in first.states.items()}
    erase = ev(ERASURE_EVENT, "2026-03-02T11:00:00Z")
    again = signup(at="2026-03-02T12:00:00Z")
    result = engine.process([Record(TOPICS.touchpoints, 1, 1, b"c1", encode_event(erase))],
                            stored.get)
    assert result.erased == {"c1": 1} and result.states == {}
    assert [x.kind for x in result.trace] == ["erased"]
    # Erased and back in one batch: the new profile starts empty, from the new event only.
    both = engine.process([Record(TOPICS.touchpoints, 1, 1, b"c1", encode_event(erase)),
                           Record(TOPICS.touchpoints, 1, 2, b"c1", encode_event(again))],
                          stored.get)
    assert both.erased == {}
    fresh = both.states["c1"][1]
    assert fresh.profile["first_seen_at"] == "2026-03-02T12:00:00Z"
    assert list(fresh.seen) == [again.event_id]
