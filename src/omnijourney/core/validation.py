"""Graph and cross-reference rules for journeys: every violation, with file, line and step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from omnijourney.core import model as m
from omnijourney.core.diagnostics import Violation, did_you_mean
from omnijourney.core.events import EVENT_TYPE, KNOWN_EVENT_TYPES
from omnijourney.core.expressions import ExpressionError, compile_condition
from omnijourney.core.parsing import Source
from omnijourney.core.templates import (
    HTML_PARTS,
    OPTIONAL_PARTS,
    REQUIRED_PARTS,
    TemplateError,
    compile_text,
    static_problems,
)
from omnijourney.core.timeutil import parse_duration

END = None  # successor meaning "the journey ends here"
LineFn = Callable[..., int | None]


@dataclass
class _Report:
    file: str
    journey: str | None
    out: list[Violation] = field(default_factory=list)

    def __call__(self, msg: str, line: int | None, step: str | None = None,
                 hint: str | None = None,
                 severity: Literal["error", "warning"] = "error") -> None:
        self.out.append(Violation(self.file, line, msg, severity, self.journey, step, hint))


def successors(journey: m.JourneyDef) -> dict[str, list[tuple[str, str | None]]]:
    """For each step, its outgoing edges as (label, target id or END)."""
    ids = [s.id for s in journey.steps]
    following = {sid: (ids[i + 1] if i + 1 < len(ids) else END) for i, sid in enumerate(ids)}
    out: dict[str, list[tuple[str, str | None]]] = {}
    for step in journey.steps:
        fall = following[step.id]
        edges: list[tuple[str, str | None]]
        match step:
            case m.BranchStep():
                edges = [(c.when, c.next) for c in step.branches]
                edges.append(("else", step.else_ if step.else_ is not None else fall))
            case m.SplitStep():
                edges = [(f"{v.name} {v.percent}%", v.next) for v in step.variants]
            case m.WaitForStep():
                nxt = step.next or fall
                awaited = step.event if isinstance(step.event, str) else " or ".join(step.event)
                edges = [(awaited, nxt), ("timeout", step.on_timeout or nxt)]
            case m.GotoStep():
                edges = [("", step.next)]
            case m.EndStep():
                edges = []
            case _:
                edges = [("", getattr(step, "next", None) or fall)]
        out[step.id] = edges
    return out


def validate_journey(
    journey: m.JourneyDef,
    src: Source,
    templates: dict[str, m.TemplateDef],
    template_files: dict[str, str] | None = None,
    *,
    graph: bool = True,
    topics: dict[str, m.TopicDef] | None = None,
) -> list[Violation]:
    """Every rule beyond shape. With ``graph=False`` (a stand-in for a file whose shape is
    invalid) reachability and loop analysis wait until the shape is fixed. ``topics``:
    the policies' subscription topics, which sends name."""
    check = _JourneyCheck(journey, src, templates, template_files)
    check.topics = topics or {}
    check.head()
    ids = check.step_ids()
    for step in journey.steps:
        check.step(step, ids)
    if graph and not any(v.severity == "error" for v in check.out):
        check.graph()  # graph checks need a valid shape and every link to resolve
    return check.out


