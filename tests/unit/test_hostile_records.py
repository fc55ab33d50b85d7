"""No record stops the engine: every hostile one is dead-lettered with its reason and kind,
and the records around it are processed as if it were not there."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnijourney.codecs import codec, decode_any, encode_event
from omnijourney.config import load
from omnijourney.core import CustomerState, Event
from omnijourney.core.events import MAX_PROPERTIES_BYTES, InvalidEvent, fingerprint, parse_json
from omnijourney.core.redaction import brief, digest
from omnijourney.runtime.engine import BatchResult, Engine, Limits, Record
from omnijourney.runtime.timers import Clock
from omnijourney.settings import Topics
from tests.helpers import signup

REPO = Path(__file__).resolve().parents[2]
JS = load(REPO / "journeys").journey_set
assert JS is not None
TOPICS = Topics.with_prefix("h-")


def raw_event(customer: str = "c1", **fields: Any) -> bytes:
    body = {"event_id": "e1", "type": "customer.signed_up", "customer_id": customer,
            "occurred_at": "2026-03-02T10:00:00Z", "properties": {}}
    body.update(fields)
    return json.dumps(body).encode()


def rec(value: bytes, key: bytes | None = b"c1", offset: int = 0,
        topic: str = TOPICS.touchpoints) -> Record:
    return Record(topic, 0, offset, key, value)


GOOD = encode_event(signup(customer="c2", at="2026-03-02T10:00:00Z"))


def run(*values: bytes, limits: Limits | None = None,
        states: dict[str, CustomerState] | None = None) -> BatchResult:
    """The hostile record(s) between two good ones."""
    engine = Engine(JS, TOPICS, Clock("event"), limits=limits)
    known = states or {}
    records = [rec(GOOD, b"c2", 0), *(rec(v, b"c1", i + 1) for i, v in enumerate(values)),
               rec(encode_event(signup(customer="c3", at="2026-03-02T10:00:00Z")), b"c3", 99)]
    return engine.process(records, known.get)


def dead_letters(result: BatchResult) -> list[dict[str, Any]]:
    return [decode_any(o.value)[1] for o in result.other if o.topic == TOPICS.dlq]


def assert_neighbours_processed(result: BatchResult) -> None:
    assert {"c2", "c3"} <= set(result.states)
    assert {o.key for o in result.commands} >= {b"c2", b"c3"}


HOSTILE = {
    # An unpaired surrogate: json.loads accepts it, UTF-8 (a Kafka key) does not.
    "surrogate": (b'{"event_id": "e1", "type": "customer.signed_up", "customer_id": "c\\ud800",'
                  b' "occurred_at": "2026-03-02T10:00:00Z"}', "invalid_event", "surrogate"),
    "deep": (raw_event().replace(b'"properties": {}',
                                 b'"properties": {"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
             "invalid_event", "nested"),
    "digits": (raw_event().replace(b'"properties": {}',
                                   b'"properties": {"n": ' + b"7" * 4400 + b"}"),
               "invalid_event", "digits"),
    "year_9999": (raw_event(occurred_at="9999-12-31T23:00:00-05:00"), "invalid_event",
                  "out of range"),
    "year_2999": (raw_event(occurred_at="2999-01-01T00:00:00Z"), "invalid_event", "outside"),
    "nan": (raw_event().replace(b'"properties": {}', b'"properties": {"x": NaN}'),
            "invalid_event", "NaN"),
    "control_in_id": (raw_event(event_id="e\r\n1"), "invalid_event", "control"),
    "huge_properties": (raw_event(properties={"blob": "x" * 900_000}), "too_large",
                        "over the limit"),
    "big_properties": (raw_event(properties={f"k{i}": "y" * 1000 for i in range(40)}),
                       "invalid_event", "over the limit"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_record_is_dead_lettered_and_the_partition_goes_on(name: str) -> None:
    value, kind, why = HOSTILE[name]
    result = run(value)
    assert result.dead_kinds == [kind]
    (dead,) = dead_letters(result)
    assert why.lower() in dead["error"].lower(), dead["error"]
    assert dead["original"] == value and dead["offset"] == 1
    assert "c1" not in result.states
    assert_neighbours_processed(result)


def test_a_state_that_would_outgrow_the_limit_is_refused_and_the_old_one_kept() -> None:
    # Each update is within the event limits; together they would make a state that the
    # changelog could not take.
    updates = [raw_event(event_id=f"u{i}", type="customer.updated",
                         properties={f"a{i}_{j}": "z" * 1000 for j in range(20)})
               for i in range(4)]
    result = run(*updates, limits=Limits(max_state_bytes=60_000))
    assert result.dead_kinds == ["state_too_large", "state_too_large"]
    assert all("nothing of this record was applied" in d["error"]
               for d in dead_letters(result))
    kept = result.states["c1"][1]
    assert {k[:2] for k in kept.profile["attributes"]} == {"a0", "a1"}
    assert all(len(doc) <= 60_000 for _, _, doc in result.states.values())
    assert_neighbours_processed(result)


def test_a_reused_event_id_with_other_content_is_a_conflict_not_a_silent_drop() -> None:
    first = raw_event(properties={"first_name": "Ana"})
    again = raw_event(properties={"first_name": "Ana"})  # a redelivery: dropped quietly
    other = raw_event(properties={"first_name": "Bob"})  # same id, other fact
    result = run(first, again, other)
    assert result.dead_kinds == ["conflict"]
    (dead,) = dead_letters(result)
    assert "'e1' was seen before with other content" in dead["error"]
    assert dead["original"] == other
    assert result.states["c1"][1].profile["first_name"] == "Ana"
    assert [x.kind for x in result.trace].count("duplicate_event") == 1


def test_states_written_before_fingerprints_still_decode_and_drop_repeats() -> None:
    old = {"customer_id": "c1", "profile": {}, "instances": {}, "seen": ["e1", "e0"]}
    st_ = CustomerState.from_dict(old)
    assert st_.seen == {"e1": "", "e0": ""}
    result = run(raw_event(properties={"first_name": "Zed"}), states={"c1": st_})
    assert result.dead_kinds == [] and "c1" not in result.states  # a duplicate, unknown content


def test_the_properties_limit_holds_for_texts_that_grow_when_written_compactly() -> None:
    """Small properties texts are not written out again to be measured, on the bound
    that compact JSON is at most 4.5x any text of the same value (numbers such as 4E15
    grow most); a text under a fifth of the limit cannot reach it."""
    tokens = {f"{a}{e}{s}{b}" for a in "0123456789" for e in "eE" for s in ("", "+", "-")
              for b in ("0", "9", "15", "99", "308")} | {"-0", "0.0", "1.5", "-0.0e0"}
    assert max(len(json.dumps(json.loads(t))) / len(t) for t in tokens) <= 4.5
    limit = MAX_PROPERTIES_BYTES
    # 16,500 bytes of text (over a fifth of the limit: measured), 37,500 compact: refused.
    grows = "{" + ",".join(f'"{i:03x}":4E15' for i in range(1500)) + "}"
    assert len(grows) * 5 > limit and len(json.dumps(json.loads(grows))) > limit
    small = "{" + ",".join(f'"{i:03x}":4E15' for i in range(500)) + "}"
    assert len(small) * 5 <= limit  # skipped, and rightly: compact it is under the limit
    assert len(json.dumps(json.loads(small), separators=(",", ":"))) <= limit
    for text, kind in ((grows, ["invalid_event"]), (small, [])):
        ev = {"event_id": "e1", "type": "customer.updated", "customer_id": "c1",
              "occurred_at": datetime(2026, 3, 2, 10, tzinfo=UTC), "source": None,
              "properties": text}
        as_avro = codec("touchpoint_event.avsc").encode(ev)
        as_json = raw_event(type="customer.updated").replace(b'"properties": {}',
                                                             b'"properties": ' + text.encode())
        for value in (as_avro, as_json):
            result = run(value)
            assert result.dead_kinds == kind, (len(text), result.dead_reasons)
            if kind:
                assert "over the limit" in dead_letters(result)[0]["error"]


def test_fingerprints_are_the_ones_states_already_hold() -> None:
    """States keep each event's fingerprint; a redelivery after an upgrade is compared
    with one written by the previous release, so the digest of the same event must not
    change (this value was computed by the release before the faster encoder)."""
    ev = Event("e1", "order.placed", "c1",
               datetime(2026, 3, 2, 9, 59, tzinfo=timezone(timedelta(hours=1))), "store",
               {"total": 42.5, "items": [{"sku": "a", "n": 2}], "note": 'Jo "JJ" <b>',
                "z": None, "b": True})
    assert fingerprint(ev) == "889aa8cac9"
    assert fingerprint(replace(ev, occurred_at=ev.occurred_at.astimezone(UTC))) == "889aa8cac9"
    assert fingerprint(replace(ev, properties=MappingProxyType(dict(ev.properties)))) == \
        "889aa8cac9"
    assert fingerprint(replace(ev, properties={**ev.properties, "total": 42.6})) != "889aa8cac9"


@settings(max_examples=200, deadline=None)
@given(props=st.dictionaries(st.text(max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3), max_leaves=10),
    max_size=5))
def test_the_fingerprint_is_the_digest_of_the_canonical_json(props: dict[str, Any]) -> None:
    ev = Event("e1", "cart.item_added", "c1", datetime(2026, 3, 2, tzinfo=UTC), None, props)
    body = json.dumps([ev.type, ev.customer_id, "2026-03-02T00:00:00Z", None, props],
                      separators=(",", ":"), sort_keys=True, default=str)
    assert fingerprint(ev) == hashlib.blake2b(body.encode(), digest_size=5).hexdigest()


# Flat properties, as most events carry, with the values where a fast encoder and
# ``json`` part ways (NaN is refused at the door): tiny and infinite floats, integers
# past 64 bits, DEL, non-ASCII text, and values that are not plain JSON types.
_EDGE_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**62)
                 | st.floats(allow_nan=False) | st.floats(min_value=-1e-3, max_value=1e-3)
                 | st.text(alphabet=st.characters(max_codepoint=0x7f)) | st.text(max_size=6)
                 | st.sampled_from([float("inf"), -0.0, 1e-4, 9.99e-5, 1e16, 2**64, "\x7f",
                                    (1, "a"), ("t", None)]))


@settings(max_examples=500, deadline=None)
@given(props=st.dictionaries(st.text(alphabet=st.characters(max_codepoint=0x7f), max_size=6)
                             | st.text(max_size=3), _EDGE_SCALARS, max_size=6),
       source=st.none() | st.text(max_size=4),
       identifiers=st.dictionaries(st.sampled_from(["email", "phone", "device"]),
                                   st.text(max_size=8), max_size=2),
       # Hypothesis bounds are naive; ``timezones`` makes each drawn time aware.
       at=st.datetimes(min_value=datetime(1900, 1, 2),  # noqa: DTZ001
                       max_value=datetime(9999, 12, 30),  # noqa: DTZ001
                       timezones=st.sampled_from([UTC, timezone(timedelta(0)),
                                                  timezone(timedelta(hours=-5, minutes=-30)),
                                                  timezone(timedelta(hours=14))])))
def test_the_fast_fingerprint_is_the_digest_of_the_canonical_json_too(
        props: dict[str, Any], source: str | None, identifiers: dict[str, str],
        at: datetime) -> None:
    """The fingerprint takes a faster encoder where it writes the same text; whatever
    the values, the digest is the one ``json`` gives, as in states already written."""
    ev = Event("e1", "cart.item_added", "c1", at, source, props, identifiers)
    fields: list[Any] = [ev.type, ev.customer_id,
                         at.astimezone(UTC).isoformat().replace("+00:00", "Z"), source, props]
    if identifiers:
        fields.append(identifiers)
    body = json.dumps(fields, separators=(",", ":"), sort_keys=True, default=str)
    assert fingerprint(ev) == hashlib.blake2b(body.encode(), digest_size=5).hexdigest()


def test_a_corrupt_stored_state_dead_letters_its_customers_records_not_the_batch() -> None:
    def load(cid: str) -> CustomerState | None:
        if cid == "c1":
            return CustomerState.from_dict(json.loads('{"customer_id": "c1", "instances": '
                                                      '{"x": {"journey": 1}}}'))
        return None

    engine = Engine(JS, TOPICS, Clock("event"))
    result = engine.process([rec(GOOD, b"c2", 0), rec(raw_event(), b"c1", 1)], load)
    assert result.dead_kinds == ["internal_error"]
    assert "could not be processed: KeyError" in dead_letters(result)[0]["error"]
    assert "c2" in result.states


def test_a_fault_that_quotes_an_address_dead_letters_with_its_digest() -> None:
    """An exception's message is the dead letter's reason, which the worker logs and
    counts: an address or phone number in it is named by its digest."""
    def load(cid: str) -> CustomerState | None:
        raise ValueError("no state for Ana.Secret@example.com (+49 151 2345 6789)")

    engine = Engine(JS, TOPICS, Clock("event"))
    result = engine.process([rec(raw_event())], load)
    (reason,) = result.dead_reasons
    assert reason == (f"could not be processed: ValueError: no state for "
                      f"{digest('Ana.Secret@example.com')} ({digest('+4915123456789')})")
    assert dead_letters(result)[0]["error"] == reason
    assert brief(KeyError("x" * 400)) == "KeyError: '" + "x" * 299


# --------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)
fields = st.fixed_dictionaries({}, optional={
    "event_id": st.text(max_size=20) | json_values,
    "type": st.sampled_from(["customer.signed_up", "cart.item_added", "order.placed",
                             "consent.updated", "nope", "customer.updated"]) | json_values,
    "customer_id": st.text(max_size=20) | json_values,
    "occurred_at": st.sampled_from(["2026-03-02T10:00:00Z", "9999-12-31T23:00:00-05:00",
                                    "0001-01-01T00:00:00+14:00", "2026-03-02", "x"])
    | json_values,
    "source": json_values,
    "properties": json_values,
    "extra": json_values,
})
payloads = st.one_of(
    st.binary(max_size=200),
    fields.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=30).map(lambda b: b"\xc3\x01" + b),
    st.text(max_size=50).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
topics = st.sampled_from([TOPICS.touchpoints, TOPICS.ticks, TOPICS.deliveries])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(topics, st.none() | st.binary(max_size=12), payloads),
                min_size=1, max_size=8))
def test_fuzz_no_exception_escapes_and_every_record_is_evaluated_or_dead_lettered(
        batch: list[tuple[str, bytes | None, bytes]]) -> None:
    engine = Engine(JS, TOPICS, Clock("event"))
    states: dict[str, CustomerState] = {}
    records = [Record(topic, 0, i, key, value) for i, (topic, key, value) in enumerate(batch)]
    result = engine.process(records, states.get)
    # Each record: evaluated (one input), dead-lettered, re-keyed, a duplicate or a tick for
    # nobody -- never an exception, never more outcomes than records.
    dead = dead_letters(result)
    assert len(dead) == len(result.dead_kinds) == len(result.dead_reasons)
    assert len(result.inputs) + len(dead) <= len(records)
    for d in dead:
        assert d["error"] and d["original"] in {r.value for r in records}
    for _, _, doc in result.states.values():
        json.loads(doc)  # every state written is readable back


def test_simulate_reports_hostile_lines_with_their_number_and_goes_on() -> None:
    from omnijourney.simulator import read_events

    deep = raw_event().replace(b'"properties": {}',
                               b'"properties": {"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
    digits = raw_event(event_id="e2").replace(b'"properties": {}', b'"properties": {"n": '
                                              + b"1" * 5000 + b"}")
    events, bad = read_events([deep.decode(), digits.decode(), raw_event(event_id="e3").decode(),
                               "{nope"])
    assert [e.event_id for e in events] == ["e3"]
    assert [(b.line, b.reason.split(":")[0]) for b in bad] == [(1, "not JSON"), (2, "not JSON"),
                                                              (4, "not JSON")]
    assert "nested too deeply" in bad[0].reason


# Values near each bound of the properties check: depth, string length, non-finite
# numbers, unpaired surrogates, types JSON has not, keys that are not strings.
_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from(["x" * 8192, "x" * 8193, "é" * 8193, "\ud800", "a\udfffb", "ü"]),
    st.sampled_from([b"bytes", (1, 2), frozenset({1}), MappingProxyType({"a": 1})]),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=3), st.sampled_from([1, "\ud800", None])),
                        inner, max_size=3)),
    max_leaves=12)


def _nested(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_values, st.builds(_nested, st.integers(12, 19), _leaves)))
def test_the_fast_properties_check_refuses_exactly_what_the_named_one_refuses(
        value: Any) -> None:
    # The fast check passes nearly every event without naming paths; whatever it refuses
    # goes to the named check for its reason. The two must never disagree on a refusal:
    # a value the fast one passes must be one the named one passes too.
    from omnijourney.core.events import InvalidEvent, _check_value, _fits

    props = {"v": value}
    try:
        _check_value(props, "properties", 0)
        named_ok = True
    except InvalidEvent:
        named_ok = False
    if _fits(props, 0):
        assert named_ok
    elif _json_shaped(value):
        # What json.loads makes (dicts, lists, text, numbers): refused by both. Only
        # other containers (a tuple, a read-only mapping) are left to the named check.
        assert not named_ok


def _json_shaped(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_json_shaped(v) for v in value.values())
    if isinstance(value, list):
        return all(_json_shaped(v) for v in value)
    return value is None or isinstance(value, str | int | float)


# ``parse_json`` reads with orjson and gives what orjson refuses or may misread (an
# integer past 64 bits) to the standard parser: for every text, the same value (same
# types, same key order) or an InvalidEvent, exactly as the standard parser alone.
_json_leaves = st.one_of(
    st.none(), st.booleans(),
    st.integers() | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1,
                                     10**18, 10**19, -(10**19), 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6) | st.sampled_from(["\u2028", "é", "😀", "\x00", "1234567890123456789"]),
)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=10)
_json_texts = st.one_of(
    _json_values.map(json.dumps),
    _json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    _json_values.map(lambda v: json.dumps(v, indent=1)),
    st.sampled_from(['{"a":1,"a":2,"b":3}', "1e400", "-1e400", "NaN", "[Infinity]",
                     '"\\ud800"', '{"k":"\\udfff\\ud800"}', "[" * 2000 + "]" * 2000,
                     "\ufeff{}", "{}", " [1, 2] ", "[1,]", "", "0.1e-400", "-0",
                     "12345678901234567890123", '{"n":18446744073709551616}']),
    st.text(alphabet='{}[]",:0123456789.eE-+ tfnrueals\\u', max_size=30),
)


def _standard(text: str | bytes) -> tuple[str, str]:
    try:
        return "value", repr(json.loads(text, parse_constant=_refused))
    except (ValueError, RecursionError):
        return "refused", ""


def _refused(name: str) -> None:
    raise ValueError(name)


def _ours(text: str | bytes) -> tuple[str, str]:
    try:
        return "value", repr(parse_json(text, "properties"))
    except InvalidEvent:
        return "refused", ""


@settings(max_examples=600, deadline=None)
@given(_json_texts, st.booleans())
def test_parse_json_reads_what_the_standard_parser_reads_and_refuses_what_it_refuses(
        text: str, as_bytes: bool) -> None:
    given_text: str | bytes = text
    if as_bytes:
        try:
            given_text = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in the text itself
            given_text = text.encode("utf-8", "surrogatepass")
    assert _ours(given_text) == _standard(given_text)


def test_parse_json_keeps_integers_past_64_bits_exact() -> None:
    for text in ('{"n":18446744073709551616}', '[-9223372036854775809]',
                 '{"s":"12345678901234567890","n":1}'):
        assert parse_json(text, "x") == json.loads(text)
        assert parse_json(text.encode(), "x") == json.loads(text)
    assert type(parse_json("18446744073709551616", "x")) is int
