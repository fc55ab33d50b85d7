"""The one seam to kafka-python: admin, plain producers and consumers for the tools and
adapters, with the connection and security settings every client shares.

The worker's streams use Faust's aiokafka; everything else (topic creation, ``produce``,
``tail``, lag, the adapters, the local broker's probes) comes through here, so a client
library upgrade or a new security setting is a change in one file.
"""

from __future__ import annotations

from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2
from kafka.structs import MemberState, OffsetAndMetadata

from omnijourney.settings import Settings

__all__ = [
    "ConsumerRebalanceListener", "KafkaAdminClient", "KafkaConsumer", "KafkaError",
    "KafkaProducer", "MemberState", "NewTopic", "OffsetAndMetadata", "TopicAlreadyExistsError",
    "TopicPartition", "admin", "admin_at", "consumer", "default_partition", "producer",
]


def admin(settings: Settings, **options: Any) -> KafkaAdminClient:
    """An admin client on the settings' cluster."""
    return KafkaAdminClient(**settings.kafka_python(), **options)


def admin_at(bootstrap: str, **options: Any) -> KafkaAdminClient:
    """An admin client on one address (probing a local node before any settings exist)."""
    return KafkaAdminClient(bootstrap_servers=bootstrap, **options)


def producer(settings: Settings, **options: Any) -> KafkaProducer:
    return KafkaProducer(**settings.kafka_python(), **options)


def consumer(settings: Settings, *topics: str, **options: Any) -> KafkaConsumer:
    return KafkaConsumer(*topics, **settings.kafka_python(), **options)


def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (murmur2, as the JVM's)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
