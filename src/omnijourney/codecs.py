"""Avro codecs for every omnijourney topic.

Wire format, chosen once: Avro **single-object encoding** (the Avro spec's registry-free
framing): ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the schema's
parsing canonical form + the Avro binary body. Any language can decode it with the
``.avsc`` files in ``schemas/`` and no schema registry. The ingest topic also accepts a
JSON object (what most CDPs and webhooks send), validated against the same envelope.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from omnijourney.core.commands import ChannelCommand, DeliveryReport
from omnijourney.core.events import (
    EVENT_TYPE,
    Event,
    InvalidEvent,
    may_hold_long_integer,
    parse_event,
    parse_json,
)
from omnijourney.core.identity import Resolution, message_from_dict, message_to_dict
from omnijourney.core.merging import Identified, Linked, Message
from omnijourney.core.state import CustomerState, GoalWatch, Instance
from omnijourney.core.timeutil import format_instant, parse_instant
from omnijourney.native import restore_annotations
from omnijourney.wire import avro_long, command_body, event_record

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MAGIC = b"\xc3\x01"

_EMPTY = 0xC15D213AA4D7A795  # the CRC-64-AVRO seed from the Avro specification


def _table() -> list[int]:
    out = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        out.append(fp)
    return out


_FP_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def fingerprint_of(parsed: Any) -> bytes:
    return crc64_avro(to_parsing_canonical_form(parsed).encode()).to_bytes(8, "little")


class CodecError(ValueError):
    pass


class AvroCodec:
    """Single-object encoding for one schema."""

    def __init__(self, schema: dict[str, Any],
                 previous: list[dict[str, Any]] | None = None) -> None:
        self.schema = parse_schema(schema)
        self.name: str = schema["name"]
        self.canonical = to_parsing_canonical_form(self.schema)
        self.fingerprint = fingerprint_of(self.schema)
        self.header = MAGIC + self.fingerprint
        # Records written with an earlier version of the schema (schemas/history/) are
        # read through Avro schema resolution: evolving a schema compatibly never makes
        # what is already on a topic unreadable.
        self.writers = {fingerprint_of(w): w for w in map(parse_schema, previous or [])}

    @classmethod
    def load(cls, filename: str) -> AvroCodec:
        stem = filename.removesuffix(".avsc")
        previous = [json.loads(p.read_text(encoding="utf-8"))
                    for p in sorted((SCHEMA_DIR / "history").glob(f"{stem}.v*.avsc"))]
        return cls(json.loads((SCHEMA_DIR / filename).read_text(encoding="utf-8")), previous)

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self.header)
        schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if data[:2] != MAGIC:
            raise CodecError("not Avro single-object encoded (no C3 01 marker)")
        writer = self.schema if data[2:10] == self.fingerprint else self.writers.get(data[2:10])
        if writer is None:
            raise CodecError(f"written with another schema (fingerprint {data[2:10].hex()}, "
                             f"{self.name} is {self.fingerprint.hex()})")
        try:
            value = schemaless_reader(io.BytesIO(data[10:]), writer,
                                      None if writer is self.schema else self.schema)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, ...
            raise CodecError(f"corrupt {self.name} body: {type(exc).__name__}: {exc}") from None
        if not isinstance(value, dict):
            raise CodecError(f"{self.name} body did not decode to a record")
        return value


@cache
def codec(filename: str) -> AvroCodec:
    return AvroCodec.load(filename)


def events() -> AvroCodec:
    return codec("touchpoint_event.avsc")


def commands() -> AvroCodec:
    return codec("channel_command.avsc")


def deliveries() -> AvroCodec:
    return codec("delivery_report.avsc")


def dead_letters() -> AvroCodec:
    return codec("dead_letter.avsc")


# ------------------------------------------------------------------ events

def encode_event(ev: Event) -> bytes:
    return events().encode({
        "event_id": ev.event_id, "type": ev.type, "customer_id": ev.customer_id,
        "occurred_at": ev.occurred_at, "source": ev.source,
        "properties": json.dumps(dict(ev.properties), separators=(",", ":"), sort_keys=True),
        "identifiers": dict(ev.identifiers),
    })


def decode_event(data: bytes) -> Event:
    """An Avro or JSON touchpoint event; InvalidEvent (with the reason) otherwise."""
    if data[:2] == MAGIC:
        rec = _event_record(data)
        if rec is None:
            try:
                rec = events().decode(data)
            except CodecError as exc:
                raise InvalidEvent(str(exc)) from None
        # fastavro decodes strings as strict UTF-8, so the text encodes back: once, here,
        # for both the parser and the size bound.
        body = rec["properties"].encode("utf-8")
        rec["properties"] = parse_json(body, "properties is not JSON") if body else {}
        rec["occurred_at"] = _aware(rec["occurred_at"])
        if not rec.get("identifiers"):
            rec.pop("identifiers", None)
        return parse_event(rec, text_bytes=len(body))
    text = data.lstrip()
    if text[:1] != b"{":
        raise InvalidEvent("neither Avro (C3 01 ...) nor a JSON object")
    return parse_event(parse_json(data, "malformed JSON"), text_bytes=len(data))


# The fields ``wire.event_record`` reads, in order, with their Avro types as fastavro
# parses schemas/touchpoint_event.avsc: if the schema ever says otherwise, fastavro reads.
_EVENT_LAYOUT = (
    ("event_id", "string"), ("type", "string"), ("customer_id", "string"),
    ("occurred_at", "timestamp-micros"), ("source", "null|string"), ("properties", "string"),
    ("identifiers", "map<string>"))


@cache
def _event_reader(codec_: AvroCodec) -> bool:
    """Whether ``wire.event_record`` reads what this codec's schema writes (found once)."""
    return isinstance(codec_.schema, dict) and _layout(codec_.schema) == _EVENT_LAYOUT


