"""Two customers found to be one person: the merge between their partitions, and how
their states become one.

Pure. The messages (``MergeOffer``, ``Handover``, ``Absorbed``; core/identity.py) are
evaluated like events, on the partition of the customer they are addressed to, and
deduplicated by their ids, so a replay sends nothing twice.

The rules of a merge (``merge_states``), the survivor keeping its own where both have one:
- traits and attributes: the survivor's value, the absorbed one's where the survivor
  has none; counts add up; first seen is the earlier, last seen the later;
- consent per channel and topic: refused if either refused (a revocation is never
  undone by a merge), else granted if either granted;
- identifiers, channels seen on, bounced addresses, marketing sends (so frequency caps
  hold across both) and recent event ids: the union;
- live runs: each moves over with its id, position and timers, so its messages keep
  their ids; two live runs of one journey (same correlation key) cannot go on side by
  side: the one entered first goes on, the other ends (traced ``run_merged``);
- entry memory: the later entry of each (re-entry rules count from it); goal windows of
  the runs that go on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from omnijourney.core import profile as prof
from omnijourney.core.catalog import JourneySet
from omnijourney.core.events import Event, parse_event
from omnijourney.core.identity import (
    Absorbed,
    Handover,
    IdentityPolicy,
    MergeMessage,
    MergeOffer,
    Resolution,
    survivor,
    too_many,
)
from omnijourney.core.state import SEEN_EVENT_IDS, CustomerState
from omnijourney.core.timeutil import parse_instant
from omnijourney.core.trace import TraceEntry, TraceKind


@dataclass(frozen=True, slots=True)
class Identified:
    """An event whose customer the resolver found, with the other customers its
    identifiers belong to (to merge) and those it may not merge with (kind, owner)."""

    event: Event
    links: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def customer_id(self) -> str:
        return self.event.customer_id


@dataclass(frozen=True, slots=True)
class Linked:
    """What the resolver found for an event already applied to ``customer`` (it named
    its customer): the other customers its identifiers belong to, and those refused."""

    customer: str
    event_id: str
    at: datetime
    links: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def customer_id(self) -> str:
        return self.customer


# What one customer's evaluation sends to another customer's partition.
Message = Identified | Linked | MergeOffer | Handover | Absorbed


@dataclass(frozen=True, slots=True)
class Outcome:
    """A merge message's evaluation: no message to the customer ever comes of one."""

    state: CustomerState
    trace: list[TraceEntry]
    outbox: list[Message]


def resolves_first(ev: Event) -> bool:
    """Whether the resolver must find the event's customer before it is applied: it
    names none. An event that names its customer is applied at once and, when it carries
    identifiers, linked behind it (``Linked``), never held up by them."""
    return bool(ev.identifiers) and not ev.customer_id


def resolved(res: Resolution) -> Identified | Linked:
    """What a finished resolution sends to its customer's partition, live or simulated."""
    assert res.done
    assert res.customer is not None
    if res.link_only:
        return Linked(res.customer, str(res.event["event_id"]),
                      parse_instant(res.event["occurred_at"]), res.links, res.refused)
    ev = parse_event({**res.event, "customer_id": res.customer}, trusted=True)
    return Identified(ev, res.links, res.refused)


def identifiers_of(st: CustomerState) -> dict[str, list[str]]:
    return {k: list(v) for k, v in (st.profile.get("identifiers") or {}).items()}


def offers(st: CustomerState, links: tuple[str, ...], refused: tuple[tuple[str, str], ...],
           at: datetime) -> tuple[list[Message], list[TraceEntry]]:
    """After an event that linked this customer to others: a merge offer to each."""
    out: list[Message] = []
    trace: list[TraceEntry] = []
    mine = identifiers_of(st)
    for other in links:
        if other == st.customer_id:
            continue
        out.append(MergeOffer(st.customer_id, other, mine, at))
        trace.append(TraceEntry(at, st.customer_id, TraceKind.MERGE_OFFERED,
                                detail={"other": other}))
    for kind, owner in refused:
        trace.append(TraceEntry(at, st.customer_id, TraceKind.MERGE_REFUSED,
                                detail={"other": owner, "reason": "kind_does_not_merge",
                                        "kind": kind}))
    return out, trace


