"""Journey analytics: the counts a trace implies, and the funnel built from them.

``facts`` turns one trace entry into counter increments. The worker adds them to its
Prometheus counters, and ``omnijourney stats`` folds either those counters (scraped from
running workers) or a simulated timeline's trace with ``JourneyStats`` — so live numbers
and simulated ones are counted by the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from omnijourney.core.trace import TraceEntry, TraceKind


@dataclass(frozen=True, slots=True)
class Fact:
    metric: str  # exported as omnijourney_<metric>_total
    labels: tuple[str, ...]
    help: str


FACTS: dict[str, Fact] = {
    "entries": Fact("journey_entries", ("journey", "version"), "Journey instances started"),
    "steps": Fact("journey_steps", ("journey", "step", "cohort"),
                  "Steps reached, per A/B cohort"),
    "cohorts": Fact("journey_cohorts", ("journey", "step", "cohort"), "A/B split assignments"),
    "exits": Fact("journey_exits", ("journey", "reason", "cohort"),
                  "Journey instances ended, by reason"),
    "goals": Fact("journey_goals", ("journey", "cohort"),
                  "Goal conversions within the journey's window, per cohort"),
    "sends": Fact("commands", ("journey", "step", "channel"), "Channel-send commands emitted"),
    "suppressed": Fact("suppressed", ("journey", "step", "channel", "reason"),
                       "Sends not made, by reason (no_consent, frequency_cap, no_address ...)"),
    "deferred": Fact("deferred", ("journey", "step", "channel", "reason"),
                     "Sends deferred (quiet hours)"),
}
LABELS = {name: f.labels for name, f in FACTS.items()}  # fact name -> its labels, in order
# How an instance ends; each is the trace kind the evaluator notes when it finishes one.
ENDINGS = frozenset({TraceKind.COMPLETED, TraceKind.EXITED, TraceKind.GOAL_EXIT,
                     TraceKind.HOLDOUT, TraceKind.ABORTED, TraceKind.VERSION_RETIRED})
NO_COHORT = ""


def facts(entry: TraceEntry) -> Iterator[tuple[str, tuple[str, ...]]]:
    """The counter increments (fact name, label values) one trace entry stands for."""
    one = fact(entry)
    if one is not None:
        yield one


def fact(entry: TraceEntry) -> tuple[str, tuple[str, ...]] | None:
    """The one counter increment (fact name, label values) a trace entry stands for, if
    any (``facts``, without a generator: the worker counts five entries a tick)."""
    rule = FACT_OF.get(entry.kind)
    return rule(entry) if rule is not None else None


Increment = tuple[str, tuple[str, ...]]


def _entered(e: TraceEntry) -> Increment:
    return "entries", (e.journey or "", str(e.detail.get("version", "")))


def _step(e: TraceEntry) -> Increment | None:
    d = e.detail
    if d.get("visit", 1) != 1:  # reach: a loop's revisits not again
        return None
    return "steps", (e.journey or "", e.step or "", str(d.get("cohort") or NO_COHORT))


def _split(e: TraceEntry) -> Increment:
    return "cohorts", (e.journey or "", e.step or "", str(e.detail.get("cohort") or NO_COHORT))


def _ending(e: TraceEntry) -> Increment:
    return "exits", (e.journey or "", e.kind, str(e.detail.get("cohort") or NO_COHORT))


def _goal(e: TraceEntry) -> Increment:
    return "goals", (e.journey or "", str(e.detail.get("cohort") or NO_COHORT))


def _sent(e: TraceEntry) -> Increment:
    return "sends", (e.journey or "", e.step or "", str(e.detail.get("channel", "")))


def _not_sent(e: TraceEntry) -> Increment:  # suppressed, deferred: the fact is the kind
    d = e.detail
    return e.kind, (e.journey or "", e.step or "", str(d.get("channel", "")),
                    str(d.get("reason", "")))


# Each counted trace kind and its rule: one lookup per entry (the worker counts every
# entry of every batch; a chain of comparisons cost a fifth of a herd's metrics).
FACT_OF: dict[TraceKind, Callable[[TraceEntry], Increment | None]] = {
    TraceKind.ENTERED: _entered, TraceKind.STEP: _step, TraceKind.SPLIT: _split,
    **dict.fromkeys(ENDINGS, _ending), TraceKind.GOAL: _goal, TraceKind.SENT: _sent,
    TraceKind.SUPPRESSED: _not_sent, TraceKind.DEFERRED: _not_sent,
}


def tally(trace: Iterable[TraceEntry],
          also: frozenset[str] = frozenset()) -> tuple[dict[Increment, int], list[TraceEntry]]:
    """A batch's trace counted: each increment ``fact`` gives, added up (a batch of 500
    holds a few dozen distinct ones), and the entries of the kinds in ``also``, in order
    (the worker counts those by other rules). One pass, compiled (native.py): the worker
    counts every entry of every batch, five a tick."""
    counts: dict[Increment, int] = {}
    others: list[TraceEntry] = []
    for entry in trace:
        got = fact(entry)
        if got is not None:
            counts[got] = counts.get(got, 0) + 1
        if entry.kind in also:
            others.append(entry)
    return counts, others


@dataclass
class CohortStats:
    assigned: int = 0
    goals: int = 0
    steps: dict[str, int] = field(default_factory=dict)

    @property
    def conversion(self) -> float | None:
        return self.goals / self.assigned if self.assigned else None


@dataclass
class JourneyStats:
    """One journey's funnel: entries, step reach, exits, goals, per A/B cohort."""

    journey: str
    entries: int = 0
    steps: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    goals: int = 0
    cohorts: dict[str, CohortStats] = field(default_factory=dict)
    sends: dict[str, int] = field(default_factory=dict)  # by channel
    suppressed: dict[str, int] = field(default_factory=dict)  # by reason
    deferred: int = 0

    @property
    def conversion(self) -> float | None:
        return self.goals / self.entries if self.entries else None

    def add(self, name: str, labels: dict[str, str], count: float) -> None:
        """Count ``count`` of fact ``name``; labels of other journeys are ignored."""
        if labels.get("journey") != self.journey or name not in LABELS:
            return
        n = int(count)
        cohort = labels.get("cohort", NO_COHORT)
        if name == "entries":
            self.entries += n
        elif name == "steps":
            step = labels["step"]
            self.steps[step] = self.steps.get(step, 0) + n
            if cohort:
                c = self.cohorts.setdefault(cohort, CohortStats())
                c.steps[step] = c.steps.get(step, 0) + n
        elif name == "cohorts":
            self.cohorts.setdefault(cohort, CohortStats()).assigned += n
        elif name == "exits":
            self.exits[labels["reason"]] = self.exits.get(labels["reason"], 0) + n
        elif name == "goals":
            self.goals += n
            if cohort:
                self.cohorts.setdefault(cohort, CohortStats()).goals += n
        elif name == "sends":
            self.sends[labels["channel"]] = self.sends.get(labels["channel"], 0) + n
        elif name == "suppressed":
            self.suppressed[labels["reason"]] = self.suppressed.get(labels["reason"], 0) + n
        else:
            self.deferred += n

    @classmethod
    def from_samples(cls, journey: str,
                     samples: Iterable[tuple[str, dict[str, str], float]]) -> JourneyStats:
        """From counter values: (fact name, labels, value), e.g. scraped from workers."""
        stats = cls(journey)
        for name, labels, value in samples:
            stats.add(name, labels, value)
        return stats

    @classmethod
    def from_trace(cls, journey: str, trace: Iterable[TraceEntry]) -> JourneyStats:
        return cls.from_samples(journey, (
            (name, dict(zip(LABELS[name], values, strict=True)), 1)
            for entry in trace for name, values in facts(entry)))

    def to_dict(self) -> dict[str, object]:
        return {
            "journey": self.journey, "entries": self.entries, "steps": self.steps,
            "exits": self.exits, "goals": self.goals, "conversion": self.conversion,
            "cohorts": {name: {"assigned": c.assigned, "goals": c.goals,
                               "conversion": c.conversion, "steps": c.steps}
                        for name, c in sorted(self.cohorts.items())},
            "sends": self.sends, "suppressed": self.suppressed, "deferred": self.deferred,
        }
