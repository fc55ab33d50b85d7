"""The real-Kafka runner itself: `omnijourney kafka up`, failures that quote the node's log,
ports taken by someone else, and no JVM left behind when whoever started it dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from omnijourney.runtime import kafkadist, kraft
from omnijourney.runtime.broker import free_port
from tests.integration.harness import REPO

pytestmark = pytest.mark.integration


def gone(pid: int, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie (exited, not yet reaped by its parent) counts as gone.
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            return True
        time.sleep(0.2)
    return False


def round_trip(bootstrap: str) -> bytes:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send("round-trip", b"hello").get(30)
    producer.close()
    consumer = KafkaConsumer("round-trip", bootstrap_servers=bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    try:
        return next(iter(consumer)).value
    finally:
        consumer.close()


def test_kafka_up_prints_the_bootstrap_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-m", "omnijourney", "kafka", "up",
                           "--dir", str(tmp_path / "k")], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            bootstrap = proc.stdout.readline().strip()
            assert bootstrap.startswith("127.0.0.1:"), proc.stderr.read()
            assert round_trip(bootstrap) == b"hello"
            jvm = _jvm_pid(tmp_path / "k")
        finally:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    assert gone(jvm)
    assert (tmp_path / "k" / "node-1" / "server.log").read_text().count("Kafka Server started")


def _jvm_pid(root: Path) -> int:
    """The JVM whose command line names this cluster's node-1 config."""
    config = str(root / "node-1" / "server.properties")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if config.encode() in cmdline and b"kafka.Kafka" in cmdline:
                return int(entry.name)
    raise AssertionError(f"no JVM for {config}")


def test_a_node_that_cannot_start_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    broken = kraft.KafkaCluster(1, tmp_path, config={
        "authorizer.class.name": "org.example.NoSuchAuthorizer"})
    with pytest.raises(kafkadist.KafkaUnavailable) as err:
        broken.start(timeout=90)
    broken.stop()
    message = str(err.value)
    assert "Kafka node 1 exited" in message
    assert "NoSuchAuthorizer" in message  # quoted from the node's own log
    assert str(tmp_path / "node-1" / "server.log") in message


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_port_taken_meanwhile_moves_the_node_to_other_free_ports(
        tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    handed = iter([taken_port])
    # The first port handed out is one another process grabbed after it was picked.
    monkeypatch.setattr(kraft, "free_port", lambda: next(handed, None) or free_port())
    with kraft.KafkaCluster(1, tmp_path) as cluster:
        assert str(taken_port) not in cluster.bootstrap
        assert round_trip(cluster.bootstrap) == b"hello"


def test_no_broker_outlives_the_process_that_started_it(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import time
        from omnijourney.runtime.kraft import KafkaCluster
        cluster = KafkaCluster(1, __import__("pathlib").Path({str(tmp_path)!r})).start()
        print(cluster.members[0].proc.pid, flush=True)
        time.sleep(600)
    """)
    with subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                          stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        jvm = int(parent.stdout.readline())
        parent.kill()  # kill -9: no atexit, no finally
        parent.wait(30)
    assert gone(jvm), f"JVM {jvm} outlived its parent"
