"""The live engine on a real broker gives exactly the simulator's commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from omnijourney.codecs import encode_event
from omnijourney.config import load
from omnijourney.core.commands import ChannelCommand
from omnijourney.core.events import Event
from omnijourney.core.timeutil import format_instant
from omnijourney.runtime.supervision import EXIT_STALLED
from omnijourney.simulator import read_events, simulate
from tests.helpers import logged
from tests.integration.conftest import Kafka
from tests.integration.harness import REPO, LiveEngine
from tests.integration.stalled_worker import MISSING

pytestmark = pytest.mark.integration


def sample() -> tuple[list[Event], list[ChannelCommand]]:
    js = load(REPO / "journeys").journey_set
    assert js is not None
    events, bad = read_events((REPO / "examples" / "events.jsonl").read_text().splitlines())
    assert not bad
    events.sort(key=lambda e: e.occurred_at)
    return events, simulate(js, events).commands


def as_rows(records: list[dict[str, Any]]) -> set[str]:
    rows = set()
    for rec in records:
        r = dict(rec)
        r["send_at"], r["deadline"] = format_instant(r["send_at"]), format_instant(r["deadline"])
        rows.add(json.dumps(r, sort_keys=True))
    return rows



def test_sample_timeline_gives_the_simulators_commands(engine: LiveEngine) -> None:
    events, expected = sample()
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    got = engine.read(engine.settings.topics.commands, until=len(expected))
    assert as_rows(got) == {json.dumps(c.to_dict(), sort_keys=True) for c in expected}, engine.log()
    assert len(got) == len(expected)  # and nothing twice


def timeline_with_a_break(engine: LiveEngine, disrupt: Callable[[], object],
                          settle: float = 3.0) -> tuple[list[dict[str, Any]],
                                                        list[ChannelCommand]]:
    """The first half of the sample timeline (customers are mid-wait there: welcome,
    carts, win-back), then ``disrupt()``, then the rest: every command as simulated."""
    events, expected = sample()
    half = len(events) // 2
    engine.start()
    engine.produce(events[:half])
    assert engine.read(engine.settings.topics.commands, until=1, settle=settle), engine.log()
    disrupt()
    engine.produce(events[half:], watermark=events[-1].occurred_at + timedelta(days=90))
    got = engine.read(engine.settings.topics.commands, until=len(expected),
                      distinct="command_id")
    assert {r["command_id"] for r in got} == {c.command_id for c in expected}, engine.log()
    return got, expected


def test_kill_9_mid_timeline_loses_nothing_and_keeps_every_id(engine: LiveEngine) -> None:
    def kill_and_start_again() -> None:
        engine.kill()  # it holds its partitions until its session times out
        engine.start()

    got, expected = timeline_with_a_break(engine, kill_and_start_again)
    by_id = {r["command_id"]: r for r in got}
    assert as_rows(list(by_id.values())) == {json.dumps(c.to_dict(), sort_keys=True)
                                             for c in expected}
    # A repeat is allowed (at-least-once) but always byte-identical (same id, same content).
    assert len(as_rows(got)) == len(expected)


def test_a_worker_restarts_on_its_snapshot_and_reads_what_another_wrote_meanwhile(
        engine: LiveEngine) -> None:
    """Issue 13, warm restart: a graceful stop saves the worker's tables to its data
    directory. While it is down, a second worker owns every partition, moves the timeline
    on (new states, waits fired) and stops. The first starts again from its files plus
    what the second wrote since, and the rest of the timeline gives every command the
    simulator gives, each id once (a repeat byte-identical)."""
    events, expected = sample()
    third = len(events) // 3
    other = engine.twin()
    engine.start()
    engine.produce(events[:third])
    assert engine.read(engine.settings.topics.commands, until=1, settle=2.0), engine.log()
    engine.stop()
    assert '"snapshot_saved"' in engine.log(), engine.log()
    try:
        other.start()
        engine.produce(events[third:2 * third])
        other.wait_for_lag(lambda rows: bool(rows) and all(r.lag == 0 for r in rows))
    finally:
        other.stop()
    engine.start()
    engine.produce(events[2 * third:], watermark=events[-1].occurred_at + timedelta(days=90))
    got = engine.read(engine.settings.topics.commands, until=len(expected),
                      distinct="command_id", timeout=150)
    by_id = {r["command_id"]: r for r in got}
    assert set(by_id) == {c.command_id for c in expected}, engine.log() + other.log()
    assert as_rows(list(by_id.values())) == {json.dumps(c.to_dict(), sort_keys=True)
                                             for c in expected}
    assert len(as_rows(got)) == len(expected)
    lines = [json.loads(line) for line in
             (engine.log_dir / "worker-2.log").read_text(errors="replace").splitlines()
             if line.startswith('{"')]
    loaded = [e for e in lines if e.get("event") == "snapshots_loaded"
              and e.get("table") == "customer-state"]
    assert loaded and loaded[0]["entries"] > 0, engine.log()
    first_read = next(e for e in lines if e.get("event") == "changelog_bulk_read")
    assert first_read["records"] > 0  # the second worker's writes, read after the file


def test_a_second_worker_takes_over_partitions_with_their_state_and_waits(
        engine: LiveEngine) -> None:
    """A second worker joins mid-timeline: partitions move to it with their state
    (restored from the changelog) and the waits set on the first worker fire on it."""
    events, expected = sample()
    half = len(events) // 2  # customers are mid-wait here
    other = engine.twin()
    try:
        engine.start()
        engine.produce(events[:half])
        assert engine.read(engine.settings.topics.commands, until=1, settle=2.0), engine.log()
        other.start()  # rebalance: half the partitions move to the new worker
        deadline = time.monotonic() + 60
        while "due_index_rebuilt" not in other.log():
            assert time.monotonic() < deadline, other.log()
            time.sleep(0.5)
        engine.produce(events[half:], watermark=events[-1].occurred_at + timedelta(days=90))
        got = engine.read(engine.settings.topics.commands, until=len(expected),
                          distinct="command_id", timeout=150)
    finally:
        other.stop()
    by_id = {r["command_id"]: r for r in got}
    assert set(by_id) == {c.command_id for c in expected}, engine.log() + other.log()
    assert as_rows(list(by_id.values())) == {json.dumps(c.to_dict(), sort_keys=True)
                                             for c in expected}
    assert len(as_rows(got)) == len(expected)  # repeats, if any, are byte-identical
    # Both workers evaluated: the new one took partitions, it did not sit idle.
    for worker in (engine, other):
        lines = [x for p in worker.log_dir.glob("worker-*.log")
                 for x in logged(p.read_text(errors="replace"))]
        assert any(x.get("event") == "sent" for x in lines), worker.log_dir
        # Neither read the other's changelogs as a standby: what a standby holds is
        # never used (a partition taken over is read whole), and it cost CPU and memory.
        recoveries = [x for x in lines if x.get("event") == "recovery_completed"]
        assert recoveries and all(x["standbys"] == 0 for x in recoveries), recoveries
        assert any(x["actives"] > 0 for x in recoveries), recoveries


def test_a_new_owner_keeps_the_event_time_its_predecessor_read(engine: LiveEngine) -> None:
    """The first worker reads the whole timeline and its watermark, and commits them, but
    its timer never runs (an hour apart); a second worker then owns every partition and
    reads nothing new. The waits must still fire there, at the time the first one read:
    the event clock travels with the state. Before, the second worker's clock was empty
    and no timer fired (the worker-chaos test lost every win-back of one partition)."""
    events, expected = sample()
    engine.extra_env = {"OMNIJOURNEY_TICK_INTERVAL": "3600"}
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    engine.wait_for_lag(lambda rows: bool(rows) and all(r.lag == 0 for r in rows))
    first = engine.read(engine.settings.topics.commands, until=1, settle=3.0)
    assert 0 < len({r["command_id"] for r in first}) < len(expected)  # timers still to fire
    engine.stop()
    other = engine.twin()
    try:
        other.start()
        got = other.read(engine.settings.topics.commands, until=len(expected),
                         distinct="command_id", timeout=90)
    finally:
        other.stop()
    assert {r["command_id"] for r in got} == {c.command_id for c in expected}, other.log()


def test_the_worker_rides_out_a_broker_restart(engine: LiveEngine, kafka: Kafka) -> None:
    """A single broker restarts under a running worker (data kept): it reconnects and the
    timeline completes with every command as simulated."""
    if kafka.restart is None:
        pytest.skip("KAFKA_BOOTSTRAP names a cluster this suite does not run")
    got, expected = timeline_with_a_break(engine, kafka.restart)
    assert len(as_rows(got)) == len(expected)


def test_poison_records_go_to_the_dlq_and_the_partition_keeps_flowing(
        engine: LiveEngine) -> None:
    events, _ = sample()
    ana = [e for e in events if e.customer_id == "c-ana"][:1]  # sign-up: an SMS at once
    good = encode_event(ana[0])
    engine.start()
    engine.produce_raw([
        (b"c-ana", b"\xc3\x01" + b"\x00" * 8 + b"junk"),                       # bad Avro
        (b"c-ana", b'{"event_id": "p1", "type": '),                            # bad JSON
        (b"c-ana", json.dumps({"event_id": "p2", "type": "order.shipped_by_owl",
                               "customer_id": "c-ana",
                               "occurred_at": "2026-03-02T08:00:00Z"}).encode()),
        (b"c-ana", json.dumps({"event_id": "p3", "type": "order.placed",
                               "occurred_at": "2026-03-02T08:00:00Z"}).encode()),
        (b"c-ana", good),
    ])
    dead = engine.read([engine.settings.topics.dlq], until=4)
    reasons = sorted(d["error"] for d in dead)
    assert len(reasons) == 4, reasons
    assert any("written with another schema" in r for r in reasons)
    assert any("malformed JSON" in r for r in reasons)
    assert any("unknown event type 'order.shipped_by_owl'" in r for r in reasons)
    assert any("missing or empty 'customer_id'" in r for r in reasons)
    assert all(d["topic"] == engine.settings.topics.touchpoints for d in dead)
    sms = engine.read([engine.settings.topics.command("sms")], until=1)
    assert [s["step"] for s in sms] == ["welcome_sms"], engine.log()


def test_a_worker_whose_restore_stalls_stops_and_a_fresh_start_goes_on(
        engine: LiveEngine) -> None:
    """The restore after a start never completes (tests/integration/stalled_worker.py):
    the worker says so, leaves its group and exits EXIT_STALLED; started again (as a supervisor would), it restores from the
    changelog and the timeline completes as simulated."""
    def stall_then_start_again() -> None:
        # Stopped idle, everything read committed: this test is about the restore.
        engine.wait_for_lag(lambda rows: all(r.lag == 0 for r in rows))
        engine.stop()
        script = REPO / "tests" / "integration" / "stalled_worker.py"
        stalled = subprocess.run([sys.executable, str(script)], check=False, cwd=REPO,
                                 env={**engine.env(), "OMNIJOURNEY_RECOVERY_STALL": "2"},
                                 capture_output=True, text=True, timeout=120)
        assert stalled.returncode == EXIT_STALLED, stalled.stderr[-3000:]
        lines = stalled.stdout.splitlines() + stalled.stderr.splitlines()
        line = next(json.loads(x) for x in lines if '"recovery_stalled"' in x)
        # Every real record restored, the missing ones still awaited (on each partition
        # of both tables: customer states and identities), nothing evaluated.
        assert line["remaining"] == MISSING * engine.settings.partitions * 2, line
        assert line["seconds"] >= 2.0
        assert not [x for x in logged("\n".join(lines)) if x.get("event") == "sent"]
        engine.start()

    got, expected = timeline_with_a_break(engine, stall_then_start_again, settle=2.0)
    assert len(as_rows(got)) == len(expected)
