"""One batch of Kafka records in; states to write, records to send out.

This ring decodes, calls the pure core and encodes; it holds no business rule. The Faust
agent feeds it records and applies the result (commands first, then state), so it can
be tested without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from omnijourney import wallclock
from omnijourney.codecs import (
    CodecError,
    decode_delivery,
    decode_event,
    decode_message,
    decode_resolution,
    encode_command,
    encode_dead_letter,
    encode_message,
    encode_resolution,
    encode_state,
    read_clock_record,
    read_tick_record,
)
from omnijourney.core import TICK, CustomerState, Event, InvalidEvent, JourneySet, Tick, evaluate
from omnijourney.core.evaluator import Input
from omnijourney.core.events import KNOWN_EVENT_TYPES, delivery_event
from omnijourney.core.identity import start, visit
from omnijourney.core.merging import Identified, Linked, Message, resolved, resolves_first
from omnijourney.core.redaction import brief, scrub
from omnijourney.core.trace import TraceEntry, TraceKind
from omnijourney.runtime.timers import Clock
from omnijourney.settings import ClockMode, Topics

_CONFLICT, _ERASED = TraceKind.EVENT_CONFLICT, TraceKind.ERASED


# Record, Outgoing and Evaluated are made several times per event and only read after:
# plain slotted classes, not frozen (a frozen dataclass sets each field through
# ``object.__setattr__``, four times the cost: 0.4 against 0.1 us for five fields), with
# their initialisers written out so that they are compiled (native.py: "initialisers").
@dataclass(slots=True, init=False)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    # A tick the timer hands over in-process: the customer and time its value says, so
    # that they are not read back from the bytes just written (the value stays, for a
    # dead letter). None for a record read from Kafka.
    tick: tuple[str, datetime] | None = None

    def __init__(  # noqa: PLR0917 (as the dataclass's)
            self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes,
            tick: tuple[str, datetime] | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.tick = tick


@dataclass(slots=True, init=False)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (compacted topics)
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    def __init__(self, topic: str, key: bytes | None, value: bytes | None,
                 partition: int | None = None,
                 headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        self.topic = topic
        self.key = key
        self.value = value
        self.partition = partition
        self.headers = headers


@dataclass(slots=True, init=False)
class Evaluated:
    """One evaluation of one customer: what came in and what the core decided."""

    customer_id: str
    input: str  # the event's type, or "tick"
    event_id: str | None  # None for a tick
    trace: tuple[TraceEntry, ...]
    seconds: float

    def __init__(self, customer_id: str, input: str, event_id: str | None,
                 trace: tuple[TraceEntry, ...], seconds: float) -> None:
        self.customer_id = customer_id
        self.input = input
        self.event_id = event_id
        self.trace = trace
        self.seconds = seconds


@dataclass
class BatchResult:
    # customer -> (partition, new state, its encoded table value)
    states: dict[str, tuple[int, CustomerState, bytes]] = field(default_factory=dict)
    erased: dict[str, int] = field(default_factory=dict)  # customer -> partition: tombstone
    commands: list[Outgoing] = field(default_factory=list)
    other: list[Outgoing] = field(default_factory=list)  # dead letters, re-keyed events
    trace: list[TraceEntry] = field(default_factory=list)
    dead_reasons: list[str] = field(default_factory=list)
    dead_kinds: list[str] = field(default_factory=list)  # low-cardinality, for metrics
    evaluated: list[Evaluated] = field(default_factory=list)
    # ``event`` clock: partition -> its new time, for partitions whose time moved
    watermarks: dict[int, datetime] = field(default_factory=dict)
    # customers whose tick was handled, changed state or not: the timer may tick them again
    ticked: list[str] = field(default_factory=list)
    # the resolver's batches: identifier key -> (partition, the customer now holding it)
    claims: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def evaluations(self) -> int:
        return len(self.evaluated)

    @property
    def inputs(self) -> list[str]:
        """The event type (or "tick") of each evaluation."""
        return [e.input for e in self.evaluated]

    @property
    def eval_seconds(self) -> list[float]:
        return [e.seconds for e in self.evaluated]


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes the engine refuses before they can make an unsendable record. Kafka's default
    ``max.message.bytes`` is 1 MB; a state that outgrew it would fail at the changelog,
    after its commands went out, on every retry of the batch."""

    max_record_bytes: int = 64 * 1024  # one incoming event, as produced
    max_state_bytes: int = 512 * 1024  # one customer's encoded state
    # one record on the engine's own identified topic: a merge message carries the
    # absorbed customer's whole state, so it is bounded by the state limit
    max_message_bytes: int = 2 * 512 * 1024

    def for_topic(self, topic: str, topics: Topics) -> int:
        return self.max_message_bytes if topic == topics.identified else self.max_record_bytes