def linked(state: CustomerState | None, msg: Linked) -> Outcome:
    """Merge offers for the links an event's identifiers showed, sent by the customer
    the event was applied to (or the one it has been merged into since)."""
    st = state if state is not None else CustomerState(msg.customer)
    if st.merged_into is not None:
        to = st.merged_into
        moved = Linked(to, msg.event_id, msg.at, tuple(c for c in msg.links if c != to),
                       msg.refused)
        return Outcome(st, [TraceEntry(msg.at, st.customer_id, TraceKind.FORWARDED,
                                       detail={"event_id": msg.event_id, "to": to})],
                       [moved])
    out, trace = offers(st, msg.links, msg.refused, msg.at)
    return Outcome(st, trace, out)


def forward(st: CustomerState, ev: Event, links: tuple[str, ...],
            refused: tuple[tuple[str, str], ...], now: datetime) -> Outcome:
    """An event for a customer merged into another goes on to that one."""
    assert st.merged_into is not None
    to = st.merged_into
    moved = Identified(replace(ev, customer_id=to), tuple(c for c in links if c != to), refused)
    entry = TraceEntry(now, st.customer_id, TraceKind.FORWARDED,
                       detail={"event_id": ev.event_id, "to": to})
    return Outcome(st, [entry], [moved])


def receive(js: JourneySet, state: CustomerState | None, msg: MergeMessage) -> Outcome:
    """A merge message on the partition of the customer it is addressed to. A state
    returned unchanged (the same object) needs no write."""
    me, at = msg.customer_id, msg.at
    st = state if state is not None else CustomerState(me)
    if msg.id in st.seen:
        return Outcome(st, [TraceEntry(at, me, TraceKind.DUPLICATE_EVENT,
                                       detail={"event_id": msg.id})], [])
    if st.merged_into is not None:
        return _onward(st, msg)
    new = st.clone()
    new.remember(msg.id)
    if isinstance(msg, MergeOffer):
        other = msg.sender
        if other == me:
            return Outcome(new, [], [])
        bad = too_many(identifiers_of(st), msg.identifiers, js.policies.identity)
        if bad is not None:
            return Outcome(new, [TraceEntry(at, me, TraceKind.MERGE_REFUSED, detail={
                "other": other, "reason": "too_many_identifiers", "kind": bad[0],
                "limit": bad[1]})], [])
        if survivor(me, other) == other:
            return _hand_over(new, other, at)
        return Outcome(new, [TraceEntry(at, me, TraceKind.MERGE_ACCEPTED,
                                        detail={"other": other})],
                       [Handover(other, me, identifiers_of(st), at)])
    if isinstance(msg, Handover):
        return _hand_over(new, msg.survivor, at)
    absorbed = CustomerState.from_dict(msg.state)
    merged, trace = merge_states(new, absorbed, js, at)
    return Outcome(merged, trace, [])


def _hand_over(st: CustomerState, to: str, at: datetime) -> Outcome:
    """This customer is absorbed: its whole state goes to ``to``; a redirect stays."""
    redirect = CustomerState(st.customer_id, seen=dict(st.seen), clock=st.clock,
                             merged_into=to)
    entry = TraceEntry(at, st.customer_id, TraceKind.MERGED_INTO,
                       detail={"into": to, "runs": len(st.instances)})
    return Outcome(redirect, [entry], [Absorbed(st.customer_id, to, st.to_dict(), at)])


def _onward(st: CustomerState, msg: MergeMessage) -> Outcome:
    """A merge message for a customer already merged into ``to``: the merge it asks for
    is now between the other party and ``to``."""
    to = st.merged_into
    assert to is not None
    out: list[Message] = []
    if isinstance(msg, MergeOffer) and msg.sender != to:
        out.append(MergeOffer(msg.sender, to, msg.identifiers, msg.at))
    elif isinstance(msg, Handover) and msg.survivor != to:
        out.append(MergeOffer(msg.survivor, to, msg.identifiers, msg.at))
    elif isinstance(msg, Absorbed):
        out.append(Absorbed(msg.absorbed, to, msg.state, msg.at))
    trace = [TraceEntry(msg.at, st.customer_id, TraceKind.FORWARDED,
                        detail={"event_id": msg.id, "to": to})] if out else []
    return Outcome(st, trace, out)


# ------------------------------------------------------------------- rules

