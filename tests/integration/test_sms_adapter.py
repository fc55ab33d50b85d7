"""SMS adapter processes against a provider-like HTTP server: kill -9 mid-batch, 5xx storms."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.harness import LiveEngine
from tests.integration.test_live_engine import sample
from tests.provider import Provider, Reply

pytestmark = pytest.mark.integration



def adapter(engine: LiveEngine, provider: Provider, log: Path, *, rate: str = "0",
            idle: float = 10.0) -> subprocess.Popen[bytes]:
    return engine.adapter("sms", log, idle=idle, SMS_API_BASE=provider.url,
                          SMS_ACCOUNT_SID="AC1", SMS_AUTH_TOKEN="t", SMS_FROM="+15550000",
                          ADAPTER_RATE_LIMIT=rate)


def test_killed_mid_batch_then_restarted_every_sms_goes_out_once(
        engine: LiveEngine, tmp_path: Path) -> None:
    events, expected = sample()
    sms = {c.command_id for c in expected if c.channel == "sms"}
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    engine.read([engine.settings.topics.command("sms")], until=len(sms))
    with Provider() as provider:
        first = adapter(engine, provider, tmp_path / "a1.log", rate="2")  # slow: 2 per second
        deadline = time.monotonic() + 60
        while len(provider.delivered) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)  # mid-batch: no commit, no flush
        first.wait(30)
        assert 2 <= len(provider.delivered) < len(sms)
        second = adapter(engine, provider, tmp_path / "a2.log")
        assert second.wait(120) == 0, (tmp_path / "a2.log").read_text()[-2000:]
    # Every message went out, and none twice: a repeat after the kill carries the same
    # Idempotency-Key (the command id), which the provider answers without sending.
    assert sorted(provider.delivered) == sorted(sms)
    assert len(provider.delivered) == len(set(provider.delivered))


def test_a_5xx_storm_delays_but_neither_loses_nor_duplicates(
        engine: LiveEngine, tmp_path: Path) -> None:
    events, expected = sample()
    sms = {c.command_id for c in expected if c.channel == "sms"}
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    engine.read([engine.settings.topics.command("sms")], until=len(sms))
    storm = [Reply(503)] * 6 + [Reply(429, headers={"Retry-After": "0.2"})] * 2
    with Provider(storm) as provider:
        proc = adapter(engine, provider, tmp_path / "storm.log")
        assert proc.wait(180) == 0, (tmp_path / "storm.log").read_text()[-2000:]
    assert sorted(provider.delivered) == sorted(sms)
    assert len(provider.requests) >= len(sms) + len(storm)
    reports = engine.read([engine.settings.topics.deliveries], until=len(sms))
    assert sorted(r["command_id"] for r in reports) == sorted(sms)
    assert {r["status"] for r in reports} == {"sent"}
