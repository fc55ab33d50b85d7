"""Avro single-object encoding against golden bytes, JSON ingest and every poison case."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from omnijourney.codecs import (
    MAGIC,
    crc64_avro,
    decode_any,
    decode_command,
    decode_event,
    encode_command,
    encode_dead_letter,
    encode_event,
    events,
)
from omnijourney.config import load
from omnijourney.core.events import Event, InvalidEvent
from omnijourney.schemacheck import check_dir, compare
from omnijourney.simulator import read_events, simulate

REPO = Path(__file__).resolve().parents[2]
EVENT = Event("e1", "order.placed", "c1", datetime(2026, 3, 2, 10, 0, tzinfo=UTC), "web",
              {"total": 9.5})
# C3 01 | CRC-64-AVRO fingerprint, little-endian | strings as zig-zag length + UTF-8,
# occurred_at as zig-zag micros, source as union branch 1 + string, properties as JSON text,
# identifiers as an Avro map (00: no blocks, an empty map). V1 is the schema before
# identifiers (schemas/history/touchpoint_event.v1.avsc): records on topics in that form
# still decode.
BODY_V1 = ("04" "6531" "18" "6f726465722e706c61636564" "04" "6331"
           "80a0f9e5f481a606" "02" "06" "776562" "1a" "7b22746f74616c223a392e357d")
GOLDEN_V1 = bytes.fromhex("c301" "3932692ef76f6ce2" + BODY_V1)
GOLDEN = bytes.fromhex("c301" "8d5e13b2d4c45b7a" + BODY_V1 + "00")


def test_crc64_avro_matches_the_specification() -> None:
    # Fingerprints of the primitive schemas published with the Avro specification.
    assert crc64_avro(b'"null"') == 7195948357588979594
    assert crc64_avro(b'"int"') == 8247732601305521295


def test_event_encoding_matches_golden_bytes() -> None:
    assert encode_event(EVENT) == GOLDEN
    assert events().header == MAGIC + bytes.fromhex("8d5e13b2d4c45b7a")
    assert decode_event(GOLDEN) == EVENT


def test_events_written_with_schema_v1_still_decode() -> None:
    assert decode_event(GOLDEN_V1) == EVENT


def test_identifiers_travel_normalized_and_may_stand_in_for_the_customer_id() -> None:
    ev = decode_event(json.dumps({
        "event_id": "s1", "type": "customer.signed_up", "customer_id": "",
        "occurred_at": "2026-03-02T10:00:00Z",
        "identifiers": {"anonymous_id": " a-1 ", "email": "Ana@Example.COM"}}).encode())
    # Strongest first, normalized: the order the resolver visits them in.
    assert list(ev.identifiers.items()) == [("email", "ana@example.com"),
                                            ("anonymous_id", "a-1")]
    assert ev.customer_id == ""
    assert decode_event(encode_event(ev)) == ev
    for bad, why in (({}, "customer_id"), ({"email": "not-an-address"}, "email"),
                     ({"fingerprint": "x"}, "kind"), ({"phone": "12"}, "digits"),
                     ({"anonymous_id": "a\nb"}, "control"),
                     ({f"marketplace:m{i}": "x" for i in range(9)}, "at most 8")):
        with pytest.raises(InvalidEvent, match=why):
            decode_event(json.dumps({"event_id": "s", "type": "order.placed",
                                     "occurred_at": "2026-03-02T10:00:00Z",
                                     "identifiers": bad}).encode())


def test_commands_round_trip_through_avro() -> None:
    js = load(REPO / "journeys").journey_set
    assert js is not None
    evs, _ = read_events((REPO / "examples" / "events.jsonl").read_text().splitlines())
    for cmd in simulate(js, evs).commands:
        rec = decode_command(encode_command(cmd))
        assert rec.send_at == cmd.send_at
        assert rec.content == cmd.content
        assert rec.command_id == cmd.command_id


def test_json_events_are_accepted_on_the_same_topic() -> None:
    raw = json.dumps(EVENT.to_dict()).encode()
    assert decode_event(raw) == EVENT
    assert decode_event(b"  " + raw) == EVENT


@pytest.mark.parametrize(("data", "reason"), [
    (GOLDEN[:-5], "corrupt TouchpointEvent body"),
    (MAGIC + b"\x00" * 8 + GOLDEN[10:], "written with another schema"),
    (b"\x00\x01garbage", "neither Avro"),
    (b'{"event_id": "x", "type": ', "malformed JSON"),
    (b'{"event_id": "x", "type": "order.placed", "occurred_at": "2026-03-02T10:00:00Z"}',
     "missing or empty 'customer_id'"),
    (b'{"event_id": "x", "type": "Order", "customer_id": "c", "occurred_at": "2026-03-02T10:00:00Z"}',
     "is not of the form"),
    (b'{"event_id": "x", "type": "a.b", "customer_id": "c", "occurred_at": "yesterday"}',
     "occurred_at"),
])
def test_poison_records_raise_invalid_event_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        decode_event(data)


def test_decode_any_recognises_every_topic() -> None:
    assert decode_any(GOLDEN)[0] == "TouchpointEvent"
    dl = encode_dead_letter(b"x", key=b"k", topic="touchpoints", partition=2, offset=41,
                            error="bad", at=EVENT.occurred_at)
    name, rec = decode_any(dl)
    assert (name, rec["partition"], rec["offset"], rec["error"]) == ("DeadLetter", 2, 41, "bad")


def test_schema_check_refuses_breaking_changes(tmp_path: Path) -> None:
    old = (REPO / "schemas" / "touchpoint_event.avsc").read_text()
    added_optional = old.replace(
        '{"name": "source"', '{"name": "channel", "type": ["null", "string"], "default": null},\n    {"name": "source"')
    assert compare(old, added_optional, "x") == []
    required = old.replace('{"name": "source"', '{"name": "channel", "type": "string"},\n    {"name": "source"')
    (finding,) = compare(old, required, "touchpoint_event.avsc")
    assert finding.direction == "new reads old"
    assert "channel" in finding.problem
    base = tmp_path / "base"
    base.mkdir()
    (base / "touchpoint_event.avsc").write_text(old)
    findings, compared = check_dir(REPO / "schemas", against=str(base))
    assert (findings, compared) == ([], 1)


def test_delivery_reports_written_with_schema_v1_still_decode() -> None:
    import json as _json
    from datetime import UTC, datetime

    from omnijourney.codecs import SCHEMA_DIR, AvroCodec, decode_delivery, deliveries

    v1 = AvroCodec(_json.loads((SCHEMA_DIR / "history" / "delivery_report.v1.avsc").read_text()))
    assert v1.fingerprint != deliveries().fingerprint
    at = datetime(2026, 3, 2, tzinfo=UTC)
    old = v1.encode({"command_id": "c", "customer_id": "u", "channel": "email",
                     "status": "bounced", "provider_id": None, "reason": "550", "at": at,
                     "journey": "j", "instance_key": None})
    rec = decode_delivery(old)
    assert rec.status == "bounced" and rec.at == at and rec.address_digest is None


def test_command_ids_are_exactly_uuid5_of_their_parts() -> None:
    """The fast id must equal what uuid.uuid5 gave: every id ever issued depends on it."""
    import uuid

    from omnijourney.core.commands import COMMAND_NAMESPACE, command_id

    cases = [(), ("",), ("cart_abandonment", "1", "c1", "inst", "cart_reminder", "1"),
             ("ünïcode", "\x1f", "emoji 🛒"), tuple(str(i) for i in range(40))]
    for parts in cases:
        assert command_id(*parts) == str(uuid.uuid5(COMMAND_NAMESPACE, "\x1f".join(parts)))
