"""The worker's sends on real Kafka (runtime/produce.py): one record batch per partition
puts every record where sending it alone would (the key's partition, or the one given),
in order, with its headers, tombstones included; a batch fuller than the producer's batch
size goes out as several; the offsets it reports are those of each batch's last record."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from itertools import pairwise
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from omnijourney.runtime import produce
from omnijourney.runtime.engine import Outgoing
from tests.integration.conftest import Kafka

PARTITIONS = 6

Row = tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes]]]


async def _topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


async def _read(bootstrap: str, topic: str, n: int) -> list[Row]:
    """(partition, offset, key, value, headers) of the first n records of ``topic``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    await consumer.start()
    rows: list[Row] = []
    try:
        while len(rows) < n:
            got = await consumer.getmany(timeout_ms=10_000)
            assert got, f"only {len(rows)} of {n} records on {topic}"
            for msgs in got.values():
                rows += [(m.partition, m.offset, m.key, m.value, list(m.headers)) for m in msgs]
    finally:
        await consumer.stop()
    return rows


async def _with_producer(bootstrap: str, batch_bytes: int, work: Any) -> Any:
    """``work(producer)`` with a started Faust producer, configured as the worker's is."""
    app = faust.App(f"produce-{uuid.uuid4().hex[:6]}", broker=f"kafka://{bootstrap}",
                    producer_acks=-1, producer_max_batch_size=batch_bytes)
    producer = app.producer
    await producer.start()
    try:
        return await work(producer)
    finally:
        await producer.stop()


def _outgoing(topic: str, n: int, *, size: int = 20) -> list[Outgoing]:
    out = []
    for i in range(n):
        named = i % 4 == 0  # every fourth names its partition (as states do)
        key = (f"named-{i % 13}" if named else f"customer-{i % 37}").encode()
        value = None if i % 11 == 5 else f"{i:06d}".encode().ljust(size, b".")
        headers = (("command_id", f"cmd-{i}".encode()), ("journey", b"welcome")) if i % 3 else ()
        out.append(Outgoing(topic, key, value, (i * 7) % PARTITIONS if named else None, headers))
    return out


def _by_partition(rows: list[Row]) -> dict[int, list[tuple[bytes | None, bytes | None,
                                                         list[tuple[str, bytes]]]]]:
    got: dict[int, list[Any]] = defaultdict(list)
    for partition, _, key, value, headers in sorted(rows, key=lambda r: (r[0], r[1])):
        got[partition].append((key, value, headers))
    return dict(got)


def test_batched_sends_land_where_single_sends_land_in_order_with_their_headers(
        kafka: Kafka) -> None:
    run = uuid.uuid4().hex[:6]
    batched, single = f"produce-{run}-batched", f"produce-{run}-single"
    asyncio.run(_topics(kafka.bootstrap, batched, single))
    n = 300

    async def work(producer: Any) -> tuple[list[produce.Acked], list[produce.Acked]]:
        return (await produce.send_all(producer, _outgoing(batched, n)),
                await produce._send_each(producer, _outgoing(single, n)))

    acked, acked_single = asyncio.run(_with_producer(kafka.bootstrap, 512 * 1024, work))
    rows = asyncio.run(_read(kafka.bootstrap, batched, n))
    rows_single = asyncio.run(_read(kafka.bootstrap, single, n))
    assert len(rows) == len(rows_single) == n
    # Where each key went, sent alone (the producer's partitioner).
    placed = {key: partition for partition, _, key, _, _ in rows_single
              if key is not None and key.startswith(b"customer-")}
    expected: dict[int, list[Any]] = defaultdict(list)
    for o in _outgoing(batched, n):
        where = o.partition if o.partition is not None else placed[o.key]
        expected[where].append((o.key, o.value, list(o.headers)))
    # Batched: on the same partitions, in the order given. (Sent alone, the same records;
    # their order is not compared: a retry on a topic this new may reorder single sends.)
    assert _by_partition(rows) == dict(expected)
    assert sorted((p, repr(x)) for p, xs in _by_partition(rows_single).items()
                  for x in xs) == sorted((p, repr(x)) for p, xs in expected.items() for x in xs)
    assert len(expected) == PARTITIONS  # keys and named partitions spread them
    # One batch per partition, each reporting its last record's offset and its first's.
    assert sorted(acked) == sorted(produce.Acked(batched, p,
                                                 max(r[1] for r in rows if r[0] == p),
                                                 min(r[1] for r in rows if r[0] == p))
                                   for p in range(PARTITIONS))
    assert len(acked_single) == n
    assert {(a.partition, a.offset) for a in acked_single} == {(r[0], r[1]) for r in rows_single}
    assert all(a.first == a.offset for a in acked_single)


def test_a_batch_fuller_than_the_batch_size_goes_out_as_several_and_none_is_lost(
        kafka: Kafka) -> None:
    run = uuid.uuid4().hex[:6]
    topic = f"produce-{run}-full"
    asyncio.run(_topics(kafka.bootstrap, topic))
    n = 120
    # 2 kB a record, 4 kB batches: about two records a batch (a record larger than the
    # batch size still goes, alone).
    out = [Outgoing(topic, f"k{i}".encode(), f"{i:06d}".encode().ljust(2000 if i % 10 else
                                                                        9000, b"x"), i % 2)
           for i in range(n)]

    async def work(producer: Any) -> list[produce.Acked]:
        return await produce.send_all(producer, out)

    acked = asyncio.run(_with_producer(kafka.bootstrap, 4096, work))
    rows = asyncio.run(_read(kafka.bootstrap, topic, n))
    assert [r[3] for r in sorted(rows, key=lambda r: (r[0], r[1]))] == (
        [o.value for o in out if o.partition == 0] + [o.value for o in out if o.partition == 1])
    assert len(acked) > 2 * 20  # many batches
    for p in (0, 1):
        offsets = sorted(a.offset for a in acked if a.partition == p)
        assert offsets[-1] == max(r[1] for r in rows if r[0] == p)
        assert len(set(offsets)) == len(offsets)
        # The batches tile the partition: each starts right after the one before.
        spans = sorted((a.first, a.offset) for a in acked if a.partition == p)
        assert spans[0][0] == min(r[1] for r in rows if r[0] == p)
        assert all(nxt[0] == prev[1] + 1 for prev, nxt in pairwise(spans))


def test_a_producer_without_the_batch_interface_is_sent_to_a_record_at_a_time(
        kafka: Kafka) -> None:
    run = uuid.uuid4().hex[:6]
    topic = f"produce-{run}-each"
    asyncio.run(_topics(kafka.bootstrap, topic))
    out = _outgoing(topic, 40)
    calls: list[str] = []

    class OnlySend:
        """Faust's producer with nothing but its ``send`` (another transport's shape)."""

        def __init__(self, producer: Any) -> None:
            self.producer = producer

        async def send(self, *args: Any) -> Any:
            calls.append(args[0])
            return await self.producer.send(*args)

    async def work(producer: Any) -> list[produce.Acked]:
        return await produce.send_all(OnlySend(producer), out)

    acked = asyncio.run(_with_producer(kafka.bootstrap, 512 * 1024, work))
    assert calls == [topic] * 40
    rows = asyncio.run(_read(kafka.bootstrap, topic, 40))
    assert sorted((a.partition, a.offset) for a in acked) == sorted((r[0], r[1]) for r in rows)
    assert sorted(repr((k, v, h)) for _, _, k, v, h in rows) == sorted(
        repr((o.key, o.value, list(o.headers))) for o in out)
