"""Which way the worker sends (runtime/produce.py): batches through aiokafka's batch
interface when the producer behind Faust's has all of it, else a record at a time.
The sends themselves run on real Kafka in tests/integration/test_produce.py."""

from __future__ import annotations

from typing import Any

from omnijourney.runtime.produce import _batching


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
