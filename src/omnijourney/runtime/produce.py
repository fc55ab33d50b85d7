"""Sending a batch's records and waiting until the broker has them all.

The worker sends a batch's commands, then its states, and waits for the acks of each
before it goes on (runtime/app.py). Sent one record at a time, each record costs the
producer a coroutine, a future of its own and a callback when its batch is acked; on a
busy worker that was a tenth of each event's time. Here the records of one topic
partition go into one record batch that the worker builds itself (aiokafka's
``create_batch`` / ``send_batch``), with one future for the whole batch: the same records,
in the same order, on the same partitions, in the same produce requests.

A record without a partition goes where the producer's partitioner puts it (the key's
hash, as a record sent alone would go); with aiokafka's default partitioner, that hash
is computed here, compiled (``wire.murmur2``: aiokafka's own is pure Python, ~4 % of a
herd's tick with the call around it), the same partition by the same rule. A producer
without the batch interface (another Faust transport) is sent to one record at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka.partitioner import DefaultPartitioner

from omnijourney.runtime.engine import Outgoing
from omnijourney.wire import murmur2


class Acked(NamedTuple):
    """Where the broker put one batch: its last record's offset and its first's."""

    topic: str
    partition: int
    offset: int
    first: int


async def send_all(producer: Any, outgoing: Sequence[Outgoing]) -> list[Acked]:
    """Send ``outgoing`` through Faust's ``producer`` and wait for the broker's acks; for
    each batch sent, its partition and the offsets of its last and first records."""
    if not outgoing:
        return []
    inner = _batching(producer)
    if inner is None:
        return await _send_each(producer, outgoing)
    by_partition: dict[tuple[str, int], list[Outgoing]] = {}
    known: dict[str, list[int] | None] = {}  # topic -> its partitions, for keyed records
    for o in outgoing:
        partition = o.partition
        if partition is None:
            if o.topic in known:
                partitions = known[o.topic]
            else:
                await inner.client._wait_on_metadata(o.topic)
                partitions = known[o.topic] = _keyed_partitions(inner, o.topic)
            if partitions and o.key is not None:
                # The default partitioner's choice, with a compiled murmur2 (wire.py).
                partition = partitions[(murmur2(o.key) & 0x7FFFFFFF) % len(partitions)]
            else:
                partition = inner._partition(o.topic, None, o.key, o.value, o.key, o.value)
        group = by_partition.get((o.topic, partition))
        if group is None:
            by_partition[(o.topic, partition)] = [o]
        else:
            group.append(o)
    sent: list[tuple[str, int, int, asyncio.Future[Any]]] = []
    for (topic, partition), group in by_partition.items():
        batch, count = inner.create_batch(), 0
        for o in group:
            headers = list(o.headers)
            if batch.append(timestamp=None, key=o.key, value=o.value, headers=headers) is None:
                # Full (a batch takes at least one record, whatever its size): this one
                # goes out and the record starts the next.
                sent.append((topic, partition, count,
                             await _submit(inner, batch, topic, partition)))
                batch, count = inner.create_batch(), 0
                batch.append(timestamp=None, key=o.key, value=o.value, headers=headers)
            count += 1
        sent.append((topic, partition, count, await _submit(inner, batch, topic, partition)))
    acks = await asyncio.gather(*(future for *_, future in sent))
    return [Acked(topic, partition, meta.offset + count - 1, meta.offset)
            for (topic, partition, count, _), meta in zip(sent, acks, strict=True)]


async def _submit(inner: Any, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
    # Closed: no record sent one at a time meanwhile joins it (ours are all it holds).
    batch.close()
    future: asyncio.Future[Any] = await inner.send_batch(batch, topic, partition=partition)
    return future


def _keyed_partitions(inner: Any, topic: str) -> list[int] | None:
    """The topic's partitions as aiokafka's default partitioner indexes them (its
    ``_partition``: the metadata's set as a list), or None when the producer has another
    partitioner: then it places every record."""
    if type(getattr(inner, "_partitioner", None)) is not DefaultPartitioner:
        return None
    return list(inner._metadata.partitions_for_topic(topic) or ()) or None


def _batching(producer: Any) -> Any:
    """aiokafka's producer behind Faust's, when it has the batch interface."""
    ensure = getattr(producer, "_ensure_producer", None)
    if ensure is None:
        return None
    inner = ensure()
    needed = ("create_batch", "send_batch", "_partition")
    if all(hasattr(inner, name) for name in needed) and hasattr(
            getattr(inner, "client", None), "_wait_on_metadata"):
        return inner
    return None  # another aiokafka: a record at a time, as Faust sends them


async def _send_each(producer: Any, outgoing: Sequence[Outgoing]) -> list[Acked]:
    pending = [await producer.send(o.topic, o.key, o.value, o.partition, None,
                                   list(o.headers) or None) for o in outgoing]
    return [Acked(m.topic, m.partition, m.offset, m.offset)
            for m in await asyncio.gather(*pending)]