def _event_record(data: bytes) -> dict[str, Any] | None:
    """An event written with today's schema, read by the compiled reader (``wire``); None
    for anything else: one written with an earlier schema (read through resolution), a
    body the reader cannot take. fastavro reads those, or refuses them with the reason."""
    codec_ = events()
    if data[2:10] != codec_.fingerprint or not _event_reader(codec_):
        return None
    try:
        return event_record(data, 10)
    except (IndexError, ValueError, OverflowError):  # UnicodeDecodeError is a ValueError
        return None


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


# ------------------------------------------------------------------- states

def encode_state(partition: int, state: CustomerState) -> bytes:
    """The state table's value: the partition the customer's events arrive on (so a
    restore can index by partition without the key's hash), the state's next due time
    (so it can build the timer's index without decoding the state), then the state's
    JSON form. ``p`` and ``d`` lead, in that order, for ``state_due`` to read alone."""
    due = state.next_due()
    if due is not None and due.tzinfo is not UTC:
        due = due.astimezone(UTC)  # written with Z, as format_instant writes it
    try:
        doc = _STATE_ENCODER.encode(_Stored(int(partition), due, state))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        # a lone surrogate, a value of another type: the slow way, as to_dict has it
        head = (f'{{"p":{int(partition)},"d":'
                + (f'"{format_instant(due)}"' if due is not None else "null") + ',"s":')
        return head.encode() + _state_json(state.to_dict()) + b"}"
    if doc.endswith(_NOT_MERGED):  # the state's last field: left out, as to_dict leaves it
        return doc[:-len(_NOT_MERGED)] + b"}}"
    return doc


class _Stored(msgspec.Struct):
    """A table value as msgspec writes it in one pass, in C: the head and the state
    (``d`` an instant in UTC, which msgspec writes as ``format_instant`` does, Z and all;
    one pass instead of a head built in Python and two copies of the state's bytes)."""

    p: int
    d: datetime | None
    s: CustomerState


# msgspec writes the core's dataclasses straight from their fields, in C: the fields of
# ``to_dict`` in its order, instants in UTC with Z, plus an event's empty
# ``identifiers``, which both readers read as absent (half the time of ``to_dict`` +
# orjson: a state is written for every change). ``merged_into``, the state's last
# field, is cut when null: only a customer merged into another has it, as before.
_STATE_ENCODER = msgspec.json.Encoder()
_NOT_MERGED = b',"merged_into":null}}'  # the state's end and the value's


# The head encode_state writes for a state that waits for nothing, partitions 0 to 9: a
# reader that only wants who waits passes such a value over at a glance; a state of
# another partition is read the long way (``state_due``), with the same answer.
NOTHING_DUE = frozenset(f'{{"p":{p},"d":null,"s":'.encode() for p in range(10))
NOTHING_DUE_LENGTH = len(next(iter(NOTHING_DUE)))  # one digit each: all alike


