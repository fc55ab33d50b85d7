"""Local brokers for development: the embedded Kafka-protocol broker (the ``noida-db``
binary, Kafka service only) and the choice between it and real Kafka (``runtime.kraft``).

The embedded broker is the zero-Java fallback of ``omnijourney dev``; tests, fault tests and
benchmarks run on real Kafka. Production and ``KAFKA_BOOTSTRAP`` use a real cluster; nothing
in the engine depends on either.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from omnijourney import kafkaclients
from omnijourney.kafkaclients import KafkaError

if TYPE_CHECKING:
    from omnijourney.runtime.kraft import KafkaCluster


def binary() -> Path:
    path = Path(str(files("noida_db").joinpath("noida-db")))
    if not path.is_file():
        raise RuntimeError("the embedded broker needs the noida-db package (pip install noida-db)")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers_metadata(port: int, brokers: int = 1) -> bool:
    """Whether a broker on this loopback port answers Metadata listing ``brokers`` brokers.
    Probed with a socket we close ourselves first: a Kafka client built against a port
    nobody listens on fails in its constructor and leaks."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    except OSError:
        return False
    try:
        admin = kafkaclients.admin_at(f"127.0.0.1:{port}", request_timeout_ms=3000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        if brokers <= 1:  # the embedded broker's cluster metadata trips describe_cluster
            admin.list_topics()
            return True
        return len(admin.describe_cluster().get("brokers", [])) >= brokers
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        admin.close()


class EmbeddedBroker:
    """Start with a fresh data directory on a free port; stop kills the process group."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="omnijourney-broker-"))
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.data_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(binary()), "start", "--only", "kafka", "--host", "127.0.0.1",
                 "--kafka-port", str(self.port), "--data-dir", str(self.data_dir / "data")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded broker exited: {self.log.read_text()[-2000:]}")
            if answers_metadata(self.port):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"embedded broker did not answer on {self.bootstrap} in {timeout}s")

    def restart(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Stop and start again on the same port and data: topics, offsets and table
        changelogs survive; in-memory group membership does not."""
        self._terminate()
        return self.start(timeout)

    def stop(self) -> None:
        self._terminate()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


BROKER_KINDS = ("auto", "kafka", "embedded")


def choose_broker(kind: str) -> tuple[str, str | None]:
    """``auto`` resolved: ("kafka", None) where Java 17+ can run real Kafka, else
    ("embedded", why not); ``kafka`` and ``embedded`` stay as asked."""
    from omnijourney.runtime.kafkadist import available  # noqa: PLC0415

    if kind not in BROKER_KINDS:
        raise ValueError(f"broker must be one of {', '.join(BROKER_KINDS)}")
    if kind != "auto":
        return kind, None
    why = available()
    return ("kafka", None) if why is None else ("embedded", why)


def start_local_broker(kind: str = "auto", *, nodes: int = 1,
                       directory: Path | None = None) -> EmbeddedBroker | KafkaCluster:
    """A broker on this machine for ``dev`` and tools: real Kafka (``kafka``), the embedded
    one (``embedded``), or real Kafka where Java 17+ can run it, else embedded (``auto``).
    Raises :class:`KafkaUnavailable` (one line naming what is missing and the way out)."""
    from omnijourney.runtime.kraft import KafkaCluster  # noqa: PLC0415

    kind, why = choose_broker(kind)
    if why is not None:
        print(f"real Kafka unavailable ({why}); using the embedded broker", file=sys.stderr)
    if kind == "embedded":
        print("starting the embedded Kafka-protocol broker ...", file=sys.stderr)
        return EmbeddedBroker(directory).start()
    cluster = KafkaCluster(nodes, directory)
    print(f"starting Apache Kafka {cluster.version} ({nodes} KRaft node"
          f"{'s' if nodes > 1 else ''}) ...", file=sys.stderr)
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()  # no JVM left behind by a start that failed or was interrupted
        raise
