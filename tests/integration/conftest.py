"""Brokers for integration tests: the embedded broker, testcontainers Kafka where a Docker
engine exists (skipped cleanly otherwise), or any cluster named by KAFKA_BOOTSTRAP."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from omnijourney.runtime.broker import EmbeddedBroker
from tests.integration.harness import LiveEngine

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.1"  # pinned, never latest


def _docker_engine() -> bool:
    """Whether a Docker daemon answers /_ping (probed directly: the docker library leaks
    its socket when no daemon is there)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX)
            address: str | tuple[str, int] = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").partition(":")
            sock, address = socket.socket(), (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(128)
    except OSError:
        return False


@dataclass
class Kafka:
    bootstrap: str
    # What a cluster does when a member dies without leaving: real Kafka expires it after
    # the session timeout by itself. The embedded broker never does (a known limit of its
    # group coordinator), so there a restart, keeping all data, drops the membership.
    expire_dead_members: Callable[[], object] = lambda: None
    restart: Callable[[], object] | None = None  # only a broker this suite owns
    embedded: bool = False


@pytest.fixture(scope="session", params=["embedded", "testcontainers"])
def kafka(request: pytest.FixtureRequest) -> Iterator[Kafka]:
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        if request.param != "embedded":
            pytest.skip("KAFKA_BOOTSTRAP is set: the suite runs once, against it")
        yield Kafka(given)
        return
    if request.param == "testcontainers":
        if not _docker_engine():
            pytest.skip("no Docker engine here: testcontainers Kafka skipped")
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE) as container:
            yield Kafka(container.get_bootstrap_server())
        return
    with EmbeddedBroker() as broker:
        yield Kafka(broker.bootstrap, broker.restart, broker.restart, embedded=True)


@pytest.fixture
def engine(kafka: Kafka, tmp_path: Path) -> Iterator[LiveEngine]:
    """A worker harness with its own topics and group; stopped after the test."""
    live = LiveEngine(kafka.bootstrap, tmp_path)
    yield live
    live.stop()