def merge_states(s: CustomerState, a: CustomerState, js: JourneySet, at: datetime
                 ) -> tuple[CustomerState, list[TraceEntry]]:
    """Fold the absorbed customer ``a`` into the survivor ``s`` (a copy the caller owns)."""
    trace: list[TraceEntry] = []
    s.profile = merge_profiles(s.profile, a.profile, js.policies.identity)
    if s.profile:
        s.profile["customer_id"] = s.customer_id
    dropped: set[str] = set()
    moved = 0
    for slot, theirs in sorted(a.instances.items()):
        mine = s.instances.get(slot)
        if mine is None:
            s.instances[slot] = theirs
            moved += 1
            continue
        keep, end = sorted((mine, theirs), key=lambda i: (i.entered_at, i.instance_id))
        s.instances[slot] = keep
        dropped.add(end.instance_id)
        trace.append(TraceEntry(at, s.customer_id, TraceKind.RUN_MERGED, end.journey,
                                end.key or None, end.step,
                                detail={"instance_id": end.instance_id,
                                        "kept": keep.instance_id}))
    for slot, when in a.entries.items():
        s.entries[slot] = max(when, s.entries.get(slot, when))
    watched = {g.instance_id for g in s.goals}
    s.goals = [g for g in [*s.goals, *(g for g in a.goals if g.instance_id not in watched)]
               if g.instance_id not in dropped]
    for ch, times in a.sent.items():
        s.sent[ch] = sorted([*s.sent.get(ch, ()), *times])
    seen = {**a.seen, **s.seen}
    s.seen = dict(list(seen.items())[-SEEN_EVENT_IDS:])
    if a.clock is not None and (s.clock is None or a.clock > s.clock):
        s.clock = a.clock
    trace.insert(0, TraceEntry(at, s.customer_id, TraceKind.MERGED,
                               detail={"absorbed": a.customer_id, "runs_moved": moved,
                                       "runs_ended": len(dropped)}))
    return s, trace


def merge_profiles(mine: dict[str, Any], theirs: dict[str, Any],
                   policy: IdentityPolicy) -> dict[str, Any]:
    if not theirs:
        return mine
    if not mine:
        return dict(theirs)
    out = {**theirs, **mine}
    out["attributes"] = {**theirs.get("attributes", {}), **mine.get("attributes", {})}
    counts = dict(theirs.get("counts", {}))
    for k, n in mine.get("counts", {}).items():
        counts[k] = counts.get(k, 0) + n
    out["counts"] = counts
    consent: dict[str, bool] = {}
    for ch in set(mine.get("consent", {})) | set(theirs.get("consent", {})):
        said = [d[ch] for d in (mine.get("consent", {}), theirs.get("consent", {})) if ch in d]
        consent[ch] = all(said)  # refused by either: refused
    out["consent"] = consent
    subs: dict[str, bool] = {}
    for topic in set(mine.get("subscriptions", {})) | set(theirs.get("subscriptions", {})):
        said = [d[topic] for d in (mine.get("subscriptions", {}),
                                   theirs.get("subscriptions", {})) if topic in d]
        subs[topic] = all(said)
    if subs:
        out["subscriptions"] = subs
    for key, pick in (("first_seen_at", min), ("signed_up_at", min), ("last_seen_at", max)):
        values = [d[key] for d in (mine, theirs) if d.get(key)]
        if values:
            out[key] = pick(values)
    ids = {k: list(v) for k, v in theirs.get("identifiers", {}).items()}
    for kind, values in mine.get("identifiers", {}).items():
        kept = [v for v in ids.get(kind, []) if v not in values]
        ids[kind] = [*kept, *values][-policy.limit(kind):]
    out["identifiers"] = ids
    channels = dict(theirs.get("channels", {}))
    for source, seen in mine.get("channels", {}).items():
        other = channels.get(source)
        channels[source] = seen if other is None else {
            "first_seen_at": min(seen["first_seen_at"], other["first_seen_at"]),
            "last_seen_at": max(seen["last_seen_at"], other["last_seen_at"])}
    while len(channels) > prof.MAX_CHANNELS:
        del channels[min(channels, key=lambda c: channels[c]["last_seen_at"])]
    out["channels"] = channels
    bounced = {}
    for ch in set(mine.get("bounced", {})) | set(theirs.get("bounced", {})):
        marks: list[str] = []
        for d in (theirs, mine):
            held = d.get("bounced", {}).get(ch)
            for mark in [held] if isinstance(held, str) else list(held or []):
                if mark not in marks:
                    marks.append(mark)
        bounced[ch] = marks[-prof.BOUNCED_KEPT:]
    if bounced:
        out["bounced"] = bounced
    return out
