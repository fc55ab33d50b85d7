"""Deterministic virtual-time runs of journeys over an event timeline.

The simulator moves a virtual clock from event to event and from timer to timer and calls
the same pure evaluator the Kafka runtime calls, so its output is the reference the live
engine is tested against.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from omnijourney.core import TICK, ChannelCommand, CustomerState, Event, JourneySet, evaluate
from omnijourney.core.evaluator import Input
from omnijourney.core.events import InvalidEvent, parse_event, parse_json
from omnijourney.core.identity import IdentityPolicy, Resolution, start, visit
from omnijourney.core.merging import Identified, Linked, Message, resolved, resolves_first
from omnijourney.core.trace import TraceEntry, TraceKind

DEFAULT_HORIZON = timedelta(days=90)
MAX_TICKS_PER_CUSTOMER = 100_000


@dataclass
class BadLine:
    line: int
    reason: str


@dataclass
class SimulationResult:
    commands: list[ChannelCommand] = field(default_factory=list)
    trace: list[TraceEntry] = field(default_factory=list)
    states: dict[str, CustomerState] = field(default_factory=dict)
    until: datetime | None = None


def read_events(lines: Iterable[str]) -> tuple[list[Event], list[BadLine]]:
    """Parse JSON Lines; bad lines are reported with their number, never dropped silently."""
    events: list[Event] = []
    bad: list[BadLine] = []
    for n, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            events.append(parse_event(parse_json(text, "not JSON")))
        except InvalidEvent as exc:
            bad.append(BadLine(n, str(exc)))
    return events, bad


def simulate(journeys: JourneySet, events: Iterable[Event], until: datetime | None = None,
             horizon: timedelta = DEFAULT_HORIZON) -> SimulationResult:
    """Run every customer's timeline through the evaluator in virtual time.

    Without ``until`` the run ends when no timer is pending within ``horizon`` of the last
    event. Events are taken in time order (file order breaks ties); an event with
    identifiers is resolved first, as the live resolver does (core/identity.py), and the
    merges it starts are played out before the next event. Then each customer's pending
    timers fire, in customer-id order, up to the end of the run.
    """
    ordered = sorted(events, key=lambda e: e.occurred_at)  # stable: file order breaks ties
    result = SimulationResult()
    if not ordered:
        return result
    limit = until if until is not None else ordered[-1].occurred_at + horizon
    result.until = limit
    run = _World(journeys, result)
    for ev in ordered:
        if ev.occurred_at > limit:
            break
        if resolves_first(ev):
            run.deliver(resolved(run.resolve(ev)), ev.occurred_at)
            continue
        run.deliver(ev, ev.occurred_at)
        if ev.identifiers:  # applied to the customer it names; then its identifiers link
            run.deliver(resolved(run.resolve(ev)), ev.occurred_at)
    for cid in sorted(run.states):
        state = run.states[cid]
        for _ in range(MAX_TICKS_PER_CUSTOMER):
            due = state.next_due()
            if due is None or due > limit:
                break
            state = run.step(state, TICK, due)
        run.states[cid] = state
    result.states = dict(sorted(run.states.items()))
    result.commands.sort(key=lambda c: (c.send_at, c.customer_id, c.command_id))
    return result


class _World:
    """Every customer's state, and the identity table, as the live engine keeps them."""

    def __init__(self, journeys: JourneySet, result: SimulationResult) -> None:
        self.js = journeys
        self.result = result
        self.states: dict[str, CustomerState] = {}
        self.identity: dict[str, str] = {}  # identifier key -> customer
        self.policy: IdentityPolicy = journeys.policies.identity

    def resolve(self, ev: Event) -> Resolution:
        """Every hop of the event's resolution, one after the other, as the live resolver
        makes them on its identifiers' partitions."""
        res = start(ev.to_dict(), ev.identifiers)
        while not res.done:
            key = res.key
            claim, res = visit(res, self.identity.get(key), self.policy)
            if claim is not None:
                self.identity[key] = claim
        return res

    def deliver(self, first: Input, at: datetime) -> None:
        """An input, then everything it sends to other customers, in the order sent."""
        queue: deque[tuple[Message | Input, datetime]] = deque([(first, at)])
        while queue:
            inp, when = queue.popleft()
            cid = inp.customer_id  # type: ignore[union-attr]
            state = self.states.get(cid)
            if not isinstance(inp, Event | Identified | Linked) and state is not None:
                # A merge message: the customer's waits due before it fire first, as
                # the live timer fires them while the message is on its way.
                for _ in range(MAX_TICKS_PER_CUSTOMER):
                    due = state.next_due()
                    if due is None or due >= when:
                        break
                    state = self.step(state, TICK, due)
            out = evaluate(self.js, state, inp, when)
            self._record(out.commands, out.trace)
            self.states[cid] = out.state
            for msg in out.outbox:
                queue.append((msg, _time_of(msg, when)))

    def step(self, state: CustomerState, inp: Input, now: datetime) -> CustomerState:
        out = evaluate(self.js, state, inp, now)
        self._record(out.commands, out.trace)
        return out.state

    def _record(self, commands: list[ChannelCommand], trace: list[TraceEntry]) -> None:
        self.result.commands.extend(commands)
        self.result.trace.extend(trace)