class _JourneyCheck:
    """One journey's checks, each adding its problems with file, line and step."""

    def __init__(self, journey: m.JourneyDef, src: Source, templates: dict[str, m.TemplateDef],
                 template_files: dict[str, str] | None) -> None:
        self.journey, self.src = journey, src
        self.templates, self.template_files = templates, template_files
        self.add = _Report(src.file, journey.id)
        self.out = self.add.out
        self.index = {id(s): i for i, s in enumerate(journey.steps)}
        self.topics: dict[str, m.TopicDef] = {}

    def cond(self, source: str | None, line: int | None, step: str | None, what: str) -> None:
        if source is None:
            return
        try:
            compile_condition(source)
        except ExpressionError as exc:
            self.add(f"{what}: {exc}", line, step,
                     "conditions are CEL, e.g. profile.consent.sms == true")

    def text(self, source: str | None, line: int | None, step: str | None, what: str) -> None:
        if source is None:
            return
        try:
            compile_text(source)
        except TemplateError as exc:
            self.add(f"{what}: Liquid error: {exc}", line, step)
            return
        for severity, message, hint in static_problems(source):
            self.add(f"{what}: {message}", line, step, hint, severity=severity)

    def event_type(self, name: str, line: int | None, step: str | None = None) -> None:
        if not EVENT_TYPE.match(name):
            self.add(f"'{name}' is not an event type", line, step,
                     "event types look like noun.past_tense_verb, e.g. order.placed")
        elif name not in KNOWN_EVENT_TYPES:
            hint = did_you_mean(name, KNOWN_EVENT_TYPES)
            if hint:
                self.add(f"event type '{name}' is not one the engine knows", line, step, hint,
                         severity="warning")

    def head(self) -> None:
        """The journey's id, trigger, entry, exits and goal."""
        journey, src, add = self.journey, self.src, self.add
        if journey.id != src.file.rsplit("/", 1)[-1].split(".", 1)[0]:
            add(f"journey id '{journey.id}' differs from its file name", src.line("id"),
                hint="name the file after the id so people can find it", severity="warning")
        self.event_type(journey.trigger.event, src.line("trigger", "event"))
        self.cond(journey.trigger.when, src.line("trigger", "when"), None, "trigger.when")
        self.cond(journey.entry.audience, src.line("entry", "audience"), None,
                  "entry.audience")
        for i, rule in enumerate(journey.exit_on):
            self.event_type(rule.event, src.line("exit_on", i, "event"))
            self.cond(rule.when, src.line("exit_on", i, "when"), None, "exit_on.when")
        if journey.goal:
            self.event_type(journey.goal.event, src.line("goal", "event"))
            self.cond(journey.goal.when, src.line("goal", "when"), None, "goal.when")

    def step_ids(self) -> set[str]:
        seen: dict[str, int] = {}
        for step in self.journey.steps:
            i = self.index[id(step)]
            if step.id in seen:
                self.add(f"step id '{step.id}' is used twice (first at step #{seen[step.id] + 1})",
                         self.src.step_line(i, "id"), step.id, "give every step its own id")
            seen.setdefault(step.id, i)
        return set(seen)

    def step(self, step: m.Step, ids: set[str]) -> None:
        i, sid, add, cond, text = self.index[id(step)], step.id, self.add, self.cond, self.text

        def line(*path: str | int) -> int | None:
            return self.src.line("steps", i, *path)

        for name, target in _targets(step):
            if target is not None and target not in ids:
                add(f"'{name}' points to undefined step '{target}'",
                    line(*(int(p) if p.isdigit() else p for p in name.split("."))),
                    sid, did_you_mean(target, ids) or f"steps are: {', '.join(sorted(ids))}")
        match step:
            case m.WaitStep():
                chosen = [f for f in ("duration", "until_local_time", "until")
                          if getattr(step, f) is not None]
                if len(chosen) != 1:
                    add("a wait needs exactly one of duration, until_local_time, until"
                        + (f" (found {', '.join(chosen)})" if chosen else ""), line(), sid,
                        "e.g. duration: 2h, or until_local_time: '10:00'")
                if step.offset is not None and step.until is None:
                    add("offset only goes with until", line("offset"), sid)
                text(step.until, line("until"), sid, "until")
            case m.WaitForStep():
                for j, ev in enumerate([step.event] if isinstance(step.event, str) else step.event):
                    where = line("event", j) if isinstance(step.event, list) else line("event")
                    self.event_type(ev, where, sid)
                cond(step.when, line("when"), sid, "when")
            case m.BranchStep():
                for j, case in enumerate(step.branches):
                    cond(case.when, line("branches", j, "when"), sid, "when")
            case m.SplitStep():
                total = sum(v.percent for v in step.variants) + step.holdout
                if total != 100:
                    add(f"variants and holdout add up to {total}%, not 100%", line(), sid,
                        "adjust the percents so they sum to 100")
                names = [v.name for v in step.variants]
                if len(set(names)) != len(names):
                    add("variant names must be unique", line("variants"), sid)
            case m.SendStep():
                _check_send(step, self.templates, add, line, self.template_files)
                _check_topic(step, self.topics, add, line)
                for key, value in step.data.items():
                    text(value, line("data", key), sid, f"data.{key}")
            case m.UpdateProfileStep():
                for key, given in step.set.items():
                    if isinstance(given, str):
                        text(given, line("set", key), sid, f"set.{key}")
            case m.HandoffStep():
                text(step.url, line("url"), sid, "url")
                for key, value in step.headers.items():
                    text(value, line("headers", key), sid, f"headers.{key}")
                if step.kind == "conversation" and step.save_slot_as:
                    add("save_slot_as is for call-backs (kind: callback)",
                        line("save_slot_as"), sid)
            case m.WebhookStep():
                text(step.url, line("url"), sid, "url")
                for path, leaf in _texts(step.body, ()):
                    text(leaf, line("body", *path), sid, ".".join(("body", *map(str, path))))
                for key, value in step.headers.items():
                    text(value, line("headers", key), sid, f"headers.{key}")

    def graph(self) -> None:
        """Reachability, and loops that could spin without waiting."""
        journey, src, add, index = self.journey, self.src, self.add, self.index
        edges = successors(journey)
        reachable = _reachable(journey.steps[0].id, edges)
        for step in journey.steps:
            if step.id not in reachable:
                add(f"step '{step.id}' can never be reached", src.step_line(index[id(step)]),
                    step.id, "link to it with next, or remove it")
        waiting = {s.id for s in journey.steps if s.type in m.WAITING_STEP_TYPES}
        for loop in _waitless_loops(edges, waiting):
            first = loop[0]
            i = next(index[id(s)] for s in journey.steps if s.id == first)
            add("loop without a wait: " + " -> ".join([*loop, first]), src.step_line(i), first,
                "put a wait or wait_for inside the loop so it cannot spin")
        # A loop whose every wait can be zero spins as fast as one without: a 0s wait or
        # timeout, or a wait until a date (which may lie in the past).
        always = {s.id for s in journey.steps if _always_waits(s)}
        for loop in _waitless_loops(edges, always):
            if not set(loop) & waiting:
                continue  # reported above
            first = next(n for n in loop if n in waiting)
            i = next(index[id(s)] for s in journey.steps if s.id == first)
            add("loop whose waits can all be zero: " + " -> ".join([*loop, loop[0]]),
                src.step_line(i), first,
                "give one wait in the loop a positive duration (an `until:` date may already "
                "have passed, a `0s` wait or timeout does not wait)")


