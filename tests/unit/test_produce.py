"""Which way the worker sends (runtime/produce.py): batches through aiokafka's batch
interface when the producer behind Faust's has all of it, else a record at a time; a
keyed record's partition, as the default partitioner gives it, computed here with a
compiled murmur2 (Kafka's own vectors, aiokafka's and kafka-python's hash). The sends
themselves run on real Kafka in tests/integration/test_produce.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from omnijourney.runtime.engine import Outgoing
from omnijourney.runtime.produce import _batching, send_all
from omnijourney.wire import murmur2


class Client:
    async def _wait_on_metadata(self, topic: str) -> None:
        return None


class Inner:
    """An aiokafka producer's shape: the batch interface and the partitioner."""

    def __init__(self, client: Any = None, **missing: bool) -> None:
        self.client = client if client is not None else Client()
        for name in ("create_batch", "send_batch", "_partition"):
            if not missing.get(name):
                setattr(self, name, lambda *a, **k: None)


class Faustish:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def _ensure_producer(self) -> Any:
        return self.inner


def test_the_batch_interface_is_used_only_when_all_of_it_is_there() -> None:
    whole = Inner()
    assert _batching(Faustish(whole)) is whole
    for name in ("create_batch", "send_batch", "_partition"):
        assert _batching(Faustish(Inner(**{name: True}))) is None, name
    assert _batching(Faustish(Inner(client=object()))) is None  # no _wait_on_metadata
    assert _batching(object()) is None  # not Faust's aiokafka producer at all


# Kafka's own vectors for murmur2 (the Java client's UtilsTest), as signed 32-bit ints.
JAVA_MURMUR2 = {b"21": -973932308, b"foobar": -790332482,
                b"a-little-bit-long-string": -985981536,
                b"a-little-bit-longer-string": -1486304829,
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
                b"abc": 479470107}


def test_murmur2_is_kafka_s() -> None:
    for data, signed in JAVA_MURMUR2.items():
        assert murmur2(data) == signed & 0xFFFFFFFF, data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_murmur2_is_the_partitioners(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data) == kafka_python_murmur2(data) & 0xFFFFFFFF


class Batch:
    def __init__(self, records: list[tuple[Any, ...]]) -> None:
        self.records = records

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes | None,
               headers: list[Any]) -> object:
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        return None


class Sending:
    """Enough of aiokafka's producer for ``send_all``: each batch sent is kept, and
    acked at offset 0."""

    def __init__(self, partitioner: Any, partitions: set[int]) -> None:
        self.client = Client()
        self._partitioner = partitioner
        self._metadata = self
        self.partitions = partitions
        self.sent: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        self.asked: list[bytes | None] = []

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def _partition(self, topic: str, partition: Any, key: bytes | None, *_: Any) -> int:
        self.asked.append(key)
        return self._partitioner(key, list(self.partitions), list(self.partitions))

    def create_batch(self) -> Batch:
        return Batch([])

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
        self.sent.setdefault((topic, partition), []).extend(batch.records)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=0))
        return future


def _keyed(n: int) -> list[Outgoing]:
    return [Outgoing("commands.sms", f"customer-{i}".encode(), b"v") for i in range(n)]


def test_keyed_records_go_where_the_default_partitioner_puts_them_without_asking_it() -> None:
    inner = Sending(DefaultPartitioner(), set(range(7)))
    asyncio.run(send_all(Faustish(inner), _keyed(200)))
    assert inner.asked == []  # placed here, by the compiled hash
    part = DefaultPartitioner()
    for (_, partition), records in inner.sent.items():
        for key, _ in records:
            assert part(key, list(range(7)), list(range(7))) == partition
    assert sum(map(len, inner.sent.values())) == 200
    assert len(inner.sent) == 7


def test_another_partitioner_places_every_record_itself() -> None:
    class Last:
        def __call__(self, key: bytes | None, all_: list[int], available: list[int]) -> int:
            return all_[-1]

    class Sub(DefaultPartitioner):  # a subclass may place otherwise: asked too
        @classmethod
        def __call__(cls, key: Any, all_: list[int], available: list[int]) -> int:
            return all_[0]

    for partitioner, where in ((Last(), 6), (Sub(), 0)):
        inner = Sending(partitioner, set(range(7)))
        asyncio.run(send_all(Faustish(inner), _keyed(20)))
        assert len(inner.asked) == 20
        assert list(inner.sent) == [("commands.sms", where)]
    # A record without a key (none the engine sends): the partitioner's too.
    inner = Sending(DefaultPartitioner(), set(range(7)))
    asyncio.run(send_all(Faustish(inner), [Outgoing("dlq", None, b"v")]))
    assert inner.asked == [None]
