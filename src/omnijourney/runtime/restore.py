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
in ``data``: what was read, and what the worker wrote itself once the changelog acked it
(``reflect``). It is dropped for a partition whose keys Faust drops (revoked, or not
active after a recovery), so a partition that comes back is read again from its start.

A graceful stop saves each active partition's entries and offset to a snapshot file
(runtime/snapshots.py) in the table's folder under the data directory. When the partition
is assigned again with nothing of it in memory, its file is loaded and only the records
after its offset are read: a warm restart reads what changed, not everything. A file is
used only when it can be trusted: it reads back exactly (checksum), names this changelog
and partition, its offset is still on the changelog (not past its end, not before its
start), and it is younger than half the changelog's ``delete.retention.ms``. That last
one is for erasures: a tombstone written after the file was saved stays on the changelog
at least that long, so the read that follows the load still sees it and removes the
customer. Otherwise the partition is read from its start, as without a file.

**The fence.** A worker stopped past its session and thawed may write a few records
behind the partition's new owner before it learns it is out of its group: the lease
(runtime/lease.py) stops its writes, but not records its producer held when it was
stopped. Read in the changelog's order they would take the place of the new owner's later
states. So each record the worker writes carries the fence of its ownership of the
partition (header ``oj-fence``): the changelog's last offset when its restore completed,
then its group generation, packed so that comparing the bytes compares the pair. A later
owner's fence is higher: its restore ended after every earlier owner's writes (or at the
same offset, with a higher generation). A read keeps the highest fence seen on each
partition and skips a record with a lower one: a fenced-out writer's. Records without the
header (written before it existed) are read as they come. A key whose latest record was
skipped so is written again, with what the store holds and the worker's own fence, once
its restore completes (``Worker.reassert``): compaction keeps each key's latest record,
which would otherwise be the fenced-out writer's.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from faust.stores import STORES, memory
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types import TP, EventT

from omnijourney import wallclock
from omnijourney.core.redaction import brief
from omnijourney.runtime import snapshots

log = structlog.get_logger("omnijourney.worker")

STORE_URL = "omnijourney://"
STORES.aliases["omnijourney"] = f"{__name__}:BulkRestoredStore"

FETCH_BYTES = 16 * 1024 * 1024  # per partition and fetch: whole fetches, few round trips
STALL_SECONDS = 30.0  # a bulk read that gets nothing this long leaves the rest to Faust

FENCE_HEADER = "oj-fence"
_FENCE = struct.Struct(">QQ")  # offset + 1 (the first is -1: nothing yet), generation
Headers = tuple[tuple[str, bytes], ...]


def fence(offset: int, generation: int) -> bytes:
    """The fence of an ownership whose restore ended at ``offset`` in ``generation``:
    ordered as bytes as the pair is as numbers."""
    return _FENCE.pack(offset + 1, max(generation, 0))


def fence_in(headers: Any) -> bytes | None:
    """A record's fence, when it carries one."""
    for key, value in headers or ():
        if key == FENCE_HEADER and isinstance(value, bytes) and len(value) == _FENCE.size:
            return value
    return None