def _state_json(doc: dict[str, Any]) -> bytes:
    """A state's JSON: orjson writes it four to five times faster than ``json`` (the
    worker encodes every changed state of every batch). What it refuses (an integer past
    64 bits, a key that is not a string) ``json`` writes as before. Reading stays with
    ``json``: orjson would read such an integer back as a float."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc, separators=(",", ":")).encode()


def decode_state(raw: bytes) -> tuple[int, CustomerState]:
    read = _typed_state(raw)
    if read is not None:
        return read
    doc = _state_doc(raw)
    return int(doc["p"]), CustomerState.from_dict(doc["s"])


class _TypedState(msgspec.Struct):
    """A table value as ``encode_state`` writes it, for msgspec to read straight into the
    core's classes (``d``, the due time in the head, is not needed here: skipped)."""

    p: int
    s: CustomerState


# Compiled, the core's classes get back their annotations as written (native.py).
restore_annotations(CustomerState, Instance, GoalWatch, Event)
_TYPED_STATE = msgspec.json.Decoder(_TypedState)


def _typed_state(raw: bytes) -> tuple[int, CustomerState] | None:
    """The short way: msgspec reads the JSON into the core's dataclasses, in C, typed by
    their annotations (half of ``orjson`` + ``from_dict``: 12 against 25 µs for a state
    of 2 kB; a herd of timers reads a hundred thousand). Only a value the long way would
    read to the same state is taken from it; anything else, None: a value the types
    refuse (a null where a map goes, a list of event ids as states once held them, a
    status that is not one), a number it will not read (past a float's range, an integer
    of thousands of digits), or what the checks below see (an instant not in UTC, an
    event the long way would order or refuse). Integers past 64 bits it reads exactly, as
    ``json`` does. Unlike the long way, it passes over a key a stored event does not know;
    it reads every other value as the long way does, or not at all."""
    try:
        doc = _TYPED_STATE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    st = doc.s
    st.share_seen(False)  # as from_dict makes it: its own (never on the changelog)
    st.hand_over(False)
    if st.merged_into == "" or not _in_utc(st):
        return None
    # Compiled by mypyc, a run's or goal watch's missing version reads as 0 rather than
    # being refused: 0 goes the long way, which refuses a missing one and reads a 0.
    if any(g.version == 0 for g in st.goals):
        return None
    for inst in st.instances.values():
        # "running" is also the class's default for a status not written: the long way
        # refuses that, and a stored run is never running (it stops at a wait or ends).
        if inst.status == "running" or inst.version == 0 or not (
                _stored(inst.trigger) and _stored(inst.last_event) and _instant(inst.entered_at)
                and (inst.due_at is None or _instant(inst.due_at))):
            return None
        if inst.last_event == inst.trigger:
            inst.last_event = inst.trigger  # one object, as from_dict shares it
    return doc.p, st


def _instant(at: datetime) -> bool:
    # parse_instant's answer is always in UTC; an offset written otherwise goes that way.
    return at.tzinfo is UTC


def _in_utc(st: CustomerState) -> bool:
    # Loops, not all() over generators: a generator's frame per call was a third of the
    # short way's checks (4.3 us of a herd's state read).
    if st.clock is not None and st.clock.tzinfo is not UTC:
        return False
    for at in st.entries.values():
        if at.tzinfo is not UTC:
            return False
    for times in st.sent.values():
        for at in times:
            if at.tzinfo is not UTC:
                return False
    for g in st.goals:
        if g.entered_at.tzinfo is not UTC or g.deadline.tzinfo is not UTC:
            return False
    return True


# Event types seen well formed by the short way: a state's events repeat a few types, and
# the pattern's match cost more than the rest of the check. Bounded, whatever is stored.
_WELL_FORMED: set[str] = set()
_WELL_FORMED_MAX = 4096


def _stored(ev: Event) -> bool:
    """What ``stored_event`` reads the short way: no identifiers (the long way orders
    them), ids that are not blank, a well-formed type."""
    kind = ev.type
    if kind not in _WELL_FORMED:
        if EVENT_TYPE.match(kind) is None:
            return False
        if len(_WELL_FORMED) < _WELL_FORMED_MAX:
            _WELL_FORMED.add(kind)
    # ``s and not s.isspace()``: what ``s.strip() != ""`` says, without a copy.
    return (not ev.identifiers and bool(ev.event_id) and not ev.event_id.isspace()
            and bool(ev.customer_id) and not ev.customer_id.isspace()
            and ev.occurred_at.tzinfo is UTC)


