"""Three places where Faust (faust-streaming 0.15, aiokafka driver) loses source records
around a rebalance or a table restore, one where its consumer holds them up, and the
guards the worker puts in front of them.

Both lose records without an error: fetched, never handed to the agent, never acked,
so never committed, yet not fetched again until the next rebalance. Seen after a restart
with a backlog: a partition's later events (or a watermark) were not evaluated. Both
are broker-independent (they are in the client), so the guards hold on any cluster.

1. **The live set handed to another thread.** Faust passes its set of active
   partitions by reference to the consumer thread, which reads it only when the fetch
   runs. When the restore ends, Faust pauses the changelog partitions, which were the
   only active ones, so the set the thread reads can be empty; aiokafka reads an empty
   set as "every assigned partition" and hands over the records it prefetched for the
   still-paused source partitions. Faust drops those (flow stopped, or partition not
   active) and seeks back only partitions with a committed offset above 0, so on a
   partition nothing was committed on yet, they are gone. Guard: fetch for a copy of the
   set taken when the fetch is asked for.

2. **Records fetched before the stream queues are cleared.** ``on_recovery_completed``
   resumes the source partitions, awaits a seek to the committed offsets, and only then
   calls ``flow_control.resume()``, which empties every stream queue (meant for records
   of partitions just revoked). The restore left the flow on, so records fetched in that
   window went into the queues and were cleared. Guard: hold Faust's resume of the
   source partitions until that method is done (queues cleared, flow on), then resume
   them; Faust's seek has put them at their committed offsets meanwhile. The flow itself
   is left alone, so standby changelog records keep coming as Faust intends.

3. **A partition with nothing committed is not sought back.** At every rebalance Faust
   drops what it had fetched but not processed (it clears the stream queues) and calls
   ``seek_to_committed``, trusting it to re-fetch from the committed offsets; aiokafka
   seeks only partitions whose committed offset is above 0. A partition the worker kept
   across a rebalance before its first commit therefore went on after the records Faust
   dropped, and the next commit passed over them: found by the worker-chaos fault test on
   a real cluster (every event of one partition produced just before a second worker
   joined was never evaluated). Guard: a source partition with no committed offset is
   sought to its beginning, where a fresh consumer with ``auto_offset_reset=earliest``
   starts; what is read twice is deduplicated by event id, as after any crash.

4. **A fetch for idle partitions holds up the busy ones.** Not a loss, a stall. aiokafka
   leaves a partition out of the next fetch while records of it are still buffered, and
   sends a broker no new fetch while one is in flight. So a fetch sent while the
   touchpoint partitions still had records buffered asks only for the idle ones (ticks,
   deliveries) and the broker holds it until one of those gets data or
   ``fetch_max_wait_ms`` passes, which Faust sets to 1.5 s; the touchpoints that came
   meanwhile wait for it. Measured (``bench/live.py --latency``): batches 0.3 to 0.6 s
   apart under a steady load the worker had time for, and p99 latency above a second.
   Guard: the worker's consumer waits ``OMNIJOURNEY_FETCH_WAIT`` (50 ms) instead.

The guards wrap the methods on the app's own objects (not Faust's classes) and check
that the methods exist, so a Faust upgrade that renames them fails at start-up instead
of silently running unguarded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import faust
import structlog
from faust.tables.manager import TableManager
from faust.transport.consumer import Consumer

log = structlog.get_logger("omnijourney.faustguard")


def guard_handover(app: faust.App, sources: set[str], *, fetch_wait: float = 0.05) -> None:
    """``sources``: the agent's topics (not the changelogs, whose reads Faust seeks itself);
    ``fetch_wait``: seconds a fetch that finds nothing may wait at the broker (guard 4)."""
    _fetch_for_a_copy(app, sources, fetch_wait)
    _resume_sources_after_queues_clear(app)


def _original(owner: object, name: str) -> Callable[..., Any]:
    method = getattr(owner, name, None)
    if not callable(method):
        raise RuntimeError(f"faust changed: {type(owner).__name__}.{name} is gone; "
                           "omnijourney.runtime.faustguard needs a look")
    return cast(Callable[..., Any], method)


def _fetch_for_a_copy(app: faust.App, sources: set[str], fetch_wait: float) -> None:
    new_consumer = _original(app, "_new_consumer")

    def _new_consumer() -> Any:
        consumer = new_consumer()
        getmany = _original(consumer, "_getmany")

        async def _getmany(active_partitions: set[Any] | None, timeout: float) -> Any:
            frozen = None if active_partitions is None else set(active_partitions)
            return await getmany(frozen, timeout)

        consumer._getmany = _getmany
        _seek_uncommitted_to_beginning(consumer._thread, sources)
        _wait_less_for_idle_fetches(consumer._thread, fetch_wait)
        return consumer

    app._new_consumer = _new_consumer  # type: ignore[method-assign]


def _resume_sources_after_queues_clear(app: faust.App) -> None:
    recovery = cast(TableManager, app.tables).recovery
    completed = _original(recovery, "on_recovery_completed")
    _original(Consumer, "resume_partitions")

    async def on_recovery_completed(generation_id: int = 0) -> None:
        consumer: Any = app.consumer
        held: set[Any] = set()
        consumer.resume_partitions = held.update  # shadows the method while Faust runs
        try:
            await completed(generation_id)
        finally:
            consumer.__dict__.pop("resume_partitions", None)
        # Not when a newer rebalance began meanwhile: it paused everything, and its own
        # restore resumes what it assigns.
        current = app.consumer_generation_id
        log.info("recovery_completed", generation=generation_id, current=current,
                 resumed=len(held) if held and current == generation_id else 0,
                 held=len(held))
        if held and current == generation_id:
            consumer.resume_partitions(held)

    recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]


def _seek_uncommitted_to_beginning(thread: Any, sources: set[str]) -> None:
    seek_to_committed = _original(thread, "seek_to_committed")
    seek_to_beginning = _original(thread, "seek_to_beginning")

    async def seek_to_committed_or_beginning() -> Any:
        committed = await seek_to_committed()
        # None (never committed) or 0: aiokafka left the fetch position where it was.
        fresh = [tp for tp, offset in committed.items() if not offset and tp.topic in sources]
        if fresh:
            await seek_to_beginning(*fresh)
        return committed

    thread.seek_to_committed = seek_to_committed_or_beginning


def _wait_less_for_idle_fetches(thread: Any, fetch_wait: float) -> None:
    create = _original(thread, "_create_worker_consumer")

    def create_worker_consumer(transport: Any) -> Any:
        client = create(transport)
        if not hasattr(client, "_fetch_max_wait_ms"):  # read by its fetcher at start()
            raise RuntimeError("aiokafka changed: AIOKafkaConsumer._fetch_max_wait_ms is "
                               "gone; omnijourney.runtime.faustguard needs a look")
        client._fetch_max_wait_ms = round(fetch_wait * 1000)
        return client

    thread._create_worker_consumer = create_worker_consumer
