"""For running the engine: ``worker``, ``produce``, ``erase``, ``tail``, ``dev``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from omnijourney import wallclock
from omnijourney.cli.common import (
    WORKER_METRICS_PORT,
    journey_ids,
    metrics_port,
    read_jsonl,
    settings_from,
)
from omnijourney.core.events import Event
from omnijourney.core.timeutil import format_instant, parse_instant
from omnijourney.runtime.feed import consume, produce_events
from omnijourney.settings import Settings
from omnijourney.simulator import DEFAULT_HORIZON as HORIZON  # live ends where simulate does


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from omnijourney.config import ConfigError, load_or_raise
    from omnijourney.logs import configure
    from omnijourney.runtime.app import Worker, tune_collector
    from omnijourney.runtime.supervision import EXIT_FAILED, EXIT_STALLED
    from omnijourney.runtime.topics import ensure_topics

    configure(args.log_level)
    tune_collector()
    # Faust and aiokafka log through the standard library: keep their warnings and errors.
    logging.basicConfig(level=logging.INFO if os.environ.get("OMNIJOURNEY_DEBUG_FAUST")
                        else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from(args)
    try:
        journeys = load_or_raise(settings.journeys)
    except ConfigError as exc:
        print(f"omnijourney worker: journeys are invalid, not starting:\n{exc}", file=sys.stderr)
        return 1
    ensure_topics(settings)
    worker = Worker(settings, journeys)
    worker.start_ops(metrics_port(args, WORKER_METRICS_PORT))
    try:
        faust.Worker(worker.app, *worker.services(), loglevel=args.log_level.upper(),
                     quiet=True, override_logging=False).execute_from_commandline()
    except SystemExit:
        if not (worker.stalled or worker.failed):
            raise
    # Stopped itself: the agent failed, or the table restore stalled.
    return EXIT_FAILED if worker.failed else EXIT_STALLED


def cmd_produce(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    events, bad = read_jsonl(args.file)
    for line in bad:
        print(f"invalid event not sent: {line}", file=sys.stderr)
    if args.sort:
        events.sort(key=lambda e: e.occurred_at)
    wm = None
    if args.watermark == "end" and events:
        wm = max(e.occurred_at for e in events) + HORIZON
    elif args.watermark not in (None, "end"):
        from omnijourney.core.timeutil import parse_instant
        wm = parse_instant(args.watermark)
    n = produce_events(settings, events, watermark=wm, as_json=args.json, settle=args.settle)
    print(f"sent {n} events to {settings.topics.touchpoints}"
          + (f"; event time moved to {format_instant(wm)}" if wm else ""), file=sys.stderr)
    return 1 if bad else 0


def cmd_erase(args: argparse.Namespace) -> int:
    """Ask the engine to forget customers: one erasure event each, keyed by customer."""
    from omnijourney.core.events import ERASURE_EVENT

    settings = settings_from(args)
    now = wallclock.now()
    at = parse_when(args.at) if args.at else now
    events = [Event(f"erase:{cid}:{int(now.timestamp() * 1000)}", ERASURE_EVENT, cid, at,
                    "omnijourney-erase", {}) for cid in args.customer]
    n = produce_events(settings, events, watermark=None)
    print(f"asked the engine to erase {n} customer(s); each state becomes a tombstone on "
          "the changelog. Topics keep what they hold until their retention ends (README, "
          "'Personal data').", file=sys.stderr)
    return 0


def parse_when(text: str) -> datetime:

    return parse_instant(text)


def cmd_tail(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    topics = settings.topics.commands if args.topic == "commands" else [args.topic]
    for topic, rec in consume(settings, topics, idle=args.timeout, max_records=args.max):
        print(json.dumps({"topic": topic, **rec}, default=_jsonable, ensure_ascii=False))
    return 0


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def cmd_dev(args: argparse.Namespace) -> int:
    """A local broker (or KAFKA_BOOTSTRAP) + worker + the sample timeline, commands shown
    per channel."""
    from omnijourney.runtime.broker import free_port, start_local_broker
    from omnijourney.runtime.kafkadist import KafkaUnavailable
    from omnijourney.runtime.topics import ensure_topics

    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        try:
            broker = start_local_broker(args.broker)
        except KafkaUnavailable as exc:
            print(f"omnijourney dev: {exc}", file=sys.stderr)
            return 2
        bootstrap = broker.bootstrap
    settings = Settings.from_env(bootstrap=bootstrap, journeys=args.journeys, clock="event",
                                 app_id=f"omnijourney-dev-{int(wallclock.now().timestamp())}")
    worker = None
    scratch = Path(tempfile.mkdtemp(prefix="omnijourney-dev-"))
    try:
        ensure_topics(settings)
        port = free_port()
        env = {"OMNIJOURNEY_DATADIR": str(scratch), **os.environ,  # a throwaway app's files
               "KAFKA_BOOTSTRAP": bootstrap, "OMNIJOURNEY_CLOCK": "event",
               "OMNIJOURNEY_APP_ID": settings.app_id, "OMNIJOURNEY_JOURNEYS": args.journeys,
               "OMNIJOURNEY_METRICS_PORT": str(port)}
        with open(Path(args.log), "w", encoding="utf-8") as log:  # the child keeps its copy
            worker = subprocess.Popen([sys.executable, "-m", "omnijourney", "worker"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
        events, bad = read_jsonl(args.events)
        for line in bad:
            print(f"invalid event not sent: {line}", file=sys.stderr)
        events.sort(key=lambda e: e.occurred_at)
        end = max(e.occurred_at for e in events) + HORIZON
        produce_events(settings, events, watermark=end, settle=60.0)
        print(f"broker {bootstrap}: sent {len(events)} events; worker log: {args.log}",
              file=sys.stderr)
        got = consume(settings, settings.topics.commands, idle=args.idle, max_records=None)
        _show_commands(got)
        _show_funnels(f"http://127.0.0.1:{port}/metrics", args.journeys)
        return 0 if got else 1
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        if broker is not None:
            broker.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _show_commands(got: list[tuple[str, dict[str, Any]]]) -> None:
    by_channel: Counter[str] = Counter()
    for topic, rec in sorted(got, key=lambda x: x[1]["send_at"]):
        by_channel[rec["channel"]] += 1
        print(f"{topic:<16} {format_instant(rec['send_at'])}  {rec['customer_id']:<8} "
              f"{rec['journey']}.{rec['step']}  -> {rec['to']}")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(by_channel.items())) or "none"
    print(f"{len(got)} commands from the live engine ({summary})", file=sys.stderr)


def _show_funnels(url: str, journeys: str) -> None:
    from omnijourney.ops.funnel import live_summary

    try:
        names = journey_ids(journeys)  # every journey, sending or not
        print("journeys, live from the worker's /metrics (more: omnijourney stats):",
              file=sys.stderr)
        for line in live_summary(url, names):
            print(line, file=sys.stderr)
    except OSError as exc:
        print(f"(no live journey stats: {exc})", file=sys.stderr)


def add_parsers(sub: Any) -> None:
    w = sub.add_parser("worker", help="run the journey engine on Kafka (Faust worker)")
    w.add_argument("--journeys", help="journeys directory (OMNIJOURNEY_JOURNEYS)")
    w.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP)")
    w.add_argument("--clock", choices=["wall", "event"], help="wall (default) or event time")
    w.add_argument("--log-level", default="info")
    w.add_argument("--metrics-port", help=f"/metrics, /healthz, /readyz (default "
                   f"{WORKER_METRICS_PORT}; 0: any free port; off: none)")
    w.set_defaults(func=cmd_worker)

    d = sub.add_parser("dev", help="local Kafka + worker + sample events, one command")
    d.add_argument("--broker", choices=["auto", "kafka", "embedded"], default="auto",
                   help="kafka: real Apache Kafka (Java 17+); embedded: the zero-Java broker; "
                        "auto (default): kafka where Java 17+ is there, else embedded. "
                        "KAFKA_BOOTSTRAP, when set, is used instead")
    d.add_argument("--journeys", default="journeys")
    d.add_argument("--events", default="examples/events.jsonl")
    d.add_argument("--idle", type=float, default=8.0,
                   help="stop after this many seconds without a new command")
    d.add_argument("--log", default="omnijourney-worker.log")
    d.set_defaults(func=cmd_dev)

    p = sub.add_parser("produce", help="send JSON Lines events to touchpoints (as Avro)")
    p.add_argument("file")
    p.add_argument("--bootstrap")
    p.add_argument("--json", action="store_true", help="send JSON instead of Avro")
    p.add_argument("--sort", action="store_true", help="send in occurred_at order")
    p.add_argument("--watermark", help="then move event time to this RFC 3339 time, or 'end'")
    p.add_argument("--settle", type=float, metavar="SECONDS",
                   help="a replay: after each event with identifiers (and before the "
                   "watermark) wait up to SECONDS until the engine has resolved it and "
                   "settled its merges, as if the next event came later")
    p.set_defaults(func=cmd_produce)

    er = sub.add_parser("erase", help="forget customers: their state is tombstoned and "
                                      "their personal data removed from the engine")
    er.add_argument("customer", nargs="+", help="customer id(s)")
    er.add_argument("--bootstrap")
    er.add_argument("--at", help="the erasure's time (RFC 3339; default now; in a replay "
                                 "with the event clock, a time inside it)")
    er.set_defaults(func=cmd_erase)

    t = sub.add_parser("tail", help="decode any omnijourney topic to JSON lines")
    t.add_argument("topic", help="a topic name, or 'commands' for every command topic")
    t.add_argument("--bootstrap")
    t.add_argument("--max", type=int)
    t.add_argument("--timeout", type=float, default=5.0, help="stop after idle seconds")
    t.set_defaults(func=cmd_tail)
