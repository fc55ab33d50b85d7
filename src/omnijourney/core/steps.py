"""A customer's journey runs, step by step: waits, sends through the gate, branches,
splits, profile updates, webhooks, and how each run ends. ``Steps`` is the machine;
``evaluator._Run`` adds what an event does (entries, exits, awaited events, goals).
Pure, like all of ``core``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from omnijourney.core import gate
from omnijourney.core import model as m
from omnijourney.core.catalog import CompiledJourney, JourneySet
from omnijourney.core.commands import ChannelCommand, command_id
from omnijourney.core.context import Views, render_tree, typed_value
from omnijourney.core.expressions import compile_condition
from omnijourney.core.redaction import scrub
from omnijourney.core.state import CustomerState, Instance
from omnijourney.core.templates import TemplateError, compile_text
from omnijourney.core.timeutil import (
    format_instant,
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


def cohort_bucket(journey: str, step: str, customer_id: str) -> int:
    """A stable bucket in [0, 10000) per (journey, step, customer): replayable A/B splits."""
    digest = hashlib.sha256(f"{journey}\x1f{step}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000


_PARK = object()  # the instance waits; stop running steps
_END = object()  # the journey ends here


_entry = tuple.__new__


class Steps:
    def __init__(self, js: JourneySet, st: CustomerState, now: datetime) -> None:
        self.js = js
        self.pol = js.policies
        self.st = st
        self.now = now
        self.commands: list[ChannelCommand] = []
        self.trace: list[TraceEntry] = []
        self.views = Views(st, self.pol)
        self.ctx = self.views.names
        self.entered = False  # whether entry memory grew (and so may need pruning)
        self.runaway: set[str] = set()  # instances stopped for sending too much at once

    def note(self, at: datetime, kind: TraceKind, inst: Instance | None = None,
             step: str | None = None, *, journey: str | None = None, **detail: Any) -> None:
        # Built as the tuple it is, every field given: a decision is noted several times
        # per evaluation (every step reached), and the named tuple's own constructor is
        # a Python call on top.
        if inst is None:
            self.trace.append(_entry(TraceEntry, (at, self.st.customer_id, kind, journey,
                                                  None, step, detail)))
        else:
            self.trace.append(_entry(TraceEntry, (at, self.st.customer_id, kind, inst.journey,
                                                  inst.key or None, step, detail)))

    def check(self, source: str | None, ctx: dict[str, Any], at: datetime,
              inst: Instance | None, step: str | None, *, what: str,
              journey: str | None = None) -> bool:
        if source is None:
            return True
        value, error = compile_condition(source).evaluate(ctx)
        if error:
            self.note(at, TraceKind.CONDITION_ERROR, inst, step, journey=journey, what=what,
                      condition=source, error=scrub(error))
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
            if self.runaway and inst.slot in self.runaway:
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
            if self.runaway and inst.slot in self.runaway:
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
                return self.wait(cj, inst, step, at)
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
                return self.split(cj, inst, step, at)
            case m.UpdateProfileStep():
                self.update_profile(inst, step, at)
                return cj.next_of(step)
            case m.WebhookStep():
                self.webhook(cj, inst, step, at)
                return cj.next_of(step)
            case m.HandoffStep():
                self.handoff(cj, inst, step, at)
                return cj.next_of(step)
            case m.GotoStep():
                return step.next
            case m.EndStep():
                return _END
        raise AssertionError(f"unhandled step type {step!r}")  # pragma: no cover

    def wait(self, cj: CompiledJourney, inst: Instance, step: m.WaitStep,
             at: datetime) -> object:
        until = self.wait_until(inst, step, at)
        if until is None and step.if_missing == "end":
            # No renewal date (or 10/04/2026): sending now, as if the date had come, is
            # the surprise; the run ends and says why.
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

    def split(self, cj: CompiledJourney, inst: Instance, step: m.SplitStep,
              at: datetime) -> object:
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

    def update_profile(self, inst: Instance, step: m.UpdateProfileStep, at: datetime) -> None:
        ctx = self.ctx(inst, at)
        changed = {}
        for key, src in step.set.items():
            try:
                changed[key] = typed_value(src, ctx)
            except TemplateError as exc:
                self.note(at, TraceKind.ERROR, inst, step.id, reason="template_error",
                          field=key, error=_said(exc))
        self.st.profile.setdefault("attributes", {}).update(changed)
        self.views.forget_profile()
        self.note(at, TraceKind.PROFILE_UPDATED, inst, step.id, fields=sorted(changed))

    def assign_cohort(self, inst: Instance, cohort: str) -> None:
        inst.cohort = cohort
        # The goal watch outlives the instance (a holdout ends at once), so it keeps the cohort.
        self.st.goals = [replace(g, cohort=cohort) if g.instance_id == inst.instance_id else g
                         for g in self.st.goals]

    def wait_until(self, inst: Instance, step: m.WaitStep, at: datetime) -> datetime | None:
        if step.duration is not None:
            return at + parse_duration(str(step.duration))
        tz = zone(self.st.profile.get("timezone"), self.pol.timezone)
        if step.until_local_time is not None:
            return next_local_time(at, parse_time_of_day(step.until_local_time), tz)
        try:
            raw = compile_text(step.until or "").render(self.ctx(inst, at)).strip()
        except TemplateError as exc:
            self.note(at, TraceKind.ERROR, inst, step.id, reason="template_error", error=_said(exc))
            return None
        if not raw:
            return None
        try:
            target = _instant_or_date(raw, tz)
        except ValueError as exc:
            self.note(at, TraceKind.ERROR, inst, step.id, reason="bad_until", error=_said(exc))
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
        decision = gate.decide(self.st, self.pol, ch, at, transactional=transactional,
                               quiet_hours=not deferred, on_cap=step.on_cap,
                               topic=step.topic)
        if isinstance(decision, gate.Suppressed):
            self.note(at, TraceKind.SUPPRESSED, inst, step.id, channel=ch,
                      reason=decision.reason, **decision.detail)
            return "skipped"
        if isinstance(decision, gate.Deferred):
            inst.status, inst.due_at = "deferred", decision.until
            self.note(at, TraceKind.DEFERRED, inst, step.id, channel=ch, reason=decision.reason,
                      until=decision.until, **decision.detail)
            return "deferred"
        to = decision.to
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
                      error=_said(exc))
            return "skipped"
        self.emit(cj, inst, step.id, at, channel=ch, to=to, content=content,
                  template=step.template, transactional=transactional, locale=locale)
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
                      reason="template_error", error=_said(exc))
            return
        # Command content is a string map on the wire (schemas/channel_command.avsc).
        content = {"method": step.method, "url": url,
                   "headers": json.dumps(headers, sort_keys=True), "body": body}
        self.emit(cj, inst, step.id, at, channel="webhook", to=url, content=content,
                  template=None, transactional=False, locale=None)

    def handoff(self, cj: CompiledJourney, inst: Instance, step: m.HandoffStep,
                at: datetime) -> None:
        """A request to the helpdesk, on the webhook channel (signed there): who, why
        (the journey, the run's trigger and latest event), the profile fields the journey
        names and nothing else, and for a call-back a slot inside the customer's own
        contact window."""
        ctx = self.ctx(inst, at)
        try:
            url = compile_text(step.url).render(ctx)
            headers = {k: compile_text(v).render(ctx) for k, v in step.headers.items()}
        except TemplateError as exc:
            self.note(at, TraceKind.SUPPRESSED, inst, step.id, channel="webhook",
                      reason="template_error", error=_said(exc))
            return
        request: dict[str, Any] = {
            "handoff": step.kind, "customer_id": self.st.customer_id, "journey": cj.id,
            "step": step.id, "instance_key": inst.key or None,
            "context": {name: _field(self.st.profile, name) for name in step.context},
            "events": [_brief(e) for e in ((inst.trigger,) if inst.last_event.event_id
                                            == inst.trigger.event_id
                                            else (inst.trigger, inst.last_event))]}
        if step.kind == "callback":
            slot = gate.callback_slot(self.st, self.pol, at, parse_duration(str(step.lead)),
                                      parse_duration(str(step.duration)))
            if slot is None:
                self.note(at, TraceKind.SUPPRESSED, inst, step.id, channel="webhook",
                          reason="no_callback_slot")
                return
            start, end, tz = slot
            request["slot"] = {"start": format_instant(start), "end": format_instant(end),
                               "timezone": tz}
            if step.save_slot_as:
                self.st.profile.setdefault("attributes", {})[step.save_slot_as] = \
                    format_instant(start)
                self.views.forget_profile()
            self.note(at, TraceKind.HANDOFF, inst, step.id, mode=step.kind, slot=start)
        else:
            self.note(at, TraceKind.HANDOFF, inst, step.id, mode=step.kind)
        content = {"method": "POST", "url": url, "headers": json.dumps(headers, sort_keys=True),
                   # Keys sorted: the same request whatever order the event's
                   # properties came in (Avro carries them sorted, a file as written).
                   "body": json.dumps(request, ensure_ascii=False, separators=(",", ":"),
                                      sort_keys=True, default=str),
                   "callback": "handoff"}  # the adapter adds the signed callback URL
        self.emit(cj, inst, step.id, at, channel="webhook", to=url, content=content,
                  template=None, transactional=True, locale=None)

    def emit(self, cj: CompiledJourney, inst: Instance, step_id: str, at: datetime, *,
             channel: str, to: str, content: dict[str, Any], template: str | None,
             transactional: bool, locale: str | None) -> None:
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
            trigger_event_id=inst.trigger.event_id, instance_key=inst.key, locale=locale))
        self.note(at, TraceKind.SENT, inst, step_id, channel=ch, command_id=cid,
                  transactional=transactional)

    # ------------------------------------------------------------------ endings
    def finish(self, inst: Instance, at: datetime, reason: TraceKind, **detail: Any) -> None:
        self.st.instances.pop(inst.slot, None)
        inst.status, inst.due_at = "done", None
        if inst.cohort:
            detail["cohort"] = inst.cohort
        self.note(at, reason, inst, inst.step, **detail)


def _field(profile: dict[str, Any], name: str) -> Any:
    """A profile field by dotted name (``attributes.tier``); None when missing."""
    value: Any = profile
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _said(exc: Exception) -> str:
    """An error's message for the trace, which is logged: a value it quotes (a profile's
    email as a wait's ``until``) is named by its digest."""
    return scrub(str(exc))


def _brief(ev: Any) -> dict[str, Any]:
    return {"type": ev.type, "occurred_at": format_instant(ev.occurred_at),
            "source": ev.source, "properties": dict(ev.properties)}


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