class Engine:
    def __init__(self, journeys: JourneySet, topics: Topics, clock: Clock,
                 extra_event_types: Iterable[str] = (), *, limits: Limits | None = None,
                 wall: Callable[[], datetime] | None = None) -> None:
        self.journeys = journeys
        self.topics = topics
        self.clock = clock
        self.limits = limits or Limits()
        self.wall = wall or wallclock.now  # stamps dead letters only
        # A type nothing understands is almost always a producer's typo: dead-letter it
        # with the reason rather than let it pass unnoticed.
        self.accepted = KNOWN_EVENT_TYPES | journeys.event_types | frozenset(extra_event_types)

    def process(self, records: Iterable[Record],
                load: Callable[[str], CustomerState | None]) -> BatchResult:
        """Every record is untrusted: whatever one of them makes fail (decoding, the
        evaluator, encoding) dead-letters that record with the reason, leaves the states
        and commands of the others as they are, and the batch goes on."""
        result = BatchResult()
        before: dict[int, datetime | None] = {}
        for rec in records:
            if self.clock.mode is ClockMode.EVENT and rec.partition not in before:
                before[rec.partition] = self.clock.now(rec.partition)
            try:
                limit = self.limits.for_topic(rec.topic, self.topics)
                if len(rec.value) > limit:
                    self._dead(rec, f"record of {len(rec.value)} bytes is over the limit of "
                                    f"{limit}", result, "too_large")
                elif rec.topic == self.topics.ticks:
                    self._tick(rec, load, result)
                elif rec.topic == self.topics.deliveries:
                    self._delivery(rec, load, result)
                elif rec.topic == self.topics.identified:
                    self._identified(rec, load, result)
                else:
                    self._event(rec, load, result)
            except Exception as exc:
                self._dead(rec, f"could not be processed: {brief(exc)}", result,
                           "internal_error")
        for partition, was in before.items():
            mark = self.clock.now(partition)
            if mark is not None and mark != was:
                result.watermarks[partition] = mark
        return result

    def _state(self, cid: str, load: Callable[[str], CustomerState | None],
               result: BatchResult) -> CustomerState | None:
        held = result.states.get(cid)
        if held:
            return held[1]
        return None if cid in result.erased else load(cid)

    def _event(self, rec: Record, load: Callable[[str], CustomerState | None],
               result: BatchResult) -> None:
        mark = read_clock_record(rec.value)
        if mark is not None:
            self.clock.observe(rec.partition, mark, inclusive=True)
            return
        try:
            ev = decode_event(rec.value)
        except InvalidEvent as exc:
            self._dead(rec, str(exc), result, "invalid_event")
            return
        if ev.type not in self.accepted:
            self._dead(rec, f"unknown event type '{ev.type}' (no journey or profile rule uses "
                            "it; list it in OMNIJOURNEY_EXTRA_EVENT_TYPES to accept it)", result,
                       "unknown_type")
            return
        if resolves_first(ev):
            # Who it is about is the resolver's to say: off to its first identifier's
            # partition (the strongest; core/identity.py), whatever the key.
            self._resolve(ev, result)
            return
        key = ev.customer_id.encode()
        if rec.key != key:
            # State is partitioned by customer: an event keyed otherwise (or not at all)
            # is re-published under its customer's key rather than processed in the wrong
            # partition. Dedup by event_id makes a repeat harmless.
            result.other.append(Outgoing(rec.topic, key, rec.value))
            return
        applied = self._evaluate(rec, ev.customer_id, ev, self._now_for(rec, ev), load=load,
                                 result=result)
        if applied and ev.identifiers:
            # It named its customer and is applied: its identifiers are claimed and
            # linked behind it, never ahead of it.
            self._resolve(ev, result)

    def _resolve(self, ev: Event, result: BatchResult) -> None:
        res = start(ev.to_dict(), ev.identifiers)
        result.other.append(Outgoing(self.topics.identity, res.key.encode(),
                                     encode_resolution(res)))

    def resolve(self, records: Iterable[Record], owner: Callable[[str], str | None]
                ) -> BatchResult:
        """A batch of the identity topic: each record one hop of an event's resolution,
        on the partition of the identifier it is at. ``owner``: who the identity table
        says holds an identifier key. Claims made earlier in the batch count."""
        result = BatchResult()
        for rec in records:
            try:
                self._hop(rec, owner, result)
            except Exception as exc:
                self._dead(rec, f"could not be resolved: {brief(exc)}", result,
                           "invalid_resolution")
        return result

    def _hop(self, rec: Record, owner: Callable[[str], str | None], result: BatchResult) -> None:
        try:
            res = decode_resolution(rec.value)
        except (CodecError, ValueError) as exc:
            self._dead(rec, str(exc), result, "invalid_resolution")
            return
        if res.done:
            self._dead(rec, "a resolution with no identifier left", result,
                       "invalid_resolution")
            return
        if rec.key != res.key.encode():  # on another partition than its identifier's
            result.other.append(Outgoing(self.topics.identity, res.key.encode(), rec.value))
            return
        key = res.key
        held = result.claims.get(key)
        claim, res = visit(res, held[1] if held else owner(key),
                           self.journeys.policies.identity)
        if claim is not None:
            result.claims[key] = (rec.partition, claim)
        if res.done:
            result.other.append(self._onward(resolved(res)))
        else:
            result.other.append(Outgoing(self.topics.identity, res.key.encode(),
                                         encode_resolution(res)))

    def _identified(self, rec: Record, load: Callable[[str], CustomerState | None],
                    result: BatchResult) -> None:
        try:
            msg = decode_message(rec.value)
        except (CodecError, ValueError) as exc:
            self._dead(rec, str(exc), result, "invalid_identified")
            return
        cid = msg.customer_id
        if rec.key != cid.encode():
            result.other.append(Outgoing(rec.topic, cid.encode(), rec.value))
            return
        # A merge message acts at the moment of the event that began it.
        now = self._now_for(rec, msg.event) if isinstance(msg, Identified) else msg.at
        self._evaluate(rec, cid, msg, now, load=load, result=result)

    def _delivery(self, rec: Record, load: Callable[[str], CustomerState | None],
                  result: BatchResult) -> None:
        try:
            report = decode_delivery(rec.value)
            journey = self.journeys.current.get(report.journey or "")
            ev = delivery_event(report, journey.defn.trigger.correlate_by if journey else None)
        except (CodecError, InvalidEvent, KeyError) as exc:
            self._dead(rec, f"bad delivery report: {exc}", result, "invalid_delivery")
            return
        if rec.key != ev.customer_id.encode():
            self._dead(rec, "delivery reports must be keyed by customer_id", result,
                       "invalid_delivery")
            return
        self._evaluate(rec, ev.customer_id, ev, self._now_for(rec, ev), load=load,
                       result=result)

    def _now_for(self, rec: Record, ev: Event) -> datetime:
        self.clock.observe(rec.partition, ev.occurred_at, inclusive=False)
        now = self.clock.now(rec.partition) if self.clock.mode is ClockMode.WALL else None
        return now or ev.occurred_at

    def _tick(self, rec: Record, load: Callable[[str], CustomerState | None],
              result: BatchResult) -> None:
        try:
            cid, now = rec.tick if rec.tick is not None else read_tick_record(rec.value)
        except (ValueError, KeyError, TypeError) as exc:
            self._dead(rec, f"bad tick record: {exc}", result, "invalid_tick")
            return
        if self.clock.mode is ClockMode.EVENT:
            mark = self.clock.now(rec.partition)
            if mark is None or now > mark:
                # From beyond what this worker has read of the partition: a worker that
                # sent it while its batch was in flight, then died before storing that
                # batch. Evaluated now, it would fire waits ahead of events still to be
                # read again (the fault test saw a cart run re-entered too soon). This
                # worker's own timer fires the customer when its clock gets there.
                result.ticked.append(cid)
                return
        state = self._state(cid, load, result)
        dead = len(result.dead_kinds)
        if state is not None:  # else a tick for a customer whose state is gone
            self._evaluate(rec, cid, TICK, now, load=load, result=result, state=state)
        if len(result.dead_kinds) == dead:
            # Handled. A tick that was dead-lettered is not: the timer leaves that customer
            # alone (rather than dead-letter it again every second) until its next event.
            result.ticked.append(cid)

    def _evaluate(self, rec: Record, cid: str, inp: Input, now: datetime, *,
                  load: Callable[[str], CustomerState | None], result: BatchResult,
                  state: CustomerState | None = None) -> bool:
        """False when the record was dead-lettered instead."""
        if state is None:
            state = self._state(cid, load, result)
        started = time.perf_counter()
        out = evaluate(self.journeys, state, inp, now)
        took = time.perf_counter() - started
        conflict = erased = False
        for x in out.trace:  # one pass, no generator
            kind = x.kind
            if kind == _CONFLICT:
                conflict = True
            elif kind == _ERASED:
                erased = True
        if conflict:
            self._dead(rec, f"event_id {out.trace[0].detail['event_id']!r} was seen before "
                            "with other content; a producer reused an id", result, "conflict")
            return False
        if erased:
            result.states.pop(cid, None)
            result.erased[cid] = rec.partition
            self._count(result, cid, out.trace, inp, took)
            return True
        stored: tuple[int, CustomerState, bytes] | None = None
        if out.state is not state or out.in_place:  # a duplicate returns it untouched
            doc = encode_state(rec.partition, out.state)
            if len(doc) > self.limits.max_state_bytes:
                self._dead(rec, f"the customer's state would be {len(doc)} bytes, over the "
                                f"limit of {self.limits.max_state_bytes}; nothing of this "
                                "record was applied", result, "state_too_large")
                return False
            stored = (rec.partition, out.state, doc)
        key = cid.encode()
        commands = [Outgoing(self.topics.command(cmd.channel), key, encode_command(cmd),
                             headers=(("command_id", cmd.command_id.encode()),
                                      ("journey", cmd.journey.encode())))
                    for cmd in out.commands]
        onward = [self._onward(msg) for msg in out.outbox]
        # Nothing above raised: only now does this record's outcome join the batch.
        if stored is not None:
            result.erased.pop(cid, None)  # a new profile after an erasure in this batch
            result.states[cid] = stored
        result.commands.extend(commands)
        result.other.extend(onward)
        self._count(result, cid, out.trace, inp, took)
        return True

    def _onward(self, msg: Message) -> Outgoing:
        return Outgoing(self.topics.identified, msg.customer_id.encode(), encode_message(msg))

    @staticmethod
    def _count(result: BatchResult, cid: str, trace: list[TraceEntry], inp: Input,
               took: float) -> None:
        result.trace.extend(trace)
        event = inp.event if isinstance(inp, Identified) else inp
        if isinstance(event, Event):
            what, event_id = event.type, event.event_id
        elif isinstance(event, Tick):
            what, event_id = "tick", None
        elif isinstance(event, Linked):
            what, event_id = "linked", event.event_id
        else:  # a merge message
            what, event_id = type(event).__name__.lower(), event.id
        result.evaluated.append(Evaluated(cid, what, event_id, tuple(trace), took))

    def _dead(self, rec: Record, reason: str, result: BatchResult, kind: str) -> None:
        # A reason may quote the record (an exception's message): keep it encodable, and
        # name any address in it by its digest (the reason is logged and counted).
        reason = scrub(reason.encode("utf-8", "backslashreplace").decode("utf-8"))
        result.dead_reasons.append(reason)
        result.dead_kinds.append(kind)
        result.other.append(dead_letter(self.topics, rec, reason, self.wall()))


def dead_letter(topics: Topics, rec: Record, reason: str, at: datetime) -> Outgoing:
    return Outgoing(topics.dlq, rec.key, encode_dead_letter(
        rec.value, key=rec.key, topic=rec.topic, partition=rec.partition,
        offset=rec.offset, error=reason, at=at))
