"""``omnijourney lag`` and ``omnijourney stats`` — what ops and marketers look at."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from omnijourney.core.analytics import FACTS, JourneyStats
from omnijourney.runtime.settings import Settings

EXIT_OVER = 1  # a threshold was crossed
EXIT_ERROR = 2  # could not measure


# -------------------------------------------------------------------------- lag

def cmd_lag(args: argparse.Namespace) -> int:
    from omnijourney.ops.lag import LagReader, known_groups, over, render

    settings = Settings.from_env(bootstrap=args.bootstrap)
    groups = known_groups(settings)
    if args.group:
        unknown = [g for g in args.group if g not in groups and not args.topic]
        if unknown:
            print(f"omnijourney lag: {', '.join(unknown)} is not one of ours "
                  f"({', '.join(groups)}); name its topics with --topic", file=sys.stderr)
            return EXIT_ERROR
        groups = {g: args.topic or groups[g] for g in args.group}
    tty = sys.stdout.isatty() and not args.json

    def paint(text: str, bad: bool) -> str:
        return f"\033[33m{text}\033[0m" if bad and tty else text

    try:
        reader = LagReader(settings)
    except Exception as exc:  # kafka-python raises NoBrokersAvailable and friends
        print(f"omnijourney lag: cannot reach Kafka at {settings.bootstrap}: {exc}",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        while True:
            rows = reader.measure(groups, datetime.now(UTC))
            bad = over(rows, max_lag=args.max_lag, max_time_lag=args.max_time_lag)
            if args.json:
                print(json.dumps({"at": datetime.now(UTC).isoformat(),
                                  "partitions": [r.to_dict() for r in rows],
                                  "over_threshold": len(bad)}), flush=True)
            else:
                if args.watch and tty:
                    print("\033[H\033[2J", end="")
                print(render(rows, paint), flush=True)
                if bad:
                    print(f"{len(bad)} partition(s) over the threshold", file=sys.stderr)
            if not args.watch:
                return EXIT_OVER if bad else 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        reader.close()


# ------------------------------------------------------------------------ stats

def scrape_facts(urls: Iterable[str]) -> list[tuple[str, dict[str, str], float]]:
    """(fact, labels, value) from every worker's /metrics, summed over workers."""
    from prometheus_client.parser import text_string_to_metric_families

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


def cmd_stats(args: argparse.Namespace) -> int:
    from omnijourney.config import ConfigError, load_or_raise

    try:
        journeys = load_or_raise(args.journeys)
    except ConfigError as exc:
        print(f"omnijourney stats: journeys are invalid:\n{exc}", file=sys.stderr)
        return EXIT_ERROR
    cj = journeys.current.get(args.journey)
    if cj is None:
        print(f"omnijourney stats: no journey '{args.journey}' in {args.journeys} "
              f"(have: {', '.join(sorted(journeys.current))})", file=sys.stderr)
        return EXIT_ERROR
    if args.events:
        from omnijourney.simulator import read_events, simulate

        with open(args.events, encoding="utf-8") as fh:
            events, _bad = read_events(fh)
        stats = JourneyStats.from_trace(args.journey, simulate(journeys, events).trace)
        source = f"simulated from {args.events}"
    else:
        urls = args.metrics or ["http://127.0.0.1:9400/metrics"]
        try:
            samples = scrape_facts(urls)
        except OSError as exc:
            print(f"omnijourney stats: cannot scrape {', '.join(urls)}: {exc} (is the worker "
                  "running? pass --metrics URL, or --events FILE to simulate)",
                  file=sys.stderr)
            return EXIT_ERROR
        stats = JourneyStats.from_samples(args.journey, samples)
        source = f"live, since each worker started ({', '.join(urls)})"
    if args.json:
        print(json.dumps({"source": source, **stats.to_dict()}))
        return 0
    if args.graph:
        from omnijourney.core.graph import to_mermaid

        diagram = to_mermaid(cj.defn, stats)
        print(f"```mermaid\n{diagram}```" if args.markdown else diagram, end="")
        return 0
    order = [s.id for s in cj.defn.steps]
    print(report(stats, order, source))
    return 0


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


def add_parsers(sub: Any) -> None:
    lag = sub.add_parser("lag", help="consumer lag per group, topic and partition")
    lag.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP)")
    lag.add_argument("--group", action="append",
                     help="only this group (repeatable; default: the engine and every adapter)")
    lag.add_argument("--topic", action="append", help="topics of a --group that is not ours")
    lag.add_argument("--json", action="store_true", help="one JSON document per measurement")
    lag.add_argument("--watch", type=float, nargs="?", const=5.0,
                     help="measure again every N seconds (default 5)")
    lag.add_argument("--max-lag", type=int, help="exit 1 when a partition lags more records")
    lag.add_argument("--max-time-lag", type=float,
                     help="exit 1 when a partition's oldest waiting record is older (seconds)")
    lag.set_defaults(func=cmd_lag)

    st = sub.add_parser("stats", help="a journey's funnel: entries, step reach, exits, goals, "
                                      "A/B cohorts")
    st.add_argument("journey")
    st.add_argument("--journeys", default="journeys", help="journeys directory")
    st.add_argument("--metrics", action="append",
                    help="a worker's /metrics URL (repeatable; default "
                         "http://127.0.0.1:9400/metrics)")
    st.add_argument("--events", help="instead: simulate this JSON Lines timeline")
    st.add_argument("--json", action="store_true")
    st.add_argument("--graph", action="store_true",
                    help="the journey's Mermaid flowchart with entries, reach and goals on it")
    st.add_argument("--markdown", action="store_true", help="with --graph: a ```mermaid block")
    st.set_defaults(func=cmd_stats)