def _state_doc(raw: bytes) -> Any:
    """A table value's JSON: orjson reads it in half the time ``json`` takes (5 against
    10 µs for 2 kB); ``json`` reads what orjson would read otherwise (a long run of
    digits) or not at all (NaN, a number too large for a float), with its own answer or
    error."""
    if not may_hold_long_integer(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


_STATE_HEAD = re.compile(rb'^\{"p":(\d{1,9}),"d":(?:null|"([0-9T:.+Z-]{20,40})"),"s":')


def state_due(raw: bytes) -> tuple[int, datetime | None]:
    """The partition and next due time of a table value, from its first bytes; a value
    written before the due time was stored beside the state is decoded whole."""
    head = _STATE_HEAD.match(raw)
    if head is not None:
        due = head.group(2)
        return int(head.group(1)), parse_instant(due.decode()) if due else None
    partition, st = decode_state(raw)
    return partition, st.next_due()


# Beside the states, one record per partition holds its event-clock time (``event`` mode).
# Its key cannot be a customer id: ids never hold control characters.
WATERMARK_KEY_PREFIX = b"\x00watermark:"


def watermark_key(partition: int) -> bytes:
    return WATERMARK_KEY_PREFIX + str(partition).encode()


def is_watermark_key(key: bytes) -> bool:
    return key.startswith(WATERMARK_KEY_PREFIX)


def encode_watermark(partition: int, at: datetime) -> bytes:
    return json.dumps({"p": partition, "w": format_instant(at)},
                      separators=(",", ":")).encode()


def decode_watermark(raw: bytes) -> datetime:
    return parse_instant(json.loads(raw)["w"])


# -------------------------------------------------- tick and clock records

def tick_record(customer_id: str, now: datetime) -> bytes:
    """``{"customer_id": ..., "now": ...}``, as JSON (``tick_records`` writes it)."""
    return tick_records([(customer_id, now)])[0]


def tick_records(due: Iterable[tuple[str, datetime]]) -> list[bytes]:
    """The tick record of each (customer, time), each distinct time written once (a
    herd's batch of ticks shares one): the object orjson writes for
    ``{"customer_id": customer, "now": format_instant(time)}``."""
    stamps: dict[datetime, bytes] = {}
    out = []
    for cid, now in due:
        stamp = stamps.get(now)
        if stamp is None:
            stamp = stamps[now] = b',"now":' + orjson.dumps(format_instant(now)) + b"}"
        out.append(b'{"customer_id":' + orjson.dumps(cid) + stamp)
    return out


def read_tick_record(value: bytes) -> tuple[str, datetime]:
    """The customer and the time of a tick; ValueError, KeyError or TypeError if it is none
    (read as untrusted JSON is: orjson first, a herd reads a hundred thousand)."""
    body = parse_json(value, "tick record")
    return str(body["customer_id"]), parse_instant(body["now"])


def clock_record(at: datetime) -> bytes:
    """Event time moves to ``at`` on the partition this record is on (``event`` clock).

    Sent to the touchpoints partition itself, so the engine sees it after every event
    produced there before it; on another topic it could overtake them.
    """
    return json.dumps({"watermark": format_instant(at)}).encode()


CLOCK_PREFIX = b'{"watermark"'


def read_clock_record(value: bytes) -> datetime | None:
    """The time a clock record moves to; None for anything else (events)."""
    if not value.startswith(CLOCK_PREFIX):
        return None
    try:
        body = json.loads(value)
        return parse_instant(body["watermark"]) if set(body) == {"watermark"} else None
    except (ValueError, KeyError, TypeError):
        return None


# ------------------------------------------- identity: hops and merge messages

def encode_resolution(res: Resolution) -> bytes:
    """An event on its way through its identifiers (the identity topic)."""
    return orjson.dumps({"resolve": res.to_dict()})


def decode_resolution(raw: bytes) -> Resolution:
    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("resolve"), dict):
        raise CodecError("not a resolution record")
    try:
        return Resolution.from_dict(doc["resolve"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad resolution record: {type(exc).__name__}: {exc}") from None


def encode_message(msg: Message) -> bytes:
    """What goes to a customer's partition on the identified topic: an identified event
    (with the customers it links) or a merge message."""
    if isinstance(msg, Identified):
        doc: dict[str, Any] = {"event": msg.event.to_dict(), "links": list(msg.links),
                               "refused": [list(r) for r in msg.refused]}
    elif isinstance(msg, Linked):
        doc = {"linked": {"customer": msg.customer, "event_id": msg.event_id,
                          "at": format_instant(msg.at), "links": list(msg.links),
                          "refused": [list(r) for r in msg.refused]}}
    else:
        doc = message_to_dict(msg)
    return _state_json(doc)


def decode_message(raw: bytes) -> Message:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise CodecError("not an identified record")
    try:
        if "event" in doc:
            return Identified(parse_event(doc["event"], trusted=True),
                              tuple(map(str, doc.get("links") or ())),
                              tuple((str(k), str(o)) for k, o in doc.get("refused") or ()))
        if "linked" in doc:
            d = doc["linked"]
            return Linked(str(d["customer"]), str(d["event_id"]), parse_instant(d["at"]),
                          tuple(map(str, d.get("links") or ())),
                          tuple((str(k), str(o)) for k, o in d.get("refused") or ()))
        return message_from_dict(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad identified record: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------- commands

def encode_command(cmd: ChannelCommand) -> bytes:
    """A command's single-object Avro, written by ``wire.command_body`` (compiled; a herd
    sends a command for most of its ticks); anything that writer cannot take (a value of
    another type, a lone surrogate) fastavro writes, or refuses, as it always did."""
    codec_ = commands()
    channels = _command_channels(codec_)
    if channels is not None:
        try:
            return codec_.header + command_body(cmd, channels)
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
            pass
    return codec_.encode(command_record(cmd))


def command_record(cmd: ChannelCommand) -> dict[str, Any]:
    """The record fastavro writes for a command (its times as datetimes)."""
    rec = cmd.to_dict()
    rec["send_at"], rec["deadline"] = cmd.send_at, cmd.deadline
    return rec


# The fields ``wire.command_body`` writes, in order, with their Avro types as fastavro parses
# schemas/channel_command.avsc: if the schema ever says otherwise, fastavro writes.
_COMMAND_LAYOUT = (
    ("command_id", "string"), ("journey", "string"), ("journey_version", "string"),
    ("step", "string"), ("channel", "enum"), ("customer_id", "string"),
    ("send_at", "timestamp-micros"), ("deadline", "timestamp-micros"),
    ("template", "null|string"), ("to", "null|string"), ("content", "map<string>"),
    ("transactional", "boolean"), ("trigger_event_id", "string"), ("instance_key", "string"),
    ("locale", "null|string"))


def _layout(schema: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    def kind(t: Any) -> str:
        if isinstance(t, list):
            return "|".join(map(kind, t))
        if isinstance(t, dict):
            if t.get("logicalType"):
                return str(t["logicalType"])
            if t["type"] == "map":
                return f"map<{kind(t['values'])}>"
            return str(t["type"])
        return str(t)
    return tuple((f["name"], kind(f["type"])) for f in schema["fields"])


@cache
def _command_channels(codec_: AvroCodec) -> dict[str, bytes] | None:
    """Each channel's enum index as written, when the command schema is the one
    ``wire.command_body`` writes (found once per codec); None when it is another."""
    schema = codec_.schema
    if not isinstance(schema, dict) or _layout(schema) != _COMMAND_LAYOUT:
        return None
    symbols = next(f["type"]["symbols"] for f in schema["fields"] if f["name"] == "channel")
    return {s: avro_long(i) for i, s in enumerate(symbols)}


def decode_command(data: bytes) -> ChannelCommand:
    rec = commands().decode(data)
    for key in ("send_at", "deadline"):
        rec[key] = _aware(rec[key])
    try:
        return ChannelCommand.from_dict(rec)
    except (KeyError, TypeError) as exc:  # a record of another shape under our schema
        raise CodecError(f"not a command: {exc}") from exc


# --------------------------------------------------------------- deliveries

def encode_delivery(report: DeliveryReport) -> bytes:
    return deliveries().encode(report.to_dict())


def decode_delivery(data: bytes) -> DeliveryReport:
    rec = deliveries().decode(data)
    rec["at"] = _aware(rec["at"])
    return DeliveryReport.from_dict(rec)


# ------------------------------------------------------------- dead letters

def encode_dead_letter(original: bytes, *, key: bytes | None, topic: str, partition: int,
                       offset: int, error: str, at: datetime) -> bytes:
    return dead_letters().encode({"original": original, "original_key": key, "topic": topic,
                                  "partition": partition, "offset": offset, "error": error,
                                  "at": at})


def decode_any(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode a record from any omnijourney topic by its fingerprint (for ``tail``)."""
    if data[:2] == MAGIC:
        for c in (events(), commands(), deliveries(), dead_letters()):
            if data[2:10] == c.fingerprint or data[2:10] in c.writers:
                return c.name, c.decode(data)
        raise CodecError(f"unknown schema fingerprint {data[2:10].hex()}")
    return "json", json.loads(data)
