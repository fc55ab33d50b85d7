"""A journey as a Mermaid flowchart: the picture marketers check before going live."""

from __future__ import annotations

from omnijourney.core import model as m
from omnijourney.core.analytics import JourneyStats
from omnijourney.core.validation import successors


def _q(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("\n", " ") + '"'


def _label(step: m.Step) -> str:
    match step:
        case m.SendStep():
            what = f"audience {step.audience} ({step.action})" if step.channel == "ads" \
                else str(step.template)
            return f"{step.id}<br/>send {step.channel}: {what}"
        case m.WaitStep():
            how = (f"for {step.duration}" if step.duration is not None
                   else f"until {step.until_local_time} local" if step.until_local_time
                   else f"until {step.until}{' ' + step.offset if step.offset else ''}")
            return f"{step.id}<br/>wait {how}"
        case m.WaitForStep():
            events = step.event if isinstance(step.event, str) else " or ".join(step.event)
            return f"{step.id}<br/>wait up to {step.timeout} for {events}"
        case m.SplitStep():
            return f"{step.id}<br/>A/B split"
        case m.UpdateProfileStep():
            return f"{step.id}<br/>update profile: {', '.join(step.set)}"
        case m.WebhookStep():
            return f"{step.id}<br/>webhook {step.method}"
        case m.HandoffStep():
            return f"{step.id}<br/>hand off to a person ({step.kind})"
        case _:
            return step.id


def _node(step: m.Step, stats: JourneyStats | None) -> str:
    text = _label(step)
    if stats is not None:
        text += f"<br/><b>{stats.steps.get(step.id, 0):,}</b> reached"
    label = _q(text)
    if isinstance(step, m.BranchStep | m.SplitStep):
        return f"{step.id}{{{label}}}"
    if isinstance(step, m.WaitStep | m.WaitForStep):
        return f"{step.id}[/{label}/]"
    if isinstance(step, m.EndStep):
        return f"{step.id}([{label}])"
    return f"{step.id}[{label}]"


def to_mermaid(journey: m.JourneyDef, stats: JourneyStats | None = None) -> str:
    """The flowchart; with ``stats``, each step also shows how many instances reached it
    (``omnijourney stats JOURNEY --graph``)."""
    t = journey.trigger
    trig = f"when {t.event}" + (f" if {t.when}" if t.when else "")
    if t.correlate_by:
        trig += f"<br/>one per {t.correlate_by}"
    if stats is not None:
        trig += f"<br/><b>{stats.entries:,}</b> entered"
    lines = ["flowchart TD", f"  start(({_q(trig)}))", f"  start --> {journey.steps[0].id}"]
    lines += [f"  {_node(s, stats)}" for s in journey.steps]
    needs_end = False
    for sid, edges in successors(journey).items():
        for label, target in edges:
            dest = target or "finish"
            needs_end |= target is None
            arrow = f" -->|{_q(label)}| " if label else " --> "
            lines.append(f"  {sid}{arrow}{dest}")
    split = [s for s in journey.steps if isinstance(s, m.SplitStep) and s.holdout]
    for s in split:
        lines.append(f'  {s.id} -->|"holdout {s.holdout}%"| finish')
        needs_end = True
    if needs_end:
        lines.append('  finish(("end"))')
    notes = [f"exit on {r.event}" + (f" if {r.when}" if r.when else "") for r in journey.exit_on]
    if journey.goal:
        notes.append(f"goal: {journey.goal.event} within {journey.goal.within}"
                     + (f" ({stats.goals:,} converted)" if stats is not None else ""))
    notes.append(f"re-entry: {journey.entry.re_entry}")
    lines.append(f"  rules[{_q('<br/>'.join(notes))}]")
    lines.append("  classDef rules fill:#fff8e1,stroke:#d4a017")
    lines.append("  class rules rules")
    return "\n".join(lines) + "\n"
