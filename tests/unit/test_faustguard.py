"""The worker's guards around Faust's restore hand-over, on a real (unstarted) Faust app.

Only the consumer thread is replaced: it is what talks to the broker."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP

from omnijourney.config import load
from omnijourney.runtime.app import Worker
from omnijourney.runtime.settings import Settings
from tests.unit.test_engine import REPO


def worker() -> Worker:
    js = load(REPO / "journeys").journey_set
    assert js is not None
    return Worker(Settings(bootstrap="localhost:1", app_id="guard-test"), js)


def test_the_consumer_thread_fetches_for_the_partitions_active_when_asked() -> None:
    """Faust pauses partitions (empties its set) while the thread's fetch is queued; an
    empty set would make aiokafka hand over every assigned partition's records."""
    app = worker().app
    consumer: Any = app.consumer
    live = {TP("touchpoints", 0), TP("omnijourney-ticks", 0)}
    seen: list[set[TP]] = []

    async def thread_getmany(active: set[TP], timeout: float) -> dict[TP, list[Any]]:
        await asyncio.sleep(0)
        live.clear()  # Faust pausing in the meantime
        await asyncio.sleep(0)
        seen.append(set(active))
        return {}

    consumer._thread.getmany = thread_getmany
    asyncio.run(consumer._getmany(live, 1.0))
    assert seen == [{TP("touchpoints", 0), TP("omnijourney-ticks", 0)}]


def test_the_flow_is_stopped_before_faust_resumes_the_source_partitions() -> None:
    """Faust's end of restore starts with the rebalance-complete signal, then resumes the
    source partitions and seeks; nothing may be fetched into the queues before it clears
    them. A newer generation makes Faust return early there, with the flow still held
    (the next restore resumes it)."""
    app = worker().app
    consumer: Any = app.consumer
    consumer.resume_flow()
    flowing: list[bool] = []

    async def on_complete(sender: Any, **kwargs: Any) -> None:
        flowing.append(consumer.flow_active)

    app.on_rebalance_complete.connect(on_complete)
    consumer._thread.assignment = set  # nothing assigned: no broker here
    asyncio.run(app.tables.recovery.on_recovery_completed(generation_id=-1))
    assert flowing == [False]
    assert not consumer.flow_active
