"""The handoff step: a request to a helpdesk with a call-back slot in the customer's own
window and only the context the journey names; signed by the webhook adapter, answered
through the tracking server as events."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from omnijourney.adapters.webhook import SignedWebhook, signature
from omnijourney.config import load
from omnijourney.core import evaluate
from omnijourney.core.events import Event
from omnijourney.core.gate import callback_slot
from omnijourney.core.state import CustomerState
from omnijourney.core.trace import TraceKind
from omnijourney.tracking.clicks import ClickServer
from tests.helpers import ev, t
from tests.provider import Provider

REPO = Path(__file__).resolve().parents[2]
SECRET = "handoff-secret"


def journeys():  # type: ignore[no-untyped-def]
    js = load(REPO / "journeys").journey_set
    assert js is not None
    return js


def escalated() -> tuple[Any, Any]:
    js = journeys()
    st = evaluate(js, None, ev("customer.signed_up", "2026-03-23T08:00:00Z", "c-mia",
                               first_name="Mia", phone="+4915100000401", sms_opt_in=True,
                               email="mia@example.com", timezone="Europe/Berlin",
                               contact_window="10:00-18:00", tier="gold"),
                  t("2026-03-23T08:00:00Z")).state
    out = evaluate(js, st, ev("chat.escalated", "2026-03-23T15:20:00Z", "c-mia",
                              topic="missing parcel"), t("2026-03-23T15:20:00Z"))
    (request,) = [c for c in out.commands if c.step == "book_callback"]
    return out, request


def test_the_request_carries_a_slot_in_the_window_and_only_the_named_fields() -> None:
    out, request = escalated()
    assert request.channel == "webhook" and request.content["callback"] == "handoff"
    body = json.loads(request.content["body"])
    # 17:20 Berlin is past her 10:00-18:00 window less the slot: tomorrow 10:00 local.
    assert body["slot"] == {"start": "2026-03-24T09:00:00Z", "end": "2026-03-24T09:30:00Z",
                            "timezone": "Europe/Berlin"}
    assert body["context"] == {"first_name": "Mia", "phone": "+4915100000401",
                               "locale": None, "attributes.tier": "gold"}
    assert "mia@example.com" not in request.content["body"]  # not named: not sent
    assert body["events"][0]["properties"] == {"topic": "missing parcel"}
    assert out.state.profile["attributes"]["callback_at"] == "2026-03-24T09:00:00Z"
    assert [x.kind for x in out.trace].count(TraceKind.HANDOFF) == 1


def test_a_slot_fits_wholly_inside_the_window_or_there_is_none() -> None:
    js = journeys()
    st = CustomerState("c", profile={"timezone": "Asia/Tokyo", "contact_window": "10:00-11:00"})
    at = datetime(2026, 3, 23, 1, 50, tzinfo=UTC)  # 10:50 in Tokyo
    slot = callback_slot(st, js.policies, at, timedelta(0), timedelta(minutes=30))
    assert slot == (datetime(2026, 3, 24, 1, 0, tzinfo=UTC),  # not 10:50: it would end at
                    datetime(2026, 3, 24, 1, 30, tzinfo=UTC), "Asia/Tokyo")  # 11:20: next day
    assert callback_slot(st, js.policies, at, timedelta(0), timedelta(hours=2)) is None


def test_the_adapter_signs_the_request_and_gives_the_helpdesk_a_callback_url() -> None:
    _, request = escalated()
    with Provider() as helpdesk:
        url = f"{helpdesk.url}/api/handoffs"
        cmd = replace(request, content={**request.content, "url": url})
        adapter = SignedWebhook("hook-secret", clock=lambda: datetime(2026, 3, 23, 15, 21,
                                                                       tzinfo=UTC),
                                tracking_url="http://track.test", tracking_secret=SECRET)
        assert adapter.deliver(cmd).status == "sent"
        (got,) = helpdesk.requests
    assert got.headers["X-Omnijourney-Signature"] == signature(
        "hook-secret", got.headers["X-Omnijourney-Timestamp"], got.body)
    assert got.headers["Idempotency-Key"] == request.command_id
    assert got.headers["X-Omnijourney-Callback"].startswith("http://track.test/h/")


def test_the_helpdesks_answers_come_back_as_events_and_forgeries_do_not() -> None:
    _, request = escalated()
    adapter = SignedWebhook("hook-secret", tracking_url="http://x", tracking_secret=SECRET)
    with Provider() as helpdesk:
        cmd = replace(request, content={**request.content, "url": f"{helpdesk.url}/h"})
        adapter.deliver(cmd)
        callback = helpdesk.requests[0].headers["X-Omnijourney-Callback"]
    path = callback.removeprefix("http://x")
    got: list[Event] = []
    server = ClickServer(SECRET, lambda r: None, events=got.append).start()
    base = f"http://127.0.0.1:{server.port}"

    def post(p: str, body: bytes) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(base + p, body), timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return e.code

    try:
        for answer in ("handoff.accepted", "callback.completed"):
            assert post(path, json.dumps({"event": answer, "agent": "Sam"}).encode()) == 204
        assert post(path[:-3] + "abc", b'{"event": "handoff.resolved"}') == 403  # tampered
        assert post(path, b'{"event": "order.placed"}') == 400  # not an answer
        assert post(path, b"not json") == 400
        for agent in ("Sam\u0000", "\ud800", 7, "x" * 201):  # control, surrogate, type, size
            assert post(path, json.dumps({"event": "handoff.resolved", "agent": agent})
                        .encode()) == 400, agent
        assert post(path, b'{"event": "handoff.resolved", "agent": "' + b"x" * 20000
                    + b'"}') == 400  # over the size limit
    finally:
        server.stop()
    assert [(e.type, e.customer_id, e.event_id) for e in got] == [
        ("handoff.accepted", "c-mia", f"handoff:{request.command_id}:handoff.accepted"),
        ("callback.completed", "c-mia", f"handoff:{request.command_id}:callback.completed")]
    assert got[0].properties == {"command_id": request.command_id,
                                 "journey": "support_callback", "agent": "Sam"}
    # The engine takes the answer: the journey goes on to its survey.
    js = journeys()
    out, _ = escalated()
    st = evaluate(js, out.state, got[1], t("2026-03-24T08:40:00Z")).state
    assert st.instances["support_callback#"].step == "next_day"


def test_validate_refuses_a_slot_for_a_conversation(tmp_path: Path) -> None:
    root = tmp_path / "journeys"
    root.mkdir()
    (root / "h.yaml").write_text(
        "name: H\nversion: 1\ntrigger:\n  event: chat.escalated\nsteps:\n"
        "  - id: talk\n    type: handoff\n    url: https://helpdesk.example/x\n"
        "    save_slot_as: when\n")
    msgs = [v.message for v in load(root).violations]
    assert "save_slot_as is for call-backs (kind: callback)" in msgs, msgs
