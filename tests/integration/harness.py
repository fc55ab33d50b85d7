"""Drive a real worker process against a broker, as an operator would."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kafka import KafkaConsumer, KafkaProducer

from omnijourney.codecs import decode_any
from omnijourney.core.events import Event
from omnijourney.core.timeutil import format_instant
from omnijourney.ops.lag import LagReader, PartitionLag, known_groups
from omnijourney.runtime.feed import produce_events, send_watermark
from omnijourney.runtime.supervision import EXIT_FAILED, EXIT_STALLED
from omnijourney.runtime.topics import changelog_topic, ensure_topics
from omnijourney.settings import Settings, Topics

REPO = Path(__file__).resolve().parents[2]


class LiveEngine:
    def __init__(self, bootstrap: str, log_dir: Path, partitions: int = 4,
                 clock: str = "event") -> None:
        run = uuid.uuid4().hex[:8]
        self.prefix = f"it-{run}-"
        self.settings = Settings(bootstrap=bootstrap, app_id=f"omnijourney-it-{run}",
                                 partitions=partitions, topics=Topics.with_prefix(self.prefix),
                                 journeys=str(REPO / "journeys"), clock=clock)
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0
        self.metrics_port: int | None = None  # /metrics etc. only where a test asks
        self.extra_env: dict[str, str] = {}  # settings a test gives this worker alone
        self.feeds = 0  # files produce_with_cli wrote
        ensure_topics(self.settings)

    def twin(self, name: str = "b") -> LiveEngine:
        """A second worker of the same app (same group, topics and tables)."""
        other = copy.copy(self)
        other.proc, other._log, other.starts = None, None, 0
        other.extra_env = {}
        other.log_dir = self.log_dir / name
        other.log_dir.mkdir(exist_ok=True)
        return other

    def start(self) -> LiveEngine:
        self.starts += 1
        self._log = open(self.log_dir / f"worker-{self.starts}.log", "wb")  # noqa: SIM115 - closed in _reap
        self.proc = subprocess.Popen([sys.executable, "-m", "omnijourney", "worker"],
                                     env=self.env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=REPO)
        return self

    def env(self) -> dict[str, str]:
        """The worker's environment: this engine's broker, topics, group and tables."""
        return {**os.environ, "KAFKA_BOOTSTRAP": self.settings.bootstrap,
                "OMNIJOURNEY_TOPIC_PREFIX": self.prefix, "OMNIJOURNEY_APP_ID": self.settings.app_id,
                "OMNIJOURNEY_PARTITIONS": str(self.settings.partitions),
                "OMNIJOURNEY_CLOCK": self.settings.clock,
                "OMNIJOURNEY_JOURNEYS": self.settings.journeys,
                # Fast failover: the restart test waits for the killed member to expire.
                "OMNIJOURNEY_SESSION_TIMEOUT": "6", "OMNIJOURNEY_MAX_POLL_INTERVAL": "20",
                # A stalled table restore stops the worker soon (see revive()).
                "OMNIJOURNEY_RECOVERY_STALL": "20",
                "OMNIJOURNEY_METRICS_PORT": str(self.metrics_port or "off"),
                "OMNIJOURNEY_DATADIR": str(self.log_dir / "faust-data"), **self.extra_env}

    def lag(self) -> list[PartitionLag]:
        """The worker group's lag per topic and partition, as ``omnijourney lag`` shows it."""
        group = self.settings.app_id
        reader = LagReader(self.settings)
        try:
            return reader.measure({group: known_groups(self.settings)[group]},
                                  datetime.now(UTC))
        finally:
            reader.close()

    def wait_for_lag(self, done: Callable[[list[PartitionLag]], bool],
                     timeout: float = 90) -> list[PartitionLag]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.lag()
            if done(rows):
                return rows
            assert time.monotonic() < deadline, [r.to_dict() for r in rows]
            time.sleep(1)

    def revive(self) -> None:
        """Start the worker again if it stopped itself (a stalled restore or rebalance, a
        failed agent), as the restart policy of compose, Kubernetes or systemd does."""
        if self.proc is not None and self.proc.poll() in (EXIT_STALLED, EXIT_FAILED):
            self._reap()
            self.start()

    def _reap(self) -> None:
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """kill -9: no shutdown, no commit, no flush."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reap()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
            self._reap()

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.log_dir.glob("worker-*.log")))

    def state_of(self, customer_id: str, timeout: float = 5.0) -> dict[str, Any] | None:
        """The customer's latest state as the worker made it durable (its changelog)."""
        topic = changelog_topic(self.settings)
        consumer = KafkaConsumer(topic, **self.settings.kafka_python(),
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=int(timeout * 1000))
        latest = None
        try:
            for msg in consumer:
                if msg.key == customer_id.encode():  # a tombstone (None): erased
                    latest = json.loads(msg.value)["s"] if msg.value is not None else None
        finally:
            consumer.close()
        return latest

    def adapter(self, channel: str, log: Path, *, idle: float = 10.0,
                **env: str) -> subprocess.Popen[bytes]:
        """``omnijourney adapter CHANNEL`` as its own process, on this engine's topics."""
        full = {**os.environ, "KAFKA_BOOTSTRAP": self.settings.bootstrap,
                "OMNIJOURNEY_TOPIC_PREFIX": self.prefix,
                "OMNIJOURNEY_APP_ID": f"{self.prefix}{channel}-adapter",
                "OMNIJOURNEY_CLOCK": "event", "ADAPTER_BACKOFF_BASE": "0.05",
                # Fast failover: a killed adapter's partitions move after 6 s.
                "OMNIJOURNEY_SESSION_TIMEOUT": "6",
                "OMNIJOURNEY_METRICS_PORT": "off", **env}
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen([sys.executable, "-m", "omnijourney", "adapter", channel,
                                     "--idle-exit", str(idle)], env=full, cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT)

    def produce(self, events: list[Event], watermark: datetime | None = None) -> None:
        # A timeline with identifiers is replayed as it would happen: each resolved (and
        # its merges settled) before the next (runtime/feed.py), when a worker runs to
        # resolve them (a test that produces while it is stopped wants the backlog).
        running = self.proc is not None and self.proc.poll() is None
        settle = 90.0 if running and any(e.identifiers for e in events) else None
        produce_events(self.settings, events, watermark=watermark, settle=settle)

    def produce_with_cli(self, events: list[Event], watermark: datetime | None = None) -> None:
        """``omnijourney produce`` as its own process, as an operator feeds a cluster (and
        so kafka-python's sockets to a node that is down stay out of this process)."""
        self.feeds += 1
        path = self.log_dir / f"feed-{self.feeds}.jsonl"
        path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
        cmd = [sys.executable, "-m", "omnijourney", "produce", str(path)]
        if any(e.identifiers for e in events):
            cmd += ["--settle", "90"]
        if watermark is not None:
            cmd += ["--watermark", format_instant(watermark)]
        done = subprocess.run(cmd, env=self.env(), cwd=REPO, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]

    def produce_raw(self, records: list[tuple[bytes | None, bytes]]) -> None:
        producer = KafkaProducer(**self.settings.kafka_python())
        for key, value in records:
            producer.send(self.settings.topics.touchpoints, key=key, value=value)
        producer.flush()
        producer.close()

    def watermark(self, at: datetime) -> None:
        producer = KafkaProducer(**self.settings.kafka_python())
        send_watermark(producer, self.settings, at)
        producer.close()

    def read(self, topics: list[str], *, until: int, timeout: float = 90.0,
             settle: float = 2.0, distinct: str | None = None) -> list[dict[str, Any]]:
        """Read from the start until ``until`` records (or distinct values of a field)
        arrived, then ``settle`` seconds more to catch anything extra."""
        consumer = KafkaConsumer(*topics, **self.settings.kafka_python(),
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=500)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        done_at: float | None = None
        try:
            while time.monotonic() < deadline:
                for msg in consumer:
                    out.append(decode_any(msg.value)[1])
                self.revive()
                count = len({r[distinct] for r in out}) if distinct else len(out)
                if count >= until and done_at is None:
                    done_at = time.monotonic()
                if done_at is not None and time.monotonic() - done_at >= settle:
                    break
        finally:
            consumer.close()
        return out
