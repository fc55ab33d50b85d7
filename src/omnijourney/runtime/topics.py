"""Create omnijourney's topics explicitly, with their partition counts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

from omnijourney import kafkaclients
from omnijourney.core.channels import CHANNELS
from omnijourney.kafkaclients import KafkaAdminClient, KafkaError, NewTopic, TopicAlreadyExistsError
from omnijourney.runtime.reach import until_reachable
from omnijourney.settings import Settings

T = TypeVar("T")


def wanted(settings: Settings, *, worker: bool = True) -> dict[str, int]:
    """Every topic, with the engine's state changelog only where ``settings.app_id`` is the
    engine's (not an adapter's group name)."""
    t = settings.topics
    p = settings.partitions
    # ticks, deliveries and identified are co-partitioned with touchpoints: same count,
    # same keys (customer ids); identity is keyed by identifier, with its own table.
    out = {t.touchpoints: p, t.ticks: p, t.deliveries: p, t.identified: p, t.identity: p,
           t.dlq: 1}
    out.update(dict.fromkeys(t.commands, p))
    out.update({t.delivered(ch): p for ch in CHANNELS})
    if worker:
        out[changelog_topic(settings)] = p  # the worker's table: co-partitioned too
        out[identity_changelog_topic(settings)] = p
    return out


def changelog_topic(settings: Settings) -> str:
    """The customer-state table's changelog, named as Faust names a table's changelog."""
    return f"{settings.app_id}-customer-state-changelog"


def identity_changelog_topic(settings: Settings) -> str:
    """The identity table's changelog (identifier key -> customer)."""
    return f"{settings.app_id}-identity-changelog"


DAY_MS = 24 * 3600 * 1000
# How long each topic keeps what it holds; what holds personal data is kept no longer
# than it is needed (the README's "Personal data" table lists them with these numbers).
RETENTION_DAYS = {
    "touchpoints": 7,  # events as produced: traits, addresses (Kafka's own default)
    "ticks": 1,  # customer ids and times only; a tick older than a day is long fired
    "deliveries": 30,  # reports: ids, statuses, digests; the engine folds them at once
    "dlq": 14,  # raw records that failed, personal data included: two weeks to look
    "commands": 7,  # rendered messages with their addresses, for adapters and audits
    # events in transit (identifiers, traits) and merge messages (a customer's state)
    "identity": 7,
}


def _configs(settings: Settings, name: str) -> dict[str, str]:
    t = settings.topics
    # Only the latest record per key matters in the adapters' delivered logs (per command
    # id) and in the state changelog (per customer). An erasure is a tombstone there,
    # removed by the cleaner after delete.retention.ms (a day).
    if name.startswith(t.delivered_prefix) or name in (changelog_topic(settings),
                                                       identity_changelog_topic(settings)):
        return {"cleanup.policy": "compact", "delete.retention.ms": str(DAY_MS)}
    kind = ("commands" if name.startswith(t.command_prefix) else
            {t.touchpoints: "touchpoints", t.ticks: "ticks", t.deliveries: "deliveries",
             t.dlq: "dlq", t.identity: "identity", t.identified: "identity"}.get(name))
    if kind is None:
        return {}
    return {"retention.ms": str(RETENTION_DAYS[kind] * DAY_MS)}


def with_admin(settings: Settings, call: Callable[[KafkaAdminClient], T],
               timeout: float = 60.0) -> T:
    """``call`` with a new admin client, again while the cluster cannot answer."""
    def once() -> T:
        admin = kafkaclients.admin(settings)
        try:
            return call(admin)
        finally:
            admin.close()

    return until_reachable(once, what="admin", timeout=timeout)


def ensure_topics(settings: Settings, *, worker: bool = True) -> dict[str, int]:
    """Create missing topics; refuse to run if co-partitioned topics disagree. ``worker``:
    the engine's state changelog too (not for adapters, whose app id is their own)."""
    return with_admin(settings, lambda admin: _ensure(admin, settings, worker))


def _ensure(admin: KafkaAdminClient, settings: Settings, worker: bool) -> dict[str, int]:
    existing = set(admin.list_topics())
    want = wanted(settings, worker=worker)
    replication = settings.replication or _replication(admin)
    new = [NewTopic(name, num_partitions=n, replication_factor=replication,
                    topic_configs=_configs(settings, name))
           for name, n in want.items() if name not in existing]
    if new:
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
            admin.create_topics(new)
        _wait_for_leaders(admin, [t.name for t in new])
    counts = {}
    for meta in admin.describe_topics([settings.topics.touchpoints, settings.topics.ticks]):
        counts[meta.get("name") or meta["topic"]] = len(meta["partitions"])
    if counts[settings.topics.touchpoints] != counts[settings.topics.ticks]:
        raise RuntimeError(f"{settings.topics.ticks} must have as many partitions as "
                           f"{settings.topics.touchpoints}: {counts}")
    return want


def _wait_for_leaders(admin: KafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Until every partition of the new topics has a leader: a producer that starts at once
    otherwise meets NotLeaderForPartition on a real cluster and retries. Past ``timeout``
    the producers' own retries take over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            metas = admin.describe_topics(names)
        except KafkaError:
            metas = []
        if len(metas) == len(names) and all(
                not m.get("error_code") and m["partitions"]
                and all(p.get("leader_id", -1) >= 0 for p in m["partitions"]) for m in metas):
            return
        time.sleep(0.2)


def _replication(admin: KafkaAdminClient) -> int:
    """Up to 3 replicas, never more than there are brokers."""
    try:
        brokers = len(admin.describe_cluster().get("brokers", [])) or 1
    except (KeyError, KafkaError):  # some brokers' metadata trips kafka-python's parser
        brokers = 1
    return min(3, brokers)
