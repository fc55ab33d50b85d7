"""Push and webhook adapter processes on the broker: commands in, provider calls out,
each exactly once across a 5xx storm and a second consumer group re-reading everything."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from omnijourney.adapters.webhook import signature
from omnijourney.codecs import encode_command
from omnijourney.core.commands import ChannelCommand, command_id
from tests.integration.harness import LiveEngine
from tests.provider import Provider, Reply

pytestmark = pytest.mark.integration

SECRET = "whsec-test"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def commands(channel: str, url: str, n: int = 6) -> list[ChannelCommand]:
    out = []
    for i in range(n):
        content = ({"title": "Your order shipped", "text": f"Parcel {i} is on its way",
                    "url": "https://shop.example/orders"} if channel == "push" else
                   {"url": f"{url}/hooks/crm", "method": "POST", "headers": "{}",
                    "body": json.dumps({"customer": f"c{i}", "tag": "vip"})})
        out.append(ChannelCommand(
            command_id=command_id("it", channel, str(i)), journey="it", journey_version="1",
            step="notify", channel=channel, customer_id=f"c{i}", send_at=T0,
            deadline=T0 + timedelta(days=1), template=None,
            to=f"device-token-{i}" if channel == "push" else None, content=content,
            transactional=True, trigger_event_id=f"e{i}", instance_key=""))
    return out


@pytest.mark.parametrize("channel", ["push", "webhook"])
def test_each_command_reaches_the_provider_once_through_storm_and_rereads(
        engine: LiveEngine, tmp_path: Path, channel: str) -> None:
    storm = [Reply(503)] * 4 + [Reply(429, headers={"Retry-After": "0.1"})]
    with Provider(storm) as provider:
        cmds = commands(channel, provider.url)
        producer = KafkaProducer(**engine.settings.kafka_python())
        for c in cmds:
            producer.send(engine.settings.topics.command(channel), key=c.customer_id.encode(),
                          value=encode_command(c))
        producer.flush()
        producer.close()
        env = {"PUSH_API_BASE": provider.url, "PUSH_PROJECT": "shop", "PUSH_TOKEN": "tok",
               "WEBHOOK_SECRET": SECRET}
        for run, group in enumerate(("a", "b")):  # b: a new group re-reads every command
            proc = engine.adapter(channel, tmp_path / f"{group}.log", idle=5,
                                  OMNIJOURNEY_APP_ID=f"{engine.prefix}{channel}-{group}", **env)
            assert proc.wait(120) == 0, (tmp_path / f"{group}.log").read_text()[-2000:]
            assert sorted(provider.delivered) == sorted(c.command_id for c in cmds), run
    ok = [r for r in provider.requests if r.headers["Idempotency-Key"] in provider.accepted]
    if channel == "push":
        assert {r.path for r in ok} == {"/v1/projects/shop/messages:send"}
        assert {r.headers["Authorization"] for r in ok} == {"Bearer tok"}
        tokens = {json.loads(r.body)["message"]["token"] for r in ok}
        assert tokens == {c.to for c in cmds}
    else:
        assert {r.path for r in ok} == {"/hooks/crm"}
        for r in ok:  # a receiver can verify every request
            stamp = r.headers["X-Omnijourney-Timestamp"]
            assert r.headers["X-Omnijourney-Signature"] == signature(SECRET, stamp, r.body)
    reports = engine.read([engine.settings.topics.deliveries], until=len(cmds))
    assert sorted(r["command_id"] for r in reports) == sorted(c.command_id for c in cmds)
    assert {r["status"] for r in reports} == {"sent"}
