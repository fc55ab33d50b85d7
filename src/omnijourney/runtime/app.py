"""The Faust app: topics, the state table, the agent and the timer. Wiring only.

The agent loads state, lets the Engine call the core, sends the commands and waits for
the broker's acks, then writes the new states to the changelog and waits for those acks
too, before the batch's events can be acked and their offsets committed. A crash can
therefore repeat a command (same command_id; adapters drop it) but never lose one, and
never lose a state whose events are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import faust
import structlog
from faust.types import TP, EventT, StreamT

from omnijourney.codecs import (
    encode_watermark,
    tick_record,
    tick_records,
    watermark_key,
)
from omnijourney.core import CustomerState, JourneySet
from omnijourney.core.redaction import brief
from omnijourney.ops.metrics import (
    Heartbeat,
    ProgressWatch,
    WorkerMetrics,
    observe_all,
    start_ops,
)
from omnijourney.runtime.batching import take_batches
from omnijourney.runtime.decisions import log_batch
from omnijourney.runtime.engine import BatchResult, Engine, Outgoing, Record, dead_letter
from omnijourney.runtime.faustapp import faust_app
from omnijourney.runtime.faustguard import guard_handover
from omnijourney.runtime.lease import Fenced, Lease
from omnijourney.runtime.lease import window as lease_window
from omnijourney.runtime.produce import Acked, send_all
from omnijourney.runtime.restore import BulkRestoredStore
from omnijourney.runtime.states import StateStore
from omnijourney.runtime.supervision import (
    EXIT_FAILED,
    Supervisor,
    cluster_error,
)
from omnijourney.runtime.timers import Clock, DueIndex
from omnijourney.runtime.topics import changelog_topic, identity_changelog_topic
from omnijourney.settings import Settings

log = structlog.get_logger("omnijourney.worker")
Handler = Callable[[Sequence[EventT[Any]]], Awaitable[None]]

# The cyclic garbage collector's thresholds for the worker's process (Python's are 700,
# 10, 10). What a batch makes (states, contexts, commands, trace) holds no cycles and is
# freed by reference counting as it goes, but each young collection still walks every
# object made since the one before, and with decoded states piling up in the cache the
# survivors make the older collections ever longer. Collecting the young one every
# 50,000 new objects instead of 700: a tick on a state read back from the table,
# all told, 173 -> 116 us (``python bench/ticks.py``: 20,000 customers, best of 5).
# Every 200,000, and the middle one every 50 young ones (session 12, once a tick made
# fewer objects): the herd's worker 100-106 -> 91-94 us of CPU per tick (three rounds
# alternating, ``bench/herd.py --herd-only``); latency p99 at half load 45 -> 40 ms.
GC_THRESHOLDS = (200_000, 50, 100)


# The timer's in-process ticks: batches per turn of the state table (``tick_turn``); the
# agent's batches wait at most this many.
TICK_TURN_BATCHES = 4
# Warming ahead (``Worker.warm``): customers looked at (and at most decoded) per turn of
# the state table (a few ms, so a batch waits at most that), and how soon a walk cut
# short is tried again.
WARM_CHUNK = 200
WARM_IDLE = 1.0


def tune_collector() -> None:
    """Set GC_THRESHOLDS for this process (the worker's command calls it at start)."""
    gc.set_threshold(*GC_THRESHOLDS)


class Worker:
    """Holds the Faust app and the little state the wiring needs."""

    def __init__(self, settings: Settings, journeys: JourneySet) -> None:
        self.settings = settings
        # The table is made with the app below; its data when first read, after that.
        self.states = StateStore(lambda: self.table.data)
        self.clock = Clock(settings.clock, stored=self.states.watermark)
        self.engine = Engine(journeys, settings.topics, self.clock,
                             settings.extra_event_types)
        self.index = DueIndex()
        self.take = take_batches  # how the agents batch their streams
        self.indexed: frozenset[int] | None = None
        # One batch at a time on the state table: the agent's, or the timer's ticks
        # handed to the engine in-process (drive_waits).
        self.turn = asyncio.Lock()
        self.identity_turn = asyncio.Lock()  # the same for the identity table's batches
        # The last offset handled on each source partition since the last assignment.
        self.read_to: dict[tuple[str, int], int] = {}
        self.handing: asyncio.Future[None] | None = None  # the timer's in-process ticks
        self.warming: asyncio.Future[None] | None = None  # states decoded ahead (warm)
        self.warm_after = 0.0  # monotonic time of the next look for states to warm
        self.metrics = WorkerMetrics()
        # Alive while the timer runs (the event loop is not stuck) or a restore progresses.
        self.alive = Heartbeat(within=max(30.0, 10 * settings.tick_interval))
        self.restore = ProgressWatch(within=settings.recovery_stall)
        self.stalled = False
        self.failed = False
        self.diagnostics = False
        self.app = faust_app(settings)
        # Writes only while the group is known to hold this worker (runtime/lease.py).
        self.lease = Lease(lease_window(settings.session_timeout, settings.max_poll_interval))
        self.supervisor = Supervisor(self)
        t = settings.topics
        # The agent's sources, all four co-partitioned and keyed by customer_id (a
        # partition is caught up when each of them is: ``caught_up``).
        self.sources = (t.touchpoints, t.ticks, t.deliveries, t.identified)
        self.source = self.app.topic(*self.sources, key_serializer="raw",
                                     value_serializer="raw")
        self.table = self.app.Table("customer-state", partitions=settings.partitions,
                                    key_type=bytes, value_type=bytes)
        self.changelog = self._changelog_of(self.table, changelog_topic(settings))
        # The resolver: events hop through their identifiers' partitions (keyed by
        # identifier key); the identity table says which customer holds each.
        self.identity_source = self.app.topic(t.identity, key_serializer="raw",
                                              value_serializer="raw")
        self.identity = self.app.Table("identity", partitions=settings.partitions,
                                       key_type=bytes, value_type=bytes)
        self.identity_changelog = self._changelog_of(self.identity,
                                                     identity_changelog_topic(settings))
        self.app.agent(self.source, name="evaluate")(self.run_stream)
        self.app.agent(self.identity_source, name="resolve")(self.run_identity_stream)
        self.app.timer(interval=settings.tick_interval)(self.drive_waits)
        self.app.on_partitions_assigned.connect(self.on_assigned)
        self.app.on_partitions_revoked.connect(self.on_revoked)
        guard_handover(self.app, {*self.sources, t.identity}, fetch_wait=settings.fetch_wait,
                       fast_delivery=settings.fast_delivery, lease=self.lease)

    @staticmethod
    def _changelog_of(table: Any, created: str) -> str:
        name = str(table.changelog_topic.get_topic_name())
        if name != created:  # ensure_topics created that one
            raise RuntimeError(f"Faust names the changelog {name!r}, not {created!r}")
        return name

    # -------------------------------------------------------------------- ops
    def ready(self) -> bool:
        """Serving: recovered, not rebalancing, due index built for what we own."""
        return (not (self.failed or self.stalled) and self.indexed is not None
                and not self.app.in_recovery
                and not self.app.rebalancing)

    async def on_assigned(self, sender: Any, /, *args: Any, signal: Any,
                          **kwargs: Any) -> None:
        self.metrics.rebalances.inc()
        # Partitions moved: their event-clock times are read again, from the table once
        # it is restored (what the last owner wrote), before anything reads the clock.
        self.clock.forget()
        self.read_to.clear()
        # The due index is built again once the tables are restored (rebuild_index),
        # even for the same partitions: in between, another worker may have owned one
        # and written to it. The decoded states go now: the agent reads records as soon
        # as the restore completes, before the timer's next pass rebuilds the index, and
        # a state decoded before the worker last lost a partition (two rebalances with
        # no timer pass between) would otherwise be taken over the newer one restored.
        self.indexed = None
        self.states.cache.clear()

    async def on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Faust waits for the agents' batches in flight before a rebalance goes on; this
        waits for what the timer writes beside them (a batch of in-process ticks, a
        rewrite of states or identity claims: ``reassert``), so it is on the changelog
        before another worker may take the partition and read it."""
        async with self.turn:
            pass
        async with self.identity_turn:
            pass

    def start_ops(self, port: int | None) -> None:
        """/metrics, /healthz, /readyz on ``port`` and a consumer-lag probe."""
        start_ops(self.metrics, self.settings, self.settings.app_id, port, healthy=self.alive,
                  ready=self.ready, what="worker", host=self.settings.metrics_host,
                  token=self.settings.metrics_token)

    # ------------------------------------------------------------------ state
    async def store(self, states: dict[str, tuple[int, CustomerState, bytes]],
                    erased: dict[str, int] | None = None,
                    watermarks: dict[int, datetime] | None = None) -> None:
        """Write new states to the changelog, wait for the acks, then serve them.

        Each goes to the partition the customer's events arrive on (co-partitioning), even
        when a batch mixes partitions. Not through ``table[key] = v`` / ``send_changelog``:
        those queue in Faust's producer buffer, whose flush before an offset commit gives
        up after 0.1 s without a send (faust ``ProducerBuffer.flush_atmost``), so on a busy
        machine offsets could be committed ahead of the state, and a crash then would lose
        it. Awaiting the acks here makes the state durable before its events are acked.
        The partitions' event-clock times go with them, for the same reason.
        """
        written = self.state_records(states, erased, watermarks)
        self.stored(written, await self.send_all(written.outgoing))

    def state_records(self, states: dict[str, tuple[int, CustomerState, bytes]],
                      erased: dict[str, int] | None = None,
                      watermarks: dict[int, datetime] | None = None) -> StateWrite:
        """The changelog records of a batch's states (``store``), to send."""
        marks = {p: encode_watermark(p, at) for p, at in (watermarks or {}).items()}
        erased = erased or {}
        fences = self._fences(self.table)
        outgoing = ([Outgoing(self.changelog, cid.encode(), doc, partition,
                              fences.get(partition, ()))
                     for cid, (partition, _, doc) in states.items()]
                    + [Outgoing(self.changelog, cid.encode(), None, partition,
                                fences.get(partition, ()))
                       for cid, partition in erased.items()]
                    + [Outgoing(self.changelog, watermark_key(partition), doc, partition,
                                fences.get(partition, ()))
                       for partition, doc in marks.items()])
        return StateWrite(outgoing, states, erased, marks)

    def stored(self, written: StateWrite, acked: list[Acked]) -> None:
        """The changelog acked ``written``: its states are served (cache, table, index)."""
        for partition, doc in written.marks.items():
            self.states.put_watermark(partition, doc)
        for cid, (partition, st, doc) in written.states.items():
            self.states.put(cid, st, doc)
            self.index.update(cid, partition, st.next_due())
        for cid, partition in written.erased.items():
            # Erased: a tombstone on the changelog (compaction removes the customer's
            # earlier states), and nothing left in memory.
            self.states.drop(cid)
            self.index.update(cid, partition, None)
        self._reflect(self.table, written.outgoing, acked)

    # ----------------------------------------------------------------- stream
    async def run_stream(self, stream: StreamT[Any]) -> None:
        await self._run(stream, self.handle, self.turn)

    async def run_identity_stream(self, stream: StreamT[Any]) -> None:
        await self._run(stream, self.handle_identity, self.identity_turn)

    async def _run(self, stream: StreamT[Any], handle: Handler,
                   turn: asyncio.Lock | None = None) -> None:
        # Batches keep each event (and so its partition); one is acked only once it is
        # handled (runtime/batching.py), so a batch cut short is read again.
        batches = self.take(stream, self.settings.batch_size, self.settings.batch_window)
        try:
            async for events in batches:
                async with turn or contextlib.nullcontext():
                    try:
                        await self.handle_safely(events, handle)
                    except Fenced:
                        # Given up, not acked (batching.py): read again from the
                        # committed offsets once the rebalance is over.
                        log.warning("batch_fenced", records=len(events))
                        events.clear()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail(exc)
            raise

    async def handle_safely(self, events: Sequence[EventT[Any]],
                            handle: Handler | None = None) -> None:
        """``handle``, and when it raises: a Kafka error is retried for a while and then
        fails the worker (the batch is not acked, so a restart repeats it); anything else
        is one record's doing, found by handling each alone, and that record is
        dead-lettered. So a record that gets
        past the Engine's own guards still cannot stop the agent, now or after a restart.
        """
        handle = handle or self.handle
        error = await self._handle_riding_out_the_cluster(events, handle)
        if error is None:
            return
        log.error("batch_failed", records=len(events), error=brief(error))
        for e in events:
            try:
                await handle([e])
            except Fenced:
                raise
            except Exception as exc:
                if cluster_error(exc):
                    raise
                await self.dead_letter(e, exc)

    async def _handle_riding_out_the_cluster(self, events: Sequence[EventT[Any]],
                                             handle: Handler) -> Exception | None:
        """``handle``, again (with backoff) while the cluster's errors last, up to
        ``settings.cluster_patience`` seconds: a broker restarting makes sends fail for a while.
        Safe to repeat: nothing of a failed attempt was stored (states are written only
        once their commands are acked) and commands repeat with the same ids. Returns the
        error of a record (for the caller to isolate), None when handled; a cluster error
        that outlasts the patience is raised."""
        waited, delay = 0.0, 0.5
        while True:
            try:
                await handle(events)
                return None
            except Fenced:
                raise
            except Exception as exc:
                if not cluster_error(exc):
                    return exc
                if waited >= self.settings.cluster_patience:
                    raise
                log.warning("batch_retry", error=brief(exc), waited=round(waited, 1))
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 8.0)

    async def dead_letter(self, event: EventT[Any], exc: Exception) -> None:
        m = event.message
        rec = Record(m.topic, m.partition, m.offset, m.key, m.value or b"")
        reason = f"failed the engine: {brief(exc)}"
        await self.send_all([dead_letter(self.settings.topics, rec, reason,
                                         self.engine.wall())])
        self.metrics.observe(inputs=(), dead=["internal_error"], trace=(),
                             evaluation_seconds=(), batch_seconds=0.0)
        log.error("dead_letter", kind="internal_error", reason=reason, topic=m.topic,
                  partition=m.partition, offset=m.offset)

    def fail(self, exc: BaseException) -> None:
        """The agent is gone: unhealthy and not ready at once, then exit with EXIT_FAILED
        for the supervisor. Not a graceful stop: that waits for the failed batch to be
        acked (Faust's ``wait_empty``), and acking it would commit records never handled.
        Nothing is lost by exiting: those offsets stay uncommitted, and the group hands
        the partitions on when the session times out."""
        if self.failed:
            return
        self.failed = True
        self.alive.fail(brief(exc))
        log.error("agent_failed", error=brief(exc), exit_status=EXIT_FAILED)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(EXIT_FAILED)

    async def handle(self, events: Sequence[EventT[Any]]) -> None:
        started = time.perf_counter()
        records = [Record(e.message.topic, e.message.partition, e.message.offset,
                          e.message.key, e.message.value or b"") for e in events]
        result = self.engine.process(records, self.states.load)
        processed = time.perf_counter()
        await self.send_all(result.commands + result.other)
        sent = time.perf_counter()
        await self.store(result.states, result.erased, result.watermarks)
        self.handled(records, result, started, processed, sent)

    def handled(self, records: Sequence[Record], result: BatchResult, started: float,
                processed: float, sent: float) -> None:
        """A batch written (commands acked, then states): its ticked customers may tick
        again, its records count as handled, then its metrics and decision lines.
        ``started``, ``processed``, ``sent``: when its processing began and ended and when
        its commands were acked."""
        for cid in result.ticked:
            self.index.release(cid)  # its next due time (if any) may tick again
        read_to = self.read_to
        for r in records:
            if r.offset > read_to.get((r.topic, r.partition), -1):
                read_to[(r.topic, r.partition)] = r.offset
        done = time.perf_counter()
        elapsed = done - started
        self.metrics.observe(inputs=result.inputs, dead=result.dead_kinds, trace=result.trace,
                             evaluation_seconds=result.eval_seconds, batch_seconds=elapsed)
        # Where a batch's time goes: the engine (decode, evaluate, encode), the commands'
        # send until acked, the states' changelog write until acked.
        (log.info if self.settings.batch_log else log.debug)(
            "batch", records=len(records), evaluations=result.evaluations,
            commands=len(result.commands), dead=len(result.dead_reasons),
            ms=round(elapsed * 1000, 2), process_ms=round((processed - started) * 1000, 2),
            send_ms=round((sent - processed) * 1000, 2),
            store_ms=round((done - sent) * 1000, 2))
        log_batch(result)

    async def handle_identity(self, events: Sequence[EventT[Any]]) -> None:
        """One batch of resolution hops: the next hops and the identified events are sent
        and acked, then the identifiers claimed are written to the identity changelog and
        acked, before the batch's offsets can commit. A replay after a crash visits the
        same identifiers with the same table and decides the same."""
        started = time.perf_counter()
        records = [Record(e.message.topic, e.message.partition, e.message.offset,
                          e.message.key, e.message.value or b"") for e in events]
        result = self.engine.resolve(records, self._holder)
        await self.send_all(result.other)
        fences = self._fences(self.identity)
        claims = [Outgoing(self.identity_changelog, key.encode(), cid.encode(), partition,
                           fences.get(partition, ()))
                  for key, (partition, cid) in result.claims.items()]
        acked = await self.send_all(claims)
        data = self.identity.data
        for o in claims:
            data[o.key] = o.value
        self._reflect(self.identity, claims, acked)
        elapsed = time.perf_counter() - started
        self.metrics.hops.inc(len(records))
        self.metrics.observe(inputs=(), dead=result.dead_kinds, trace=(), evaluation_seconds=(),
                             batch_seconds=elapsed)
        log.debug("resolve_batch", records=len(records), claims=len(result.claims),
                  dead=len(result.dead_reasons), ms=round(elapsed * 1000, 2))
        for reason in result.dead_reasons:
            log.warning("dead_letter", reason=reason)

    def _holder(self, key: str) -> str | None:
        raw = self.identity.data.get(key.encode())
        return raw.decode() if raw is not None else None

    async def send_all(self, outgoing: list[Outgoing]) -> list[Acked]:
        """``produce``, once the lease holds (``hold_lease``): every write goes here."""
        if not self.lease.held(time.monotonic()):
            await self.hold_lease()
        return await self.produce(outgoing)

    async def produce(self, outgoing: list[Outgoing]) -> list[Acked]:
        """Send and wait until the broker has them all (runtime/produce.py): one record
        batch per partition; where each batch's last record went."""
        return await send_all(self.app.producer, outgoing)

    async def hold_lease(self, poll: float = 0.02) -> None:
        """Until a heartbeat renews the lease; ``Fenced`` if a rebalance begins first (or
        went by), as it does when the group put this worker out (runtime/lease.py)."""
        generation = self.app.consumer_generation_id
        started = time.monotonic()
        told = started
        while not self.lease.held(now := time.monotonic()):
            if self.app.rebalancing or self.app.consumer_generation_id != generation:
                self.metrics.lease_waits.labels("fenced").inc()
                log.warning("lease_fenced", generation=generation,
                            waited=round(now - started, 2))
                raise Fenced("the lease ran out and a rebalance began")
            if now - told >= 10.0:
                told = now
                log.warning("lease_waiting", generation=generation,
                            waited=round(now - started, 1))
            await asyncio.sleep(poll)
        self.metrics.lease_waits.labels("renewed").inc()
        log.info("lease_renewed", generation=generation,
                 waited=round(time.monotonic() - started, 2))

    @staticmethod
    def _fences(table: Any) -> dict[int, tuple[tuple[str, bytes], ...]]:
        """Per partition, the fence headers of this worker's writes to a table's changelog
        (runtime/restore.py, "The fence")."""
        store = table.data
        return store.fences if isinstance(store, BulkRestoredStore) else {}

    @staticmethod
    def _reflect(table: Any, written: list[Outgoing], acked: list[Acked] | None) -> None:
        """Tell a bulk-restored table what was just written to its data after its
        changelog acked it: each key's partition and the offsets (runtime/restore.py)."""
        if not acked:
            return
        store = table.data
        if not isinstance(store, BulkRestoredStore):
            return
        store.reflect([(o.key, o.partition, o.value is None) for o in written
                       if o.key is not None and o.partition is not None],
                      acked)

    # ------------------------------------------------------------------ timer
    def owned(self) -> frozenset[int]:
        return frozenset(tp.partition for tp in self.app.assignor.assigned_actives()
                         if tp.topic == self.settings.topics.touchpoints)

    def rebuild_index(self, owned: frozenset[int]) -> None:
        """After an assignment or recovery: due times of the customers we now own."""
        started = time.perf_counter()
        self.index = DueIndex.of(self.states.waiting(owned))
        self.indexed = owned
        # What is loaded by now (modules, Faust, the journeys, the restored tables) lives
        # as long as the worker: out of the collector's sight, a full collection no longer
        # walks it. Measured: 150 to 220 ms pauses every ~7 s under load before, each one
        # a batch's events late (bench/live.py --latency).
        gc.freeze()
        log.info("due_index_rebuilt", partitions=sorted(owned), waiting=len(self.index.entries),
                 seconds=round(time.perf_counter() - started, 2))

    async def reassert(self) -> None:
        """Write again, with this worker's fence, the records whose latest changelog
        record is a fenced-out writer's (its restore skipped them, runtime/restore.py):
        the changelog is compacted, and compaction keeps a key's latest record. For the
        state table on its turn, for the identity table on the resolver's, so no batch's
        write of the same keys is in flight."""
        await self._reassert(self.table, self.changelog, self.turn)
        await self._reassert(self.identity, self.identity_changelog, self.identity_turn)

    async def _reassert(self, table: Any, changelog: str, turn: asyncio.Lock) -> None:
        store = table.data
        if not isinstance(store, BulkRestoredStore) or not store.overwritten:
            return
        async with turn:
            keys = store.take_overwritten()
            if not keys:
                return
            held = store.data
            outgoing = [Outgoing(changelog, key, held.get(key), partition,
                                 store.fences.get(partition, ()))
                        for partition, ks in sorted(keys.items()) for key in sorted(ks)]
            try:
                acked = await self.send_all(outgoing)
            except Exception as exc:
                store.put_back(changelog, keys)  # the next pass tries again
                if not isinstance(exc, Fenced):
                    log.warning("changelog_reassert_failed", changelog=changelog,
                                error=brief(exc))
                return
            self._reflect(table, outgoing, acked)
            log.warning("changelog_reasserted", changelog=changelog, records=len(outgoing),
                        partitions=sorted(keys))

    def services(self) -> list[faust.Service]:
        """Services to run beside the app from the start: Faust starts its own timers
        only after the first table restore, too late to watch that one."""
        return [self.supervisor]

    async def drive_waits(self) -> None:
        self.alive.beat()
        if not self.diagnostics:
            # After mode's worker set its own handlers (SIGUSR2 would start pdb, which a
            # daemon cannot use).
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, self.supervisor.dump_flow)
            self.diagnostics = True
        if self.app.in_recovery or self.app.rebalancing:
            return
        owned = self.owned()
        if owned != self.indexed:
            self.rebuild_index(owned)
            self.metrics.assigned.set(len(owned))
        await self.reassert()
        self.metrics.due.set(len(self.index.entries))
        here = {p for p in owned if self.caught_up(p)}
        # A partition with records this worker has not handled yet: its ticks go on the
        # ticks topic, to be read after those records.
        await self.send_ticks(self.index.due(self.clock, owned - here))
        # The others' ticks are handed to the engine in-process, by a task of their own
        # (a herd takes longer than a timer's interval).
        if here and self._idle(self.handing):
            self.handing = self.app.add_future(self.hand_ticks())
        if (self.settings.warm_ahead > 0 and self._idle(self.warming)
                and time.monotonic() >= self.warm_after):
            self.warming = self.app.add_future(self.warm())

    @staticmethod
    def _idle(task: asyncio.Future[None] | None) -> bool:
        return task is None or task.done()

    async def warm(self) -> None:
        """Decode ahead, into the state cache (``StateStore.warm``), the states of the
        customers due within ``settings.warm_ahead`` seconds, earliest first, while
        nothing is due: a herd due in one second then finds its states read, a fifth of
        each tick's cost paid before its time. A walk of the due index (``DueIndex.walk``)
        of ``WARM_CHUNK`` customers per turn of the state table, so the agent's batches
        go between; it stops when a tick is due, a rebalance begins, the index is built
        again or the cache is half full (the rest is for the states written meanwhile).
        A whole walk is made every half ``warm_ahead`` (so a customer is warmed at least
        that long before its time), as it passes over those already warmed too; one cut
        short is tried again a second later. Only an optimisation: a state not warmed is
        decoded at its tick, as before."""
        store = self.states
        owned = self.indexed
        self.warm_after = time.monotonic() + WARM_IDLE
        if owned is None or self.index.any_due(self.clock, owned):
            return  # ticks first; looked at again in a second
        ahead = self.settings.warm_ahead
        walk = self.index.walk(self.clock, timedelta(seconds=ahead), sorted(owned))
        cap = store.cache_size // 2
        started, warmed = time.perf_counter(), 0
        try:
            while not walk.done and len(store.cache) < cap:
                async with self.turn:
                    if (self.indexed != owned or self.app.rebalancing or self.app.in_recovery
                            or self.index.any_due(self.clock, owned)):
                        break  # ticks first: they decode their own states
                    warmed += store.warm(walk.take(WARM_CHUNK), cap)
                await asyncio.sleep(0)
            else:
                self.warm_after = time.monotonic() + max(WARM_IDLE, ahead / 2)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an optimisation only: the ticks decode as before
            log.warning("warm_failed", error=brief(exc))
        if warmed:
            # Not frozen out of the collector's sight as the restored table is
            # (rebuild_index): that is once an assignment; freezing after each walk
            # would keep any garbage cycle made meanwhile for good.
            self.metrics.warmed.inc(warmed)
            log.info("states_warmed", states=warmed, cached=len(store.cache),
                     seconds=round(time.perf_counter() - started, 2))

    async def hand_ticks(self) -> None:
        """Each due customer of a caught-up partition (``caught_up``) gets its tick
        straight from the due index: a few batches per turn of the state table
        (``tick_turn``), in turn with the agent's batches, so records that came in
        meanwhile are handled between two turns. That saves a tick's way through Kafka
        and Faust's stream, a third of a herd's cost. Until nothing is due there, a
        rebalance begins or the index is out of date."""
        try:
            while await self.tick_turn():
                self.alive.beat()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.fail(exc)
            raise

    def due_ticks(self) -> list[Handed] | None:
        """The next batch of due customers' ticks (each marked pending in the index), or
        None: nothing is due on a caught-up partition, a rebalance is under way or the
        index is out of date."""
        if self.app.rebalancing or self.app.in_recovery:
            return None
        owned = self.owned()
        if owned != self.indexed:
            return None
        here = [p for p in sorted(owned) if self.caught_up(p)]
        due = self.index.due(self.clock, here, limit=self.settings.batch_size)
        if not due:
            return None
        self._count_ticks(due, "in_process")
        topic = self.settings.topics.ticks
        values = tick_records((cid, now) for cid, _, now in due)
        return [Handed(Record(topic, partition, -1, cid.encode(), value, (cid, now)))
                for (cid, partition, now), value in zip(due, values, strict=True)]

    async def tick_turn(self) -> bool:
        """One turn of the state table for the timer: up to ``TICK_TURN_BATCHES`` batches
        of ticks, written as the agent writes a batch (commands acked, then states) but
        with one round trip to the broker per batch instead of two: a batch's states go
        out with the next batch's commands, and the last batch's alone. A round trip is
        mostly waiting (a herd's batch of 500: ~3 ms idle of each ~6 ms write).

        Safe because a tick's customer stays pending in the index until its batch's
        states are written, so no two batches of a turn share a customer, and the turn
        (the lock the agent's batches and a revoke take) lasts until the last states are
        written. After a failure, every batch of the turn whose states are not known
        written is handled again, alone, the agent's way (``handle_safely``: the
        cluster's errors retried, a record's isolated). Nothing of such a batch was kept
        (a state is cached only once written), so it is evaluated again from the table,
        and its commands repeat with the same ids. False when nothing was due."""
        async with self.turn:
            unwritten: list[list[Handed]] = []  # handed out, states not known written
            held: _Held | None = None  # commands acked, states to go with the next send
            handed = 0
            try:
                for _ in range(TICK_TURN_BATCHES):
                    ticks = self.due_ticks()
                    if ticks is None:
                        break
                    handed += 1
                    unwritten.append(ticks)
                    started = time.perf_counter()
                    records = [t.message for t in ticks]
                    result = self.engine.process(records, self.states.load)
                    processed = time.perf_counter()
                    acked = await self.send_all(result.commands + result.other
                                                + (held.write.outgoing if held else []))
                    if held is not None:
                        held.written(self, acked)
                        del unwritten[0]
                    held = _Held(records, result, started, processed, time.perf_counter(),
                                 self.state_records(result.states, result.erased,
                                                    result.watermarks))
                if held is not None:
                    held.written(self, await self.send_all(held.write.outgoing))
                    del unwritten[0]
            except Fenced:
                # Nothing more is written; the customers handed out stay pending in the
                # index until it is built again, from the table, after the rebalance.
                self.indexed = None
                log.warning("ticks_fenced", batches=len(unwritten))
                return False
            except Exception as exc:
                log.warning("ticks_again", batches=len(unwritten), error=brief(exc))
                for ticks in unwritten:
                    await self.handle_safely(cast(Sequence[EventT[Any]], ticks))
            return handed > 0

    def caught_up(self, partition: int) -> bool:
        """Whether this worker has handled every record the broker has told it of on the
        partition's source topics: a tick handed to the engine now comes after each of
        them, as a tick sent now through the ticks topic would. A source partition is
        caught up when it is empty, when the last offset handled here is its end's
        predecessor, or when nothing was read since the position the last assignment
        started from and that position is its end (Faust's read offset, set to the
        committed position at an assignment). The end is the consumer's last word from
        the broker (a fetch in flight may bring more), so "handled" is as of that."""
        consumer = self.app.consumer
        read_offsets = getattr(consumer, "_read_offset", {})
        for topic in self.sources:
            tp = TP(topic, partition)
            try:
                end = consumer.highwater(tp)
            except Exception:
                return False  # not assigned (any more), or no consumer yet
            if end is None:
                return False  # no word from the broker yet
            if end == 0 or self.read_to.get((topic, partition), -1) >= end - 1:
                continue
            if read_offsets.get(tp) == end:
                continue
            return False
        return True

    def _count_ticks(self, due: list[tuple[str, int, datetime]], way: str) -> None:
        """The ticks given (``way``: in_process or topic) and how late each was."""
        self.metrics.ticks.labels(way).inc(len(due))
        # Read the index before the first await: while a send waits, the agent evaluates
        # and may drop a customer from it (a fault test crashed the timer on that).
        entries = self.index.entries
        observe_all(self.metrics.lateness, [max(0.0, (now - entries[cid][1]).total_seconds())
                                            for cid, _, now in due])

    async def send_ticks(self, due: list[tuple[str, int, datetime]]) -> None:
        """Each due customer a tick record on its own partition of the ticks topic.

        Straight to the producer, past the lease (``send_all``): a tick carries no state,
        only a customer and a time. The partition's owner evaluates it against the state
        it holds, so it fires only waits due by then, which the owner's own timer fires
        too (and under the event clock, a tick from beyond what the owner has read is
        passed over: ``Engine._tick``). A tick sent by a worker out of its group changes
        nothing the owner would not do."""
        if not due:
            return
        self._count_ticks(due, "topic")
        ticks = self.settings.topics.ticks
        for cid, partition, now in due:
            await self.app.producer.send(ticks, cid.encode(), tick_record(cid, now), partition,
                                         None, None)


class StateWrite(NamedTuple):
    """A batch's changelog records (``Worker.state_records``) and what they hold."""

    outgoing: list[Outgoing]
    states: dict[str, tuple[int, CustomerState, bytes]]
    erased: dict[str, int]
    marks: dict[int, bytes]  # partition -> its event-clock record


class _Held(NamedTuple):
    """A batch of ticks whose commands are acked, its states (``write``) still to send."""

    records: list[Record]
    result: BatchResult
    started: float
    processed: float
    sent: float
    write: StateWrite

    def written(self, worker: Worker, acked: list[Acked]) -> None:
        """Its states acked: served, and the batch done."""
        worker.stored(self.write, acked)
        worker.handled(self.records, self.result, self.started, self.processed, self.sent)


class Handed:
    """A tick handed to the engine in-process, shaped as a stream's event (its
    ``message`` a Record: topic, partition, offset -1, key, value), so it takes the
    agent's path through ``handle_safely``, dead letter included."""

    __slots__ = ("message",)

    def __init__(self, message: Record) -> None:
        self.message = message


