"""The state table's bulk restore on real Kafka (runtime/restore.py): what it reads is what
the changelog holds last per key, a tombstone removes its key, a second read takes only
what was written since, and Faust is told how far it got."""

from __future__ import annotations

import asyncio
import uuid

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP

from omnijourney.runtime.restore import STORE_URL, BulkRestoredStore
from omnijourney.runtime.topics import changelog_topic, ensure_topics
from omnijourney.settings import Settings, Topics
from tests.integration.conftest import Kafka

PARTITIONS = 4


async def write(bootstrap: str, topic: str, rows: list[tuple[int, bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for partition, key, value in rows:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_a_bulk_read_holds_the_latest_value_of_every_key_and_resumes_where_it_stopped(
        kafka: Kafka) -> None:
    run = uuid.uuid4().hex[:6]
    settings = Settings(bootstrap=kafka.bootstrap, app_id=f"restore-{run}",
                        partitions=PARTITIONS, topics=Topics.with_prefix(f"restore-{run}-"))
    ensure_topics(settings)
    topic = changelog_topic(settings)
    first: list[tuple[int, bytes, bytes | None]] = [
        (i % PARTITIONS, f"c{i}".encode(), f"v1-{i}".encode()) for i in range(40)]
    first += [(1, b"c1", b"v2-1"), (2, b"c2", None), (2, b"c6", b"v2-6")]  # newer, a tombstone
    asyncio.run(write(kafka.bootstrap, topic, first))

    app = faust.App(settings.app_id, broker=f"kafka://{kafka.bootstrap}", store=STORE_URL)
    table = app.Table("customer-state", partitions=PARTITIONS, key_type=bytes,
                      value_type=bytes)
    assert table.changelog_topic.get_topic_name() == topic
    store = table.data
    assert isinstance(store, BulkRestoredStore)
    tps = {TP(topic, p) for p in range(PARTITIONS)}
    asyncio.run(store.bulk_read(tps))

    expected = {f"c{i}".encode(): f"v1-{i}".encode() for i in range(40)}
    expected.update({b"c1": b"v2-1", b"c6": b"v2-6"})
    del expected[b"c2"]
    assert dict(store.data) == expected
    ends = {TP(topic, 0): 9, TP(topic, 1): 10, TP(topic, 2): 11, TP(topic, 3): 9}
    assert {tp: store.persisted_offset(tp) for tp in tps} == ends
    assert store._key_partition[b"c6"] == 2  # so Faust drops it when partition 2 moves

    # Written since: only that is read (what was read before is not read again: a key
    # removed from memory stays removed unless the changelog writes it again).
    del store.data[b"c3"]
    asyncio.run(write(kafka.bootstrap, topic, [(0, b"c0", b"v3-0"), (3, b"c7", None)]))
    asyncio.run(store.bulk_read(tps))
    assert store.data[b"c0"] == b"v3-0" and b"c7" not in store.data
    assert b"c3" not in store.data
    assert store.persisted_offset(TP(topic, 0)) == 10
    assert store.persisted_offset(TP(topic, 3)) == 10

    # A partition that moves away is forgotten, so it is read whole when it comes back.
    store.offsets.pop(TP(topic, 3))
    asyncio.run(store.bulk_read({TP(topic, 3)}))
    assert store.data[b"c3"] == b"v1-3"
