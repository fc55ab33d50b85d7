"""Fault tests on a real 3-node KRaft cluster, replication 3 and min.insync.replicas=2.

Modelled on Kafka's own system tests (streams_broker_bounce_test, streams_eos_test) and
Faust's consistency checker: a synthetic week of a few hundred customers flows through
the workers while something breaks, and at the end the adapters' real sinks (a local SMTP
server, a provider-like HTTP server) must hold exactly the command ids that
``omnijourney simulate`` computes for the same events, each delivered exactly once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.partitioner.default import murmur2

from omnijourney.config import load
from omnijourney.core.channels import CHANNELS
from omnijourney.core.commands import ChannelCommand
from omnijourney.core.events import Event
from omnijourney.runtime.kraft import KafkaCluster
from omnijourney.runtime.topics import changelog_topic
from omnijourney.simulator import simulate
from omnijourney.synthetic import synth
from tests.helpers import logged
from tests.integration.harness import REPO, LiveEngine
from tests.provider import Provider
from tests.smtp import SmtpServer

pytestmark = pytest.mark.integration

CUSTOMERS = int(os.environ.get("OMNIJOURNEY_FAULT_CUSTOMERS", "300"))
SEED = int(os.environ.get("OMNIJOURNEY_FAULT_SEED", "11"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Their own cluster, apart from the suite's single node: these tests kill brokers."""
    config = {
        # A dead broker is fenced, and its partitions led elsewhere, after 4 s (default 9).
        "broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "1000",
        # The compaction test: the cleaner looks for work every half second.
        "log.cleaner.backoff.ms": "500",
    }
    with KafkaCluster(3, tmp_path_factory.mktemp("faults"), config=config,
                      quiet=True) as kafka:
        yield kafka


@dataclass
class Scenario:
    events: list[Event]
    expected: list[ChannelCommand]

    def ids(self, channel: str) -> set[str]:
        return {c.command_id for c in self.expected if c.channel == channel}

    def part(self, start: float, end: float) -> list[Event]:
        n = len(self.events)
        return self.events[int(n * start):int(n * end)]

    @property
    def watermark(self) -> timedelta:
        return timedelta(days=90)


