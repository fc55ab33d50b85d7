"""A validated, compiled set of journeys, templates and policies: what the evaluator runs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo

from omnijourney.core import model as m
from omnijourney.core.identity import DEFAULT_MAX_PER_CUSTOMER, IdentityPolicy
from omnijourney.core.templates import HTML_PARTS, MessageTemplate, compile_text
from omnijourney.core.timeutil import ContactWindow, parse_duration, zone

# Channels whose messages reach a person directly, so quiet hours apply.


@dataclass(frozen=True, slots=True)
class Policies:
    timezone: ZoneInfo
    contact_window: ContactWindow
    locale: str
    consent: dict[str, str]
    caps: dict[str, tuple[int, timedelta]]
    transactional: frozenset[str]
    deadlines: dict[str, timedelta]
    longest_cap_window: timedelta  # how long send history must be kept
    exit_grace: timedelta = timedelta(0)
    identity: IdentityPolicy = field(default_factory=IdentityPolicy)
    # topic -> (its channels, opt_in | opt_out)
    topics: dict[str, tuple[frozenset[str], str]] = field(default_factory=dict)

    @classmethod
    def build(cls, d: m.PoliciesDef) -> Policies:
        base = m.PoliciesDef()
        consent = {str(k): str(v) for k, v in {**base.consent, **d.consent}.items()}
        deadlines = {str(k): parse_duration(str(v))
                     for k, v in {**base.deadlines, **d.deadlines}.items()}
        caps = {str(ch): (c.max, parse_duration(str(c.per)))
                for ch, c in d.frequency_caps.items()}
        return cls(
            timezone=zone(d.defaults.timezone, ZoneInfo("UTC")),
            contact_window=ContactWindow.parse(d.defaults.contact_window),
            locale=d.defaults.locale,
            consent=consent,
            caps=caps,
            transactional=frozenset(d.transactional),
            deadlines=deadlines,
            longest_cap_window=max((per for _, per in caps.values()), default=timedelta(0)),
            exit_grace=parse_duration(str(d.exit_grace)),
            topics={name: (frozenset(t.channels), t.default) for name, t in d.topics.items()},
            identity=IdentityPolicy(frozenset(d.identity.merge_on),
                                    {**DEFAULT_MAX_PER_CUSTOMER,
                                     **{str(k): v for k, v in
                                        d.identity.max_per_customer.items()}}),
        )


@dataclass(frozen=True, slots=True)
class CompiledJourney:
    defn: m.JourneyDef
    steps: dict[str, m.Step]
    following: dict[str, str | None]  # where a step without ``next`` continues
    re_entry: str | timedelta  # "never", "always" or the minimum gap

    @property
    def id(self) -> str:
        return self.defn.id

    @property
    def version(self) -> int:
        return self.defn.version

    @property
    def first(self) -> str:
        return self.defn.steps[0].id

    def next_of(self, step: m.Step) -> str | None:
        nxt = getattr(step, "next", None)
        return nxt if nxt is not None else self.following[step.id]

    @classmethod
    def build(cls, d: m.JourneyDef) -> CompiledJourney:
        ids = [s.id for s in d.steps]
        following = {sid: (ids[i + 1] if i + 1 < len(ids) else None) for i, sid in enumerate(ids)}
        raw = d.entry.re_entry
        re_entry: str | timedelta = (
            parse_duration(raw.removeprefix("after ").strip()) if raw.startswith("after ") else raw
        )
        return cls(d, {s.id: s for s in d.steps}, following, re_entry)


@dataclass(frozen=True)
class JourneySet:
    """Everything the evaluator needs. Older versions stay loaded for pinned live instances."""

    current: dict[str, CompiledJourney]
    versions: dict[tuple[str, int], CompiledJourney]
    templates: dict[str, MessageTemplate]
    policies: Policies
    by_trigger: dict[str, tuple[CompiledJourney, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, journeys: list[m.JourneyDef], templates: dict[str, m.TemplateDef],
              policies: m.PoliciesDef | None = None) -> JourneySet:
        versions = {(j.id, j.version): CompiledJourney.build(j) for j in journeys}
        current: dict[str, CompiledJourney] = {}
        for (jid, ver), cj in sorted(versions.items()):
            if jid not in current or ver > current[jid].version:
                current[jid] = cj
        triggers: dict[str, list[CompiledJourney]] = defaultdict(list)
        # Higher priority first, then by id: the order journeys act on one event in.
        for jid in sorted(current, key=lambda j: (-current[j].defn.priority, j)):
            triggers[current[jid].defn.trigger.event].append(current[jid])
        return cls(
            current=current,
            versions=versions,
            templates={name: compile_template(name, t) for name, t in templates.items()},
            policies=Policies.build(policies or m.PoliciesDef()),
            by_trigger={k: tuple(v) for k, v in triggers.items()},
        )

    def re_entry(self, journey: str) -> str | timedelta | None:
        """The current version's ``re_entry`` rule; None for a journey no longer loaded."""
        cj = self.current.get(journey)
        return cj.re_entry if cj is not None else None

    def version(self, journey: str, version: int) -> CompiledJourney | None:
        return self.versions.get((journey, version))

    @property
    def event_types(self) -> frozenset[str]:
        """Every event type a loaded journey reacts to."""
        out: set[str] = set()
        for cj in self.versions.values():
            d = cj.defn
            out.add(d.trigger.event)
            out.update(r.event for r in d.exit_on)
            if d.goal:
                out.add(d.goal.event)
            for s in d.steps:
                if isinstance(s, m.WaitForStep):
                    out.update([s.event] if isinstance(s.event, str) else s.event)
        return frozenset(out)


def compile_template(name: str, t: m.TemplateDef) -> MessageTemplate:
    return MessageTemplate(
        name=name,
        channel=t.channel,
        default_locale=t.default_locale,
        locales={loc: {part: compile_text(src, html=part in HTML_PARTS)
                       for part, src in parts.items()}
                 for loc, parts in t.locales.items()},
    )
