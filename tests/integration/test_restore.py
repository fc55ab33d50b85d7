"""The state table's bulk restore on real Kafka (runtime/restore.py): what it reads is what
the changelog holds last per key, a tombstone removes its key, a second read takes only
what was written since, and Faust is told how far it got."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import faust
import structlog
import structlog.testing
from aiokafka import AIOKafkaProducer
from faust.types import TP

from omnijourney.runtime import snapshots
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


async def write_acked(bootstrap: str, topic: str, rows: list[tuple[int, bytes, bytes | None]]
                      ) -> list[tuple[str, int, int, int]]:
    """Write as the worker does, and say where each record landed (as ``Acked``: the
    last offset of what was sent, then the first; one record each here)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        metas = [await producer.send_and_wait(topic, value, key=key, partition=partition)
                 for partition, key, value in rows]
    finally:
        await producer.stop()
    return [(m.topic, m.partition, m.offset, m.offset) for m in metas]


def store_at(settings: Settings, datadir: Path) -> BulkRestoredStore:
    """The state table's store of a new Faust app (a new start of the worker) whose data
    directory is ``datadir``."""
    app = faust.App(settings.app_id, broker=f"kafka://{settings.bootstrap}", store=STORE_URL,
                    datadir=str(datadir))
    table = app.Table("customer-state", partitions=PARTITIONS, key_type=bytes,
                      value_type=bytes)
    store = table.data
    assert isinstance(store, BulkRestoredStore)
    return store


def read_logged(store: BulkRestoredStore, tps: set[TP]) -> list[dict[str, object]]:
    with structlog.testing.capture_logs() as logs:
        asyncio.run(store.bulk_read(tps))
    return logs


def test_a_snapshot_saved_at_a_stop_is_loaded_and_only_what_was_written_since_is_read(
        kafka: Kafka, tmp_path: Path) -> None:
    """Issue 13, warm restart: a graceful stop saves what the store holds, the worker's
    own writes included; the next start loads it and reads only the records written
    after it, a tombstone among them (an erasure by the partition's owner meanwhile).
    It ends up holding exactly what a cold read of the whole changelog holds. A file it
    cannot trust (too old, damaged) is passed over for that whole read."""
    run = uuid.uuid4().hex[:6]
    settings = Settings(bootstrap=kafka.bootstrap, app_id=f"snap-{run}",
                        partitions=PARTITIONS, topics=Topics.with_prefix(f"snap-{run}-"))
    ensure_topics(settings)
    topic = changelog_topic(settings)
    tps = {TP(topic, p) for p in range(PARTITIONS)}
    asyncio.run(write(kafka.bootstrap, topic, [(i % PARTITIONS, f"c{i}".encode(),
                                                f"v1-{i}".encode()) for i in range(40)]))
    first = store_at(settings, tmp_path / "worker")
    asyncio.run(first.bulk_read(tps))

    # The worker's own writes: put in memory once acked, and reflected.
    own: list[tuple[int, bytes, bytes | None]] = [(1, b"c1", b"v2-1"), (2, b"c2", None),
                                                  (3, b"new", b"v2-new")]
    acked = asyncio.run(write_acked(kafka.bootstrap, topic, own))
    for _, key, value in own:
        if value is None:
            first.data.pop(key, None)
        else:
            first.data[key] = value
    first.reflect([(key, p, value is None) for p, key, value in own], acked)
    assert first.persisted_offset(TP(topic, 3)) == 10  # 10 records then its own write
    stray = snapshots.path_of(first.snapshot_folder, 7)  # an earlier stop's, partition 7
    snapshots.write(first.snapshot_folder, [(b"old", b"state")], topic=topic, partition=7,
                    offset=3, saved_at=0.0)
    with structlog.testing.capture_logs() as logs:
        asyncio.run(first.save_snapshots())
    assert [(e["event"], e["entries"]) for e in logs] == [("snapshot_saved", 40)]
    assert not stray.exists()  # only what this stop saved is on disk
    assert sorted(p.name for p in first.snapshot_folder.iterdir()) == [
        "0.snap", "1.snap", "2.snap", "3.snap"]

    # While it is stopped, the partitions' owner erases c5, changes c6, adds c99.
    asyncio.run(write(kafka.bootstrap, topic, [(1, b"c5", None), (2, b"c6", b"v3-6"),
                                               (3, b"c99", b"v3-99")]))
    cold = store_at(settings, tmp_path / "elsewhere")
    asyncio.run(cold.bulk_read(tps))
    assert b"c5" not in cold.data and b"c2" not in cold.data
    assert (cold.data[b"c1"], cold.data[b"c6"], cold.data[b"new"]) == (b"v2-1", b"v3-6",
                                                                       b"v2-new")

    warm = store_at(settings, tmp_path / "worker")
    logs = read_logged(warm, tps)
    assert dict(warm.data) == dict(cold.data)
    assert warm._key_partition == cold._key_partition
    assert {tp: warm.persisted_offset(tp) for tp in tps} == {
        tp: cold.persisted_offset(tp) for tp in tps}
    loaded = next(e for e in logs if e["event"] == "snapshots_loaded")
    assert (loaded["entries"], loaded["partitions"]) == (40, [0, 1, 2, 3])
    read = next(e for e in logs if e["event"] == "changelog_bulk_read")
    assert read["records"] == 3  # only what was written since
    # Read once, then removed: an erased customer's state stays on disk no longer.
    assert list(first.snapshot_folder.iterdir()) == []

    # Too old: a tombstone written since might be compacted away. Read whole instead.
    asyncio.run(first.save_snapshots())  # the same files again
    old = store_at(settings, tmp_path / "worker")
    old.snapshot_max_age = 0.0
    logs = read_logged(old, tps)
    assert dict(old.data) == dict(cold.data)
    assert {e["event"] for e in logs} >= {"snapshot_refused"}
    assert next(e for e in logs if e["event"] == "changelog_bulk_read")["records"] == 46

    # Damaged: that partition is read whole, the others from their files.
    asyncio.run(first.save_snapshots())
    path = first.snapshot_folder / "2.snap"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x40
    path.write_bytes(bytes(raw))
    damaged = store_at(settings, tmp_path / "worker")
    logs = read_logged(damaged, tps)
    assert dict(damaged.data) == dict(cold.data)
    refused = [e for e in logs if e["event"] == "snapshot_refused"]
    assert [(e["partition"], e["reason"]) for e in refused] == [(2, "checksum mismatch")]
    # partition 2 whole (10 + c2's tombstone + c6) and c5, c99 on 1 and 3
    assert next(e for e in logs if e["event"] == "changelog_bulk_read")["records"] == 14