def partition_of(customer_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the customer's key."""
    return (murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions


def scenario(customers: int = CUSTOMERS) -> Scenario:
    js = load(REPO / "journeys").journey_set
    assert js is not None
    events = sorted((e for tl in synth(customers, seed=SEED) for e in tl),
                    key=lambda e: e.occurred_at)
    return Scenario(events, simulate(js, events).commands)


# Lines of every worker's log a loss is read against: where the group moved partitions.
GROUP_EVENTS = frozenset({"recovery_completed", "due_index_rebuilt", "lease_fenced",
                          "batch_fenced", "ticks_fenced", "ticks_again", "batch_failed",
                          "changelog_reasserted", "changelog_fenced_out", "snapshot_saved",
                          "snapshots_loaded", "snapshot_refused", "rebalance_stalled",
                          "agent_failed"})


def story(log_dir: Path, customers: list[str], limit: int = 150) -> str:
    """What the kept logs (every worker's starts, the adapters) say of ``customers`` and
    of the group meanwhile, in time order: the CI output alone then tells a loss (a
    runner's kept logs go with it; README, fault-test finding 11)."""
    wanted = set(customers)
    rows: list[tuple[str, str, str]] = []
    for path in sorted(log_dir.rglob("*.log")):
        name = str(path.relative_to(log_dir))
        for x in logged(path.read_text(errors="replace")):
            if x.get("customer_id") in wanted or x.get("event") in GROUP_EVENTS:
                at = str(x.pop("timestamp", ""))
                x.pop("level", None)
                rows.append((at, name, json.dumps(x, sort_keys=True)[:300]))
    rows.sort()
    told = [f"{at[11:23]} {name} {text}" for at, name, text in rows[-limit:]]
    return (f"\nwhat the logs say of {', '.join(customers)} and the group "
            f"(last {len(told)} of {len(rows)} lines):\n" + "\n".join(told))


class Sinks:
    """The email and SMS adapters as their own processes, delivering to real local sinks."""

    def __init__(self, engine: LiveEngine, log_dir: Path) -> None:
        self.engine, self.log_dir = engine, log_dir
        self.stack = ExitStack()
        self.smtp = self.stack.enter_context(SmtpServer())
        self.provider = self.stack.enter_context(Provider())
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> Sinks:
        self.procs = [
            self.engine.adapter("email", self.log_dir / "email.log", idle=3600,
                                SMTP_HOST="127.0.0.1", SMTP_PORT=str(self.smtp.port)),
            self.engine.adapter("sms", self.log_dir / "sms.log", idle=3600,
                                SMS_API_BASE=self.provider.url, SMS_ACCOUNT_SID="AC1",
                                SMS_AUTH_TOKEN="t", SMS_FROM="+15550000"),
        ]
        return self

    def emails(self) -> list[str]:
        return [m["X-Omnijourney-Command-Id"] for m in list(self.smtp.messages)]

    def sms(self) -> list[str]:
        with self.provider.lock:
            return list(self.provider.delivered)

    def wait(self, s: Scenario, revive: Callable[[], object], timeout: float = 240) -> None:
        """Until both sinks hold every expected id, then a few seconds for any repeat."""
        deadline = time.monotonic() + timeout
        want_email, want_sms = s.ids("email"), s.ids("sms")
        while not (want_email <= set(self.emails()) and want_sms <= set(self.sms())):
            for proc, name in zip(self.procs, ("email", "sms"), strict=True):
                assert proc.poll() is None, (self.log_dir / f"{name}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, self.missing(s, timeout)
            revive()
            time.sleep(1)
        time.sleep(5)

    def missing(self, s: Scenario, timeout: float) -> str:
        """What a loss looked like: which commands, whose, on which partition."""
        got = set(self.emails()) | set(self.sms())
        lost = [c for c in s.expected if c.channel in ("email", "sms")
                and c.command_id not in got]
        extra = got - s.ids("email") - s.ids("sms")
        partitions = self.engine.settings.partitions
        lines = [f"{c.channel} {c.journey}/{c.step} for {c.customer_id} (partition "
                 f"{partition_of(c.customer_id, partitions)}, send_at "
                 f"{c.send_at.isoformat()}) {c.command_id}" for c in lost[:20]]
        return (f"missing after {timeout:.0f}s: {len(lost)} commands; "
                f"{len(extra)} delivered that the simulator never made\n" + "\n".join(lines)
                + story(self.log_dir, sorted({c.customer_id for c in lost})[:3]))

    def check_exactly_once(self, s: Scenario) -> None:
        emails, sms = self.emails(), self.sms()
        assert set(emails) == s.ids("email")
        assert len(emails) == len(set(emails)), "an email went out twice"
        assert set(sms) == s.ids("sms")
        assert len(sms) == len(set(sms)), "an SMS went out twice"
        self.check_every_channel(s)

    def check_every_channel(self, s: Scenario) -> None:
        """The channels without a sink here (ads, push, webhook) too: every command the
        simulator makes is on its topic, and nothing else is (repeats of an id are at
        least once, and the adapters drop them). Two and a half times the commands the
        sinks alone check, so a loss that spares email and SMS is seen too."""
        want = {c.command_id: c for c in s.expected}
        topics = self.engine.settings.topics
        got = {r["command_id"] for r in self.engine.read(
            [topics.command(ch) for ch in CHANNELS], until=len(want), distinct="command_id",
            timeout=60, settle=2)}
        lost = [c for i, c in want.items() if i not in got]
        extra = got - set(want)
        assert not lost and not extra, (
            f"{len(lost)} commands never produced, {len(extra)} the simulator never made:\n"
            + "\n".join(f"{c.channel} {c.journey}/{c.step} for {c.customer_id} "
                        f"(send_at {c.send_at.isoformat()}) {c.command_id}" for c in lost[:20])
            + story(self.log_dir, sorted({c.customer_id for c in lost})[:3]))

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        self.stack.close()


@pytest.fixture
def sinks_for(tmp_path: Path) -> Iterator[Callable[[LiveEngine], Sinks]]:
    made: list[Sinks] = []

    def make(engine: LiveEngine) -> Sinks:
        made.append(Sinks(engine, tmp_path).start())
        return made[-1]

    yield make
    for sinks in made:
        sinks.close()


@pytest.fixture
def workers(cluster: KafkaCluster, tmp_path: Path) -> Iterator[list[LiveEngine]]:
    """Three workers of one app (started by the test as it needs them), six partitions."""
    first = LiveEngine(cluster.bootstrap, tmp_path, partitions=6)
    crew = [first, first.twin("w1"), first.twin("w2")]
    yield crew
    for w in crew:
        w.stop()


def revive_all(crew: list[LiveEngine]) -> Callable[[], None]:
    def revive() -> None:
        for w in crew:
            w.revive()

    return revive


def produce_watermark(engine: LiveEngine, s: Scenario) -> None:
    engine.produce_with_cli([], watermark=s.events[-1].occurred_at + s.watermark)


def start(crew: list[LiveEngine], sinks_for: Callable[[LiveEngine], Sinks]) -> Sinks:
    """The workers, then the adapters and their sinks."""
    for w in crew:
        w.start()
    return sinks_for(crew[0])


def finish(crew: list[LiveEngine], sinks: Sinks, s: Scenario, rest: float) -> None:
    """The events from ``rest`` on, the watermark; every id at the sinks, each once."""
    crew[0].produce_with_cli(s.part(rest, 1.0))
    produce_watermark(crew[0], s)
    sinks.wait(s, revive_all(crew))
    sinks.check_exactly_once(s)


def busiest_leader(cluster: KafkaCluster, engine: LiveEngine) -> int:
    """The node leading most touchpoints partitions."""
    leaders = [cluster.leader_of(engine.settings.topics.touchpoints, p)
               for p in range(engine.settings.partitions)]
    return max(set(leaders), key=leaders.count)


def test_kill_9_of_the_busiest_leader_mid_timeline_loses_and_repeats_nothing(
        cluster: KafkaCluster, workers: list[LiveEngine],
        sinks_for: Callable[[LiveEngine], Sinks]) -> None:
    s = scenario()
    crew = workers[:2]
    sinks = start(crew, sinks_for)
    crew[0].produce_with_cli(s.part(0, 0.4))
    victim = busiest_leader(cluster, crew[0])
    cluster.kill_node(victim)  # no controlled shutdown: leaders move after the fence
    try:
        crew[0].produce_with_cli(s.part(0.4, 0.8))
    finally:
        time.sleep(5)
        cluster.start_node(victim)
    finish(crew, sinks, s, 0.8)


def test_workers_stopped_and_killed_at_random_while_events_flow(
        workers: list[LiveEngine], sinks_for: Callable[[LiveEngine], Sinks]) -> None:
    s = scenario()
    rnd = random.Random(SEED)  # the chaos schedule, repeatable for a seed
    sinks = start(workers, sinks_for)
    done = threading.Event()

    def feed() -> None:
        for i in range(10):
            workers[0].produce_with_cli(s.part(i / 10, (i + 1) / 10))
            time.sleep(2)
        done.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    actions = []
    try:
        deadline = time.monotonic() + 45  # bounded chaos
        while time.monotonic() < deadline:
            time.sleep(rnd.uniform(3, 7))
            w = rnd.choice(workers)
            if w.proc is None:
                actions.append("start")
                w.start()
            elif rnd.random() < 0.5:
                actions.append("stop")
                w.stop()
            else:
                actions.append("kill")
                w.kill()
    finally:
        feeder.join(120)
        for w in workers:
            if w.proc is None:
                w.start()
    assert done.is_set()
    assert {"kill", "stop"} <= set(actions) or len(actions) < 4, actions
    produce_watermark(workers[0], s)
    sinks.wait(s, revive_all(workers), timeout=300)
    sinks.check_exactly_once(s)


LOSS_CUSTOMERS = int(os.environ.get("OMNIJOURNEY_LOSS_CUSTOMERS", "3000"))


class LagLog:
    """The worker group's lag, every second, to a file: what a loss looked like."""

    def __init__(self, engine: LiveEngine, path: Path) -> None:
        self.engine, self.path = engine, path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.path.open("w") as out:
            while not self.stop.wait(1.0):
                try:
                    rows = self.engine.lag()
                except Exception as exc:
                    out.write(json.dumps({"error": str(exc)}) + "\n")
                    continue
                out.write(json.dumps({"at": time.time(), "lag": {
                    f"{r.topic}:{r.partition}": r.lag for r in rows if r.lag}}) + "\n")
                out.flush()

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.path.read_text().splitlines()[-lines:])


def test_three_kill_9_restarts_of_a_lone_worker_lose_nothing(
        workers: list[LiveEngine], sinks_for: Callable[[LiveEngine], Sinks],
        tmp_path: Path) -> None:
    """Issue 10's unexplained loss, as reported: 3,000 customers, one worker killed -9
    and restarted three times while the timeline flows, the lag recorded throughout."""
    s = scenario(LOSS_CUSTOMERS)
    w = workers[0]
    sinks = start([w], sinks_for)
    lag = LagLog(w, tmp_path / "lag.jsonl")
    lag.thread.start()
    rnd = random.Random(SEED)
    try:
        for i in range(3):
            w.produce_with_cli(s.part(i / 4, (i + 1) / 4))
            time.sleep(rnd.uniform(1, 4))
            w.kill()
            w.start()
        try:
            finish([w], sinks, s, 0.75)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlag:\n{lag.tail()}\nworker:\n{w.log()}") from None
    finally:
        lag.stop.set()


def test_a_worker_paused_past_its_session_timeout_comes_back(
        workers: list[LiveEngine], sinks_for: Callable[[LiveEngine], Sinks]) -> None:
    """SIGSTOP one of two workers for longer than its session timeout (6 s) while events
    flow: the group moves its partitions to the other; after SIGCONT it is fenced, rejoins,
    and nothing is lost or repeated at the sinks."""
    s = scenario()
    crew = workers[:2]
    sinks = start(crew, sinks_for)
    crew[0].produce_with_cli(s.part(0, 0.3))
    paused = crew[1]
    assert paused.proc is not None
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        crew[0].produce_with_cli(s.part(0.3, 0.7))
        time.sleep(15)  # well past the 6 s session timeout
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    finish(crew, sinks, s, 0.7)


def _lines(worker: LiveEngine) -> list[dict[str, Any]]:
    """The worker's JSON log lines, all its starts, in order (Faust's own lines left out)."""
    return [x for path in sorted(worker.log_dir.glob("worker-*.log"))
            for x in logged(path.read_text(errors="replace"))]


def _quiet(worker: LiveEngine, seconds: float, timeout: float = 120) -> None:
    """Until the worker has written batches and then none for ``seconds``."""
    deadline = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        batches = sum(1 for x in _lines(worker) if x.get("event") == "batch")
        if batches != seen:
            seen, since = batches, time.monotonic()
        elif batches and time.monotonic() - since >= seconds:
            return
        time.sleep(0.2)
    raise AssertionError(f"never quiet: {seen} batches\n{worker.log()}")


def test_a_worker_out_of_its_group_writes_nothing_until_it_is_a_member_again(
        workers: list[LiveEngine], sinks_for: Callable[[LiveEngine], Sinks]) -> None:
    """The zombie (runtime/lease.py). One worker owns every partition, caught up, and is
    stopped (SIGSTOP); events come, a second worker joins and, once the first is out of
    the group (session 6 s), takes every partition and handles them. Thawed, the first
    one's consumer still believes in its old assignment and fetches from its old
    positions: before the lease, it handled those records as their owner and wrote
    states behind the second's, which a later restore took back. Now it writes no batch
    (commands or states) until it has joined again and restored, and the sinks end
    exactly as the simulator says."""
    s = scenario()
    other, zombie = workers[0], workers[1]
    zombie.extra_env["OMNIJOURNEY_BATCH_LOG"] = "1"  # a line for every batch written
    sinks = start([zombie], sinks_for)
    zombie.produce_with_cli(s.part(0, 0.3))
    _quiet(zombie, 3.0)
    assert zombie.proc is not None
    zombie.proc.send_signal(signal.SIGSTOP)
    try:
        other.produce_with_cli(s.part(0.3, 0.6))
        other.start()
        time.sleep(15)  # well past the 6 s session timeout
    finally:
        thawed = datetime.now(UTC)
        zombie.proc.send_signal(signal.SIGCONT)
    finish([other, zombie], sinks, s, 0.6)
    lines = _lines(zombie)
    when = [datetime.fromisoformat(x.get("timestamp", "1970-01-01T00:00:00Z")) for x in lines]
    before = [x for x, t in zip(lines, when, strict=True) if t < thawed]
    after = [x for x, t in zip(lines, when, strict=True) if t >= thawed]
    stopped_in = max(x["generation"] for x in before if x.get("event") == "recovery_completed")
    # Back in the group: the first restore of a later generation completed.
    back = next((i for i, x in enumerate(after) if x.get("event") == "recovery_completed"
                 and x["generation"] > stopped_in), len(after))
    early = [x for x in after[:back] if x.get("event") in ("batch", "sent", "evaluated")]
    assert not early, f"written while out of the group: {early[:5]}"
    fenced = [x for x in after[:back] if x.get("event") == "lease_fenced"]
    print(f"thawed at {thawed.isoformat()}: {len(fenced)} batches given up before rejoining")


def test_compacted_changelogs_restore_the_same_states(
        cluster: KafkaCluster, workers: list[LiveEngine],
        sinks_for: Callable[[LiveEngine], Sinks]) -> None:
    """The state changelog is created compacted; with tiny segments the cleaner runs, and a
    worker started without its local files restores from what is left and goes on."""
    s = scenario()
    worker = workers[0]
    sinks = start([worker], sinks_for)
    changelog = changelog_topic(worker.settings)
    worker.produce_with_cli(s.part(0, 0.25))
    wait_for_topic(cluster, changelog)
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, changelog, {"cleanup.policy": None})
        described = admin.describe_configs([resource], config_filter="all")
        assert str(described).count("'compact'") >= 1, described  # as Faust created it
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, changelog, configs={
            "cleanup.policy": "compact", "segment.ms": "500", "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": "0"})])
    finally:
        admin.close()
    for i in range(1, 6):  # segments roll between the parts; the cleaner compacts them
        worker.produce_with_cli(s.part(0.25 + (i - 1) * 0.1, 0.25 + i * 0.1))
        time.sleep(1.5)
    worker.wait_for_lag(lambda rows: all(r.lag == 0 for r in rows))
    before = latest_states(cluster, changelog)
    written = written_records(cluster, changelog)
    deadline = time.monotonic() + 90
    while (kept := count_records(cluster, changelog)) > written / 2:
        assert time.monotonic() < deadline, f"{kept} of {written} records kept, never compacted"
        time.sleep(2)
    assert latest_states(cluster, changelog) == before  # the latest of each key kept
    worker.stop()
    shutil.rmtree(worker.log_dir / "faust-data", ignore_errors=True)  # no local state
    worker.start()
    finish([worker], sinks, s, 0.75)


def wait_for_topic(cluster: KafkaCluster, topic: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    try:
        while topic not in admin.list_topics():
            assert time.monotonic() < deadline, f"{topic} never created"
            time.sleep(0.5)
    finally:
        admin.close()


def _records(cluster: KafkaCluster, topic: str) -> Iterator[tuple[bytes, bytes | None]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=cluster.bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    try:
        for msg in consumer:
            yield msg.key, msg.value
    finally:
        consumer.close()


def latest_states(cluster: KafkaCluster, topic: str) -> dict[bytes, bytes | None]:
    return dict(_records(cluster, topic))


def count_records(cluster: KafkaCluster, topic: str) -> int:
    return sum(1 for _ in _records(cluster, topic))


def written_records(cluster: KafkaCluster, topic: str) -> int:
    """Every record ever appended (the end offsets), compacted away or not."""
    consumer = KafkaConsumer(bootstrap_servers=cluster.bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values())
    finally:
        consumer.close()
