"""Three places where Faust (faust-streaming 0.15, aiokafka driver) loses source records
around a rebalance or a table restore, one where its consumer holds them up, one where it
spends CPU per record for nothing, one where every start waits a second for nothing, one
where a worker out of its group goes on writing, and the guards the worker puts in front
of them.

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
   set taken when the fetch is asked for. The copy misses one change Faust makes to the
   set meanwhile: a partition whose stream queue was full (left out, "buffered") is put
   back as the queue drains. The thread then waited for the others alone, up to its
   1 s timeout, while the stream ran dry: found with ``bench/live.py``, a drain stalled
   300 to 550 ms of every second, ended each time by the timer's ticks arriving on
   another partition. So while any partition is out for a full queue, the copy is asked
   for at most ``OMNIJOURNEY_FETCH_WAIT``, and the next one sees it back.

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

5. **Four tasks per record.** Not a loss, a cost. Faust's consumer hands each fetched
   record to the topics' queues through ``wait_first(on_message(record),
   suspend_flow.wait())``, and mode's ``wait_first`` makes a task of each, and of the
   service's stopped and crashed events, waits for the first, and cancels the other
   three: four tasks and an event-loop turn for every record, though ``on_message``
   nearly always finishes without waiting (the queue has room, the flow is on). Measured
   (``bench/live.py``): a forwarding agent drained at the same rate without them, on 68 %
   of a core instead of 95-97 %; the engine on 81-86 % instead of 96-97 %. Guard:
   ``on_message`` is run at once; only when it has to wait (a full queue, the flow
   suspended for a rebalance) does the rest of it go through mode's ``wait_first`` as
   before, so a rebalance or a stop still cuts it short.

6. **A second of every start.** Faust's table manager sleeps 1 s when it starts, before
   it registers the tables' changelogs and starts their recovery, so that a table made
   after the app started is still taken in (after that, making one raises "too late").
   The worker makes both its tables before the app starts, so that second only delays
   every start: about a fifth of a warm restart of a million customers
   (``bench/recovery.py``). Guard: the table manager registers its tables and starts
   their recovery at once, as it does after the sleep.

7. **A worker out of its group goes on writing.** Not Faust's doing: Kafka's. A worker
   stopped past its session timeout is put out of its group, and learns it only at its
   next heartbeat; meanwhile it writes behind the partitions' new owner. Guard: the
   consumer's client renews the worker's lease (``runtime/lease.py``) with each
   heartbeat and SyncGroup answered without an error, and the worker writes only while
   the lease holds.

The guards wrap the methods on the app's own objects (not Faust's classes) and check
that the methods exist, so a Faust upgrade that renames them fails at start-up instead
of silently running unguarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any, cast

import faust
import structlog
from faust.tables.manager import TableManager
from faust.transport.consumer import Consumer
from mode.services import WaitResults

from omnijourney.runtime.lease import Lease, renewing

log = structlog.get_logger("omnijourney.faustguard")


def guard_handover(app: faust.App, sources: set[str], *, fetch_wait: float = 0.05,
                   fast_delivery: bool = True, lease: Lease | None = None) -> None:
    """``sources``: the agent's topics (not the changelogs, whose reads Faust seeks itself);
    ``fetch_wait``: seconds a fetch that finds nothing may wait at the broker (guard 4);
    ``fast_delivery``: guard 5; ``lease``: the worker's, renewed by its consumer (guard 7)."""
    _fetch_for_a_copy(app, sources, fetch_wait, lease)
    if fast_delivery:
        deliver_without_tasks(app)
    _resume_sources_after_queues_clear(app)
    _start_tables_at_once(app)


def _start_tables_at_once(app: faust.App) -> None:
    """Guard 6: the table manager's start without its 1 s sleep. Only for tables made
    before the app starts, as the worker's are."""
    tables = cast(TableManager, app.tables)
    for name in ("on_start", "_update_channels"):
        _original(tables, name)
    if not hasattr(tables, "recovery"):
        raise RuntimeError("faust changed: TableManager.recovery is gone; "
                           "omnijourney.runtime.faustguard needs a look")

    async def on_start() -> None:
        if not tables.should_stop:
            await tables._update_channels()
            await tables.recovery.start()

    tables.on_start = on_start  # type: ignore[method-assign]


def _original(owner: object, name: str) -> Callable[..., Any]:
    method = getattr(owner, name, None)
    if not callable(method):
        raise RuntimeError(f"faust changed: {type(owner).__name__}.{name} is gone; "
                           "omnijourney.runtime.faustguard needs a look")
    return cast(Callable[..., Any], method)


