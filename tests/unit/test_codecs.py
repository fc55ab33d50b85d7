"""Avro single-object encoding against golden bytes, JSON ingest and every poison case."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastavro import schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as hst

import omnijourney.codecs as codecs_module
from omnijourney.codecs import (
    MAGIC,
    AvroCodec,
    _event_reader,
    _event_record,
    command_record,
    commands,
    crc64_avro,
    decode_any,
    decode_command,
    decode_event,
    encode_command,
    encode_dead_letter,
    encode_event,
    events,
    read_tick_record,
    tick_record,
    tick_records,
)
from omnijourney.config import load
from omnijourney.core.channels import CHANNELS
from omnijourney.core.commands import ChannelCommand
from omnijourney.core.events import Event, InvalidEvent
from omnijourney.schemacheck import check_dir, compare
from omnijourney.simulator import read_events, simulate
from omnijourney.wire import event_record

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


# ------------------------------------------------------------------- states

def _real_states(count: int) -> list:
    """States of synthetic customers part-way through their week, as the engine wrote
    them: waits, deferred sends, goals, send history, remembered event ids."""
    from omnijourney.core import evaluate
    from omnijourney.synthetic import synth

    js = load(REPO / "journeys").journey_set
    assert js is not None
    out = []
    for i, timeline in enumerate(synth(count, seed=11)):
        st = None
        for ev in timeline[: max(1, len(timeline) * (1 + i % 3) // 3)]:
            st = evaluate(js, st, ev, ev.occurred_at).state
        out.append(st)
    return out


def _long_way(raw: bytes):  # what decode_state read before its short way
    from omnijourney.codecs import _state_doc
    from omnijourney.core import CustomerState

    doc = _state_doc(raw)
    return int(doc["p"]), CustomerState.from_dict(doc["s"])


def _same(a, b) -> bool:
    """Equal, with the same types everywhere (1 and 1.0 and True are equal in Python)."""
    (pa, sa), (pb, sb) = a, b
    return (pa, repr(sa), sa.seen_owned) == (pb, repr(sb), sb.seen_owned) and all(
        (x.last_event is x.trigger) == (y.last_event is y.trigger)
        for x, y in zip(sa.instances.values(), sb.instances.values(), strict=True))


def test_states_read_the_short_way_are_the_states_the_long_way_reads() -> None:
    """``decode_state`` reads a table value with msgspec straight into the core's classes
    when it can: what it gives is what ``orjson`` + ``from_dict`` give, types and shared
    events included, for every state the engine writes."""
    from omnijourney.codecs import _typed_state, decode_state, encode_state

    states = _real_states(150)
    assert sum(bool(s.instances) for s in states) > 40 and any(s.sent for s in states)
    assert any(s.goals for s in states) and any(s.next_due() for s in states)
    for i, st in enumerate(states):
        raw = encode_state(i % 7, st)
        assert _typed_state(raw) is not None  # the short way takes what the engine writes
        assert _same(decode_state(raw), _long_way(raw))
        assert decode_state(raw)[1] == st


_ODD_VALUES = [None, "", " ", "x", 7, 1.5, True, [], {}, 2**70, -(2**64), 10**400, 1e300,
               "Cart Added",
               "2026-03-02T12:00:00+02:00", "2026-03-02T10:00:00", "2026-03-02T10:00:00Z",
               ["2026-03-02T10:00:00Z"], {"k": "2026-03-02T10:00:00Z"}, {"k": 1},
               "running", "\ud800", float("inf")]


def _paths(doc, at=()):
    yield at
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*at, i))


def _set(doc, path, value):
    import copy

    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return doc


def test_a_damaged_state_is_read_the_short_way_only_as_the_long_way_reads_it() -> None:
    """Every value of real states replaced by values of other types and shapes (nulls,
    blanks, offsets other than Z, naive instants, big integers, lone surrogates, ...) and
    a key dropped or added: the short way either passes (None) or gives exactly what the
    long way gives; never a state where the long way raises. One difference, by design:
    a key a stored event does not know is passed over, as keys of a state already are."""
    from omnijourney.codecs import _typed_state

    states = [s for s in _real_states(40) if s.instances and s.goals][:4]
    assert states
    compared = taken = 0
    for st in states:
        base = json.loads(json.dumps({"p": 1, "d": None, "s": st.to_dict()}))
        variants = []
        for path in _paths(base):
            if not path:
                continue
            variants += [_set(base, path, v) for v in _ODD_VALUES]
            parent = _set(base, path, None)
            node = parent
            for step in path[:-1]:
                node = node[step]
            if isinstance(node, dict):
                del node[path[-1]]
                variants.append(parent)
        for path in _paths(base):
            node = base
            for step in path:
                node = node[step]
            if isinstance(node, dict) and not {"event_id", "occurred_at"} <= set(node):
                variants.append(_set(base, (*path, "unknown_key"), 1) if path else
                                {**base, "unknown_key": 1})
        for doc in variants:
            raw = json.dumps(doc, separators=(",", ":")).encode()
            short = _typed_state(raw)
            try:
                long = _long_way(raw)
            except Exception:
                long = None
            if short is not None:
                taken += 1
                assert long is not None, raw
                assert _same(short, long), raw
            compared += 1
    assert compared > 2000 and taken > 200  # both kinds were seen


def test_numbers_past_what_a_float_or_the_int_limit_holds_read_as_the_long_way_reads() -> None:
    """1e400 (json reads an infinity) and an integer of 5,000 digits (json refuses it)
    are left to the long way, which answers as it did."""
    from omnijourney.codecs import _typed_state, decode_state, encode_state
    from omnijourney.core.state import CustomerState as State

    st = State("c1")
    st.profile["attributes"] = {"n": 12345}
    raw = encode_state(0, st)
    inf = raw.replace(b"12345", b"1e400")
    assert _typed_state(inf) is None
    assert decode_state(inf)[1].profile["attributes"]["n"] == float("inf")
    huge = raw.replace(b"12345", b"9" * 5000)
    assert _typed_state(huge) is None
    with pytest.raises(ValueError, match="4300 digits"):
        decode_state(huge)
    long = raw.replace(b"12345", b"9" * 400)
    assert decode_state(long)[1].profile["attributes"]["n"] == int("9" * 400)


def test_a_stored_event_with_a_key_it_does_not_know_is_read_without_it() -> None:
    """The one place the short way is kinder than the long way: a state written by a
    later release with a new field in its stored events still reads (the long way
    refuses such an event; unknown keys anywhere else in a state it passes over too)."""
    from omnijourney.codecs import decode_state, encode_state

    st = next(s for s in _real_states(40) if s.instances)
    doc = json.loads(encode_state(0, st))
    inst = next(iter(doc["s"]["instances"].values()))
    inst["trigger"]["channel_hint"] = "web"
    inst["last_event"]["channel_hint"] = "web"
    raw = json.dumps(doc).encode()
    assert decode_state(raw)[1] == st
    with pytest.raises(InvalidEvent):
        _long_way(raw)


def _head(partition: int, st) -> bytes:  # a table value's head, built as text
    from omnijourney.core.timeutil import format_instant

    due = st.next_due()
    return (f'{{"p":{partition},"d":'
            + (f'"{format_instant(due)}"' if due is not None else "null") + ',"s":').encode()


def _old_bytes(partition: int, st) -> bytes:  # what encode_state wrote before msgspec
    from omnijourney.codecs import _state_json

    return _head(partition, st) + _state_json(st.to_dict()) + b"}"


def test_a_state_written_in_one_pass_is_the_bytes_of_a_head_and_a_body_written_apart() -> None:
    """``encode_state`` writes the head (partition, due time) and the state in one msgspec
    pass; the bytes are those of the head built as text (``format_instant``'s due time,
    in UTC with Z, to the microsecond) before the state's own msgspec JSON, as session 13
    wrote them: the restore's glance and ``state_due`` read the same head."""
    import msgspec

    from omnijourney.codecs import encode_state
    from omnijourney.core.state import CustomerState

    def apart(partition: int, st) -> bytes:
        body = msgspec.json.encode(st)
        tail = b',"merged_into":null}'
        body = body[:-len(tail)] + b"}" if body.endswith(tail) else body
        return _head(partition, st) + body + b"}"

    berlin = timezone(timedelta(hours=1))
    states = _real_states(150)
    for i, st in enumerate(states):
        for inst in st.instances.values():
            if inst.due_at is not None and i % 3:  # to the microsecond, and in another zone
                inst.due_at = (inst.due_at + timedelta(microseconds=i * 1013)).astimezone(
                    berlin if i % 3 == 2 else UTC)
    assert sum(st.next_due() is not None for st in states) > 20
    assert any(st.next_due() is not None and st.next_due().tzinfo is berlin for st in states)
    for i, st in enumerate([*states, CustomerState("m1", merged_into="c9")]):
        assert encode_state(i % 11, st) == apart(i % 11, st), i


