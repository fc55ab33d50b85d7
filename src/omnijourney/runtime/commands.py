"""``omnijourney worker | dev | produce | tail | topics | schemas`` — the Kafka commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from kafka import KafkaConsumer, KafkaProducer

from omnijourney.adapters.addresses import scrub
from omnijourney.codecs import CodecError, decode_any, encode_event
from omnijourney.core.commands import CHANNELS
from omnijourney.core.events import Event
from omnijourney.core.timeutil import format_instant
from omnijourney.runtime.engine import clock_record
from omnijourney.runtime.settings import Settings
from omnijourney.simulator import DEFAULT_HORIZON as HORIZON  # live ends where simulate does
from omnijourney.simulator import read_events


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(bootstrap=getattr(args, "bootstrap", None),
                             journeys=getattr(args, "journeys", None),
                             clock=getattr(args, "clock", None))


# ----------------------------------------------------------------------- worker

WORKER_METRICS_PORT = 9400  # adapters: 9401 (email) ... 9405 (webhook), CHANNELS order


def metrics_port(args: argparse.Namespace, default: int) -> int | None:
    """--metrics-port, else OMNIJOURNEY_METRICS_PORT, else ``default``; "off" disables."""
    given = getattr(args, "metrics_port", None) or os.environ.get("OMNIJOURNEY_METRICS_PORT")
    if given is None or given == "":
        return default
    if str(given).lower() in ("off", "none", "disabled"):
        return None
    return int(given)


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from omnijourney.config import ConfigError, load_or_raise
    from omnijourney.logs import configure
    from omnijourney.runtime.app import EXIT_FAILED, EXIT_STALLED, Worker
    from omnijourney.runtime.topics import ensure_topics

    configure(args.log_level)
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


# ---------------------------------------------------------------------- produce

def read_jsonl(path: str) -> tuple[list[Event], list[str]]:
    with open(path, encoding="utf-8") as fh:
        events, bad = read_events(fh)
    return events, [f"{path}:{b.line}: {b.reason}" for b in bad]


def produce_events(settings: Settings, events: list[Event], *, watermark: datetime | None,
                   as_json: bool = False) -> int:
    producer = KafkaProducer(**settings.kafka_python(), acks="all", linger_ms=5)
    for ev in events:
        value = json.dumps(ev.to_dict()).encode() if as_json else encode_event(ev)
        producer.send(settings.topics.touchpoints, key=ev.customer_id.encode(), value=value)
    producer.flush()
    if watermark is not None:
        send_watermark(producer, settings, watermark)
    producer.close()
    return len(events)


def send_watermark(producer: KafkaProducer, settings: Settings, at: datetime) -> None:
    """Move event time forward on every partition (replays: lets final waits fire).

    A clock record goes to each touchpoints partition, behind the events already there,
    so it never overtakes one of them."""
    topic = settings.topics.touchpoints
    parts = producer.partitions_for(topic) or set(range(settings.partitions))
    for p in sorted(parts):
        producer.send(topic, value=clock_record(at), partition=p)
    producer.flush()


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
    n = produce_events(settings, events, watermark=wm, as_json=args.json)
    print(f"sent {n} events to {settings.topics.touchpoints}"
          + (f"; event time moved to {format_instant(wm)}" if wm else ""), file=sys.stderr)
    return 1 if bad else 0


def cmd_erase(args: argparse.Namespace) -> int:
    """Ask the engine to forget customers: one erasure event each, keyed by customer."""
    from omnijourney.core.events import ERASURE_EVENT

    settings = settings_from(args)
    now = datetime.now(UTC)
    at = parse_when(args.at) if args.at else now
    events = [Event(f"erase:{cid}:{int(now.timestamp() * 1000)}", ERASURE_EVENT, cid, at,
                    "omnijourney-erase", {}) for cid in args.customer]
    n = produce_events(settings, events, watermark=None)
    print(f"asked the engine to erase {n} customer(s); each state becomes a tombstone on "
          "the changelog. Topics keep what they hold until their retention ends (README, "
          "'Personal data').", file=sys.stderr)
    return 0


def parse_when(text: str) -> datetime:
    from omnijourney.core.timeutil import parse_instant

    return parse_instant(text)


# ------------------------------------------------------------------------- tail

def consume(settings: Settings, topics: list[str], *, idle: float, max_records: int | None,
            from_beginning: bool = True) -> list[tuple[str, dict[str, Any]]]:
    consumer = KafkaConsumer(*topics, **settings.kafka_python(),
                             auto_offset_reset="earliest" if from_beginning else "latest",
                             enable_auto_commit=False, consumer_timeout_ms=int(idle * 1000))
    out = []
    try:
        for msg in consumer:
            try:
                _, rec = decode_any(msg.value)
            except (CodecError, ValueError) as exc:
                rec = {"undecodable": msg.value[:200].hex(), "error": str(exc)}
            out.append((msg.topic, rec))
            if max_records is not None and len(out) >= max_records:
                break
    finally:
        consumer.close()
    return out


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


# --------------------------------------------------------------------- topics

def cmd_topics(args: argparse.Namespace) -> int:
    from omnijourney.runtime.topics import ensure_topics

    for name, parts in sorted(ensure_topics(settings_from(args)).items()):
        print(f"{name}\t{parts} partition(s)")
    return 0


def cmd_schemas_check(args: argparse.Namespace) -> int:
    from omnijourney.schemacheck import check_dir

    findings, compared = check_dir(Path(args.dir), against=args.against)
    for f in findings:
        print(f"{args.dir}/{f.file}: incompatible ({f.direction}) {f.problem}")
    print(f"{compared} schema(s) compared with {args.against}: "
          + ("compatible" if not findings else f"{len(findings)} breaking change(s)"),
          file=sys.stderr)
    return 1 if findings else 0


# ------------------------------------------------------------------------ dev

def cmd_dev(args: argparse.Namespace) -> int:
    """A local broker (or KAFKA_BOOTSTRAP) + worker + the sample timeline, commands shown
    per channel."""
    from omnijourney.ops.commands import live_summary
    from omnijourney.runtime.broker import free_port, start_local_broker
    from omnijourney.runtime.kraft import KafkaUnavailable
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
                                 app_id=f"omnijourney-dev-{int(time.time())}")
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
        produce_events(settings, events, watermark=end)
        print(f"broker {bootstrap}: sent {len(events)} events; worker log: {args.log}",
              file=sys.stderr)
        got = consume(settings, settings.topics.commands, idle=args.idle, max_records=None)
        by_channel: Counter[str] = Counter()
        for topic, rec in sorted(got, key=lambda x: x[1]["send_at"]):
            by_channel[rec["channel"]] += 1
            print(f"{topic:<16} {format_instant(rec['send_at'])}  {rec['customer_id']:<8} "
                  f"{rec['journey']}.{rec['step']}  -> {rec['to']}")
        summary = ", ".join(f"{k} {v}" for k, v in sorted(by_channel.items())) or "none"
        print(f"{len(got)} commands from the live engine ({summary})", file=sys.stderr)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            names = _journey_ids(args.journeys)  # every journey, sending or not
            print("journeys, live from the worker's /metrics (more: omnijourney stats):",
                  file=sys.stderr)
            for line in live_summary(url, names):
                print(line, file=sys.stderr)
        except OSError as exc:
            print(f"(no live journey stats: {exc})", file=sys.stderr)
        return 0 if got else 1
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        if broker is not None:
            broker.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def cmd_kafka_up(args: argparse.Namespace) -> int:
    """Real Apache Kafka on this machine until interrupted; prints the bootstrap."""
    from omnijourney.runtime.kraft import KafkaCluster, KafkaUnavailable

    stop = threading.Event()
    cluster = KafkaCluster(args.nodes, Path(args.dir) if args.dir else None)
    print(f"starting Apache Kafka {cluster.version} ({args.nodes} KRaft node(s)) ...",
          file=sys.stderr)
    try:
        with cluster:  # Ctrl-C while it starts: every node stopped on the way out
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            print(cluster.bootstrap, flush=True)
            print(f"KAFKA_BOOTSTRAP={cluster.bootstrap}; logs in "
                  f"{cluster.root}/node-*/server.log; Ctrl-C stops every node", file=sys.stderr)
            while not stop.wait(1.0):
                dead = [n for n in cluster.members if not n.running]
                if dead:
                    print(f"omnijourney kafka up: node {dead[0].node_id} exited; the end of "
                          f"its log:\n{dead[0].log_tail()}", file=sys.stderr)
                    return 1
    except KafkaUnavailable as exc:
        print(f"omnijourney kafka up: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _journey_ids(folder: str) -> list[str]:
    from omnijourney.config import load_or_raise

    return sorted(load_or_raise(folder).current)


def channel_from_env(name: str) -> Any:
    """The channel implementation for ``name``, configured from the environment."""
    from omnijourney.adapters.email import EmailChannel
    from omnijourney.adapters.push import FcmStylePush
    from omnijourney.adapters.sms import TwilioStyleSms
    from omnijourney.adapters.webhook import SignedWebhook

    env = os.environ

    def need(key: str) -> str:
        if not env.get(key):
            raise SystemExit(f"omnijourney adapter {name}: set {key}")
        return env[key]

    if name == "email":
        return EmailChannel(
            host=env.get("SMTP_HOST", "localhost"), port=int(env.get("SMTP_PORT", "25")),
            sender=env.get("SMTP_FROM", EmailChannel.sender),
            starttls=env.get("SMTP_STARTTLS", "").lower() in ("1", "true", "yes"),
            username=env.get("SMTP_USERNAME"), password=env.get("SMTP_PASSWORD"),
            unsubscribe_url=env.get("OMNIJOURNEY_UNSUBSCRIBE_URL", EmailChannel.unsubscribe_url),
            tracking_url=env.get("CLICK_TRACKING_URL"),
            # Signs tracked links and the header that lets bounces be attributed.
            tracking_secret=(need("CLICK_SECRET") if env.get("CLICK_TRACKING_URL")
                             else env.get("CLICK_SECRET", "")),
            return_path=env.get("EMAIL_RETURN_PATH"))
    if name == "sms":
        callback = env.get("SMS_STATUS_CALLBACK_URL")
        return TwilioStyleSms(need("SMS_API_BASE"), need("SMS_ACCOUNT_SID"),
                              need("SMS_AUTH_TOKEN"), need("SMS_FROM"),
                              status_callback=callback,
                              callback_secret=need("CLICK_SECRET") if callback else "")
    if name == "push":
        return FcmStylePush(need("PUSH_API_BASE"), need("PUSH_PROJECT"), need("PUSH_TOKEN"))
    if name == "webhook":
        return SignedWebhook(need("WEBHOOK_SECRET"))
    if name == "ads":
        from omnijourney.adapters.ads import AudienceSync

        if not env.get("ADS_ENDPOINT") and not env.get("ADS_SINK"):
            raise SystemExit("omnijourney adapter ads: set ADS_ENDPOINT or ADS_SINK (a file)")
        return AudienceSync(endpoint=env.get("ADS_ENDPOINT"), token=env.get("ADS_TOKEN"),
                            sink=Path(env["ADS_SINK"]) if env.get("ADS_SINK") else None)
    raise SystemExit(f"omnijourney adapter: the {name} adapter is not built yet")


def cmd_adapter(args: argparse.Namespace) -> int:
    from omnijourney.adapters.base import UNCONFIRMED_POLICIES, Runner
    from omnijourney.adapters.http import TokenBucket
    from omnijourney.logs import configure
    from omnijourney.runtime.topics import ensure_topics

    configure(args.log_level)
    settings = settings_from(args)
    channel = channel_from_env(args.channel)
    rate = float(os.environ.get("ADAPTER_RATE_LIMIT", "0"))
    limiter = TokenBucket(rate=rate, burst=max(1.0, rate)) if rate > 0 else None
    ensure_topics(settings, worker=False)  # an adapter: no state table
    env = os.environ
    unconfirmed = env.get("ADAPTER_UNCONFIRMED", "resend")
    if unconfirmed not in UNCONFIRMED_POLICIES:
        raise SystemExit("omnijourney adapter: ADAPTER_UNCONFIRMED must be one of "
                         f"{', '.join(UNCONFIRMED_POLICIES)}")
    runner = Runner(settings, channel, limiter=limiter,
                    attempts=int(env.get("ADAPTER_MAX_ATTEMPTS", "10")),
                    base_delay=float(env.get("ADAPTER_BACKOFF_BASE", "0.5")),
                    max_delay=float(env.get("ADAPTER_BACKOFF_MAX", "30")),
                    unconfirmed=unconfirmed,
                    concurrency=int(env.get("ADAPTER_CONCURRENCY", "8")))
    runner.start_ops(metrics_port(args, WORKER_METRICS_PORT + 1 + CHANNELS.index(args.channel)))
    try:
        counts = runner.run(idle_exit=args.idle_exit)
    finally:
        runner.close()
    print(json.dumps(counts), file=sys.stderr)
    return 0


def _reporter(args: argparse.Namespace, command: str) -> tuple[
        str, KafkaProducer, Callable[[dict[str, Any]], None]] | None:
    """For the services that turn outside signals into DeliveryReports: the signing
    secret (``CLICK_SECRET``, as the email adapter has it), a producer, and a function
    that publishes one report to ``deliveries`` and waits for the ack. None, after
    saying why, without the secret."""
    from omnijourney.codecs import encode_delivery

    secret = os.environ.get("CLICK_SECRET")
    if not secret:
        print(f"omnijourney {command}: set CLICK_SECRET (the email adapter signs with it)",
              file=sys.stderr)
        return None
    settings = settings_from(args)
    producer = KafkaProducer(**settings.kafka_python(), acks="all")
    log = structlog.get_logger(f"omnijourney.{command}")

    def report(rep: dict[str, Any]) -> None:
        producer.send(settings.topics.deliveries, key=rep["customer_id"].encode(),
                      value=encode_delivery(rep)).get(10)
        log.info("reported", command_id=rep["command_id"], status=rep["status"],
                 reason=scrub(rep["reason"]))

    return secret, producer, report


def cmd_clicks(args: argparse.Namespace) -> int:
    """Serve tracked-link redirects and report each click to ``deliveries``."""
    from omnijourney.adapters.clicks import ClickServer

    given = _reporter(args, "clicks")
    if given is None:
        return 2
    secret, producer, report = given
    server = ClickServer(secret, report, host=args.host, port=args.port,
                         # Expiry runs on the wall clock; a replay's tokens are of its time.
                         now=(lambda: datetime.now(UTC))
                         if settings_from(args).clock == "wall" else None,
                         provider_token=os.environ.get("SMS_AUTH_TOKEN"),
                         public_url=os.environ.get("SMS_STATUS_CALLBACK_URL"))
    print(f"tracking on http://{args.host}:{server.port}: GET /c/<token> (clicks), "
          "POST /u/<token> (one-click unsubscribe), POST /s/<token> (provider status "
          "callbacks)", file=sys.stderr)
    try:
        server.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server.server_close()
        producer.close()
    return 0


def cmd_bounces(args: argparse.Namespace) -> int:
    """Receive bounces and complaints by SMTP and report them to ``deliveries``."""
    from omnijourney.adapters.bounces import BounceServer

    given = _reporter(args, "bounces")
    if given is None:
        return 2
    secret, producer, report = given
    server = BounceServer(secret, report, host=args.host, port=args.port,
                          now=(lambda: datetime.now(UTC))
                          if settings_from(args).clock == "wall" else None).start()
    print(f"bounces on smtp://{args.host}:{args.port}: delivery status notifications and "
          "spam complaints for mail the email adapter signed", file=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.stop()
        producer.close()
        print(f"bounces: {server.counts}", file=sys.stderr)
    return 0


def add_parsers(sub: Any) -> None:
    bo = sub.add_parser("bounces", help="receive bounces (DSN) and spam complaints (ARF) "
                                        "by SMTP (email.bounced, email.unsubscribed)")
    bo.add_argument("--bootstrap")
    bo.add_argument("--host", default="127.0.0.1",
                    help="where to listen (0.0.0.0 where the return path's MX must reach it)")
    bo.add_argument("--port", type=int, default=2525)
    bo.set_defaults(func=cmd_bounces)
    ck = sub.add_parser("clicks", help="serve tracked links, one-click unsubscribe and "
                                       "provider status callbacks (email.clicked, "
                                       "email.unsubscribed, sms.delivered)")
    ck.add_argument("--bootstrap")
    ck.add_argument("--host", default="127.0.0.1",
                    help="where to listen (0.0.0.0 behind a public endpoint)")
    ck.add_argument("--port", type=int, default=8080)
    ck.set_defaults(func=cmd_clicks)

    a = sub.add_parser("adapter", help="deliver one channel's commands (email: SMTP)")
    a.add_argument("channel", choices=["email", "sms", "push", "ads", "webhook"])
    a.add_argument("--bootstrap")
    a.add_argument("--clock", choices=["wall", "event"],
                   help="event: a replay, where deadlines in the past do not expire")
    a.add_argument("--idle-exit", type=float, help="stop after this many idle seconds")
    a.add_argument("--log-level", default="info")
    a.add_argument("--metrics-port", help="/metrics, /healthz, /readyz (default 9401 email "
                   "... 9405 webhook; 0: any free port; off: none)")
    a.set_defaults(func=cmd_adapter)

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

    k = sub.add_parser("kafka", help="run real Apache Kafka on this machine (KRaft)")
    ks = k.add_subparsers(dest="kafka_command", required=True)
    up = ks.add_parser("up", help="start a KRaft cluster, print its bootstrap, run until "
                                  "interrupted")
    up.add_argument("--nodes", type=int, choices=[1, 3], default=1)
    up.add_argument("--dir", help="keep the nodes' data and logs here (default: a temporary "
                                  "directory, removed at the end)")
    up.set_defaults(func=cmd_kafka_up)

    p = sub.add_parser("produce", help="send JSON Lines events to touchpoints (as Avro)")
    p.add_argument("file")
    p.add_argument("--bootstrap")
    p.add_argument("--json", action="store_true", help="send JSON instead of Avro")
    p.add_argument("--sort", action="store_true", help="send in occurred_at order")
    p.add_argument("--watermark", help="then move event time to this RFC 3339 time, or 'end'")
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

    tp = sub.add_parser("topics", help="create omnijourney's topics (idempotent)")
    tp.add_argument("--bootstrap")
    tp.set_defaults(func=cmd_topics)

    sc = sub.add_parser("schemas", help="schema tools")
    scs = sc.add_subparsers(dest="schemas_command", required=True)
    chk = scs.add_parser("check", help="refuse schema changes that break old readers/writers")
    chk.add_argument("--dir", default="schemas")
    chk.add_argument("--against", default="HEAD", help="a git revision or a directory")
    chk.set_defaults(func=cmd_schemas_check)


