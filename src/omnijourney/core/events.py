"""Facts in: the touchpoint event envelope.

Events are past-tense facts about a customer. The JSON form used in files is
``{"event_id", "type", "customer_id", "occurred_at", "source"?, "properties"?,
"identifiers"?}``; the Avro form (schemas/touchpoint_event.avsc) carries the same fields.
An event that carries ``identifiers`` may leave ``customer_id`` empty: the resolver
finds (or makes) its customer (core/identity.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from omnijourney.core.channels import CHANNELS
from omnijourney.core.commands import DELIVERY_STATUSES, DeliveryReport
from omnijourney.core.identity import InvalidIdentifier, parse_identifiers
from omnijourney.core.timeutil import format_instant, instant_text, parse_instant

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

# What adapters report per command (schemas/delivery_report.avsc); each becomes the
# event ``<channel>.<status>``, e.g. email.clicked or sms.failed.

# The right to be forgotten: everything the engine holds of the customer is removed
# (``omnijourney erase CUSTOMER`` produces one).
ERASURE_EVENT = "customer.erasure_requested"

# Event types the engine itself understands (profile folding, delivery feedback).
# Journeys may trigger on any other well-formed type too.
KNOWN_EVENT_TYPES = frozenset(
    {
        "customer.signed_up",
        "customer.updated",
        ERASURE_EVENT,
        "consent.updated",
        "preferences.updated",
        "handoff.accepted",  # what a helpdesk reports back (tracking/clicks.py, /h/)
        "handoff.resolved",
        "callback.completed",
        "product.viewed",
        "cart.item_added",
        "cart.item_removed",
        "order.placed",
        "order.cancelled",
        "shipment.updated",
        "email.delivered",
        "email.opened",
        "email.clicked",
        "email.bounced",
        "email.unsubscribed",
        "sms.delivered",
        "sms.failed",
        "sms.unsubscribed",
        "push.delivered",
        "push.opened",
        "push.unsubscribed",
    }
    | {f"{ch}.{status}" for ch in CHANNELS for status in DELIVERY_STATUSES}
)


class InvalidEvent(ValueError):
    """An event that cannot be processed; the reason goes to the dead-letter topic."""


# Bounds on what one event may carry. Every event is untrusted input: a value that passes
# here must survive the state's JSON form, the changelog's 1 MB record limit, CEL and
# Liquid, so the limits sit well inside those.
MAX_ID_CHARS = 200  # event_id, customer_id
MAX_NAME_CHARS = 100  # type, source
MAX_PROPERTIES_BYTES = 32 * 1024  # the properties object as compact JSON
MAX_DEPTH = 16  # nesting of objects and arrays inside properties
MAX_STRING_CHARS = 8 * 1024  # any one string inside properties
# Instants a journey can do arithmetic on: a wait of years after the latest still fits
# in a datetime, and nothing before the Unix epoch is a real touchpoint.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_json(data: bytes | str, what: str) -> Any:
    """JSON from an untrusted producer. Besides syntax errors, the standard parser raises
    ValueError for integers of over 4300 digits and RecursionError for deep nesting;
    NaN and Infinity are refused (no JSON number, and no way back out of the state).

    orjson reads it first, ten times faster (every event's properties come this way).
    Whatever it refuses (NaN, 1e400, a lone surrogate, deep nesting, text not UTF-8)
    the standard parser reads, with its own answer or error; a run of nineteen digits or
    more (perhaps an integer past 64 bits, which orjson reads as a float) goes there
    first."""
    raw: bytes | None = data if type(data) is bytes else None
    if type(data) is str:
        # A lone surrogate does not encode: the standard parser says what it says.
        with contextlib.suppress(UnicodeEncodeError):
            raw = data.encode("utf-8")
    if raw is not None and not may_hold_long_integer(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidEvent(f"{what}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, digit limits
        raise InvalidEvent(f"{what}: {str(exc)[:200]}") from None


# Nineteen digits in a row, looked for with every digit made a 0 (a regular expression
# took longer than the JSON).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def may_hold_long_integer(raw: bytes) -> bool:
    """Whether JSON text holds nineteen digits in a row: perhaps an integer past 64 bits,
    which orjson reads as a float and ``json`` as the integer it is."""
    return _LONG_DIGITS in raw.translate(_DIGITS_AS_ZERO)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_text(name: str, value: str, limit: int) -> None:
    """A string that can be encoded, logged and used as a Kafka key."""
    if len(value) > limit:
        raise InvalidEvent(f"'{name}' is longer than {limit} characters")
    if _CONTROL.search(value):
        raise InvalidEvent(f"'{name}' contains control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(f"'{name}' is not valid Unicode (an unpaired surrogate)") from None


# Compact JSON is at most this many times longer than any JSON text of the same value:
# whitespace and escapes only shrink, and a number grows most as "1e15" becomes
# "1000000000000000.0" (4.5x). A text this much under the limit needs no measuring.
_COMPACT_GROWTH = 5


def check_properties(props: Mapping[str, Any], *, text_bytes: int | None = None) -> None:
    """Properties that fit the bounds above; InvalidEvent naming the first excess.
    ``text_bytes``: the size of the JSON text they were read from, when known; small
    texts (nearly all) are not written out again to be measured."""
    if not _fits(props, 0):
        _check_value(props, "properties", 0)  # raises, naming where
    if text_bytes is not None and text_bytes * _COMPACT_GROWTH <= MAX_PROPERTIES_BYTES:
        return
    try:
        size = len(json.dumps(props, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8"))
    except ValueError as exc:  # NaN, Infinity
        raise InvalidEvent(f"properties: {exc}") from None
    if size > MAX_PROPERTIES_BYTES:
        raise InvalidEvent(f"properties are {size} bytes as JSON, over the limit of "
                           f"{MAX_PROPERTIES_BYTES}")


def _fits(value: Any, depth: int) -> bool:
    """``_check_value``'s bounds, without building the path of every value on the way:
    nearly every event passes, and only one that does not needs its problem named."""
    if depth > MAX_DEPTH:
        return False
    kind = type(value)
    if kind is str:
        if len(value) > MAX_STRING_CHARS:
            return False
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _fits(key, depth + 1) or not _fits(item, depth + 1):
                return False
        return True
    if kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_fits(item, depth + 1) for item in value)
    return False  # anything else (a Mapping, a tuple ...) is left to _check_value


def _check_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidEvent(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise InvalidEvent(f"{where}: a string longer than {MAX_STRING_CHARS} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent(f"{where}: not valid Unicode (an unpaired surrogate)") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEvent(f"{where}: keys must be strings")
            _check_value(key, where, depth + 1)
            _check_value(item, f"{where}.{key}"[:200], depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]"[:200], depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidEvent(f"{where}: {value} is not a JSON number")
    elif not (value is None or isinstance(value, bool | int | float)):
        raise InvalidEvent(f"{where}: {type(value).__name__} is not a JSON value")


# One encoder for every fingerprint (``json.dumps`` with options builds a new one per
# call, a third of the fingerprint's cost); the text it writes is what ``json.dumps``
# writes, so fingerprints kept in states before stay comparable.
_FINGERPRINT_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str)
# Values orjson writes exactly as that encoder does, when the text is ASCII without DEL
# (the encoder escapes the rest as \uXXXX): exact types only, so no subclass, enum or
# date takes orjson's own form. Floats differ below 1e-4 (``1e-05`` against ``1e-5``),
# and orjson writes infinities as null: those, nested values and integers past 64 bits
# take the encoder (a property test compares the two on random values).
_SCALARS = frozenset({str, int, bool, type(None)})


def _fast_body(fields: list[Any], values: list[Any]) -> bytes | None:
    for v in values:
        t = type(v)
        if t in _SCALARS:
            continue
        if t is not float or not (v == 0.0 or 1e-4 <= abs(v) < math.inf):
            return None
    try:
        # The time (in UTC) as orjson writes it: RFC 3339 with Z, as ``instant_text``.
        body = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)
    except orjson.JSONEncodeError:  # an integer past 64 bits
        return None
    return body if body.isascii() and b"\x7f" not in body else None


def fingerprint(ev: Event) -> str:
    """A short digest of what an event says, to tell a redelivery (same id, same content)
    from a conflict (same id, other content). Delivery facts are rebuilt from reports
    whose times differ between re-sends, so they carry none."""
    if ev.event_id.startswith("delivery:"):
        return ""
    props = ev.properties if type(ev.properties) is dict else dict(ev.properties)
    at = ev.occurred_at
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    # Identifiers only when there are some: events without them keep their old digests.
    fields: list[Any] = [ev.type, ev.customer_id, at, ev.source, props]
    values = [ev.type, ev.customer_id, ev.source, *props.values()]
    if ev.identifiers:
        ids = dict(ev.identifiers)
        fields.append(ids)
        values.extend(ids)
        values.extend(ids.values())
    body = _fast_body(fields, values) if type(at) is datetime else None
    if body is None:
        # The event's time uncached: each is formatted once, and would only churn the cache.
        fields[2] = instant_text(at)
        body = _FINGERPRINT_JSON.encode(fields).encode()
    return hashlib.blake2b(body, digest_size=5).hexdigest()


@dataclass(frozen=True, slots=True, init=False)
class Event:
    event_id: str
    type: str
    customer_id: str
    occurred_at: datetime
    source: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    # kind -> normalized value, strongest first (core/identity.py)
    identifiers: Mapping[str, str] = field(default_factory=dict)

    # Compiled (native.py: "initialisers"): one for every event read; ``properties`` or
    # ``identifiers`` None is an empty one.
    def __init__(  # noqa: PLR0917 (as the dataclass's)
            self, event_id: str, type: str, customer_id: str, occurred_at: datetime,
            source: str | None = None, properties: Mapping[str, Any] | None = None,
            identifiers: Mapping[str, str] | None = None) -> None:
        object.__setattr__(self, "event_id", event_id)
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "customer_id", customer_id)
        object.__setattr__(self, "occurred_at", occurred_at)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "properties", {} if properties is None else properties)
        object.__setattr__(self, "identifiers", {} if identifiers is None else identifiers)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "event_id": self.event_id,
            "type": self.type,
            "customer_id": self.customer_id,
            "occurred_at": format_instant(self.occurred_at),
            "source": self.source,
            "properties": dict(self.properties),
        }
        if self.identifiers:  # only then: states written before identifiers stay the same
            d["identifiers"] = dict(self.identifiers)
        return d

    def expr_view(self) -> dict[str, Any]:
        """The event as conditions and templates see it (``event.*``)."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "customer_id": self.customer_id,
            "occurred_at": self.occurred_at,
            "source": self.source,
            "properties": dict(self.properties),
            "identifiers": dict(self.identifiers),
        }


