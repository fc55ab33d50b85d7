"""Ops against a live worker: lag rises and drains, metrics over HTTP, live stats."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from omnijourney.runtime.broker import free_port
from tests.integration.harness import REPO, LiveEngine
from tests.integration.test_live_engine import sample
from tests.provider import Provider

pytestmark = pytest.mark.integration


def independent_lag(engine: LiveEngine, topic: str) -> dict[int, int]:
    """end - committed per partition, read with a plain consumer of the group."""
    probe = KafkaConsumer(**engine.settings.kafka_python(), group_id=engine.settings.app_id,
                          enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in probe.partitions_for_topic(topic) or ()]
        ends = probe.end_offsets(tps)
        return {tp.partition: ends[tp] - (probe.committed(tp) or 0) for tp in tps}
    finally:
        probe.close()


def lag_cli(engine: LiveEngine, *extra: str) -> tuple[int, dict[str, object]]:
    env = {"KAFKA_BOOTSTRAP": engine.settings.bootstrap, "OMNIJOURNEY_TOPIC_PREFIX": engine.prefix,
           "OMNIJOURNEY_APP_ID": engine.settings.app_id, "PATH": ""}
    proc = subprocess.run([sys.executable, "-m", "omnijourney", "lag", "--json",
                           "--group", engine.settings.app_id, *extra],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_lag_rises_while_the_worker_is_stopped_and_drains_after_restart(
        engine: LiveEngine) -> None:
    events, _ = sample()
    first, second = events[:10], events[10:]
    touchpoints = engine.settings.topics.touchpoints
    engine.start()
    engine.produce(first)
    engine.wait_for_lag(lambda rows: all(r.committed is not None and r.lag == 0
                                          for r in rows if r.topic == touchpoints and r.end))
    engine.stop()

    engine.produce(second)
    time.sleep(1.5)  # so the oldest waiting record is measurably old
    rows = [r for r in engine.lag() if r.topic == touchpoints]
    assert sum(r.lag for r in rows) == len(second)
    assert {r.partition: r.lag for r in rows} == independent_lag(engine, touchpoints)
    assert all(r.lag == r.end - (r.committed or 0) for r in rows)
    assert all(r.time_lag is not None and r.time_lag >= 1.0 for r in rows if r.lag)
    code, doc = lag_cli(engine, "--max-lag", "0")
    assert code == 1 and doc["over_threshold"] == sum(1 for r in rows if r.lag)
    cli_rows = {(p["topic"], p["partition"]): p["lag"] for p in doc["partitions"]}  # type: ignore[attr-defined]
    assert {k: v for k, v in cli_rows.items() if k[0] == touchpoints} == {
        (touchpoints, r.partition): r.lag for r in rows}
    assert lag_cli(engine, "--max-lag", str(len(second)))[0] == 0  # under the threshold

    engine.start()
    drained = engine.wait_for_lag(lambda rows: sum(r.lag for r in rows
                                                    if r.topic == touchpoints) == 0)
    assert all(r.time_lag is None for r in drained if r.topic == touchpoints)
    assert independent_lag(engine, touchpoints) == dict.fromkeys(
        (r.partition for r in drained if r.topic == touchpoints), 0)
    assert lag_cli(engine, "--max-lag", "0")[0] == 0
    # --watch measures again and again: one JSON document per measurement.
    env = {"KAFKA_BOOTSTRAP": engine.settings.bootstrap, "OMNIJOURNEY_TOPIC_PREFIX": engine.prefix,
           "OMNIJOURNEY_APP_ID": engine.settings.app_id}
    watch = subprocess.Popen([sys.executable, "-m", "omnijourney", "lag", "--json", "--watch",
                              "0.2", "--group", engine.settings.app_id], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        docs = [json.loads(watch.stdout.readline()) for _ in range(3)]
    finally:
        watch.terminate()
        watch.wait(30)
        if watch.stdout is not None:
            watch.stdout.close()
    assert len({d["at"] for d in docs}) == 3
    assert all(d["over_threshold"] == 0 for d in docs)


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:  # not listening (yet)
        return 0, ""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, ls), v in metrics.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def wait_metric(port: int, name: str, at_least: float, timeout: float = 90,
                **labels: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + timeout
    while True:
        status, text = scrape(port)
        got = samples(text) if status == 200 else {}
        if total(got, name, **labels) >= at_least:
            return got
        assert time.monotonic() < deadline, f"{name}{labels} stayed below {at_least}"
        time.sleep(0.5)


def test_worker_and_adapter_metrics_health_and_live_stats(engine: LiveEngine,
                                                         tmp_path: Path) -> None:
    events, expected = sample()
    engine.metrics_port = free_port()
    engine.start()
    port = engine.metrics_port
    deadline = time.monotonic() + 60
    while scrape(port, "/readyz")[0] != 200:  # ready once recovered and assigned
        assert time.monotonic() < deadline, engine.log()
        time.sleep(0.5)
    assert scrape(port, "/healthz")[0] == 200
    assert total(samples(scrape(port)[1]), "omnijourney_ready") == 1
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    engine.produce_raw([(b"c-bad", b"{not json"), (b"c-x", json.dumps({
        "event_id": "x1", "type": "no.such_type", "customer_id": "c-x",
        "occurred_at": "2026-03-02T10:00:00Z", "source": "t", "properties": {}}).encode())])
    got = wait_metric(port, "omnijourney_commands_total", len(expected))
    got = wait_metric(port, "omnijourney_dead_letters_total", 2)

    by_type = Counter(e.type for e in events)
    for etype, n in by_type.items():
        assert total(got, "omnijourney_events_total", type=etype) == n, etype
    for ch, n in Counter(c.channel for c in expected).items():
        assert total(got, "omnijourney_commands_total", channel=ch) == n, ch
    for (journey, step), n in Counter((c.journey, c.step) for c in expected).items():
        assert total(got, "omnijourney_commands_total", journey=journey, step=step) == n
    assert total(got, "omnijourney_dead_letters_total", reason="invalid_event") == 1
    assert total(got, "omnijourney_dead_letters_total", reason="unknown_type") == 1
    assert total(got, "omnijourney_suppressed_total", reason="frequency_cap") == 1
    assert total(got, "omnijourney_deferred_total", reason="quiet_hours") == 2
    assert total(got, "omnijourney_rebalances_total") >= 1
    assert total(got, "omnijourney_evaluation_seconds_count") == total(
        got, "omnijourney_events_total")
    assert total(got, "omnijourney_timer_lateness_seconds_count") >= 1
    assert ("omnijourney_due_waits", ()) in got
    lag = wait_metric(port, "omnijourney_consumer_lag", 0)  # probed every 10 s
    deadline = time.monotonic() + 30
    while not any(n == "omnijourney_consumer_lag" for n, _ in lag):
        assert time.monotonic() < deadline
        time.sleep(1)
        lag = samples(scrape(port)[1])
    assert {dict(ls)["topic"] for n, ls in lag if n == "omnijourney_consumer_lag"} == {
        engine.settings.topics.touchpoints, engine.settings.topics.ticks,
        engine.settings.topics.deliveries, engine.settings.topics.identity,
        engine.settings.topics.identified}

    # The funnel `omnijourney stats` reads from the live counters is the simulator's.
    for journey in sorted({c.journey for c in expected} | {"winback"}):
        live, simulated = (json.loads(subprocess.run(
            [sys.executable, "-m", "omnijourney", "stats", journey, "--json", *how],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=60).stdout)
            for how in (["--metrics", f"http://127.0.0.1:{port}/metrics"],
                        ["--events", "examples/events.jsonl"]))
        live.pop("source"), simulated.pop("source")
        assert live == simulated, journey
        assert live["entries"] > 0

    sms = sum(c.channel == "sms" for c in expected)
    adapter_port = free_port()
    with Provider() as provider:
        proc = engine.adapter("sms", tmp_path / "sms.log", idle=60,
                              OMNIJOURNEY_METRICS_PORT=str(adapter_port),
                              SMS_API_BASE=provider.url, SMS_ACCOUNT_SID="AC1",
                              SMS_AUTH_TOKEN="t", SMS_FROM="+15550000")
        try:
            got = wait_metric(adapter_port, "omnijourney_adapter_deliveries_total", sms)
            assert total(got, "omnijourney_adapter_deliveries_total", channel="sms",
                         status="sent") == sms
            assert total(got, "omnijourney_adapter_delivery_seconds_count") == sms
            assert scrape(adapter_port, "/healthz")[0] == 200
            assert scrape(adapter_port, "/readyz")[0] == 200
        finally:
            proc.terminate()
            proc.wait(30)
