"""Create omnijourney's topics explicitly, with their partition counts."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from omnijourney.core.commands import CHANNELS
from omnijourney.runtime.settings import Settings


def wanted(settings: Settings) -> dict[str, int]:
    t = settings.topics
    p = settings.partitions
    # ticks and deliveries are co-partitioned with touchpoints: same count, same keys.
    out = {t.touchpoints: p, t.ticks: p, t.deliveries: p, t.dlq: 1}
    out.update(dict.fromkeys(t.commands, p))
    out.update({t.delivered(ch): p for ch in CHANNELS})
    return out


def _configs(settings: Settings, name: str) -> dict[str, str]:
    # Only the latest record per command id matters in the adapters' delivered logs.
    if name.startswith(settings.topics.delivered_prefix):
        return {"cleanup.policy": "compact"}
    return {}


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics; refuse to run if co-partitioned topics disagree."""
    admin = KafkaAdminClient(**settings.kafka_python())
    try:
        existing = set(admin.list_topics())
        want = wanted(settings)
        replication = settings.replication or _replication(admin)
        new = [NewTopic(name, num_partitions=n, replication_factor=replication,
                        topic_configs=_configs(settings, name))
               for name, n in want.items() if name not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
                admin.create_topics(new)
        counts = {}
        for meta in admin.describe_topics([settings.topics.touchpoints, settings.topics.ticks]):
            counts[meta.get("name") or meta["topic"]] = len(meta["partitions"])
        if counts[settings.topics.touchpoints] != counts[settings.topics.ticks]:
            raise RuntimeError(f"{settings.topics.ticks} must have as many partitions as "
                               f"{settings.topics.touchpoints}: {counts}")
        return want
    finally:
        admin.close()


def _replication(admin: KafkaAdminClient) -> int:
    """Up to 3 replicas, never more than there are brokers."""
    try:
        brokers = len(admin.describe_cluster().get("brokers", [])) or 1
    except (KeyError, KafkaError):  # some brokers' metadata trips kafka-python's parser
        brokers = 1
    return min(3, brokers)