class BulkRestoredStore(memory.Store[bytes, bytes]):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.offsets: dict[TP, int] = {}
        # The fence: this worker's own per active partition (as headers, ready to send),
        # and per partition read, the highest seen and the offset last read.
        self.fences: dict[int, Headers] = {}
        self.read_fence: dict[TP, bytes] = {}
        self.read_at: dict[TP, int] = {}
        self.fenced_out = 0  # records skipped as a fenced-out writer's
        self.overwritten: dict[TP, set[bytes]] = {}  # keys whose last record is such
        self.snapshot_max_age: float | None = None  # seconds; read from the changelog
        self.wall = wallclock.now  # when a file is saved, and how old it is when read

    @property
    def snapshot_folder(self) -> Path:
        return Path(self.app.conf.tabledir) / f"{self.table_name}.snapshots"

    # ------------------------------------------------ what the worker writes itself
    def reflect(self, rows: Iterable[tuple[bytes, int, bool]],
                acked: Iterable[tuple[str, int, int, int]]) -> None:
        """The worker put these keys in ``data`` itself (key, partition, removed) once the
        changelog acked them at these (topic, partition, last offset, first offset):
        remember each key's partition (so it is dropped when the partition moves, and
        saved with it), and that ``data`` reflects the changelog up to those offsets, when
        it does: only a write that follows what ``data`` holds with no record between.
        Another writer's records before ours (a worker that owned the partition a moment
        ago, or one paused past its session that writes before it learns it was fenced)
        are not in ``data``: the offset stays before them, and the next recovery reads
        them, in the changelog's order, rather than skip them for good."""
        where = self._key_partition
        for key, partition, removed in rows:
            if removed:
                where.pop(key, None)
            else:
                where[key] = partition
        for topic, partition, last, first in acked:
            tp = TP(topic, partition)
            known = self.offsets.get(tp)  # None: not an active partition restored here
            if known is not None and first <= known + 1:
                self.offsets[tp] = max(last, known)

    # -------------------------------------------------- what Faust's recovery asks
    def persisted_offset(self, tp: TP) -> int | None:
        return self.offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.offsets[tp] = max(offset, self.offsets.get(tp, -1))

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        events = list(batch)
        kept = [e for e in events if self._admits(e.message.tp, e.message.offset,
                                                  e.message.headers, e.message.key)]
        super().apply_changelog_batch(kept, to_key, to_value)
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
            self._drop_fence(tp)
        if not actives:
            return
        try:
            await self.bulk_read(actives)
        except Exception as exc:
            # What was read stays read (``offsets`` says how far); Faust's recovery reads
            # the rest, record by record, as it would have read all of it.
            log.warning("changelog_bulk_read_failed", error=brief(exc))

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)  # drops other keys
        kept = {partition for _, partition in active_tps}
        for tp in [tp for tp in self.offsets if tp.partition not in kept]:
            del self.offsets[tp]
            self._drop_fence(tp)
        self.take_fences(active_tps)

    def take_fences(self, active_tps: set[TP]) -> None:
        """The fences of this worker's ownership of its active partitions, as of now (its
        restore complete, in its generation); what it writes from now on carries them, and
        its reads go on from them."""
        changelog = self.table.changelog_topic.get_topic_name()
        generation = self.app.consumer_generation_id
        self.fences = {}
        for tp in active_tps:
            if tp.topic != changelog:
                continue
            own = fence(self.offsets.get(tp, -1), generation)
            self.fences[tp.partition] = ((FENCE_HEADER, own),)
            seen = self.read_fence.get(tp)
            if seen is None or own > seen:
                self.read_fence[tp] = own
        if self.fenced_out:
            log.warning("changelog_fenced_out", table=self.table_name, records=self.fenced_out)
            self.fenced_out = 0

    def _drop_fence(self, tp: TP) -> None:
        """The partition is to be read from its start (or a file's offset) again."""
        self.read_fence.pop(tp, None)
        self.read_at.pop(tp, None)
        self.overwritten.pop(tp, None)

    def _admits(self, tp: TP, offset: int, headers: Any, key: bytes | None) -> bool:
        """Whether a record read from the changelog is applied: not when its fence is
        lower than one read before it on its partition (module text). The keys of those
        skipped are kept until a record admitted supersedes them (``overwritten``)."""
        at = self.read_at.get(tp)
        if at is not None and offset <= at:
            self._drop_fence(tp)  # read again from further back: start over
        self.read_at[tp] = offset
        got = fence_in(headers)
        seen = self.read_fence.get(tp)
        if got is None or seen is None or got >= seen:
            if got is not None:
                self.read_fence[tp] = got
            if self.overwritten and key is not None:
                keys = self.overwritten.get(tp)
                if keys:
                    keys.discard(key)
            return True
        self.fenced_out += 1
        if key is not None:
            self.overwritten.setdefault(tp, set()).add(key)
        return False

    def take_overwritten(self) -> dict[int, set[bytes]]:
        """Per active partition, the keys whose latest record on the changelog is a
        fenced-out writer's, to be written again with what this store holds: compaction
        keeps a key's latest record, and would otherwise keep the zombie's. Handed over
        once (``put_back`` if they could not be written)."""
        taken = {tp.partition: keys for tp, keys in self.overwritten.items()
                 if keys and tp.partition in self.fences}
        for tp in [tp for tp in self.overwritten if tp.partition in taken]:
            del self.overwritten[tp]
        return taken

    def put_back(self, topic: str, keys: dict[int, set[bytes]]) -> None:
        for partition, ks in keys.items():
            self.overwritten.setdefault(TP(topic, partition), set()).update(ks)

    # ------------------------------------------------------------------ bulk read
    async def bulk_read(self, tps: set[TP]) -> None:
        """Each partition from the record after ``offsets`` (its start when unknown) to
        its end as of now, applied in order (a tombstone removes the key)."""
        started = time.monotonic()
        consumer = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES, fetch_max_bytes=4 * FETCH_BYTES,
            **self._client_options())
        await consumer.start()
        try:
            parts = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
            consumer.assign(list(parts))
            firsts = await consumer.beginning_offsets(list(parts))
            ends = await consumer.end_offsets(list(parts))
            fresh = {tp for tp in tps if tp not in self.offsets}
            if fresh:
                self._forget(fresh)
                await self._load_snapshots({tp: (firsts[kp], ends[kp])
                                            for kp, tp in parts.items() if tp in fresh})
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

    def _forget(self, tps: set[TP]) -> None:
        """Whatever is in memory of partitions about to be read from nothing (a standby's
        partial copy): gone first, or a key removed on the changelog meanwhile, its
        tombstone since compacted away, would stay."""
        for tp in tps:
            self._drop_fence(tp)
        parts = {tp.partition for tp in tps}
        if not self._key_partition:
            return
        for key in [k for k, p in self._key_partition.items() if p in parts]:
            self.data.pop(key, None)
            del self._key_partition[key]

    # ------------------------------------------------------------------ snapshots
    async def on_stop(self) -> None:
        await super().on_stop()
        await self.save_snapshots()

    async def save_snapshots(self) -> None:
        """Each active partition's entries and offset, to its file. The entries are taken
        at once (no await), so they are what the offsets say; the files are written in a
        thread. A partition with a key whose partition is not known is not saved."""
        topic = self.table.changelog_topic.get_topic_name()
        # A partition with nothing on its changelog yet needs no file: it is read from
        # its start either way.
        tps = {tp.partition: offset for tp, offset in self.offsets.items()
               if tp.topic == topic and offset >= 0}
        if not tps:
            return
        started = time.monotonic()
        rows: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in tps}
        where = self._key_partition
        unplaced = 0
        for key, value in self.data.items():
            p = where.get(key)
            if p is None:
                unplaced += 1
            elif p in rows:
                rows[p].append((key, value))
        if unplaced:
            # Nothing of this store writes a key without its partition; if something
            # did, no file could say which partition holds it. Save nothing.
            log.error("snapshot_skipped", table=self.table_name, unplaced=unplaced)
            return
        saved_at = self.wall().timestamp()
        fences = {tp.partition: f for tp, f in self.read_fence.items() if tp.topic == topic}

        def write_all() -> int:
            # Files of partitions not saved now (an earlier stop's) go: no file outlives
            # the stop that saved it by more than one start, whatever is assigned then.
            self._remove_files()
            return sum(snapshots.write(self.snapshot_folder, r, topic=topic, partition=p,
                                       offset=tps[p], saved_at=saved_at,
                                       fence=fences.get(p, b""))
                       for p, r in rows.items())

        try:
            size = await asyncio.to_thread(write_all)
        except OSError as exc:
            log.error("snapshot_failed", table=self.table_name,
                      error=brief(exc))
            return
        log.info("snapshot_saved", table=self.table_name, partitions=sorted(rows),
                 entries=sum(len(r) for r in rows.values()), mb=round(size / 1e6, 1),
                 seconds=round(time.monotonic() - started, 2))

    async def _load_snapshots(self, bounds: dict[TP, tuple[int, int]]) -> None:
        """Each partition's file, where one is there and can be trusted (see the module's
        text); ``bounds``: the changelog's first and end offsets per partition. Then every
        file of the folder is removed: files live from a graceful stop to the next start,
        so an erased customer's state does not stay on disk beyond that. Read on the event
        loop, a partition at a time: in a thread it took twice as long, the GIL shared
        with Faust's consumer thread."""
        try:
            await self._load_files(bounds)
        finally:
            self._remove_files()

    async def _load_files(self, bounds: dict[TP, tuple[int, int]]) -> None:
        found = {tp: snapshots.path_of(self.snapshot_folder, tp.partition) for tp in bounds}
        found = {tp: path for tp, path in found.items() if path.exists()}
        if not found:
            return
        started = time.monotonic()
        try:
            max_age = await self._max_age(next(iter(found)).topic)
        except Exception as exc:
            log.warning("snapshots_unused", table=self.table_name,
                        reason=f"changelog retention unknown: {brief(exc)}")
            return
        loaded: list[int] = []
        entries = 0
        for tp, path in found.items():
            first, end = bounds[tp]
            try:
                header, keys, values = snapshots.read(path)
                snapshots.check(header, topic=tp.topic, partition=tp.partition, first=first,
                                end=end, now=self.wall().timestamp(), max_age=max_age)
            except (snapshots.Refused, OSError) as exc:
                log.warning("snapshot_refused", table=self.table_name,
                            partition=tp.partition, reason=str(exc)[:300])
                continue
            self.data.update(zip(keys, values, strict=True))
            self._key_partition.update(dict.fromkeys(keys, tp.partition))
            self.offsets[tp] = header.offset
            if header.fence:
                self.read_fence[tp] = header.fence  # the read goes on from the file's
            loaded.append(tp.partition)
            entries += len(keys)
            del keys, values
            await asyncio.sleep(0)
        log.info("snapshots_loaded", table=self.table_name, partitions=sorted(loaded),
                 entries=entries, seconds=round(time.monotonic() - started, 2))

    def _remove_files(self) -> None:
        folder = self.snapshot_folder
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            try:
                path.unlink()
            except OSError as exc:
                log.error("snapshot_not_removed", table=self.table_name, file=path.name,
                          error=brief(exc))

    def _client_options(self) -> dict[str, Any]:
        """The app's brokers, credentials and timeout, for this store's own clients."""
        conf = self.app.conf
        return {"bootstrap_servers": [f"{u.host}:{u.port or 9092}" for u in conf.broker],
                "client_id": f"{conf.id}-restore",
                "request_timeout_ms": int(conf.broker_request_timeout * 1000),
                **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)}

    async def _max_age(self, topic: str) -> float:
        """Half the changelog's ``delete.retention.ms``, in seconds (asked once)."""
        if self.snapshot_max_age is None:
            admin = AIOKafkaAdminClient(**self._client_options())
            await admin.start()
            try:
                responses = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, topic,
                                    {"delete.retention.ms": None})])
            finally:
                await admin.close()
            self.snapshot_max_age = snapshots.half_retention(responses, topic)
        return self.snapshot_max_age

    def _apply(self, tp: TP, messages: list[Any]) -> None:
        data, where, admits = self.data, self._key_partition, self._admits
        for m in messages:
            if not admits(tp, m.offset, m.headers, m.key):
                continue
            if m.value is None:
                data.pop(m.key, None)
                where.pop(m.key, None)
            else:
                data[m.key] = m.value
                where[m.key] = tp.partition
        if messages:
            self.set_persisted_offset(tp, messages[-1].offset)