def test_states_written_by_msgspec_read_back_as_the_states_written_before() -> None:
    """``encode_state`` writes the core's dataclasses with msgspec. Its JSON differs from
    ``to_dict``'s only by an event's empty ``identifiers`` and a null ``merged_into``:
    the same document once those are read as absent, the same head (partition, due
    time), and both readers read it to the state written, as they read the old bytes.
    Values msgspec cannot write (a lone surrogate) take the old way."""
    from omnijourney.codecs import decode_state, encode_state, state_due
    from omnijourney.core.state import CustomerState as State

    states = _real_states(150)
    merged = State("m1", merged_into="c9")
    odd = State("c1")
    odd.profile.update({"first_name": "<b>\"Zoë\"</b>\n\x00 😀", "attributes": {
        "big": 2**70, "neg": -(2**64), "tiny": 5e-324, "x": 1e22,
        "list": [1, "two", {"three": 3.0}, None, True]}})
    inf = State("c3")  # orjson wrote an infinity (1e400 in an event) as null, and so does msgspec
    inf.profile["attributes"] = {"inf": float("inf"), "n": 1}
    for i, st in enumerate([*states, merged, odd, inf]):
        new, old = encode_state(i % 7, st), _old_bytes(i % 7, st)
        assert state_due(new) == state_due(old)
        doc = json.loads(new)
        for inst in doc["s"]["instances"].values():
            for ev in (inst["trigger"], inst["last_event"]):
                if ev.get("identifiers") == {}:
                    del ev["identifiers"]
        assert ("merged_into" in doc["s"]) == (st.merged_into is not None)  # as before
        assert doc == json.loads(old)
        assert _same(decode_state(new), _long_way(new))
        assert _same(decode_state(new), decode_state(old))
        assert repr(decode_state(new)[1]) == repr(decode_state(old)[1])
    assert b'"big":1180591620717411303424' in encode_state(0, odd)  # exact, not a float
    lone = State("c2")
    lone.profile["first_name"] = "\ud800"
    assert encode_state(0, lone) == _old_bytes(0, lone)  # escaped by json, as before
    assert decode_state(encode_state(0, lone))[1].profile["first_name"] == "\ud800"


