"""For marketers: ``validate``, ``simulate``, ``graph``, ``schema``, ``stats``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from omnijourney.config import load
from omnijourney.core.analytics import JourneyStats
from omnijourney.core.diagnostics import has_errors
from omnijourney.core.timeutil import parse_instant
from omnijourney.ops.funnel import report, scrape_facts
from omnijourney.simulator import read_events

DEFAULT_JOURNEYS = "journeys"
EXIT_ERROR = 2  # could not measure


def _journey_root(paths: list[Path]) -> tuple[Path, list[Path] | None]:
    """A directory is checked whole; files are checked within their journeys directory."""
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0], None
    roots = {(p.parent.parent if p.parent.name == "templates" else p.parent) for p in paths}
    if len(roots) != 1:
        raise SystemExit("validate: give files from one journeys directory at a time")
    only = [p for p in paths if p.parent.name != "templates" and p.name != "policies.yaml"]
    return roots.pop(), only


def cmd_validate(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in (args.paths or [DEFAULT_JOURNEYS])]
    if len(paths) > 1 and any(p.is_dir() for p in paths):
        return max(cmd_validate(argparse.Namespace(paths=[str(p)], format=args.format))
                   for p in paths)
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"validate: no such file or directory: {missing[0]}", file=sys.stderr)
        return 2
    root, only = _journey_root(paths)
    loaded = load(root, only)
    errors = [v for v in loaded.violations if v.severity == "error"]
    warnings = [v for v in loaded.violations if v.severity == "warning"]
    if args.format == "json":
        print(json.dumps([v.to_dict() for v in loaded.violations], indent=2))
    else:
        for v in loaded.violations:
            print(v.format())
        n_j = len(only) if only is not None else len(loaded.journeys)
        summary = (f"{n_j} journey(s), {len(loaded.templates)} template(s): "
                   f"{len(errors)} error(s), {len(warnings)} warning(s)")
        print(("✗ " if errors else "✓ ") + summary, file=sys.stderr)
    return 1 if has_errors(loaded.violations) else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from omnijourney.simulator import explain, simulate

    loaded = load(args.journeys)
    if loaded.journey_set is None:
        for v in loaded.violations:
            print(v.format(), file=sys.stderr)
        return 1
    with open(args.events, encoding="utf-8") as fh:
        events, bad = read_events(fh)
    for b in bad:
        print(f"{args.events}:{b.line}: invalid event skipped: {b.reason}", file=sys.stderr)
    until = parse_instant(args.until) if args.until else None
    if args.customer:
        events = [e for e in events if e.customer_id in set(args.customer)]
    result = simulate(loaded.journey_set, events, until=until)
    out = sys.stdout
    for c in result.commands:
        out.write(json.dumps(c.to_dict(), ensure_ascii=False, sort_keys=False) + "\n")
    if args.explain:
        for line in explain(result):
            print(line, file=sys.stderr)
    by_channel: dict[str, int] = {}
    for c in result.commands:
        by_channel[c.channel] = by_channel.get(c.channel, 0) + 1
    counts = ", ".join(f"{k} {v}" for k, v in sorted(by_channel.items())) or "none"
    print(f"simulated {len(events)} events for {len(result.states)} customers "
          f"-> {len(result.commands)} commands ({counts})"
          + (f"; {len(bad)} invalid line(s) skipped" if bad else ""), file=sys.stderr)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from omnijourney.core.graph import to_mermaid
    from omnijourney.core.parsing import parse_journey

    path = Path(args.file)
    parsed = parse_journey(path.read_text(encoding="utf-8"), str(path), path.stem)
    if parsed.model is None:
        for v in parsed.violations:
            print(v.format(), file=sys.stderr)
        return 1
    diagram = to_mermaid(parsed.model)
    if args.markdown:
        diagram = f"```mermaid\n{diagram}```\n"
    sys.stdout.write(diagram)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from omnijourney.core import model as m

    kinds: dict[str, type[BaseModel]] = {
        "journey": m.JourneyDef, "policies": m.PoliciesDef, "template": m.TemplateDef}
    schema = kinds[args.kind].model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("title", f"omnijourney {args.kind}")
    print(json.dumps(schema, indent=2))
    return 0


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


def add_parsers(sub: Any) -> None:
    v = sub.add_parser("validate", help="check journeys, templates and policies")
    v.add_argument("paths", nargs="*", help=f"directories or files (default: {DEFAULT_JOURNEYS})")
    v.add_argument("--format", choices=["text", "json"], default="text")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("simulate", help="run journeys over an event timeline in virtual time")
    s.add_argument("--journeys", default=DEFAULT_JOURNEYS, help="journeys directory")
    s.add_argument("--events", required=True, help="JSON Lines file of touchpoint events")
    s.add_argument("--until", help="stop the virtual clock here (RFC 3339)")
    s.add_argument("--explain", action="store_true",
                   help="print, per customer, why each step went the way it did (stderr)")
    s.add_argument("--customer", action="append", help="only this customer (repeatable)")
    s.set_defaults(func=cmd_simulate)

    g = sub.add_parser("graph", help="draw a journey as a Mermaid flowchart")
    g.add_argument("file")
    g.add_argument("--markdown", action="store_true", help="wrap in a ```mermaid block")
    g.set_defaults(func=cmd_graph)

    sc = sub.add_parser("schema", help="JSON Schema of the YAML language (editor completion)")
    sc.add_argument("--kind", choices=["journey", "policies", "template"], default="journey")
    sc.set_defaults(func=cmd_schema)

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
