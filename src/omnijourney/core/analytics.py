"""Journey analytics: the counts a trace implies, and the funnel built from them.

``facts`` turns one trace entry into counter increments. The worker adds them to its
Prometheus counters, and ``omnijourney stats`` folds either those counters (scraped from
running workers) or a simulated timeline's trace with ``JourneyStats`` — so live numbers
and simulated ones are counted by the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from omnijourney.core.evaluator import TraceEntry

# fact name -> its labels, in order. The metric for a fact is omnijourney_<METRIC[name]>.
LABELS: dict[str, tuple[str, ...]] = {
    "entries": ("journey", "version"),
    "steps": ("journey", "step", "cohort"),
    "cohorts": ("journey", "step", "cohort"),
    "exits": ("journey", "reason", "cohort"),
    "goals": ("journey", "cohort"),
    "sends": ("journey", "step", "channel"),
    "suppressed": ("journey", "step", "channel", "reason"),
    "deferred": ("journey", "step", "channel", "reason"),
}
METRIC = {
    "entries": "journey_entries", "steps": "journey_steps", "cohorts": "journey_cohorts",
    "exits": "journey_exits", "goals": "journey_goals", "sends": "commands",
    "suppressed": "suppressed", "deferred": "deferred",
}
# How an instance ends; each is the trace kind the evaluator notes when it finishes one.
ENDINGS = frozenset({"completed", "exited", "goal_exit", "holdout", "aborted",
                     "version_retired"})
NO_COHORT = ""


def facts(entry: TraceEntry) -> Iterator[tuple[str, tuple[str, ...]]]:
    """The counter increments (fact name, label values) one trace entry stands for."""
    journey = entry.journey or ""
    d = entry.detail
    kind = entry.kind
    if kind == "entered":
        yield "entries", (journey, str(d.get("version", "")))
    elif kind == "step" and d.get("visit", 1) == 1:  # reach: a loop's revisits not again
        yield "steps", (journey, entry.step or "", str(d.get("cohort") or NO_COHORT))
    elif kind == "split":
        yield "cohorts", (journey, entry.step or "", str(d.get("cohort") or NO_COHORT))
    elif kind in ENDINGS:
        yield "exits", (journey, kind, str(d.get("cohort") or NO_COHORT))
    elif kind == "goal":
        yield "goals", (journey, str(d.get("cohort") or NO_COHORT))
    elif kind == "sent":
        yield "sends", (journey, entry.step or "", str(d.get("channel", "")))
    elif kind in ("suppressed", "deferred"):
        yield kind, (journey, entry.step or "", str(d.get("channel", "")),
                     str(d.get("reason", "")))


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
    def from_trace(cls, journey: str, trace: Iterable[TraceEntry]) -> JourneyStats:
        stats = cls(journey)
        for entry in trace:
            for name, values in facts(entry):
                stats.add(name, dict(zip(LABELS[name], values, strict=True)), 1)
        return stats

    def to_dict(self) -> dict[str, object]:
        return {
            "journey": self.journey, "entries": self.entries, "steps": self.steps,
            "exits": self.exits, "goals": self.goals, "conversion": self.conversion,
            "cohorts": {name: {"assigned": c.assigned, "goals": c.goals,
                               "conversion": c.conversion, "steps": c.steps}
                        for name, c in sorted(self.cohorts.items())},
            "sends": self.sends, "suppressed": self.suppressed, "deferred": self.deferred,
        }