_TEXT = hst.text(max_size=80) | hst.sampled_from(["", "é" * 40, "x" * 200, "😀", "a\x00b"])


@hst.composite
def _commands(draw: hst.DrawFn) -> ChannelCommand:
    at = draw(hst.datetimes(min_value=datetime(1900, 1, 1),  # noqa: DTZ001 - hypothesis'
                            max_value=datetime(2200, 1, 1),  # noqa: DTZ001 - bounds are naive
                            timezones=hst.just(UTC)))
    return ChannelCommand(
        command_id=draw(_TEXT), journey=draw(_TEXT), journey_version=draw(_TEXT),
        step=draw(_TEXT), channel=draw(hst.sampled_from(CHANNELS)),
        customer_id=draw(_TEXT), send_at=at,
        deadline=at + timedelta(microseconds=draw(hst.integers(0, 10**12))),
        template=draw(hst.none() | _TEXT), to=draw(hst.none() | _TEXT),
        content=draw(hst.dictionaries(_TEXT, _TEXT, max_size=3)
                     | hst.dictionaries(hst.text(min_size=2, max_size=4), _TEXT,
                                       min_size=64, max_size=70)),
        transactional=draw(hst.booleans()), trigger_event_id=draw(_TEXT),
        instance_key=draw(_TEXT), locale=draw(hst.none() | _TEXT))


