"""An adapter process on real Kafka: one customer's slow provider answer holds only that
customer, hostile commands are settled (reported or dead-lettered) and never stop it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from omnijourney.codecs import encode_command
from omnijourney.core.commands import ChannelCommand, command_id
from tests.helpers import logged
from tests.integration.harness import LiveEngine
from tests.provider import Provider, Reply

pytestmark = pytest.mark.integration

AT = datetime(2026, 3, 2, 12, tzinfo=UTC)


def sms(customer: str, to: str, n: int = 0) -> ChannelCommand:
    return ChannelCommand(
        command_id=command_id("flow", customer, str(n)), journey="welcome",
        journey_version="1", step=f"s{n}", channel="sms", customer_id=customer,
        send_at=AT, deadline=AT + timedelta(days=1), template=None, to=to,
        content={"text": f"hello {n}"}, transactional=False, trigger_event_id="e",
        instance_key="")


def produce(engine: LiveEngine, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(**engine.settings.kafka_python())
    for key, value in records:
        producer.send(engine.settings.topics.command("sms"), key=key, value=value)
    producer.flush()
    producer.close()


def test_a_slow_customer_holds_only_itself_and_hostile_commands_never_stop_the_adapter(
        engine: LiveEngine, tmp_path: Path) -> None:
    slow = [sms("c-slow", "+15550199", 0), sms("c-slow", "+15550199", 1)]
    others = [sms(f"c-{i}", f"+1555020{i:02d}") for i in range(20)]
    injected = sms("c-bad", "+15550100\r\nTo: +15559999")
    with Provider(by_to={"+15550199": [Reply(429, headers={"Retry-After": "6"})]}) as provider:
        started = time.monotonic()
        proc = engine.adapter("sms", tmp_path / "sms.log", idle=8, SMS_API_BASE=provider.url,
                              SMS_ACCOUNT_SID="AC1", SMS_AUTH_TOKEN="t", SMS_FROM="+15550000",
                              ADAPTER_CONCURRENCY="4")
        produce(engine, [(c.customer_id.encode(), encode_command(c)) for c in slow]
                + [(b"c-junk", b"\xc3\x01 not a command")]
                + [(b"c-bad", encode_command(injected))]
                + [(c.customer_id.encode(), encode_command(c)) for c in others])
        when: dict[str, float] = {}
        deadline = time.monotonic() + 90
        while len(when) < len(others) + len(slow) and time.monotonic() < deadline:
            with provider.lock:
                for key in provider.delivered:
                    when.setdefault(key, time.monotonic() - started)
            time.sleep(0.05)
        assert proc.wait(60) == 0, (tmp_path / "sms.log").read_text()[-3000:]
    log = (tmp_path / "sms.log").read_text()
    slow_at = [when[c.command_id] for c in slow]
    others_at = [when[c.command_id] for c in others]
    # Everyone else went out while the slow customer waited out its Retry-After ...
    assert max(others_at) < slow_at[0], (others_at, slow_at, log[-2000:])
    # ... and the slow customer's second message waited behind its first.
    assert slow_at[0] < slow_at[1]
    assert sorted(provider.delivered) == sorted(c.command_id for c in slow + others)

    reports = {r["command_id"]: r for r in engine.read(
        [engine.settings.topics.deliveries], until=len(slow) + len(others) + 1,
        distinct="command_id")}
    bad = reports[injected.command_id]
    assert bad["status"] == "failed" and "E.164" in bad["reason"]
    assert "+15559999" not in str(reports)
    (dead,) = engine.read([engine.settings.topics.dlq], until=1)
    assert dead["error"].startswith("undecodable command") and dead["topic"].endswith("sms")
    assert _digests_only(log)


def _digests_only(log: str) -> bool:
    """Delivery lines name the recipient by digest."""
    lines = [x for x in logged(log) if x.get("event") == "delivery"]
    return bool(lines) and all(str(x.get("to", "")).startswith("sha256:") for x in lines)