def _time_of(msg: Message, default: datetime) -> datetime:
    if isinstance(msg, Identified):
        return msg.event.occurred_at
    return msg.at or default


def explain(result: SimulationResult) -> Iterator[str]:
    """Per customer, why each step went the way it did."""
    by_customer: dict[str, list[TraceEntry]] = defaultdict(list)
    for t in result.trace:
        by_customer[t.customer_id].append(t)
    for cid in sorted(by_customer):
        yield f"== customer {cid}"
        for t in by_customer[cid]:
            if t.kind != TraceKind.STEP:
                yield "  " + describe(t)


def _events(e: str | list[str]) -> str:
    return e if isinstance(e, str) else " or ".join(e)


_ERRORS = {
    "step_limit": "STOPPED: more than {limit} steps without a wait (a loop); the run ends",
    "timer_firing_limit": "STOPPED: too many timers at once for this customer",
    "template_error": "template error{field_text}: {error}",
    "bad_until": "could not read the time to wait until: {error}",
}


def _error_words(d: dict[str, Any]) -> str:
    reason = str(d.get("reason") or "error")
    text = _ERRORS.get(reason, reason.replace("_", " ") + "{error_text}")
    field = d.get("field")
    return text.format(limit=d.get("limit"), error=d.get("error", ""),
                       field_text=f" in {field}" if field else "",
                       error_text=f": {d['error']}" if d.get("error") else "")