def _fastavro_command(cmd: ChannelCommand) -> bytes:
    return commands().encode(command_record(cmd))


@given(_commands())
@settings(max_examples=300, deadline=None)
def test_a_command_is_written_as_fastavro_writes_it(cmd: ChannelCommand) -> None:
    """``encode_command`` writes the body itself: the bytes fastavro writes for the same
    command, for any text (multi-byte, past 63 bytes, empty), any map size, either side
    of 1970, every channel; and they read back to the command."""
    assert encode_command(cmd) == _fastavro_command(cmd)
    assert decode_command(encode_command(cmd)) == cmd


def test_what_the_command_writer_cannot_take_fastavro_writes_or_refuses_as_before() -> None:
    from omnijourney.codecs import AvroCodec, _command_channels

    base = ChannelCommand("id", "j", "1", "s", "sms", "c1", datetime(2026, 3, 2, tzinfo=UTC),
                          datetime(2026, 3, 3, tzinfo=UTC), None, "+15550100", {"text": "hi"},
                          False, "e1", "")
    naive = replace(base, send_at=datetime(2026, 3, 2))  # noqa: DTZ001 - fastavro: UTC
    assert encode_command(naive) == _fastavro_command(naive)
    for bad in (replace(base, content={"text": "\ud800"}), replace(base, channel="pigeon"),
                replace(base, content={"n": 5})):
        raised = []
        for write in (encode_command, _fastavro_command):
            try:
                write(bad)
            except Exception as exc:  # whatever fastavro raises, ours raises
                raised.append(type(exc))
        assert len(raised) == 2 and raised[0] is raised[1], (bad, raised)
    # A schema with other fields is fastavro's to write.
    schema = json.loads((REPO / "schemas" / "channel_command.avsc").read_text())
    assert _command_channels(AvroCodec(schema)) == {
        ch: bytes([i << 1]) for i, ch in enumerate(["email", "sms", "push", "ads", "webhook"])}
    schema["fields"].insert(3, {"name": "priority", "type": "int", "default": 0})
    assert _command_channels(AvroCodec(schema)) is None


@given(hst.lists(hst.tuples(_TEXT,
                            hst.sampled_from([datetime(2026, 3, 2, 10, tzinfo=UTC),
                                              datetime(2026, 3, 2, 10, 0, 0, 1, tzinfo=UTC),
                                              datetime(1969, 12, 31, 23, tzinfo=UTC)])),
                 max_size=20))
@settings(max_examples=200, deadline=None)
def test_a_batch_of_tick_records_is_each_tick_record(due: list[tuple[str, datetime]]) -> None:
    """The timer writes a batch of ticks at once (``tick_records``, each time written once):
    byte for byte what ``tick_record`` writes, and each reads back to its customer and
    time, whatever the id holds (quotes, escapes, multi-byte)."""
    assert tick_records(due) == [tick_record(cid, now) for cid, now in due]
    assert [read_tick_record(v) for v in tick_records(due)] == due


_EPOCH_MICROS = 62_135_596_800 * 10**6  # from 0001-01-01 to 1970-01-01


@hst.composite
def _event_records(draw: hst.DrawFn) -> dict[str, object]:
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=draw(
        hst.integers(-_EPOCH_MICROS, 10**17)))
    return {"event_id": draw(_TEXT), "type": draw(_TEXT), "customer_id": draw(_TEXT),
            "occurred_at": at, "source": draw(hst.none() | _TEXT),
            "properties": draw(_TEXT),
            "identifiers": draw(hst.dictionaries(_TEXT, _TEXT, max_size=3)
                                | hst.dictionaries(hst.text(min_size=2, max_size=4), _TEXT,
                                                   min_size=64, max_size=70))}


