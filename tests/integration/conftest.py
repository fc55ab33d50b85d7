"""The broker of the integration suite: one real Apache Kafka KRaft node for the whole run
(each test has its own topic prefix and groups), or any cluster named by KAFKA_BOOTSTRAP,
or testcontainers' Kafka with OMNIJOURNEY_TEST_BROKER=testcontainers where Docker runs.

Fault tests bring their own 3-node cluster (tests/integration/faults/)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from omnijourney.runtime.kraft import KafkaCluster
from tests.integration.harness import LiveEngine

KAFKA_IMAGE = "apache/kafka:4.4.0"  # the version runtime/kafka-pom.xml pins; never latest


@dataclass
class Kafka:
    bootstrap: str
    # Stop and start every node on the same ports and data; only a cluster this suite runs.
    restart: Callable[[], object] | None = None


def _restart(cluster: KafkaCluster) -> Callable[[], None]:
    def restart() -> None:
        for node in cluster.members:
            cluster.stop_node(node.node_id)
        for node in cluster.members:
            cluster.start_node(node.node_id)

    return restart


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        yield Kafka(given)
        return
    if os.environ.get("OMNIJOURNEY_TEST_BROKER") == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
            yield Kafka(container.get_bootstrap_server())
        return
    with KafkaCluster(1, tmp_path_factory.mktemp("kafka"), quiet=True) as cluster:
        yield Kafka(cluster.bootstrap, _restart(cluster))


@pytest.fixture
def engine(kafka: Kafka, tmp_path: Path) -> Iterator[LiveEngine]:
    """A worker harness with its own topics and group; stopped after the test."""
    live = LiveEngine(kafka.bootstrap, tmp_path)
    yield live
    live.stop()


# Addresses the suite's customers have (examples/events.jsonl, omnijourney.synthetic and
# the tests' own): none may appear in any log a worker, adapter or server wrote.
_ADDRESS = re.compile(rb"[A-Za-z0-9._%+-]+@example\.(?:com|org)|\+(?:1555|49151|44163)[0-9]{4,}")


@pytest.fixture(autouse=True)
def no_address_in_any_log(tmp_path: Path) -> Iterator[None]:
    """After each integration test: every log under its directory holds digests, never a
    customer's email address or phone number (the README's promise)."""
    yield
    found = []
    for path in tmp_path.rglob("*.log"):
        text = path.read_bytes()
        for m in _ADDRESS.finditer(text):
            found.append(f"{path.relative_to(tmp_path)}: {m.group(0).decode()} in "
                         f"{text[max(0, m.start() - 120):m.end() + 40].decode(errors='replace')!r}")
    assert not found, "addresses in clear:\n" + "\n".join(found[:10])
