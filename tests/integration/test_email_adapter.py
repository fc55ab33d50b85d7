"""Timeline in -> live engine -> email adapter -> real SMTP messages, each exactly once."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from omnijourney.adapters.email import EmailChannel
from omnijourney.adapters.retry import RetryPolicy
from omnijourney.adapters.runner import Runner
from omnijourney.core.events import Event
from omnijourney.core.profile import address_digest
from omnijourney.runtime.broker import free_port
from omnijourney.runtime.topics import ensure_topics
from tests.integration.conftest import Kafka
from tests.integration.harness import REPO, LiveEngine
from tests.integration.test_live_engine import sample
from tests.smtp import SmtpServer

pytestmark = pytest.mark.integration



def run_adapter(engine: LiveEngine, port: int, group: str) -> dict[str, int]:
    settings = dataclasses.replace(engine.settings, app_id=group)
    runner = Runner(settings, EmailChannel(port=port), retry=RetryPolicy(base_delay=0.05))
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
    # In event time a report happens at its command's moment, not at today's wall time,
    # which would move the worker's clock past every wait still pending in the replay.
    assert {r["command_id"]: r["at"] for r in reports} == {
        cid: cmd.send_at for cid, cmd in emails.items()}


class Flaky:
    """A consumer whose polls and commits fail the way kafka-python 3.0's do while a
    broker is gone (its connection error raised out of ``poll``), a few times each."""

    def __init__(self, consumer: Any, failures: int) -> None:
        self.consumer, self.polls, self.commits = consumer, failures, failures

    def poll(self, **kw: Any) -> Any:
        from kafka.errors import KafkaConnectionError

        if self.polls:
            self.polls -= 1
            raise KafkaConnectionError("111 ECONNREFUSED")
        return self.consumer.poll(**kw)

    def commit(self, *a: Any, **kw: Any) -> Any:
        from kafka.errors import NodeNotReadyError

        if self.commits:
            self.commits -= 1
            raise NodeNotReadyError("the coordinator's node is gone")
        return self.consumer.commit(*a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)


def test_the_adapter_rides_out_the_clusters_errors_and_gives_up_on_others(
        engine: LiveEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker killed under the adapter (the fault test saw the email adapter exit on
    kafka-python's connection error out of ``poll``): polls and commits that fail with
    the cluster's passing errors are tried again, and every email still goes out once.
    An error that is not the cluster's, or one that outlasts the cluster patience, is
    raised: the process exits, for its supervisor."""
    from kafka.errors import KafkaConnectionError, UnsupportedVersionError

    events, expected = sample()
    emails = {c.command_id for c in expected if c.channel == "email"}
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    engine.read([engine.settings.topics.command("email")], until=len(emails))
    real = Runner._consumer
    monkeypatch.setattr(Runner, "_consumer", lambda self, offsets: Flaky(
        real(self, offsets), failures=3))
    with SmtpServer() as smtp:
        counts = run_adapter(engine, smtp.port, "adapter-flaky")
    assert counts == {"sent": len(emails)}
    assert sorted(m["X-Omnijourney-Command-Id"] for m in smtp.messages) == sorted(emails)

    class Broken(Flaky):
        def poll(self, **kw: Any) -> Any:
            raise UnsupportedVersionError("not the cluster's passing trouble")

    monkeypatch.setattr(Runner, "_consumer", lambda self, offsets: Broken(
        real(self, offsets), failures=0))
    with SmtpServer() as smtp, pytest.raises(UnsupportedVersionError):
        run_adapter(engine, smtp.port, "adapter-broken")
    patient = dataclasses.replace(engine.settings, app_id="adapter-down",
                                  cluster_patience=1.0)
    monkeypatch.setattr(Runner, "_consumer", lambda self, offsets: Flaky(
        real(self, offsets), failures=10**6))
    runner = Runner(patient, EmailChannel(port=free_port()))
    try:
        with pytest.raises(KafkaConnectionError):
            runner.run(idle_exit=30.0)
    finally:
        runner.close()


@pytest.mark.parametrize("policy", ["resend", "skip"])
def test_killed_mid_send_the_unconfirmed_email_follows_the_operators_policy(
        engine: LiveEngine, tmp_path: Path, policy: str) -> None:
    events, expected = sample()
    emails = {c.command_id for c in expected if c.channel == "email"}
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    engine.read([engine.settings.topics.command("email")], until=len(emails))
    # One customer at a time, so exactly one mail is in flight when the kill lands (with
    # ADAPTER_CONCURRENCY=N, up to N are, each handled the same way).
    env = {"SMTP_HOST": "127.0.0.1", "ADAPTER_UNCONFIRMED": policy, "ADAPTER_CONCURRENCY": "1"}
    with SmtpServer(stall_at=3) as smtp:
        first = engine.adapter("email", tmp_path / "a1.log", SMTP_PORT=str(smtp.port), **env)
        assert smtp.recorder.stalled.wait(60), (tmp_path / "a1.log").read_text()[-2000:]
        first.send_signal(signal.SIGKILL)  # the server has the mail; the adapter never heard
        first.wait(30)
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


