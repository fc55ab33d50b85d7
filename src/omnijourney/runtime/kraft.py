"""A real Apache Kafka, run from its own jars: one KRaft node or a 3-node cluster.

For development (``omnijourney kafka up``, ``omnijourney dev``), the integration suite, the
fault tests and the benchmarks. The release is pinned in ``kafka-pom.xml`` beside this file;
Maven fetches its jars once into ``~/.cache/omnijourney/kafka-<version>/`` (or
``$OMNIJOURNEY_KAFKA_CACHE``) and every later start reuses them. Each node is its own JVM
(broker and controller in one process, as Kafka's combined mode), on free loopback ports,
with its storage formatted here and its log in its own directory. Nodes can be stopped,
killed, paused and started again one at a time, which is what the fault tests do.

Nothing in the engine depends on this module: production points ``KAFKA_BOOTSTRAP`` at its
own cluster.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from omnijourney import kafkaclients
from omnijourney.runtime.broker import answers_metadata, free_port
from omnijourney.runtime.kafkadist import (
    KafkaUnavailable,
    ensure_jars,
    find_java,
    kafka_version,
)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The JVM gets SIGKILL if the process that started it dies (even by kill -9), so a
    crashed test run or demo leaves no broker behind."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setsid()


def cluster_id(source: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    One id in 64 would start with ``-``, which ``kafka-storage`` reads as an option
    ("argument --cluster-id: expected one argument"); Kafka's own ``Uuid.randomUuid`` draws
    again in that case, and so does this."""
    while True:
        cid = base64.urlsafe_b64encode(source()).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


# ----------------------------------------------------------------------- nodes

LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.common.config
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
"""


@dataclass
class Node:
    """One KRaft node: broker and controller in one JVM."""

    node_id: int
    directory: Path
    port: int = 0
    controller_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    @property
    def config(self) -> Path:
        return self.directory / "server.properties"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


@dataclass(eq=False)
class KafkaCluster:
    """``nodes`` KRaft nodes on free loopback ports; ``with KafkaCluster(3) as k: k.bootstrap``.

    ``config`` adds or overrides broker settings on every node (a test's tiny segment.ms)."""

    nodes: int = 1
    directory: Path | None = None
    heap: str = field(default_factory=lambda: os.environ.get("OMNIJOURNEY_KAFKA_HEAP", "512m"))
    config: Mapping[str, str] = field(default_factory=dict)
    quiet: bool = False
    members: list[Node] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("a cluster has at least one node")
        self._own_dir = self.directory is None
        self.root = self.directory or Path(tempfile.mkdtemp(prefix="omnijourney-kafka-"))
        self.version = kafka_version()
        self.java = ""
        self.libs = Path()
        self.members = [Node(i, self.root / f"node-{i}") for i in range(1, self.nodes + 1)]
        _LIVE.add(self)

    # -- what clients need

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.members)

    def node(self, node_id: int) -> Node:
        return self.members[node_id - 1]

    # -- lifecycle

    def start(self, timeout: float = 120.0) -> KafkaCluster:
        self.java = find_java()
        self.libs = ensure_jars(self.version, quiet=self.quiet)
        self.root.mkdir(parents=True, exist_ok=True)
        fresh = not any((n.directory / "data" / "meta.properties").exists()
                        for n in self.members)
        for attempt in range(3):
            if fresh or not self.members[0].port:
                self._pick_ports()
            self._write_configs()
            if fresh:
                self._format()
            for n in self.members:
                self._spawn(n)
            try:
                self.wait_ready(timeout)
                return self
            except KafkaUnavailable as exc:
                taken = any("Address already in use" in n.log_tail(200) for n in self.members)
                self._terminate_all()
                if not (taken and fresh and attempt < 2):
                    raise exc from None
                for n in self.members:  # another process took a port first: new ports
                    shutil.rmtree(n.directory, ignore_errors=True)
        raise AssertionError("unreachable")

    def _pick_ports(self) -> None:
        for n in self.members:
            n.port, n.controller_port = free_port(), free_port()

    def _write_configs(self) -> None:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.members)
        replicas = str(min(3, self.nodes))
        for n in self.members:
            n.directory.mkdir(parents=True, exist_ok=True)
            props = {
                "process.roles": "broker,controller", "node.id": str(n.node_id),
                "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://127.0.0.1:{n.port},"
                             f"CONTROLLER://127.0.0.1:{n.controller_port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{n.port}",
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name": "PLAINTEXT",
                "log.dirs": str(n.directory / "data"),
                "num.partitions": "1", "default.replication.factor": replicas,
                "offsets.topic.replication.factor": replicas,
                "offsets.topic.num.partitions": "10",
                "transaction.state.log.replication.factor": replicas,
                "transaction.state.log.min.isr": str(min(2, self.nodes)),
                "min.insync.replicas": str(min(2, self.nodes)),
                # A development cluster on two cores: no wait for more members before the
                # first rebalance, fewer threads than a production broker.
                "group.initial.rebalance.delay.ms": "0",
                "num.network.threads": "2", "num.io.threads": "4",
                "num.recovery.threads.per.data.dir": "1",
                "log.cleaner.threads": "1", "log.cleaner.dedupe.buffer.size": str(16 << 20),
                **self.config,
            }
            n.config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            (n.directory / "log4j2.yaml").write_text(LOG4J2)

    def _java(self, main: str, *args: str, heap: str) -> list[str]:
        return [self.java, f"-Xms{min(heap, '256m', key=_bytes)}", f"-Xmx{heap}",
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true", "-cp", f"{self.libs}/*", main, *args]

    def _format(self) -> None:
        cid = cluster_id()
        for n in self.members:
            cmd = self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cid}",
                             "-c", str(n.config), "--ignore-formatted", heap="256m")
            cmd.insert(1, f"-Dlog4j2.configurationFile={n.directory / 'log4j2.yaml'}")
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                  check=False)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise KafkaUnavailable(f"formatting node {n.node_id}'s storage failed:\n{tail}")

    def _spawn(self, n: Node) -> None:
        cmd = self._java("kafka.Kafka", str(n.config), heap=self.heap)
        cmd[1:1] = [f"-Dlog4j2.configurationFile={n.directory / 'log4j2.yaml'}",
                    f"-Dkafka.logs.dir={n.directory}"]
        with open(n.log, "ab") as out:  # the child keeps its own descriptor
            n.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl and setsid

    def wait_ready(self, timeout: float = 120.0, nodes: list[Node] | None = None) -> None:
        """Until every running node (or ``nodes``) answers Metadata and lists the others."""
        wanted = nodes or [n for n in self.members if n.proc is not None]
        deadline = time.monotonic() + timeout
        while True:
            for n in wanted:
                if n.proc is not None and n.proc.poll() is not None:
                    raise KafkaUnavailable(
                        f"Kafka node {n.node_id} exited with {n.proc.returncode}; the end of "
                        f"{n.log}:\n{n.log_tail()}")
            if all(answers_metadata(n.port, len(wanted)) for n in wanted):
                return
            if time.monotonic() > deadline:
                slow = wanted[0]
                raise KafkaUnavailable(
                    f"Kafka node {slow.node_id} did not answer on 127.0.0.1:{slow.port} in "
                    f"{timeout:.0f}s; the end of {slow.log}:\n{slow.log_tail()}")
            time.sleep(0.3)

    # -- one node at a time, for fault tests

    def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        n = self.node(node_id)
        if n.running:
            return
        self._spawn(n)
        self.wait_ready(timeout, [n])

    def stop_node(self, node_id: int, timeout: float = 60.0) -> None:
        """A graceful stop (SIGTERM: controlled shutdown moves leadership away first)."""
        self._signal_and_reap(self.node(node_id), signal.SIGTERM, timeout)

    def kill_node(self, node_id: int) -> None:
        """kill -9: no controlled shutdown, no flush."""
        self._signal_and_reap(self.node(node_id), signal.SIGKILL, 30)

    def pause_node(self, node_id: int) -> None:
        n = self.node(node_id)
        if n.running:
            assert n.proc is not None
            os.kill(n.proc.pid, signal.SIGSTOP)

    def resume_node(self, node_id: int) -> None:
        n = self.node(node_id)
        if n.running:
            assert n.proc is not None
            os.kill(n.proc.pid, signal.SIGCONT)

    def leader_of(self, topic: str, partition: int = 0) -> int:
        """The node that leads ``topic``'s partition now."""
        live = ",".join(f"127.0.0.1:{n.port}" for n in self.members if n.running)
        admin = kafkaclients.admin_at(live, request_timeout_ms=5000)
        try:
            for t in admin.describe_topics([topic]):
                for p in t["partitions"]:
                    if p["partition_index"] == partition:
                        return int(p["leader_id"])
        finally:
            admin.close()
        raise KeyError(f"{topic}[{partition}] not found")

    def _signal_and_reap(self, n: Node, sig: signal.Signals, timeout: float) -> None:
        if n.proc is None:
            return
        if n.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(n.proc.pid, signal.SIGCONT)  # a paused JVM cannot act on SIGTERM
                os.kill(n.proc.pid, sig)
            try:
                n.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait(30)
        n.proc = None

    def _terminate_all(self) -> None:
        for n in self.members:
            if n.running:
                assert n.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(n.proc.pid, signal.SIGCONT)
                    n.proc.terminate()
        for n in self.members:
            self._signal_and_reap(n, signal.SIGKILL, 30)

    def stop(self) -> None:
        """Every node stopped (SIGTERM, then SIGKILL after 30 s); its files removed if the
        cluster made its own directory."""
        self._terminate_all()
        if self._own_dir:
            shutil.rmtree(self.root, ignore_errors=True)
        _LIVE.discard(self)

    def __enter__(self) -> KafkaCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _bytes(size: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)


_LIVE: weakref.WeakSet[KafkaCluster] = weakref.WeakSet()


@atexit.register
def _stop_every_cluster() -> None:
    for cluster in list(_LIVE):
        cluster.stop()