def _fastavro_event(data: bytes) -> dict[str, object]:
    return schemaless_reader(io.BytesIO(data[10:]), events().schema, None)


def _decoded(data: bytes, *, compiled: bool) -> Event | str:
    """``decode_event``'s event, or its refusal's reason; with ``compiled`` False, as it
    read before the compiled reader (fastavro alone)."""
    saved = codecs_module._event_record
    if not compiled:
        codecs_module._event_record = lambda _: None
    try:
        return decode_event(data)
    except InvalidEvent as exc:
        return str(exc)
    finally:
        codecs_module._event_record = saved


@given(_event_records(), hst.lists(hst.tuples(hst.integers(0, 10**4), hst.integers(0, 255)),
                                   max_size=3), hst.integers(0, 10**4))
@settings(max_examples=400, deadline=None)
def test_an_event_is_read_as_fastavro_reads_it(rec: dict[str, object],
                                               flips: list[tuple[int, int]], cut: int) -> None:
    """``decode_event`` reads today's events with a compiled reader (``wire.event_record``):
    the record fastavro reads, for any text, any map size, either side of 1970. Whatever
    it cannot read (bytes changed, cut short: a length past the end, a bad union index,
    text that is not UTF-8) it hands to fastavro, and what it does read of such bytes is
    what fastavro reads of them."""
    data = events().encode(rec)
    assert event_record(data, 10) == _fastavro_event(data) == rec
    assert _event_record(data) == rec
    body = bytearray(data)
    for at, value in flips:
        body[10 + at % (len(body) - 10)] = value
    for changed in (bytes(body), bytes(body[:10 + cut % (len(body) - 9)])):
        read = _event_record(changed)
        if read is not None:
            assert read == _fastavro_event(changed)
        assert _decoded(changed, compiled=True) == _decoded(changed, compiled=False)


def test_an_event_of_an_earlier_schema_is_not_for_the_compiled_reader() -> None:
    data = events().encode({"event_id": "e1", "type": "page.viewed", "customer_id": "c1",
                            "occurred_at": datetime(2026, 3, 2, tzinfo=UTC), "source": None,
                            "properties": "{}", "identifiers": {}})
    assert _event_record(data) is not None
    # A map in blocks that give their size in bytes (a negative count, as Java writers
    # may write): read as fastavro reads it.
    blocked = data[:-1] + b"\x03" + b"\x10" + b"\x02a\x02b" + b"\x02c\x02d" + b"\x01" + b"\x08" + \
        b"\x02e\x02f" + b"\x00"
    assert event_record(blocked, 10)["identifiers"] == {"a": "b", "c": "d", "e": "f"}
    assert event_record(blocked, 10) == _fastavro_event(blocked)
    other = data[:2] + bytes(8) + data[10:]  # another writer's fingerprint
    assert _event_record(other) is None
    assert _event_reader(events())
    schema = json.loads((REPO / "schemas" / "touchpoint_event.avsc").read_text())
    schema["fields"].insert(3, {"name": "channel", "type": "string", "default": ""})
    assert not _event_reader(AvroCodec(schema))


def test_a_varint_past_64_bits_is_left_to_fastavro() -> None:
    """A long of ten bytes whose last sets bits past 64 (fastavro's C reader would wrap
    it) is not the compiled reader's: ``decode_event`` says what fastavro alone says."""
    data = events().encode({"event_id": "e1", "type": "page.viewed", "customer_id": "c1",
                            "occurred_at": datetime(2026, 3, 2, tzinfo=UTC), "source": None,
                            "properties": "{}", "identifiers": {}})
    head = data[:10] + b"\x04e1\x16page.viewed\x04c1"
    assert data.startswith(head)
    for last in (b"\x01", b"\x02", b"\x7f"):  # 2**63 fits (a time out of range), not more
        long_time = head + b"\x80" * 9 + last + data[len(head) + 8:]
        with pytest.raises(OverflowError if last == b"\x01" else ValueError):
            event_record(long_time, 10)
        assert _event_record(long_time) is None
        assert _decoded(long_time, compiled=True) == _decoded(long_time, compiled=False)
