"""The broker of the integration suite: one real Apache Kafka KRaft node for the whole run
(each test has its own topic prefix and groups), or any cluster named by KAFKA_BOOTSTRAP,
or testcontainers' Kafka with OMNIJOURNEY_TEST_BROKER=testcontainers where Docker runs.

Fault tests bring their own 3-node cluster (tests/integration/faults/)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from omnijourney.runtime.kraft import KafkaCluster
from tests.integration.harness import LiveEngine
from tests.logscan import no_address_in_any_log

__all__ = ["no_address_in_any_log"]  # autouse: every integration test's logs are scanned

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