def _texts(value: object, path: tuple[str | int, ...]) -> Iterator[
        tuple[tuple[str | int, ...], str]]:
    """Every text inside a webhook body (a text, or a mapping or list of them)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _texts(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _texts(v, (*path, i))


def _always_waits(step: m.Step) -> bool:
    """Whether a step always lets time pass before the journey goes on."""
    try:
        if isinstance(step, m.WaitStep):
            if step.until_local_time is not None:
                return True  # the next occurrence, strictly after now
            return step.duration is not None and parse_duration(str(step.duration)) > ZERO
        if isinstance(step, m.WaitForStep):
            return parse_duration(str(step.timeout)) > ZERO
    except ValueError:
        return True  # a bad duration is reported on its own
    return False


ZERO = timedelta(0)


def _targets(step: m.Step) -> Iterator[tuple[str, str | None]]:
    match step:
        case m.BranchStep():
            for j, c in enumerate(step.branches):
                yield f"branches.{j}.next", c.next
            yield "else", step.else_
        case m.SplitStep():
            for j, v in enumerate(step.variants):
                yield f"variants.{j}.next", v.next
        case m.WaitForStep():
            yield "next", step.next
            yield "on_timeout", step.on_timeout
        case m.EndStep():
            return
        case _:
            yield "next", getattr(step, "next", None)


def _check_send(step: m.SendStep, templates: dict[str, m.TemplateDef], report: _Report,
                at: LineFn, template_files: dict[str, str] | None) -> None:
    sid = step.id
    if step.channel == "ads":
        if not step.audience:
            report("an ads send needs 'audience' (the audience to add to or remove from)",
                   at(), sid, "e.g. audience: cart_abandoners")
        if step.template:
            report("ads sends take an audience, not a template", at("template"), sid)
        return
    if step.audience:
        report("'audience' is only for channel ads", at("audience"), sid)
    if not step.template:
        report(f"a {step.channel} send needs a template", at(), sid,
               "add template: <name of a file in journeys/templates/>")
        return
    tmpl = templates.get(step.template)
    if tmpl is None:
        report(f"unknown template '{step.template}'", at("template"), sid,
               did_you_mean(step.template, templates)
               or f"templates are: {', '.join(sorted(templates)) or 'none'}")
    elif tmpl.channel != step.channel:
        where = (template_files or {}).get(step.template, "its file")
        report(f"template '{step.template}' is for {tmpl.channel}, not {step.channel}",
               at("template"), sid, f"see {where}")


def _check_topic(step: m.SendStep, topics: dict[str, m.TopicDef], report: _Report,
                 at: LineFn) -> None:
    if step.topic is None:
        return
    topic = topics.get(step.topic)
    if topic is None:
        report(f"unknown topic '{step.topic}'", at("topic"), step.id,
               did_you_mean(step.topic, topics)
               or (f"topics in policies.yaml are: {', '.join(sorted(topics))}" if topics
                   else "define it under 'topics:' in policies.yaml"))
    elif step.channel not in topic.channels:
        report(f"topic '{step.topic}' is not sent on {step.channel} (its channels: "
               f"{', '.join(topic.channels)})", at("topic"), step.id,
               f"add {step.channel} to the topic's channels in policies.yaml, or send on "
               "one of those")


def _reachable(start: str, graph: dict[str, list[tuple[str, str | None]]]) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for _, nxt in graph.get(stack.pop(), []):
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _waitless_loops(graph: dict[str, list[tuple[str, str | None]]],
                    waiting: set[str]) -> list[list[str]]:
    """Cycles made only of steps that do not wait (Tarjan's SCCs on the non-waiting subgraph)."""
    nodes = [n for n in graph if n not in waiting]
    adj = {n: [t for _, t in graph[n] if t is not None and t not in waiting] for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    loops: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in adj[v]:
                loops.append([n for n in nodes if n in comp])

    for n in nodes:
        if n not in index:
            visit(n)
    return loops


def check_template(name: str, tmpl: m.TemplateDef, src: Source) -> list[Violation]:
    out: list[Violation] = []
    required = REQUIRED_PARTS[tmpl.channel]
    if tmpl.default_locale not in tmpl.locales:
        out.append(Violation(src.file, src.line("default_locale"),
                             f"default_locale '{tmpl.default_locale}' has no entry in locales",
                             hint=f"locales are: {', '.join(tmpl.locales)}"))
    allowed = set(required) | set(OPTIONAL_PARTS.get(tmpl.channel, ()))
    for loc, parts in tmpl.locales.items():
        for part in required:
            if part not in parts:
                out.append(Violation(src.file, src.line("locales", loc),
                                     f"locale '{loc}' lacks '{part}' (needed for {tmpl.channel})"))
        for part, body in parts.items():
            if part not in allowed:
                out.append(Violation(src.file, src.line("locales", loc, part),
                                     f"'{part}' is not a part of {tmpl.channel} templates",
                                     hint=did_you_mean(part, allowed)
                                     or f"parts: {', '.join(sorted(allowed))}"))
                continue
            try:
                compile_text(body, html=part in HTML_PARTS)
            except TemplateError as exc:
                out.append(Violation(src.file, src.line("locales", loc, part),
                                     f"{name} {loc}.{part}: Liquid error: {exc}"))
                continue
            for severity, message, hint in static_problems(body):
                out.append(Violation(src.file, src.line("locales", loc, part),
                                     f"{name} {loc}.{part}: {message}",
                                     severity, hint=hint))
    return out
