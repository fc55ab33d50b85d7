"""Timeline in -> live engine -> email adapter -> real SMTP messages, each exactly once."""

from __future__ import annotations

import dataclasses
import signal
from datetime import timedelta
from pathlib import Path

import pytest

from omnijourney.adapters.base import Runner
from omnijourney.adapters.email import EmailChannel
from omnijourney.runtime.topics import ensure_topics
from tests.integration.conftest import Kafka
from tests.integration.harness import LiveEngine
from tests.integration.test_live_engine import sample
from tests.smtp import SmtpServer

pytestmark = pytest.mark.integration



def run_adapter(engine: LiveEngine, port: int, group: str) -> dict[str, int]:
    settings = dataclasses.replace(engine.settings, app_id=group)
    runner = Runner(settings, EmailChannel(port=port), base_delay=0.05)
    try:
        return runner.run(idle_exit=4.0)
    finally:
        runner.close()


def test_every_email_arrives_once_and_a_restart_sends_nothing_again(engine: LiveEngine) -> None:
    events, expected = sample()
    emails = {c.command_id: c for c in expected if c.channel == "email"}
    ensure_topics(engine.settings)
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    engine.read([engine.settings.topics.command("email")], until=len(emails))
    with SmtpServer() as smtp:
        first = run_adapter(engine, smtp.port, "adapter-a")
        # A new consumer group re-reads every command: the delivered log, not the offsets,
        # is what keeps them from going out twice.
        again = run_adapter(engine, smtp.port, "adapter-b")
    got = [m["X-Omnijourney-Command-Id"] for m in smtp.messages]
    assert sorted(got) == sorted(emails)
    assert first == {"sent": len(emails)}
    assert again == {"duplicate": len(emails)}
    by_id = {m["X-Omnijourney-Command-Id"]: m for m in smtp.messages}
    for cid, cmd in emails.items():
        assert by_id[cid]["To"] == cmd.to
        assert by_id[cid]["Subject"] == cmd.content["subject"]
    reports = engine.read([engine.settings.topics.deliveries], until=len(emails))
    assert sorted(r["command_id"] for r in reports) == sorted(emails)
    assert {r["status"] for r in reports} == {"sent"}


@pytest.mark.parametrize("policy", ["resend", "skip"])
def test_killed_mid_send_the_unconfirmed_email_follows_the_operators_policy(
        engine: LiveEngine, kafka: Kafka, tmp_path: Path, policy: str) -> None:
    events, expected = sample()
    emails = {c.command_id for c in expected if c.channel == "email"}
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    engine.read([engine.settings.topics.command("email")], until=len(emails))
    env = {"SMTP_HOST": "127.0.0.1", "ADAPTER_UNCONFIRMED": policy}
    with SmtpServer(stall_at=3) as smtp:
        first = engine.adapter("email", tmp_path / "a1.log", SMTP_PORT=str(smtp.port), **env)
        assert smtp.recorder.stalled.wait(60), (tmp_path / "a1.log").read_text()[-2000:]
        first.send_signal(signal.SIGKILL)  # the server has the mail; the adapter never heard
        first.wait(30)
        kafka.expire_dead_members()
        second = engine.adapter("email", tmp_path / "a2.log", SMTP_PORT=str(smtp.port), **env)
        assert second.wait(120) == 0, (tmp_path / "a2.log").read_text()[-2000:]
    ids = [m["X-Omnijourney-Command-Id"] for m in smtp.messages]
    in_flight = ids[2]
    assert set(ids) == emails
    restarted = (tmp_path / "a2.log").read_text()
    assert "unconfirmed" in restarted and in_flight in restarted
    reports = {r["command_id"]: r for r in engine.read(
        [engine.settings.topics.deliveries], until=len(emails), distinct="command_id")}
    assert set(reports) == emails
    if policy == "resend":
        # At least once: only the unconfirmed mail repeats, under the same Message-ID.
        assert sorted(ids) == sorted([*emails, in_flight])
        copies = {m["Message-ID"] for m in smtp.messages
                  if m["X-Omnijourney-Command-Id"] == in_flight}
        assert len(copies) == 1
        assert reports[in_flight]["status"] == "sent"
    else:
        # At most once: nothing repeats; the unconfirmed one is reported, not resent.
        assert sorted(ids) == sorted(emails)
        assert reports[in_flight]["status"] == "failed"
        assert "unconfirmed" in reports[in_flight]["reason"]
    assert {r["status"] for cid, r in reports.items() if cid != in_flight} == {"sent"}


def test_ads_commands_are_batched_into_the_audience_sink(engine: LiveEngine,
                                                         tmp_path: Path) -> None:
    import json

    from omnijourney.adapters.ads import AudienceSync

    events, expected = sample()
    ads = {c.command_id: c for c in expected if c.channel == "ads"}
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    engine.read([engine.settings.topics.command("ads")], until=len(ads))
    sink = tmp_path / "audiences.jsonl"
    for run in range(2):  # a fresh group re-reads everything: the delivered log decides
        settings = dataclasses.replace(engine.settings, app_id=f"ads-adapter-{run}")
        runner = Runner(settings, AudienceSync(sink=sink))
        try:
            counts = runner.run(idle_exit=4.0)
        finally:
            runner.close()
    assert counts == {"duplicate": len(ads)}
    lines = [json.loads(x) for x in sink.read_text().splitlines()]
    sent_ids = sorted(cid for line in lines for cid in line["command_ids"])
    assert sent_ids == sorted(ads)  # each exactly once, across both runs
    members: dict[str, set[str]] = {}
    for line in lines:
        members.setdefault(line["audience"], set()).update(line["members"])
    want: dict[str, set[str]] = {}
    for c in ads.values():
        want.setdefault(c.content["audience"], set()).add(c.to or "")
    assert members == want