def _fetch_for_a_copy(app: faust.App, sources: set[str], fetch_wait: float,
                      lease: Lease | None) -> None:
    new_consumer = _original(app, "_new_consumer")

    def _new_consumer() -> Any:
        consumer = new_consumer()
        getmany = _original(consumer, "_getmany")

        if not isinstance(getattr(consumer, "_buffered_partitions", None), set):
            raise RuntimeError("faust changed: Consumer._buffered_partitions is gone; "
                               "omnijourney.runtime.faustguard needs a look")

        async def _getmany(active_partitions: set[Any] | None, timeout: float) -> Any:
            frozen = None if active_partitions is None else set(active_partitions)
            if consumer._buffered_partitions:
                # Some are left out only while their stream's queue is full, and are
                # back as soon as it drains; the copy would not see that, and the
                # thread would wait its whole timeout (1 s) for the others (guard 1).
                timeout = min(timeout, fetch_wait)
            return await getmany(frozen, timeout)

        consumer._getmany = _getmany
        _seek_uncommitted_to_beginning(consumer._thread, sources)
        _wait_less_for_idle_fetches(consumer._thread, fetch_wait)
        if lease is not None:
            _renew_lease(consumer._thread, lease)
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
                 held=len(held), actives=len(recovery.active_tps),
                 standbys=len(recovery.standby_tps))
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


def _renew_lease(thread: Any, lease: Lease) -> None:
    """Guard 7: the group's answers to the consumer renew ``lease``. On the client every
    request of the consumer goes through (made with the consumer, before it starts: the
    first SyncGroup is sent while it starts)."""
    create = _original(thread, "_create_worker_consumer")

    def create_worker_consumer(transport: Any) -> Any:
        consumer = create(transport)
        client = getattr(consumer, "_client", None)
        if client is None or not callable(getattr(client, "send", None)):
            raise RuntimeError("aiokafka changed: AIOKafkaConsumer._client.send is gone; "
                               "omnijourney.runtime.faustguard needs a look")
        client.send = renewing(client.send, lease)
        return consumer

    thread._create_worker_consumer = create_worker_consumer


def deliver_without_tasks(app: faust.App) -> None:
    """Guard 5, on every consumer the app makes (bench/faust_floor.py uses it alone)."""
    new_consumer = _original(app, "_new_consumer")

    def _new_consumer() -> Any:
        consumer = new_consumer()
        _deliver_without_tasks(consumer)
        return consumer

    app._new_consumer = _new_consumer  # type: ignore[method-assign]


def _deliver_without_tasks(consumer: Any) -> None:
    """Guard 5: ``consumer.wait_first(on_message(record), suspend_flow.wait())`` runs
    ``on_message`` at once. Finished without waiting (nearly always): its result, as
    mode's ``wait_first`` would give it, and the unstarted ``suspend_flow.wait()`` is
    closed. Waiting on something: what is left of it races the flow, the stop and the
    crash in mode's ``wait_first``, exactly as the whole of it did."""
    wait_first = _original(consumer, "wait_first")
    if not hasattr(consumer, "_stopped") or not hasattr(consumer, "_crashed"):
        raise RuntimeError("mode changed: Service._stopped/_crashed are gone; "
                           "omnijourney.runtime.faustguard needs a look")

    async def wait_first_eagerly(*coros: Any, timeout: Any = None) -> Any:
        if (len(coros) != 2 or timeout is not None or not all(map(asyncio.iscoroutine, coros))
                or consumer._stopped.is_set() or consumer._crashed.is_set()):
            return await wait_first(*coros, timeout=timeout)
        first, other = coros
        try:
            pending = first.send(None)
        except StopIteration as done:
            other.close()
            return WaitResults([first], [done.value], False)
        except BaseException:
            other.close()
            raise
        return await wait_first(_Resumed(first, pending), other)

    consumer.wait_first = wait_first_eagerly


class _Resumed:
    """A coroutine that was run up to its first wait, as an awaitable that goes on from
    there: it hands the task what the coroutine waits on, then steps the coroutine
    with what the task sends or throws back."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                try:
                    sent = yield pending
                except BaseException as exc:  # cancelled by wait_first's clean-up, ...
                    pending = coro.throw(exc)
                else:
                    pending = coro.send(sent)
            except StopIteration as done:
                return done.value
