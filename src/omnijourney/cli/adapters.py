"""For delivering: ``adapter`` (one channel), ``clicks`` and ``bounces`` (the signals back)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import structlog

from omnijourney import kafkaclients, wallclock
from omnijourney.cli.common import (
    WORKER_METRICS_PORT,
    metrics_port,
    settings_from,
)
from omnijourney.core.channels import CHANNELS
from omnijourney.core.commands import DeliveryReport
from omnijourney.core.events import Event
from omnijourney.core.redaction import scrub
from omnijourney.kafkaclients import KafkaProducer
from omnijourney.settings import ClockMode


def cmd_adapter(args: argparse.Namespace) -> int:
    from omnijourney.adapters.config import channel_from_env
    from omnijourney.adapters.http import TokenBucket
    from omnijourney.adapters.retry import RetryPolicy
    from omnijourney.adapters.runner import UNCONFIRMED_POLICIES, Runner
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
    runner = Runner(settings, channel, retry=RetryPolicy.from_env(env, limiter),
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
        str, KafkaProducer, Callable[[DeliveryReport], None]] | None:
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
    producer = kafkaclients.producer(settings, acks="all")
    log = structlog.get_logger(f"omnijourney.{command}")

    def report(rep: DeliveryReport) -> None:
        producer.send(settings.topics.deliveries, key=rep.customer_id.encode(),
                      value=encode_delivery(rep)).get(10)
        log.info("reported", command_id=rep.command_id, status=rep.status,
                 reason=scrub(rep.reason))

    return secret, producer, report


def _expiry(args: argparse.Namespace) -> wallclock.WallClock | None:
    """The clock tokens expire by: the wall's; none in a replay, whose tokens are of its
    own time."""
    return wallclock.now if settings_from(args).clock == ClockMode.WALL else None


def _event_sink(args: argparse.Namespace, producer: KafkaProducer) -> Callable[[Event], None]:
    """Publish an event the tracking server made (a preference saved, a helpdesk's
    answer) to ``touchpoints``, keyed by its customer, and wait for the ack."""
    from omnijourney.codecs import encode_event

    settings = settings_from(args)
    log = structlog.get_logger("omnijourney.tracking")

    def emit(ev: Event) -> None:
        producer.send(settings.topics.touchpoints, key=ev.customer_id.encode(),
                      value=encode_event(ev)).get(10)
        log.info("event_published", type=ev.type, event_id=ev.event_id)

    return emit


def _preference_pages(args: argparse.Namespace, secret: str,
                      emit: Callable[[Event], None]) -> Any:
    """The preference page, under the journeys' policies (its topics, default window and
    zone); what it saves goes to ``touchpoints`` as a ``preferences.updated`` event."""
    from omnijourney.config import load
    from omnijourney.tracking.preferences import PreferencePages

    loaded = load(settings_from(args).journeys)
    if loaded.journey_set is None:
        print("omnijourney clicks: no preference page (the journeys do not load: run "
              "omnijourney validate)", file=sys.stderr)
        return None
    return PreferencePages(secret, loaded.journey_set.policies, emit, wall=wallclock.now,
                           check_expiry=_expiry(args) is not None)


def cmd_clicks(args: argparse.Namespace) -> int:
    """Serve tracked-link redirects and report each click to ``deliveries``."""
    from omnijourney.tracking.clicks import ClickServer

    given = _reporter(args, "clicks")
    if given is None:
        return 2
    secret, producer, report = given
    emit = _event_sink(args, producer)
    server = ClickServer(secret, report, host=args.host, port=args.port, now=_expiry(args),
                         provider_token=os.environ.get("SMS_AUTH_TOKEN"),
                         public_url=os.environ.get("SMS_STATUS_CALLBACK_URL"),
                         preferences=_preference_pages(args, secret, emit), events=emit)
    print(f"tracking on http://{args.host}:{server.port}: GET /c/<token> (clicks), "
          "GET/POST /p/<token> (preference page), POST /h/<token> (helpdesk answers), "
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
    from omnijourney.tracking.bounces import BounceServer

    given = _reporter(args, "bounces")
    if given is None:
        return 2
    secret, producer, report = given
    server = BounceServer(secret, report, host=args.host, port=args.port,
                          now=_expiry(args)).start()
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


def _receiver(sub: Any, name: str, what: str, port: int, where: str, *,
              func: Callable[[argparse.Namespace], int]) -> None:
    """A server that turns outside signals into delivery reports (clicks, bounces)."""
    p = sub.add_parser(name, help=what)
    p.add_argument("--bootstrap")
    p.add_argument("--host", default="127.0.0.1", help=where)
    p.add_argument("--port", type=int, default=port)
    p.set_defaults(func=func)


def add_parsers(sub: Any) -> None:
    _receiver(sub, "bounces", "receive bounces (DSN) and spam complaints (ARF) by SMTP "
              "(email.bounced, email.unsubscribed)", 2525,
              "where to listen (0.0.0.0 where the return path's MX must reach it)",
              func=cmd_bounces)
    _receiver(sub, "clicks", "the tracking server: tracked links, one-click unsubscribe, "
              "provider status callbacks, the preference page and helpdesk answers "
              "(email.clicked, email.unsubscribed, sms.delivered, preferences.updated, "
              "handoff.*)", 8080,
              "where to listen (0.0.0.0 behind a public endpoint)", func=cmd_clicks)

    a = sub.add_parser("adapter", help="deliver one channel's commands (email: SMTP)")
    a.add_argument("channel", choices=CHANNELS)
    a.add_argument("--bootstrap")
    a.add_argument("--clock", choices=["wall", "event"],
                   help="event: a replay, where deadlines in the past do not expire")
    a.add_argument("--idle-exit", type=float, help="stop after this many idle seconds")
    a.add_argument("--log-level", default="info")
    a.add_argument("--metrics-port", help="/metrics, /healthz, /readyz (default 9401 email "
                   "... 9405 webhook; 0: any free port; off: none)")
    a.set_defaults(func=cmd_adapter)
