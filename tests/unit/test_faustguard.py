"""The worker's guards around Faust's restore hand-over, on a real (unstarted) Faust app.

Only the consumer thread is replaced: it is what talks to the broker."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP

from omnijourney.config import load
from omnijourney.runtime.app import Worker
from omnijourney.settings import Settings
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


def test_while_a_partition_is_out_for_a_full_queue_the_fetch_waits_only_the_fetch_wait(
) -> None:
    """The copy of guard 1 does not see a partition put back as its stream's queue drains;
    asked with Faust's 1 s timeout, the thread waited for the idle partitions alone while
    the stream ran dry (bench/live.py: 300-550 ms of every second lost)."""
    app = worker().app
    consumer: Any = app.consumer
    asked: list[float] = []

    async def thread_getmany(active: set[TP], timeout: float) -> dict[TP, list[Any]]:
        asked.append(timeout)
        return {}

    consumer._thread.getmany = thread_getmany
    busy, idle = TP("touchpoints", 0), TP("omnijourney-ticks", 0)
    asyncio.run(consumer._getmany({busy, idle}, 1.0))
    consumer.on_buffer_full(busy)  # Faust: the stream's queue is full
    assert busy in consumer._buffered_partitions
    asyncio.run(consumer._getmany({idle}, 1.0))
    consumer.on_buffer_drop(busy)
    asyncio.run(consumer._getmany({busy, idle}, 1.0))
    assert asked == [1.0, Settings.fetch_wait, 1.0]


def test_the_source_partitions_resume_only_after_faust_cleared_the_stream_queues() -> None:
    """Faust's end of restore resumes the source partitions, seeks, then empties the
    stream queues: anything fetched for them before that would be lost. The guard keeps
    them paused through it and resumes them after; a newer rebalance meanwhile (Faust
    returns early) resumes nothing."""
    app = worker().app
    consumer: Any = app.consumer
    source = TP("touchpoints", 0)
    consumer._thread.assignment = lambda: {source}
    consumer.pause_partitions({source})
    fetchable: list[tuple[str, bool]] = []

    async def perform_seek() -> None:
        fetchable.append(("seek", source in consumer._get_active_partitions()))

    async def fetcher_started() -> None:
        return None

    clear = app.flow_control.resume

    def resume_flow_control() -> None:
        fetchable.append(("queues cleared", source in consumer._get_active_partitions()))
        clear()

    async def wait(coro: Any, timeout: float | None = None) -> Any:
        return await coro  # the recovery service is not running here

    consumer.perform_seek = perform_seek
    app._fetcher.maybe_start = fetcher_started
    app.tables.recovery._wait = wait
    app.flow_control.resume = resume_flow_control
    app.consumer_generation_id = 7
    asyncio.run(app.tables.recovery.on_recovery_completed(generation_id=6))  # superseded
    assert fetchable == [] and source not in consumer._get_active_partitions()
    asyncio.run(app.tables.recovery.on_recovery_completed(generation_id=7))
    assert fetchable == [("seek", False), ("queues cleared", False)]
    assert source in consumer._get_active_partitions()


def test_a_source_partition_with_nothing_committed_is_sought_to_its_beginning() -> None:
    """At a rebalance Faust drops what it fetched and trusts ``seek_to_committed`` to go
    back; aiokafka seeks only partitions committed above 0, so a partition kept before its
    first commit went on after the dropped records (the worker-chaos fault test)."""
    from aiokafka import TopicPartition

    app = worker().app
    thread: Any = app.consumer._thread
    committed = {TopicPartition("touchpoints", 0): None, TopicPartition("touchpoints", 1): 7,
                 TopicPartition("omnijourney-ticks", 2): 0,
                 TopicPartition("guard-test-customer-state-changelog", 0): None}
    rewound: list[TopicPartition] = []

    class AiokafkaConsumer:
        async def seek_to_committed(self) -> dict[TopicPartition, int | None]:
            return committed

        async def seek_to_beginning(self, *tps: TopicPartition) -> None:
            rewound.extend(tps)

    async def call_thread(fun: Any, *args: Any) -> Any:
        return await fun(*args)

    thread._consumer = AiokafkaConsumer()
    thread.call_thread = call_thread
    assert asyncio.run(app.consumer.seek_to_committed()) == committed
    # Only source partitions: Faust seeks the changelogs it restores from itself.
    assert sorted(rewound) == [TopicPartition("omnijourney-ticks", 2),
                               TopicPartition("touchpoints", 0)]


def test_fetches_and_the_stream_buffer_are_bounded_by_the_batch() -> None:
    """Issue 10's loss: a backlog fetched whole took longer to hand to the stream than
    max.poll.interval, aiokafka left the group for idleness, and Faust (polling only
    after a rebalance) and aiokafka (rejoining only after a poll) waited on each other."""
    w = worker()
    assert w.app.conf.broker_max_poll_records == w.settings.batch_size
    assert w.app.conf.stream_buffer_maxsize == 2 * w.settings.batch_size


def test_the_worker_consumer_holds_an_idle_fetch_for_the_fetch_wait_not_faust_s() -> None:
    """Guard 4: Faust asks the broker to hold a fetch that finds nothing for 1.5 s, and a
    fetch for idle partitions (ticks, deliveries) held that long kept the touchpoints
    fetched meanwhile waiting for it. The aiokafka consumer Faust builds (not started)
    carries the worker's setting instead, which its fetcher reads at start."""
    for wait, expected in ((Settings.fetch_wait, 50), (0.2, 200)):
        w = Worker(Settings(bootstrap="localhost:1", app_id="guard-test", fetch_wait=wait),
                   load(REPO / "journeys").journey_set)  # type: ignore[arg-type]
        thread: Any = w.app.consumer._thread  # type: ignore[attr-defined]

        async def fetch_wait_ms(thread: Any = thread) -> int:  # aiokafka wants a loop
            client = thread._create_worker_consumer(thread.transport)
            await client.stop()  # never started: closes its client
            return int(client._fetch_max_wait_ms)

        assert asyncio.run(fetch_wait_ms()) == expected