def describe(t: TraceEntry) -> str:  # over 60 lines: one phrase per TraceKind, a table
    d = t.text_detail()
    where = t.journey or ""
    if t.key:
        where += f"[{t.key}]"
    if t.step:
        where += f".{t.step}"
    at = t.at.strftime("%Y-%m-%d %H:%M")
    k = t.kind
    phrases: dict[str, Callable[[], str]] = {
        "entered": lambda: f"entered (v{d.get('version')}) on event {d.get('event_id')}",
        "not_entered": lambda: f"not entered: {d.get('reason', '').replace('_', ' ')}"
        + (f" (a run for {d['key']!r} is still going)" if d.get("key") else "")
        + (f" (until {d['allowed_from']})" if "allowed_from" in d else ""),
        "error": lambda: _error_words(d),
        "profile_updated": lambda: "profile updated: " + ", ".join(
            f"attributes.{f}" for f in d.get("fields", [])),
        "holdout": lambda: "held out (the A/B holdout): no message, the goal still counts",
        "version_retired": lambda: f"ended: version {d.get('version')} of the journey is "
        "no longer deployed",
        "completed": lambda: "journey completed",
        "aborted": lambda: "run aborted (see the entry before)",
        "no_time": lambda: "run ended: no time to wait until",
        "goal_exit": lambda: "ended on reaching its goal",
        "branch": lambda: (f"branch: {d['condition']} is true -> {d['next']}" if d.get("value")
                           else f"branch: no condition true -> {d.get('next')}"),
        "split": lambda: f"A/B split: cohort {d['cohort']} (bucket {d['bucket']}/10000)",
        "wait": lambda: f"waiting until {d['until']}",
        "wait_over": lambda: "wait over",
        "wait_skipped": lambda: f"wait skipped: {d.get('reason')}",
        "wait_unresolved": lambda: f"no readable time in {d.get('until')!r}: the run ends "
        "(if_missing: continue goes on instead)",
        "wait_for": lambda: f"waiting for {_events(d['event'])} until {d['until']}",
        "wait_for_matched": lambda: f"{d['event']} arrived ({d['event_id']})",
        "wait_for_ignored": lambda: f"{d['event']} did not meet the condition",
        "timeout": lambda: "no matching event before the timeout",
        "sent": lambda: f"SEND {d['channel']}"
        + (" (transactional)" if d.get("transactional") else "") + f" {d['command_id']}",
        "suppressed": lambda: f"NOT sent on {d['channel']}: {d['reason'].replace('_', ' ')}"
        + (f" ({d['cap']})" if "cap" in d else "") + (f": {d['error']}" if "error" in d else ""),
        "deferred": lambda: (f"{d['channel']} deferred by the frequency cap ({d['cap']}) to "
                             f"{d['until']}" if d.get("reason") == "frequency_cap" else
                             f"{d['channel']} deferred by quiet hours ({d['window']} "
                             f"{d['timezone']}) to {d['until']}"),
        "exited": lambda: f"exited on {d.get('event')}",
        "goal": lambda: f"GOAL reached after {d.get('after')}"
        + (f" (cohort {d['cohort']})" if d.get("cohort") else ""),
        "condition_error": lambda: f"condition {d['condition']!r} failed: {d['error']} "
        "(counted as false)",
        "duplicate_event": lambda: f"duplicate event {d['event_id']} ignored",
        "event_conflict": lambda: f"event {d['event_id']} seen before with other content: "
        "dead-lettered",
        "runaway": lambda: f"STOPPED: this would send the customer more than {d['limit']} "
        f"messages at once ({d['channel']}); the run ends here",
        "trait_rejected": lambda: f"{d['trait']} refused ({d['reason']}); the last valid "
        "value stays",
        "erased": lambda: "customer erased: everything known of them is forgotten",
        "forwarded": lambda: f"{d.get('event_id')} passed on to {d.get('to')} (merged there)",
        "merge_offered": lambda: f"an identifier links this customer to {d.get('other')}: "
        "merge offered",
        "merge_accepted": lambda: f"merge with {d.get('other')} accepted: its state is asked for",
        "merge_refused": lambda: f"NOT merged with {d.get('other')}: " + (
            f"{d.get('kind')} identifiers do not merge customers"
            if d.get("reason") == "kind_does_not_merge" else
            f"together they would hold more than {d.get('limit')} {d.get('kind')} "
            "identifiers"),
        "merged_into": lambda: f"merged into {d.get('into')}: profile and {d.get('runs')} live "
        "run(s) moved there",
        "merged": lambda: f"took in {d.get('absorbed')}: {d.get('runs_moved')} run(s) moved, "
        f"{d.get('runs_ended')} ended as duplicates",
        "run_merged": lambda: f"ended: the same journey was live for the merged customer "
        f"(run {d.get('kept')} goes on)",
    }
    fallback: Callable[[], str] = lambda: f"{k} {json.dumps(d, default=str)}" if d else k  # noqa: E731
    text = phrases.get(k, fallback)()
    return f"{at}  {where:<40} {text}"
