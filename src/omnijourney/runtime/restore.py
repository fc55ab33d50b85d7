"""The state table's store: Faust's memory store, restored in bulk.

Faust restores a changelog record by record through its consumer's per-message path:
about 4,000 to 5,000 records/s here, so a worker owning a million customers would take
minutes to be ready (bench/recovery.py). This store reads its active changelog partitions
itself when they are assigned, with a plain consumer that hands over whole fetches (about
100,000 records/s on the same machine), then tells Faust's recovery how far it got
(``persisted_offset``), so Faust only reads what was written after that. Everything else
is Faust's memory store: standby partitions, what Faust applies itself, the clean-up of
partitions that moved away.

``offsets`` holds, per changelog partition, the highest offset whose record is reflected
in ``data``; it is dropped for a partition whose keys Faust drops (revoked, or not active
after a recovery), so a partition that comes back is read again from its start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores import STORES, memory
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types import TP, EventT

log = structlog.get_logger("omnijourney.worker")

STORE_URL = "omnijourney://"
STORES.aliases["omnijourney"] = f"{__name__}:BulkRestoredStore"

FETCH_BYTES = 16 * 1024 * 1024  # per partition and fetch: whole fetches, few round trips
STALL_SECONDS = 30.0  # a bulk read that gets nothing this long leaves the rest to Faust


class BulkRestoredStore(memory.Store[bytes, bytes]):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.offsets: dict[TP, int] = {}

    # -------------------------------------------------- what Faust's recovery asks
    def persisted_offset(self, tp: TP) -> int | None:
        return self.offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.offsets[tp] = max(offset, self.offsets.get(tp, -1))

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        events = list(batch)
        super().apply_changelog_batch(events, to_key, to_value)
        # Faust's own reading after a bulk read. Only for active partitions: a standby's
        # keys are dropped when a recovery completes while Faust goes on reading it from
        # where it was, so what it holds of a standby is never the whole partition.
        actives = self.app.assignor.assigned_actives()
        for event in events:
            tp = event.message.tp
            if tp in actives:
                self.set_persisted_offset(tp, event.message.offset)

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP],
                           newly_assigned: set[TP], generation_id: int = 0) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        changelog = self.table.changelog_topic.get_topic_name()
        actives = {tp for tp in self.app.assignor.assigned_actives() if tp.topic == changelog}
        for tp in [tp for tp in self.offsets if tp not in actives]:
            del self.offsets[tp]  # revoked, or a standby now: read whole if it comes back
        if not actives:
            return
        try:
            await self.bulk_read(actives)
        except Exception as exc:
            # What was read stays read (``offsets`` says how far); Faust's recovery reads
            # the rest, record by record, as it would have read all of it.
            log.warning("changelog_bulk_read_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)  # drops other keys
        kept = {partition for _, partition in active_tps}
        for tp in [tp for tp in self.offsets if tp.partition not in kept]:
            del self.offsets[tp]

    # ------------------------------------------------------------------ bulk read
    async def bulk_read(self, tps: set[TP]) -> None:
        """Each partition from the record after ``offsets`` (its start when unknown) to
        its end as of now, applied in order (a tombstone removes the key)."""
        started = time.monotonic()
        conf = self.app.conf
        consumer = AIOKafkaConsumer(
            bootstrap_servers=[f"{u.host}:{u.port or 9092}" for u in conf.broker],
            client_id=f"{conf.id}-restore", group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES, fetch_max_bytes=4 * FETCH_BYTES,
            request_timeout_ms=int(conf.broker_request_timeout * 1000),
            **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))
        await consumer.start()
        try:
            parts = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
            consumer.assign(list(parts))
            firsts = await consumer.beginning_offsets(list(parts))
            ends = await consumer.end_offsets(list(parts))
            todo: dict[TopicPartition, int] = {}
            for kp, tp in parts.items():
                known = self.offsets.get(tp)
                start = firsts[kp] if known is None else max(known + 1, firsts[kp])
                if start < ends[kp]:
                    consumer.seek(kp, start)
                    todo[kp] = ends[kp]
                elif known is None and firsts[kp] == ends[kp]:
                    self.set_persisted_offset(tp, ends[kp] - 1)  # empty (or compacted away)
            records = 0
            for kp in parts:
                if kp not in todo:
                    consumer.pause(kp)
            progressed = time.monotonic()
            while todo:
                fetched = await consumer.getmany(*todo, timeout_ms=1000, max_records=50_000)
                for kp, messages in fetched.items():
                    records += len(messages)
                    self._apply(parts[kp], messages)
                if fetched:
                    progressed = time.monotonic()
                elif time.monotonic() - progressed > STALL_SECONDS:
                    raise TimeoutError(f"no records for {STALL_SECONDS:.0f} s; "
                                       f"{len(todo)} partitions left")
                for kp in list(todo):
                    if await consumer.position(kp) >= todo[kp]:
                        self.set_persisted_offset(parts[kp], todo.pop(kp) - 1)
                        consumer.pause(kp)
                await asyncio.sleep(0)  # heartbeats and the rest of the worker go on
        finally:
            await consumer.stop()
        took = time.monotonic() - started
        log.info("changelog_bulk_read", partitions=sorted(tp.partition for tp in tps),
                 records=records, seconds=round(took, 2),
                 per_second=round(records / took) if took > 0 else None)

    def _apply(self, tp: TP, messages: list[Any]) -> None:
        data, where = self.data, self._key_partition
        for m in messages:
            if m.value is None:
                data.pop(m.key, None)
                where.pop(m.key, None)
            else:
                data[m.key] = m.value
                where[m.key] = tp.partition
        if messages:
            self.set_persisted_offset(tp, messages[-1].offset)