_ALLOWED_KEYS = frozenset({"event_id", "type", "customer_id", "occurred_at", "source",
                           "properties", "identifiers"})


def delivery_event(report: DeliveryReport, correlate_by: str | None = None) -> Event:
    """A delivery report as the fact it records (``email.clicked`` ...).

    The event id is derived from the command and status, so a re-sent report is a
    duplicate. When the command's journey correlates by a property (cart_id ...), the
    command's instance key is set under that name, so the fact reaches that instance.
    """
    channel, status = report.channel, report.status
    if channel not in CHANNELS or status not in DELIVERY_STATUSES:
        raise InvalidEvent(f"unknown delivery {channel}.{status}")
    props: dict[str, Any] = {"command_id": report.command_id}
    for key in ("journey", "provider_id", "reason", "instance_key", "address_digest"):
        value = getattr(report, key)
        if value:
            props[key] = value
    if correlate_by and report.instance_key:
        props[correlate_by] = report.instance_key
    return Event(
        event_id=f"delivery:{report.command_id}:{status}",
        type=f"{channel}.{status}",
        customer_id=report.customer_id,
        occurred_at=report.at,
        source=channel,
        properties=props,
    )


def stored_event(data: Any) -> Event:
    """An event as ``Event.to_dict`` wrote it into a state this engine stored: what
    ``parse_event(data, trusted=True)`` gives, read the short way when the shape is the
    usual one (strings where strings go, properties an object, no identifiers). A state
    holds two or more such events and is read back on every first look at a customer
    (a herd of timers reads a hundred thousand): the long way was a fifth of a tick.
    Anything else (identifiers to order, a damaged value) goes the long way, which
    raises what it raised."""
    if type(data) is dict and _ALLOWED_KEYS.issuperset(data) and not data.get("identifiers"):
        eid, etype, cid = data.get("event_id"), data.get("type"), data.get("customer_id")
        source, props = data.get("source"), data.get("properties") or {}
        if (type(eid) is str and eid.strip() and type(etype) is str
                and type(cid) is str and cid.strip() and (source is None or type(source) is str)
                and type(props) is dict and EVENT_TYPE.match(etype) and "occurred_at" in data):
            try:
                at = parse_instant(data["occurred_at"])
            except ValueError:
                pass  # the long way says what is wrong with it
            else:
                return Event(eid, etype, cid, at, source, dict(props), {})
    return parse_event(data, trusted=True)


