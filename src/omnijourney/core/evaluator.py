"""The evaluator: ``evaluate(journeys, state, input, now) -> Evaluation(state, commands, trace)``.

Pure and deterministic: no clock reads, no I/O, no randomness. The input is an Event or
TICK. Time is event time: before an event is applied, waits that ended strictly before it
fire (at their due time), so an exit event at or before a wait's end always wins. A TICK
fires every wait due at or before ``now``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from omnijourney.core import model as m
from omnijourney.core import profile as prof
from omnijourney.core.catalog import QUIET_HOURS_CHANNELS, CompiledJourney, JourneySet
from omnijourney.core.commands import ChannelCommand, command_id
from omnijourney.core.events import ERASURE_EVENT, Event, fingerprint
from omnijourney.core.expressions import compile_condition
from omnijourney.core.state import NEVER_ENTRIES_KEPT, CustomerState, GoalWatch, Instance
from omnijourney.core.templates import TemplateError, compile_text
from omnijourney.core.timeutil import (
    ContactWindow,
    format_duration,
    next_local_time,
    parse_duration,
    parse_instant,
    parse_time_of_day,
    zone,
)
from omnijourney.core.trace import TraceEntry, TraceKind

MAX_STEPS_PER_RUN = 100  # validation rejects wait-less loops; this caps anything that slips by
# What one customer can be sent in one evaluation, all journeys together. Validation rejects
# loops whose waits can all be zero; this bounds anything that slips by (a wait until a
# date in the past, a journey edited live): the run that would send more ends ("runaway").
MAX_COMMANDS_PER_EVALUATION = 16
MAX_TIMER_FIRINGS = 1000


class Tick:
    """Input meaning "fire whatever is due at ``now``"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TICK"


TICK = Tick()


@dataclass(frozen=True, slots=True)
class Evaluation:
    state: CustomerState
    commands: list[ChannelCommand]
    trace: list[TraceEntry]


def evaluate(journeys: JourneySet, state: CustomerState | None, input: Event | Tick,
             now: datetime) -> Evaluation:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if isinstance(input, Event):
        if state is None:
            state = CustomerState(input.customer_id)
        elif state.customer_id != input.customer_id:
            raise ValueError("event belongs to another customer")
        if input.event_id in state.seen:
            before, after = state.seen[input.event_id], fingerprint(input)
            # Same id, other content: not a redelivery but two facts under one name; the
            # runtime dead-letters it rather than drop it unseen.
            kind = TraceKind.EVENT_CONFLICT if before and after and before != after else \
                TraceKind.DUPLICATE_EVENT
            entry = TraceEntry(now, state.customer_id, kind,
                               detail={"event_id": input.event_id})
            return Evaluation(state, [], [entry])
        if input.type == ERASURE_EVENT:
            # Everything this engine knows of the customer goes; the runtime tombstones
            # the state. What the customer does next starts a new, empty profile.
            entry = TraceEntry(now, state.customer_id, TraceKind.ERASED,
                               detail={"event_id": input.event_id})
            return Evaluation(CustomerState(state.customer_id), [], [entry])
    elif state is None:
        raise ValueError("a timer tick needs the customer's state")
    run = _Run(journeys, state.clone(), now)
    if isinstance(input, Event):
        run.on_event(input)
    else:
        run.fire_due(now, inclusive=True)
    run.prune()
    return Evaluation(run.st, run.commands, run.trace)


_SINGLE_OUTPUT = re.compile(r"^\s*\{\{(?:(?!\}\}).)*\}\}\s*$", re.DOTALL)
_NUMBER = re.compile(r"^-?(?:0|[1-9]\d{0,17})(?:\.\d+)?(?:[eE][+-]?\d{1,3})?$")