def test_a_rebalance_that_outlasts_any_the_group_needs_stops_the_worker(
        monkeypatch: Any) -> None:
    w = worker()
    signals: list[int] = []
    timers: list[float] = []
    monkeypatch.setattr("omnijourney.runtime.supervision.os.kill", lambda pid, sig: signals.append(sig))

    class Timer:
        def __init__(self, delay: float, *_: Any) -> None:
            timers.append(delay)

        def start(self) -> None:
            pass

    monkeypatch.setattr("omnijourney.runtime.supervision.threading.Timer", Timer)
    limit = w.settings.max_poll_interval + w.settings.session_timeout + 30
    w.app.rebalancing = True
    w.supervisor.watch_rebalance(1000.0)
    w.supervisor.watch_rebalance(1000.0 + limit - 1)
    assert signals == [] and w.alive()
    w.app.rebalancing = False  # over in time: the clock starts again next time
    w.supervisor.watch_rebalance(1000.0 + limit + 5)
    w.app.rebalancing = True
    w.supervisor.watch_rebalance(2000.0)
    w.supervisor.watch_rebalance(2000.0 + limit)
    assert len(signals) == 1 and w.stalled and not w.alive() and timers == [15.0]


def _counting_tasks(loop: asyncio.AbstractEventLoop) -> list[int]:
    made = [0]

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made[0] += 1
        return asyncio.Task(coro, loop=loop, **kw)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    return made


def test_a_record_whose_delivery_need_not_wait_is_handed_over_without_a_task() -> None:
    """Guard 5: mode's wait_first made four tasks per record (the delivery, the flow, the
    stop, the crash) though the delivery nearly always finishes at once. (Run on the
    consumer's own loop, which mode's wait_first makes its tasks on.)"""
    consumer: Any = worker().app.consumer
    delivered: list[str] = []

    async def on_message(record: str) -> str:  # like Faust's: a queue with room
        await asyncio.sleep(0) if record == "waits" else None
        delivered.append(record)
        return record

    async def main() -> tuple[int, list[Any], int, list[Any]]:
        made = _counting_tasks(asyncio.get_running_loop())
        eager = await consumer.wait_first(on_message("r1"), consumer.suspend_flow.wait())
        eager_tasks = made[0]
        waited = await consumer.wait_first(on_message("waits"), consumer.suspend_flow.wait())
        return eager_tasks, list(eager), made[0] - eager_tasks, list(waited)

    eager_tasks, eager, waited_tasks, waited = consumer.loop.run_until_complete(main())
    assert eager_tasks == 0
    assert eager[1:] == [["r1"], False] and len(eager[0]) == 1
    # One that has to wait goes through mode's wait_first, as the whole of it did before.
    assert waited_tasks == 4
    assert waited[1:] == [["waits"], False]
    assert delivered == ["r1", "waits"]


def test_a_delivery_that_waits_is_still_cut_short_by_a_suspended_flow() -> None:
    """A rebalance suspends the flow while a delivery waits for room in a full queue;
    Faust counts on wait_first returning then, and the delivery being cancelled."""
    consumer: Any = worker().app.consumer
    steps: list[str] = []

    async def on_message(room: asyncio.Event) -> None:
        steps.append("started")
        try:
            await room.wait()  # a full queue
            steps.append("delivered")
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    async def main() -> Any:
        room = asyncio.Event()
        consumer.suspend_flow.clear()
        waiting = asyncio.ensure_future(
            consumer.wait_first(on_message(room), consumer.suspend_flow.wait()))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done() and steps == ["started"]
        consumer.suspend_flow.set()
        result = await asyncio.wait_for(waiting, 5)
        await asyncio.sleep(0)
        room.set()
        await asyncio.sleep(0)
        return result

    result = consumer.loop.run_until_complete(main())
    assert steps == ["started", "cancelled"]
    assert result.results == [True] and result.stopped is False  # the flow's wait won


def test_a_delivery_that_fails_raises_whether_it_waited_or_not() -> None:
    consumer: Any = worker().app.consumer

    async def on_message(wait_first: bool) -> None:
        if wait_first:
            await asyncio.sleep(0)
        raise ValueError("undecodable")

    async def main(wait_first: bool) -> str:
        try:
            await consumer.wait_first(on_message(wait_first), consumer.suspend_flow.wait())
        except ValueError as exc:
            return str(exc)
        return "no error"

    assert consumer.loop.run_until_complete(main(False)) == "undecodable"
    assert consumer.loop.run_until_complete(main(True)) == "undecodable"


def test_the_table_manager_starts_its_tables_without_faust_s_one_second_sleep() -> None:
    """Guard 6: Faust's table manager slept 1 s before registering its tables, on every
    start; the worker's tables are all made before the app starts, so it goes on at once
    and does what it did after the sleep."""
    w = worker()
    tables: Any = w.app.tables
    assert sorted(tables) == ["customer-state", "identity"]  # made with the worker
    calls: list[str] = []

    async def update_channels() -> None:
        calls.append("changelogs registered")

    async def start_recovery() -> None:
        calls.append("recovery started")

    async def sleep(seconds: float) -> None:
        calls.append(f"slept {seconds} s")

    tables._update_channels, tables.sleep = update_channels, sleep
    tables.recovery.start = start_recovery
    asyncio.run(tables.on_start())
    assert calls == ["changelogs registered", "recovery started"]
