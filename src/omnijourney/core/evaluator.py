"""The evaluator: ``evaluate(journeys, state, input, now) -> Evaluation(state, commands, trace)``.

Pure and deterministic: no clock reads, no I/O, no randomness. The input is an Event,
TICK, an event the resolver identified (``Identified``) or a merge message (core/merging.py).
Time is event time: before an event is applied, waits that ended strictly before it
fire (at their due time), so an exit event at or before a wait's end always wins. A TICK
fires every wait due at or before ``now``. ``Evaluation.outbox`` holds what goes to other
customers' partitions (merge messages, events for a customer merged into another).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from omnijourney.core import gate
from omnijourney.core import model as m
from omnijourney.core import profile as prof
from omnijourney.core.catalog import CompiledJourney, JourneySet
from omnijourney.core.channels import QUIET_HOURS_CHANNELS
from omnijourney.core.commands import ChannelCommand, command_id
from omnijourney.core.events import ERASURE_EVENT, Event, fingerprint
from omnijourney.core.identity import Absorbed, Handover, MergeOffer
from omnijourney.core.merging import Identified, Linked, Message, forward, linked, offers, receive
from omnijourney.core.state import CustomerState, GoalWatch, Instance
from omnijourney.core.steps import Steps
from omnijourney.core.timeutil import (
    format_duration,
    parse_duration,
)
from omnijourney.core.trace import TraceEntry, TraceKind


class Tick:
    """Input meaning "fire whatever is due at ``now``"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TICK"


TICK = Tick()


@dataclass(frozen=True, slots=True, init=False)
class Evaluation:
    state: CustomerState
    commands: list[ChannelCommand]
    trace: list[TraceEntry]
    outbox: list[Message] = field(default_factory=list)
    # The given state was handed over (``unshared``) and evaluated in place: ``state`` is
    # that object, changed. Otherwise a result that is the given state is unchanged.
    in_place: bool = False

    # Compiled (native.py: "initialisers"); ``outbox`` None is an empty one.
    def __init__(self, state: CustomerState, commands: list[ChannelCommand],
                 trace: list[TraceEntry], outbox: list[Message] | None = None,
                 in_place: bool = False) -> None:
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "commands", commands)
        object.__setattr__(self, "trace", trace)
        object.__setattr__(self, "outbox", [] if outbox is None else outbox)
        object.__setattr__(self, "in_place", in_place)


Input = Event | Tick | Identified | Linked | MergeOffer | Handover | Absorbed


def evaluate(journeys: JourneySet, state: CustomerState | None, input: Input,
             now: datetime) -> Evaluation:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if isinstance(input, MergeOffer | Handover | Absorbed):
        if state is not None and state.customer_id != input.customer_id:
            raise ValueError("merge message for another customer")
        out = receive(journeys, state, input)
        return Evaluation(out.state, [], out.trace, out.outbox)
    if isinstance(input, Linked):
        if state is not None and state.customer_id != input.customer_id:
            raise ValueError("links for another customer")
        out = linked(state, input)
        return Evaluation(out.state, [], out.trace, out.outbox)
    links: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    if isinstance(input, Identified):
        links, refused, input = input.links, input.refused, input.event
    if isinstance(input, Event):
        if state is None:
            state = CustomerState(input.customer_id)
        elif state.customer_id != input.customer_id:
            raise ValueError("event belongs to another customer")
        if state.merged_into is not None:
            moved = forward(state, input, links, refused, now)
            return Evaluation(moved.state, [], moved.trace, moved.outbox)
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
    elif state.merged_into is not None:
        return Evaluation(state, [], [])  # its runs went with it
    in_place = state.unshared
    if in_place:
        state.hand_over(False)  # the result's from now on, shared as any other
    run = _Run(journeys, state if in_place else state.clone(), now)
    outbox: list[Message] = []
    if isinstance(input, Event):
        run.on_event(input)
        if links or refused:
            outbox, notes = offers(run.st, links, refused, run.st.clock or now)
            run.trace.extend(notes)
    else:
        run.fire_due(now, inclusive=True)
    run.st.prune(journeys.policies.longest_cap_window,
                 journeys.re_entry if run.entered else None)
    return Evaluation(run.st, run.commands, run.trace, outbox, in_place)


def _without(ev: Event, keys: set[str]) -> Event:
    if not keys & set(ev.properties):
        return ev
    return replace(ev, properties={k: v for k, v in ev.properties.items() if k not in keys})


class _Run(Steps):
    """One evaluation of one customer: what an event does, on the step machine."""

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
        window = (st.profile.get("contact_window"), st.profile.get("timezone"))
        for trait, why in prof.fold(st.profile, ev, self.pol.identity):
            self.note(at, TraceKind.TRAIT_REJECTED, trait=trait, reason=why, event_id=ev.event_id)
        self.views.forget_profile()
        if window != (st.profile.get("contact_window"), st.profile.get("timezone")):
            self.move_deferred(at)
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

    def move_deferred(self, at: datetime) -> None:
        """The customer chose another contact window or time zone: sends waiting for the
        old window's opening wait for the new one's instead (or go now, if it is open)."""
        for slot in sorted(self.st.instances):
            inst = self.st.instances[slot]
            cj = self.journey_of(inst)
            step = cj.steps.get(inst.step) if cj is not None else None
            if (inst.status != "deferred" or not isinstance(step, m.SendStep)
                    or step.channel not in QUIET_HOURS_CHANNELS):
                continue
            opens, window, tz = gate.window_opening(self.st, self.pol, at)
            due = opens or at
            if due != inst.due_at:
                inst.due_at = due
                self.note(at, TraceKind.DEFERRED, inst, step.id, channel=step.channel,
                          reason="preferences_changed", until=due, window=str(window),
                          timezone=tz.key)

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