NUDGE = """\
name: Cart nudge
version: 1
trigger: {event: cart.item_added, correlate_by: cart_id}
entry: {re_entry: always}
steps:
  - {id: nudge, type: send, channel: email, template: cart_reminder}
"""


def test_a_hard_bounce_stops_email_to_that_address_until_the_customer_gives_another(
        kafka: Kafka, tmp_path: Path) -> None:
    """SMTP refuses the mailbox (550) -> the adapter reports ``bounced`` -> the engine
    marks the address: the next email is suppressed; a new address gets mail again."""
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    shutil.copytree(REPO / "journeys" / "templates", journeys / "templates")
    shutil.copy(REPO / "journeys" / "policies.yaml", journeys)
    (journeys / "cart_nudge.yaml").write_text(NUDGE)
    engine = LiveEngine(kafka.bootstrap, tmp_path, clock="wall")
    engine.settings = dataclasses.replace(engine.settings, journeys=str(journeys))
    now = datetime.now(UTC).replace(microsecond=0)

    def cart(n: int, at: datetime) -> Event:
        return Event(f"b-cart-{n}", "cart.item_added", "c-bo", at, "web",
                     {"cart_id": f"cart-{n}", "product_name": "Lamp"})

    def emails(until: int) -> list[dict[str, Any]]:
        return engine.read([engine.settings.topics.command("email")], until=until)

    try:
        engine.start()
        engine.produce([
            Event("b-1", "customer.signed_up", "c-bo", now - timedelta(hours=3), "web",
                  {"email": "bo@example.com", "email_opt_in": True,
                   "contact_window": "00:00-23:59"}),  # open all day: any hour the test runs
            cart(1, now - timedelta(hours=2))])
        assert [m["to"] for m in emails(1)] == ["bo@example.com"]
        with SmtpServer(refuse={"bo@example.com": "550 5.1.1 no such user"}) as smtp:
            counts = run_adapter(engine, smtp.port, "bounce-adapter")
        assert counts == {"bounced": 1} and smtp.messages == []
        (report,) = engine.read([engine.settings.topics.deliveries], until=1)
        assert report["status"] == "bounced" and "550" in report["reason"]
        # Which address bounced: by digest, never in clear (not in the reason either).
        assert report["address_digest"] == address_digest("bo@example.com")
        assert "bo@example.com" not in str(report)
        poll(lambda: "bounced" in (engine.state_of("c-bo") or {}).get("profile", {}),
             engine.log)
        engine.produce([cart(2, now - timedelta(hours=1))])
        poll(lambda: '"address_bounced"' in engine.log(), engine.log)
        engine.produce([
            Event("b-2", "customer.updated", "c-bo", now - timedelta(minutes=30), "web",
                  {"email": "bo.new@example.com"}),
            cart(3, now - timedelta(minutes=20))])
        got = emails(2)
        assert [m["to"] for m in got] == ["bo@example.com", "bo.new@example.com"]
        assert [m["instance_key"] for m in got] == ["cart-1", "cart-3"]  # none for cart-2
    finally:
        engine.stop()


def poll(done: Callable[[], bool], log: Callable[[], str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, log()
        time.sleep(1)


def test_omnijourney_bounces_reports_a_dsn_to_deliveries(engine: LiveEngine,
                                                         tmp_path: Path) -> None:
    """The receiver as its own process: a DSN in over SMTP, a DeliveryReport out."""
    from tests.unit.test_bounces import SECRET, crlf, dsn

    port = free_port()
    env = {**engine.env(), "CLICK_SECRET": SECRET}
    log = tmp_path / "bounces.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "omnijourney", "bounces", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                    smtp.sendmail("", ["bounces@shop.example"], crlf(dsn()))
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        (rep,) = engine.read([engine.settings.topics.deliveries], until=1)
        assert (rep["command_id"], rep["customer_id"], rep["status"]) == (
            "6b3f0c1e-0000-5000-8000-000000000001", "c1", "bounced")
        # The DSN's Final-Recipient names the address; the report carries its digest only.
        assert rep["address_digest"] == address_digest("gone@example.com")
        assert "gone@example.com" not in str(rep)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
    assert "'bounced': 1" in log.read_text()