def parse_event(data: Any, *, trusted: bool = False, text_bytes: int | None = None) -> Event:
    """Validate a JSON-shaped event. Raises InvalidEvent naming the first problem.

    ``trusted``: an event this engine validated before (read back from its own state),
    whose content checks need not run again. ``text_bytes``: the size of the JSON text
    the properties were read from (a bound on their size), when there was one."""
    # ``type(...) is dict`` first: nearly every event is a dict, and an isinstance check
    # against an abstract class costs more than the rest of a line here.
    if type(data) is not dict and not isinstance(data, Mapping):
        raise InvalidEvent(f"an event must be a JSON object, got {type(data).__name__}")
    if not _ALLOWED_KEYS.issuperset(data):
        unknown = sorted(map(str, set(data) - _ALLOWED_KEYS))
        raise InvalidEvent(f"unknown envelope field(s): {', '.join(unknown)}")
    try:
        identifiers = parse_identifiers(data.get("identifiers"))
    except InvalidIdentifier as exc:
        raise InvalidEvent(str(exc)) from None
    for key in ("event_id", "type", "customer_id"):
        value = data.get(key)
        if key == "customer_id" and identifiers and value in (None, ""):
            continue  # the resolver finds the customer
        if not isinstance(value, str) or not value.strip():
            raise InvalidEvent(f"missing or empty '{key}'" + (
                " (or give 'identifiers')" if key == "customer_id" else ""))
        if not trusted:
            check_text(key, value, MAX_NAME_CHARS if key == "type" else MAX_ID_CHARS)
    etype = data["type"]
    if not EVENT_TYPE.match(etype):
        raise InvalidEvent(f"event type '{etype}' is not of the form 'noun.past_tense_verb'")
    if "occurred_at" not in data:
        raise InvalidEvent("missing 'occurred_at'")
    at = data["occurred_at"]
    if type(at) is datetime and at.tzinfo is UTC:
        occurred_at = at  # as Avro gives it: already what parse_instant would make of it
    else:
        try:
            occurred_at = parse_instant(at)
        except ValueError as exc:
            raise InvalidEvent(f"occurred_at: {exc}") from None
    if not trusted and not EARLIEST <= occurred_at < LATEST:
        raise InvalidEvent(f"occurred_at {format_instant(occurred_at)} is outside "
                           f"{EARLIEST.year}..{LATEST.year - 1}")
    source = data.get("source")
    if source is not None:
        if not isinstance(source, str):
            raise InvalidEvent("'source' must be a string")
        if not trusted:
            check_text("source", source, MAX_NAME_CHARS)
    props = data.get("properties") or {}
    if type(props) is not dict and not isinstance(props, Mapping):
        raise InvalidEvent("'properties' must be an object")
    if not trusted:
        check_properties(props, text_bytes=text_bytes)
    return Event(
        event_id=data["event_id"],
        type=etype,
        customer_id=data.get("customer_id") or "",
        occurred_at=occurred_at,
        source=source,
        properties=dict(props),
        identifiers=identifiers,
    )