def typed_value(src: str | int | float | bool | None, ctx: dict[str, Any]) -> Any:
    """What ``update_profile`` stores: YAML numbers, booleans and null as they are; a text
    that is one ``{{ … }}`` output rendering a number or true/false as that number or
    boolean (so ``profile.attributes.score > 50`` compares numbers); any other text as
    the text it renders."""
    if not isinstance(src, str):
        return src
    out = compile_text(src).render(ctx)
    if _SINGLE_OUTPUT.match(src):
        text = out.strip()
        if text in ("true", "false"):
            return text == "true"
        if _NUMBER.match(text):
            number = float(text)
            return int(number) if number.is_integer() and "." not in text and \
                "e" not in text.lower() else number
    return out


def render_tree(value: Any, ctx: dict[str, Any]) -> Any:
    """Every text inside a mapping or list rendered with Liquid; other values kept."""
    if isinstance(value, str):
        return compile_text(value).render(ctx)
    if isinstance(value, dict):
        return {str(k): render_tree(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, ctx) for v in value]
    return value


def _without(ev: Event, keys: set[str]) -> Event:
    if not keys & set(ev.properties):
        return ev
    return replace(ev, properties={k: v for k, v in ev.properties.items() if k not in keys})


def cohort_bucket(journey: str, step: str, customer_id: str) -> int:
    """A stable bucket in [0, 10000) per (journey, step, customer): replayable A/B splits."""
    digest = hashlib.sha256(f"{journey}\x1f{step}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000


class _Run:
    def __init__(self, js: JourneySet, st: CustomerState, now: datetime) -> None:
        self.js = js
        self.pol = js.policies
        self.st = st
        self.now = now
        self.commands: list[ChannelCommand] = []
        self.trace: list[TraceEntry] = []
        self._profile_view: dict[str, Any] | None = None
        self.entered = False  # whether entry memory grew (and so may need pruning)
        self.runaway: set[str] = set()  # instances stopped for sending too much at once
        self._event_views: dict[int, dict[str, Any]] = {}

    # ----------------------------------------------------------------- plumbing
    def note(self, at: datetime, kind: TraceKind, inst: Instance | None = None,
             step: str | None = None, *, journey: str | None = None, **detail: Any) -> None:
        self.trace.append(TraceEntry(
            at, self.st.customer_id, kind,
            journey=inst.journey if inst else journey, key=(inst.key or None) if inst else None,
            step=step, detail=detail))

    def profile_view(self) -> dict[str, Any]:
        if self._profile_view is None:
            self._profile_view = prof.view(self.st.profile, self.pol)
        return self._profile_view

    def event_view(self, ev: Event) -> dict[str, Any]:
        v = self._event_views.get(id(ev))
        if v is None:
            v = self._event_views[id(ev)] = ev.expr_view()
        return v

    def ctx(self, inst: Instance | None, at: datetime, event: Event | None = None,
            cj: CompiledJourney | None = None) -> dict[str, Any]:
        """Names visible to conditions and templates. ``event`` is the event under test
        (trigger, exit, goal, wait_for conditions) or, inside steps, the trigger."""
        c: dict[str, Any] = {"profile": self.profile_view(), "now": at}
        if inst is not None:
            c["event"] = self.event_view(event or inst.trigger)
            c["last_event"] = self.event_view(inst.last_event)
            c["journey"] = {"id": inst.journey, "version": inst.version, "key": inst.key,
                            "entered_at": inst.entered_at, "cohort": inst.cohort or "",
                            "step": inst.step}
        elif event is not None:
            c["event"] = c["last_event"] = self.event_view(event)
            c["journey"] = {"id": cj.id if cj else "", "version": cj.version if cj else 0,
                            "key": "", "entered_at": at, "cohort": "", "step": ""}
        return c

    def check(self, source: str | None, ctx: dict[str, Any], at: datetime,
              inst: Instance | None, step: str | None, *, what: str,
              journey: str | None = None) -> bool:
        if source is None:
            return True
        value, error = compile_condition(source).evaluate(ctx)
        if error:
            self.note(at, TraceKind.CONDITION_ERROR, inst, step, journey=journey, what=what,
                      condition=source, error=error)
        return value

    def grace(self, cj: CompiledJourney) -> timedelta:
        """How long after a wait ends it fires: an exit (or awaited) event that occurred
        before the end but arrives up to this late still wins (wall clock)."""
        own = cj.defn.exit_grace
        return parse_duration(str(own)) if own is not None else self.pol.exit_grace

    def priority(self, inst: Instance) -> int:
        cj = self.journey_of(inst)
        return cj.defn.priority if cj is not None else 0

    def journey_of(self, inst: Instance) -> CompiledJourney | None:
        return self.js.version(inst.journey, inst.version)

    # ------------------------------------------------------------------- events
    def on_event(self, ev: Event) -> None:
        st = self.st
        st.remember(ev.event_id, fingerprint(ev))
        at = ev.occurred_at
        if at > self.now:
            self.note(self.now, TraceKind.CLAMPED_FUTURE_EVENT, event_id=ev.event_id,
                      occurred_at=at)
            at = self.now
        self.fire_due(at, inclusive=False)
        if st.clock is not None and at < st.clock:
            at = st.clock  # a late event cannot act before what already happened
        st.clock = at
        for trait, why in prof.fold(st.profile, ev):
            self.note(at, TraceKind.TRAIT_REJECTED, trait=trait, reason=why, event_id=ev.event_id)
        self._profile_view = None
        self.forget_cleared_traits(ev)
        self.check_goals(ev, at)
        for slot in sorted(st.instances):
            inst = st.instances.get(slot)
            if inst is not None:
                self.check_exit(inst, ev, at)
        for slot in sorted(st.instances):
            inst = st.instances.get(slot)
            if inst is not None and inst.status == "wait_for":
                self.check_wait_for(inst, ev, at)
        for cj in self.js.by_trigger.get(ev.type, ()):
            self.try_enter(cj, ev, at)

    def forget_cleared_traits(self, ev: Event) -> None:
        """A trait set to null leaves no copy behind in the events live runs keep (their
        trigger and latest event), or an address removed from the profile would live on
        there."""
        if ev.type not in prof.TRAIT_EVENTS:
            return
        cleared = {k for k, v in ev.properties.items() if v is None and k in prof.TRAITS}
        if not cleared:
            return
        for inst in self.st.instances.values():
            inst.trigger = _without(inst.trigger, cleared)
            inst.last_event = _without(inst.last_event, cleared)

    @staticmethod
    def correlated(cj: CompiledJourney, inst_key: str, ev: Event) -> bool:
        """Events carrying the journey's correlation property must match the instance;
        events without it (a click, a profile update) concern every instance."""
        prop = cj.defn.trigger.correlate_by
        if not prop or prop not in ev.properties:
            return True
        return str(ev.properties[prop]) == inst_key

    def check_exit(self, inst: Instance, ev: Event, at: datetime) -> None:
        cj = self.journey_of(inst)
        if cj is None:
            return
        for rule in cj.defn.exit_on:
            if rule.event != ev.type or not self.correlated(cj, inst.key, ev):
                continue
            if self.check(rule.when, self.ctx(inst, at, ev), at, inst, inst.step,
                          what="exit_on.when"):
                self.finish(inst, at, TraceKind.EXITED, event=ev.type, event_id=ev.event_id)
                return

    def check_wait_for(self, inst: Instance, ev: Event, at: datetime) -> None:
        cj = self.journey_of(inst)
        if cj is None:
            return
        step = cj.steps[inst.step]
        assert isinstance(step, m.WaitForStep)
        types = (step.event,) if isinstance(step.event, str) else step.event
        if ev.type not in types or not self.correlated(cj, inst.key, ev):
            return
        if not self.check(step.when, self.ctx(inst, at, ev), at, inst, step.id,
                          what="wait_for.when"):
            self.note(at, TraceKind.WAIT_FOR_IGNORED, inst, step.id, event=ev.type,
                      event_id=ev.event_id)
            return
        inst.last_event = ev
        inst.status, inst.due_at = "running", None
        self.note(at, TraceKind.WAIT_FOR_MATCHED, inst, step.id, event=ev.type,
                  event_id=ev.event_id)
        self.run(cj, inst, cj.next_of(step), at)

    def try_enter(self, cj: CompiledJourney, ev: Event, at: datetime) -> None:
        d = cj.defn
        key = ""
        if d.trigger.correlate_by:
            value = ev.properties.get(d.trigger.correlate_by)
            if value is None or value == "":
                self.note(at, TraceKind.NOT_ENTERED, journey=cj.id,
                          reason="missing_correlation_key",
                          property=d.trigger.correlate_by, event_id=ev.event_id)
                return
            key = str(value)
        slot = f"{cj.id}#{key}"
        # Cheap checks first: most triggers (every product view) stop at one of these.
        if slot in self.st.instances:
            self.note(at, TraceKind.NOT_ENTERED, journey=cj.id, reason="already_active",
                      key=key or None, event_id=ev.event_id)
            return
        last = self.st.entries.get(slot)
        if last is not None:
            if cj.re_entry == "never":
                self.note(at, TraceKind.NOT_ENTERED, journey=cj.id, reason="re_entry_never",
                          entered_at=last, event_id=ev.event_id)
                return
            if isinstance(cj.re_entry, timedelta) and at - last < cj.re_entry:
                self.note(at, TraceKind.NOT_ENTERED, journey=cj.id, reason="re_entry_too_soon",
                          entered_at=last, event_id=ev.event_id,
                          allowed_from=last + cj.re_entry)
                return
        ctx = self.ctx(None, at, ev, cj) if d.trigger.when or d.entry.audience else {}
        if not self.check(d.trigger.when, ctx, at, None, None, what="trigger.when",
                          journey=cj.id):
            self.note(at, TraceKind.NOT_ENTERED, journey=cj.id, reason="trigger_condition_false",
                      event_id=ev.event_id)
            return
        if not self.check(d.entry.audience, ctx, at, None, None, what="entry.audience",
                          journey=cj.id):
            self.note(at, TraceKind.NOT_ENTERED, journey=cj.id, reason="not_in_audience",
                      event_id=ev.event_id)
            return
        inst = Instance(
            journey=cj.id, version=cj.version, key=key,
            instance_id=command_id("instance", cj.id, self.st.customer_id, key, ev.event_id),
            trigger=ev, last_event=ev, entered_at=at, step=cj.first)
        self.st.instances[slot] = inst
        self.st.entries[slot] = at
        self.entered = True
        if d.goal is not None:
            self.st.goals.append(GoalWatch(cj.id, cj.version, key, inst.instance_id, None, at,
                                           at + parse_duration(str(d.goal.within))))
        self.note(at, TraceKind.ENTERED, inst, event_id=ev.event_id, version=cj.version)
        self.run(cj, inst, cj.first, at)

    def check_goals(self, ev: Event, at: datetime) -> None:
        """Conversions. One event converts at most one run per journey: the run it is
        correlated with, or, for an event without the correlation property (a store
        order without a cart id), the most recently entered run that still waits for
        its goal. Three carts and one order are one conversion, not three."""
        gone: set[int] = set()
        converted: set[str] = set()
        # Most recent first, so that an uncorrelated event credits the latest run.
        for g in sorted(self.st.goals, key=lambda w: w.entered_at, reverse=True):
            cj = self.js.version(g.journey, g.version)
            goal = cj.defn.goal if cj else None
            if cj is None or goal is None or at > g.deadline:
                gone.add(id(g))  # window closed (or journey retired): drop the watch
                continue
            if (g.journey in converted or goal.event != ev.type
                    or not self.correlated(cj, g.key, ev)):
                continue
            inst = self.st.instances.get(f"{g.journey}#{g.key}")
            live = inst if inst is not None and inst.instance_id == g.instance_id else None
            ctx = self.ctx(live, at, ev, cj)
            if not self.check(goal.when, ctx, at, live, None, what="goal.when",
                              journey=g.journey):
                continue
            converted.add(g.journey)
            gone.add(id(g))
            cohort = live.cohort if live else g.cohort
            self.note(at, TraceKind.GOAL, live, journey=g.journey, event_id=ev.event_id,
                      instance_id=g.instance_id, cohort=cohort,
                      after=format_duration(at - g.entered_at))
            if goal.exit and live is not None:
                self.finish(live, at, TraceKind.GOAL_EXIT)
        self.st.goals = [g for g in self.st.goals if id(g) not in gone]

    # ------------------------------------------------------------------- timers
    def fire_due(self, limit: datetime, *, inclusive: bool) -> None:
        for _ in range(MAX_TIMER_FIRINGS):
            # Earliest first; at the same moment the higher priority, then by slot.
            due = [(i.due_at, -self.priority(i), slot) for slot, i in self.st.instances.items()
                   if i.due_at is not None
                   and (i.due_at < limit or (inclusive and i.due_at == limit))]
            if not due:
                return
            at, _, slot = min(due)
            inst = self.st.instances[slot]
            if self.st.clock is None or at > self.st.clock:
                self.st.clock = at
            self.on_due(inst, at)
        self.note(limit, TraceKind.ERROR, reason="timer_firing_limit")

    def on_due(self, inst: Instance, at: datetime) -> None:
        cj = self.journey_of(inst)
        if cj is None or inst.step not in cj.steps:
            self.finish(inst, at, TraceKind.VERSION_RETIRED, version=inst.version)
            return
        step = cj.steps[inst.step]
        status = inst.status
        inst.status, inst.due_at = "running", None
        if status == "wait":
            self.note(at, TraceKind.WAIT_OVER, inst, step.id)
            self.run(cj, inst, cj.next_of(step), at)
        elif status == "wait_for":
            assert isinstance(step, m.WaitForStep)
            self.note(at, TraceKind.TIMEOUT, inst, step.id)
            self.run(cj, inst, step.on_timeout or cj.next_of(step), at)
        elif status == "deferred":
            assert isinstance(step, m.SendStep)
            if self.send(cj, inst, step, at, deferred=True) == "deferred":
                return  # deferred again (quiet hours, or a cap that still holds)
            if inst.slot in self.runaway:
                self.finish(inst, at, TraceKind.ABORTED)
                return
            self.run(cj, inst, cj.next_of(step), at)

    # -------------------------------------------------------------------- steps
    def run(self, cj: CompiledJourney, inst: Instance, step_id: str | None, at: datetime) -> None:
        for _ in range(MAX_STEPS_PER_RUN):
            if step_id is None:
                self.finish(inst, at, TraceKind.COMPLETED)
                return
            step = cj.steps[step_id]
            inst.step = step_id
            inst.visits[step_id] = inst.visits.get(step_id, 0) + 1
            # Step reach, for analytics; explanations skip it (each step tells its own).
            self.note(at, TraceKind.STEP, inst, step_id, cohort=inst.cohort,
                      visit=inst.visits[step_id])
            nxt = self.step(cj, inst, step, at)
            if inst.slot in self.runaway:
                self.finish(inst, at, TraceKind.ABORTED)
                return
            if nxt is _PARK:
                return
            if nxt is _END:
                self.finish(inst, at, TraceKind.COMPLETED)
                return
            step_id = nxt if isinstance(nxt, str) else None
        self.note(at, TraceKind.ERROR, inst, step_id, reason="step_limit", limit=MAX_STEPS_PER_RUN)
        self.finish(inst, at, TraceKind.ABORTED)

    def step(self, cj: CompiledJourney, inst: Instance, step: m.Step, at: datetime) -> object:
        match step:
            case m.SendStep():
                if self.send(cj, inst, step, at, deferred=False) == "deferred":
                    return _PARK
                return cj.next_of(step)
            case m.WaitStep():
                until = self.wait_until(inst, step, at)
                if until is None and step.if_missing == "end":
                    # No renewal date (or 10/04/2026): sending now, as if the date had
                    # come, is the surprise; the run ends and says why.
                    self.note(at, TraceKind.WAIT_UNRESOLVED, inst, step.id, until=step.until or "",
                              reason="no readable time to wait until")
                    self.finish(inst, at, TraceKind.NO_TIME)
                    return _PARK
                if until is None or until <= at:
                    self.note(at, TraceKind.WAIT_SKIPPED, inst, step.id,
                              reason="time already passed" if until else "no time to wait for")
                    return cj.next_of(step)
                inst.status, inst.due_at = "wait", until + self.grace(cj)
                self.note(at, TraceKind.WAIT, inst, step.id, until=until)
                return _PARK
            case m.WaitForStep():
                inst.status = "wait_for"
                inst.due_at = at + parse_duration(str(step.timeout)) + self.grace(cj)
                self.note(at, TraceKind.WAIT_FOR, inst, step.id, event=step.event,
                          until=inst.due_at)
                return _PARK
            case m.BranchStep():
                ctx = self.ctx(inst, at)
                for case in step.branches:
                    if self.check(case.when, ctx, at, inst, step.id, what="branch"):
                        self.note(at, TraceKind.BRANCH, inst, step.id, condition=case.when,
                                  value=True, next=case.next)
                        return case.next
                nxt = step.else_ if step.else_ is not None else cj.following[step.id]
                self.note(at, TraceKind.BRANCH, inst, step.id, value=False, next=nxt or "end",
                          conditions=[c.when for c in step.branches])
                return nxt if nxt is not None else _END
            case m.SplitStep():
                bucket = cohort_bucket(cj.id, step.id, self.st.customer_id)
                edge = 0
                for v in step.variants:
                    edge += v.percent * 100
                    if bucket < edge:
                        self.assign_cohort(inst, v.name)
                        self.note(at, TraceKind.SPLIT, inst, step.id, cohort=v.name, bucket=bucket)
                        return v.next
                self.assign_cohort(inst, "holdout")
                self.note(at, TraceKind.SPLIT, inst, step.id, cohort="holdout", bucket=bucket)
                self.finish(inst, at, TraceKind.HOLDOUT)
                return _PARK
            case m.UpdateProfileStep():
                ctx = self.ctx(inst, at)
                changed = {}
                for key, src in step.set.items():
                    try:
                        changed[key] = typed_value(src, ctx)
                    except TemplateError as exc:
                        self.note(at, TraceKind.ERROR, inst, step.id, reason="template_error",
                                  field=key, error=str(exc))
                self.st.profile.setdefault("attributes", {}).update(changed)
                self._profile_view = None
                self.note(at, TraceKind.PROFILE_UPDATED, inst, step.id, fields=sorted(changed))
                return cj.next_of(step)
            case m.WebhookStep():
                self.webhook(cj, inst, step, at)
                return cj.next_of(step)
            case m.GotoStep():
                return step.next
            case m.EndStep():
                return _END
        raise AssertionError(f"unhandled step type {step!r}")  # pragma: no cover

    def assign_cohort(self, inst: Instance, cohort: str) -> None:
        inst.cohort = cohort
        # The goal watch outlives the instance (a holdout ends at once), so it keeps the cohort.
        self.st.goals = [replace(g, cohort=cohort) if g.instance_id == inst.instance_id else g
                         for g in self.st.goals]

    def wait_until(self, inst: Instance, step: m.WaitStep, at: datetime) -> datetime | None:
        tz = zone(self.st.profile.get("timezone"), self.pol.timezone)
        if step.duration is not None:
            return at + parse_duration(str(step.duration))
        if step.until_local_time is not None:
            return next_local_time(at, parse_time_of_day(step.until_local_time), tz)
        try:
            raw = compile_text(step.until or "").render(self.ctx(inst, at)).strip()
        except TemplateError as exc:
            self.note(at, TraceKind.ERROR, inst, step.id, reason="template_error", error=str(exc))
            return None
        if not raw:
            return None
        try:
            target = _instant_or_date(raw, tz)
        except ValueError as exc:
            self.note(at, TraceKind.ERROR, inst, step.id, reason="bad_until", error=str(exc))
            return None
        if step.offset:
            off = parse_duration(step.offset.lstrip("-"))
            target = target - off if step.offset.startswith("-") else target + off
        return target

    # -------------------------------------------------------------------- sends
    def send(self, cj: CompiledJourney, inst: Instance, step: m.SendStep, at: datetime,
             *, deferred: bool) -> str:
        ch = step.channel
        transactional = step.template in self.pol.transactional
        to = prof.address(self.st.profile, ch)
        if to is None:
            self.note(at, TraceKind.SUPPRESSED, inst, step.id, channel=ch, reason="no_address")
            return "skipped"
        if prof.bounced(self.st.profile, ch):
            self.note(at, TraceKind.SUPPRESSED, inst, step.id, channel=ch, reason="address_bounced")
            return "skipped"
        if not transactional:
            if not prof.consent_ok(self.st.profile, ch, self.pol):
                self.note(at, TraceKind.SUPPRESSED, inst, step.id, channel=ch, reason="no_consent")
                return "skipped"
            if not deferred and ch in QUIET_HOURS_CHANNELS:
                tz = zone(self.st.profile.get("timezone"), self.pol.timezone)
                window = self.pol.contact_window
                custom = self.st.profile.get("contact_window")
                if custom:
                    window = _window_or(custom, window)
                opens = window.next_open(at, tz)
                if opens is not None:
                    inst.status, inst.due_at = "deferred", opens
                    self.note(at, TraceKind.DEFERRED, inst, step.id, channel=ch,
                              reason="quiet_hours",
                              until=opens, window=str(window), timezone=tz.key)
                    return "deferred"
            cap = self.pol.caps.get(ch)
            if cap is not None:
                limit, per = cap
                recent = sorted(t for t in self.st.sent.get(ch, ()) if t > at - per)
                if len(recent) >= limit:
                    if step.on_cap == "defer":
                        # When the oldest send in the window leaves it, one more fits.
                        frees = recent[len(recent) - limit] + per
                        inst.status, inst.due_at = "deferred", frees
                        self.note(at, TraceKind.DEFERRED, inst, step.id, channel=ch,
                                  reason="frequency_cap", until=frees,
                                  cap=f"{limit} per {format_duration(per)}")
                        return "deferred"
                    self.note(at, TraceKind.SUPPRESSED, inst, step.id, channel=ch,
                              reason="frequency_cap", cap=f"{limit} per {format_duration(per)}")
                    return "skipped"
        ctx = self.ctx(inst, at)
        try:
            data = {k: compile_text(v).render(ctx) for k, v in step.data.items()}
            ctx["data"] = data
            locale: str | None = None
            if ch == "ads":
                content: dict[str, Any] = {"audience": step.audience, "action": step.action}
            else:
                tmpl = self.js.templates[step.template or ""]
                locale, content = tmpl.render(self.st.profile.get("locale") or self.pol.locale,
                                              ctx)
        except TemplateError as exc:
            self.note(at, TraceKind.SUPPRESSED, inst, step.id, channel=ch, reason="template_error",
                      error=str(exc))
            return "skipped"
        self.emit(cj, inst, step.id, at, channel=ch, to=to, content=content,
                  template=step.template, transactional=transactional, locale=locale, data=data)
        if not transactional:
            self.st.sent.setdefault(ch, []).append(at)
        return "sent"

    def webhook(self, cj: CompiledJourney, inst: Instance, step: m.WebhookStep,
                at: datetime) -> None:
        ctx = self.ctx(inst, at)
        try:
            url = compile_text(step.url).render(ctx)
            if isinstance(step.body, dict):
                # A structured body: each text rendered, then the whole encoded as JSON,
                # so a quote in a value is escaped rather than ending the string.
                body = json.dumps(render_tree(step.body, ctx), ensure_ascii=False,
                                  separators=(",", ":"))
            else:
                body = compile_text(step.body).render(ctx) if step.body else ""
            headers = {k: compile_text(v).render(ctx) for k, v in step.headers.items()}
        except TemplateError as exc:
            self.note(at, TraceKind.SUPPRESSED, inst, step.id, channel="webhook",
                      reason="template_error", error=str(exc))
            return
        # Command content is a string map on the wire (schemas/channel_command.avsc).
        content = {"method": step.method, "url": url,
                   "headers": json.dumps(headers, sort_keys=True), "body": body}
        self.emit(cj, inst, step.id, at, channel="webhook", to=url, content=content,
                  template=None, transactional=False, locale=None, data={})

    def emit(self, cj: CompiledJourney, inst: Instance, step_id: str, at: datetime, *,
             channel: str, to: str, content: dict[str, Any], template: str | None,
             transactional: bool, locale: str | None, data: dict[str, str]) -> None:
        ch = channel
        if len(self.commands) >= MAX_COMMANDS_PER_EVALUATION or inst.slot in self.runaway:
            if inst.slot not in self.runaway:
                self.runaway.add(inst.slot)
                self.note(at, TraceKind.RUNAWAY, inst, step_id, channel=ch,
                          limit=MAX_COMMANDS_PER_EVALUATION)
            return
        cid = command_id(cj.id, str(cj.version), self.st.customer_id, inst.instance_id,
                         step_id, str(inst.visits.get(step_id, 1)))
        self.commands.append(ChannelCommand(
            command_id=cid, journey=cj.id, journey_version=str(cj.version), step=step_id,
            channel=ch, customer_id=self.st.customer_id, send_at=at,
            deadline=at + self.pol.deadlines.get(ch, timedelta(hours=24)),
            template=template, to=to, content=content, transactional=transactional,
            trigger_event_id=inst.trigger.event_id, instance_key=inst.key, locale=locale,
            data=data))
        self.note(at, TraceKind.SENT, inst, step_id, channel=ch, command_id=cid,
                  transactional=transactional)

    # ------------------------------------------------------------------ endings
    def finish(self, inst: Instance, at: datetime, reason: TraceKind, **detail: Any) -> None:
        self.st.instances.pop(inst.slot, None)
        inst.status, inst.due_at = "done", None
        if inst.cohort:
            detail["cohort"] = inst.cohort
        self.note(at, reason, inst, inst.step, **detail)

    def prune(self) -> None:
        """Forget what no rule can need any more, so state stays bounded."""
        st = self.st
        if st.clock is None:
            return
        horizon = self.pol.longest_cap_window
        for ch, times in list(st.sent.items()):
            if times[0] > st.clock - horizon:
                continue  # times are in order: nothing has aged out
            kept = [t for t in times if t > st.clock - horizon]
            if kept:
                st.sent[ch] = kept
            else:
                del st.sent[ch]
        if st.goals:
            st.goals = [g for g in st.goals if g.deadline >= st.clock]
        if not self.entered:
            return  # entry memory only grows on entry, so only then can it need pruning
        never: list[tuple[datetime, str]] = []
        for slot, last in list(st.entries.items()):
            cj = self.js.current.get(slot.split("#", 1)[0])
            if cj is None or cj.re_entry == "always" or (
                isinstance(cj.re_entry, timedelta) and st.clock - last >= cj.re_entry
            ):
                if slot not in st.instances:
                    del st.entries[slot]
            elif cj.re_entry == "never":
                never.append((last, slot))
        if len(never) > NEVER_ENTRIES_KEPT:
            for _, slot in sorted(never)[: len(never) - NEVER_ENTRIES_KEPT]:
                del st.entries[slot]


_PARK = object()  # the instance waits; stop running steps
_END = object()  # the journey ends here


def _window_or(text: str, default: ContactWindow) -> ContactWindow:
    try:
        return ContactWindow.parse(text)
    except ValueError:
        return default


def _instant_or_date(raw: str, tz: ZoneInfo) -> datetime:
    """An RFC 3339 instant, or a plain date meaning its local midnight."""
    if len(raw) == 10:
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            pass
        else:
            return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    return parse_instant(raw)
