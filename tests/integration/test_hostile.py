"""Hostile records on real Kafka: none stops the worker, each is dead-lettered once with
its reason; a fault past every guard turns the worker unhealthy and exits it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from omnijourney.codecs import decode_event, encode_event
from omnijourney.runtime.supervision import EXIT_FAILED
from tests.helpers import signup
from tests.integration.failing_worker import CUSTOMER
from tests.integration.harness import REPO, LiveEngine

pytestmark = pytest.mark.integration


def envelope(event_id: str, customer: str = "c-x", **fields: object) -> bytes:
    body: dict[str, object] = {"event_id": event_id, "type": "customer.updated",
                               "customer_id": customer,
                               "occurred_at": "2026-03-02T08:00:00Z", "properties": {}}
    body.update(fields)
    return json.dumps(body).encode()


def test_hostile_records_are_dead_lettered_once_and_never_stop_the_worker(
        engine: LiveEngine) -> None:
    ana = encode_event(signup(customer="c-ana", at="2026-03-02T10:00:00Z"))
    hostile = [
        envelope("h1").replace(b'"c-x"', b'"c-\\ud800"'),
        envelope("h2").replace(b'"properties": {}',
                               b'"properties": {"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
        envelope("h3").replace(b'"properties": {}', b'"properties": {"n": ' + b"9" * 4400 + b"}"),
        envelope("h4", occurred_at="9999-12-31T23:00:00-05:00"),
        envelope("h5", properties={"blob": "x" * 900_000}),
        envelope("h6", properties={"first_name": "Ana"}),
        envelope("h6", properties={"first_name": "Mallory"}),  # the id reused: a conflict
    ]
    engine.start()
    engine.produce_raw([(b"c-x", v) for v in hostile] + [(b"c-ana", ana)])
    dead = engine.read([engine.settings.topics.dlq], until=6)
    reasons = [d["error"] for d in dead]
    assert len(reasons) == 6, reasons
    for needle in ("unpaired surrogate", "nested too deeply", "digits", "out of range",
                   "over the limit of 65536", "'h6' was seen before with other content"):
        assert any(needle in r for r in reasons), (needle, reasons)
    sms = engine.read([engine.settings.topics.command("sms")], until=1)
    assert [s["customer_id"] for s in sms] == ["c-ana"], engine.log()
    assert engine.proc is not None and engine.proc.poll() is None, engine.log()
    assert "Crashed" not in engine.log()

    # Committed: a restart reads past them, and dead-letters none of them again.
    engine.wait_for_lag(lambda rows: all(r.lag == 0 for r in rows))
    engine.stop()
    engine.start()
    engine.produce_raw([(b"c-bo", encode_event(signup(customer="c-bo",
                                                      at="2026-03-02T10:30:00Z")))])
    sms = engine.read([engine.settings.topics.command("sms")], until=2)
    assert sorted(s["customer_id"] for s in sms) == ["c-ana", "c-bo"]
    assert len(engine.read([engine.settings.topics.dlq], until=6, settle=3.0)) == 6


def _planted(engine: LiveEngine, fail_on: str) -> subprocess.Popen[bytes]:
    script = REPO / "tests" / "integration" / "failing_worker.py"
    with (engine.log_dir / f"planted-{fail_on}.log").open("wb") as out:  # the child keeps a copy
        return subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**engine.env(), "FAIL_ON": fail_on,
                                     "OMNIJOURNEY_CLUSTER_PATIENCE": "3"})


def test_a_fault_outside_the_engine_dead_letters_only_its_record(engine: LiveEngine) -> None:
    proc = _planted(engine, "store")
    try:
        engine.produce_raw([
            (CUSTOMER.encode(), encode_event(signup(customer=CUSTOMER,
                                                    at="2026-03-02T10:00:00Z"))),
            (b"c-ana", encode_event(signup(customer="c-ana", at="2026-03-02T10:00:01Z"))),
        ])
        (dead,) = engine.read([engine.settings.topics.dlq], until=1, settle=3.0)
        assert dead["error"].startswith("failed the engine: ValueError: planted"), dead
        assert decode_event(dead["original"]).customer_id == CUSTOMER
        sms = engine.read([engine.settings.topics.command("sms")], until=2, settle=3.0)
        # c-crash's commands went out before its state failed (at least once: the
        # adapter's dedup keeps them single); c-ana's batch neighbour is untouched.
        assert "c-ana" in {s["customer_id"] for s in sms}
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_cluster_fault_makes_the_worker_unhealthy_and_exit_for_its_supervisor(
        engine: LiveEngine) -> None:
    proc = _planted(engine, "kafka")
    try:
        engine.produce_raw([(CUSTOMER.encode(), encode_event(
            signup(customer=CUSTOMER, at="2026-03-02T10:00:00Z")))])
        status = proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    text = (engine.log_dir / "planted-kafka.log").read_text(errors="replace")
    assert status == EXIT_FAILED, text[-3000:]
    line = next(json.loads(x[x.index("{"):]) for x in text.splitlines() if '"agent_failed"' in x)
    assert "KafkaTimeoutError" in line["error"]
    assert '"batch_retry"' in text  # retried through the cluster's patience first
    # Not dead-lettered: the cluster's fault is no record's; a restart handles it again.
    time.sleep(1)
    assert engine.read([engine.settings.topics.dlq], until=1, timeout=3, settle=0) == []


def test_omnijourney_erase_tombstones_the_state_and_a_restart_keeps_it_gone(
        engine: LiveEngine) -> None:
    ana = signup(customer="c-ana", at="2026-03-02T10:00:00Z", first_name="Ana")
    engine.start()
    engine.produce_raw([(b"c-ana", encode_event(ana))])
    engine.read([engine.settings.topics.command("sms")], until=1)
    assert (engine.state_of("c-ana") or {}).get("profile", {}).get("first_name") == "Ana"
    done = subprocess.run([sys.executable, "-m", "omnijourney", "erase", "c-ana", "--at",
                           "2026-03-02T11:00:00Z"], env=engine.env(), cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 60
    while engine.state_of("c-ana", timeout=2) is not None:
        assert time.monotonic() < deadline, engine.log()
        time.sleep(1)
    assert '"erased"' in engine.log()
    # Restored from the changelog after a restart: the tombstone holds, no state comes back.
    engine.wait_for_lag(lambda rows: all(r.lag == 0 for r in rows))
    engine.stop()
    engine.start()
    engine.produce_raw([(b"c-ana", encode_event(signup(customer="c-ana",
                                                       at="2026-03-02T12:00:00Z")))])
    deadline = time.monotonic() + 60
    while True:
        state = engine.state_of("c-ana", timeout=2)
        if state is not None:
            break
        assert time.monotonic() < deadline, engine.log()
        time.sleep(1)
    assert state["profile"]["first_seen_at"] == "2026-03-02T12:00:00Z"  # a new profile
    assert "first_name" not in state["profile"]


def test_topics_holding_personal_data_are_created_with_their_retention(
        engine: LiveEngine) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    from omnijourney.runtime.topics import DAY_MS, RETENTION_DAYS, changelog_topic

    t = engine.settings.topics
    want = {t.dlq: RETENTION_DAYS["dlq"], t.command("email"): RETENTION_DAYS["commands"],
            t.deliveries: RETENTION_DAYS["deliveries"], t.touchpoints: RETENTION_DAYS["touchpoints"],
            t.ticks: RETENTION_DAYS["ticks"]}
    admin = KafkaAdminClient(**engine.settings.kafka_python())
    names = [*want, changelog_topic(engine.settings)]
    try:
        got: dict[str, dict[str, str]] = {}
        for n in names:
            described = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n)], config_filter="all")
            got[n] = {k: v["value"] for k, v in described["topic"][n].items()}
    finally:
        admin.close()
    for name, days in want.items():
        assert got[name]["retention.ms"] == str(days * DAY_MS), name
    log = got[changelog_topic(engine.settings)]
    assert log["cleanup.policy"] == "compact" and log["delete.retention.ms"] == str(DAY_MS)
    assert RETENTION_DAYS["dlq"] <= 14 and RETENTION_DAYS["commands"] <= 7
