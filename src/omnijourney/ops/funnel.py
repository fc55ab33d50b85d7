"""A journey's funnel as text, from the workers' /metrics or a simulation."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from omnijourney.core.analytics import FACTS, JourneyStats


def scrape_facts(urls: Iterable[str]) -> list[tuple[str, dict[str, str], float]]:
    """(fact, labels, value) from every worker's /metrics, summed over workers."""
    by_metric = {f"omnijourney_{f.metric}_total": name for name, f in FACTS.items()}
    out = []
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                fact = by_metric.get(sample.name)
                if fact is not None:
                    out.append((fact, dict(sample.labels), float(sample.value)))
    return out


def live_summary(url: str, journeys: Iterable[str]) -> list[str]:
    """One line per journey from a worker's /metrics (what ``omnijourney dev`` ends with)."""
    samples = scrape_facts([url])
    lines = []
    for name in journeys:
        s = JourneyStats.from_samples(name, samples)
        sent = sum(s.sends.values())
        lines.append(f"  {name:<20} entered {s.entries:>3}  sent {sent:>3}  "
                     f"not sent {sum(s.suppressed.values()):>2}  goals {s.goals:>3} "
                     f"({_pct(s.goals, s.entries).strip()})")
    return lines


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def report(s: JourneyStats, order: list[str], source: str) -> str:
    lines = [f"journey {s.journey}  ({source})", "",
             f"  entries {s.entries}   goals {s.goals} ({_pct(s.goals, s.entries).strip()} "
             "within the window)", "", "  step reach"]
    width = max([len(x) for x in order] + [10])
    top = max(s.steps.values(), default=0)
    for step in order + sorted(set(s.steps) - set(order)):
        n = s.steps.get(step, 0)
        bar = "#" * (round(30 * n / top) if top else 0)
        lines.append(f"    {step:<{width}} {n:>8} {_pct(n, s.entries)}  {bar}")
    if s.cohorts:
        lines += ["", "  A/B cohorts"]
        for name, c in sorted(s.cohorts.items()):
            lines.append(f"    {name:<{width}} assigned {c.assigned:>6}  goals {c.goals:>6}  "
                         f"conversion {_pct(c.goals, c.assigned)}")
    if s.exits:
        lines += ["", "  exits   " + ", ".join(f"{k} {v}" for k, v in sorted(s.exits.items()))]
    if s.sends or s.suppressed or s.deferred:
        lines.append("  sends   " + (", ".join(f"{k} {v}" for k, v in sorted(s.sends.items()))
                                     or "none"))
        if s.suppressed:
            lines.append("  not sent " + ", ".join(
                f"{k} {v}" for k, v in sorted(s.suppressed.items())))
        if s.deferred:
            lines.append(f"  deferred by quiet hours {s.deferred}")
    return "\n".join(lines)
