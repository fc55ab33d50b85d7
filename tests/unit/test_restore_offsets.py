"""What the bulk-restored store tells Faust's recovery (runtime/restore.py), without a
broker: an offset is claimed only for an active partition whose records are all in
memory, never for a standby (whose keys Faust drops after each recovery), and never kept
for a partition that is no longer active."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from omnijourney.runtime.restore import STORE_URL, BulkRestoredStore

TOPIC = "probe-customer-state-changelog"
ACTIVE, STANDBY = TP(TOPIC, 0), TP(TOPIC, 1)


@dataclass
class Msg:
    tp: TP
    offset: int
    value: bytes | None

    @property
    def partition(self) -> int:
        return self.tp.partition


@dataclass
class Ev:
    key: bytes
    value: bytes | None
    message: Msg


def event(tp: TP, offset: int, key: bytes, value: bytes | None) -> Ev:
    return Ev(key, value, Msg(tp, offset, value))


def store_with(actives: set[TP]) -> tuple[BulkRestoredStore, Any]:
    app = faust.App("probe", broker="kafka://127.0.0.1:1", store=STORE_URL)
    table = app.Table("customer-state", partitions=2, key_type=bytes, value_type=bytes)
    assert table.changelog_topic.get_topic_name() == TOPIC
    holder = {"actives": actives}
    app.assignor.assigned_actives = lambda: holder["actives"]  # type: ignore[method-assign]
    store = table.data
    assert isinstance(store, BulkRestoredStore)
    return store, holder


def test_only_active_partitions_are_claimed_and_standbys_never() -> None:
    store, _ = store_with({ACTIVE})
    store.apply_changelog_batch([event(ACTIVE, 5, b"a", b"1"), event(STANDBY, 7, b"s", b"2")],
                                to_key=lambda k: k, to_value=lambda v: v)
    assert store.persisted_offset(ACTIVE) == 5
    assert store.persisted_offset(STANDBY) is None  # Faust reads a standby itself
    asyncio.run(store.on_recovery_completed({ACTIVE}, {STANDBY}))
    assert b"s" not in store.data and store.data[b"a"] == b"1"  # Faust's own clean-up
    store.apply_changelog_batch([event(STANDBY, 8, b"s2", b"3")], to_key=lambda k: k,
                                to_value=lambda v: v)
    assert store.persisted_offset(STANDBY) is None  # partial: never claimed


def test_a_partition_no_longer_active_is_forgotten() -> None:
    store, holder = store_with({ACTIVE})
    store.set_persisted_offset(ACTIVE, 41)
    holder["actives"] = set()  # it moved to another worker (or is a standby here now)
    asyncio.run(store.on_rebalance(set(), {ACTIVE}, set()))
    assert store.persisted_offset(ACTIVE) is None  # read whole if it comes back
    store.set_persisted_offset(STANDBY, 3)
    asyncio.run(store.on_recovery_completed(set(), {STANDBY}))
    assert store.persisted_offset(STANDBY) is None


def test_what_the_worker_writes_itself_is_placed_and_claimed_only_for_a_restored_active() -> None:
    """``reflect``: a key the worker put in memory after its changelog ack gets its
    partition (so Faust's clean-up drops it when the partition moves away, as it drops
    what it read), a removed key loses it, and the acked offset is claimed only for a
    partition restored here and still active."""
    store, holder = store_with({ACTIVE})
    store.set_persisted_offset(ACTIVE, 5)
    store.data.update({b"w0": b"1", b"w1": b"2", b"gone": b"3"})
    store._key_partition[b"gone"] = 0
    del store.data[b"gone"]
    store.reflect([(b"w0", 0, False), (b"w1", 1, False), (b"gone", 0, True)],
                  [(TOPIC, 0, 9, 6), (TOPIC, 0, 7, 7), (TOPIC, 1, 12, 12)])
    assert store._key_partition == {b"w0": 0, b"w1": 1}
    assert store.persisted_offset(ACTIVE) == 9  # the highest acked, right after offset 5
    assert store.persisted_offset(STANDBY) is None  # never restored here: not claimed
    holder["actives"] = set()
    asyncio.run(store.on_recovery_completed(set(), {ACTIVE}))  # both moved away
    assert dict(store.data) == {}


def test_a_write_after_another_writers_records_claims_nothing_past_them() -> None:
    """Issue 13's fault test lost two waits this way: a worker paused past its session
    wrote (as it learnt only then that it was fenced) after the partition's new owner had
    written; claiming its own write's offset told the next recovery that ``data`` held
    the owner's records too, and they were never read. A write claims its offset only
    when it follows what ``data`` holds with nothing between; one after a gap leaves the
    offset where it was, and so does every write after it, until a recovery reads the
    gap."""
    store, _ = store_with({ACTIVE})
    store.set_persisted_offset(ACTIVE, 5)
    store.reflect([(b"w0", 0, False)], [(TOPIC, 0, 6, 6)])
    assert store.persisted_offset(ACTIVE) == 6  # ours, right after: claimed
    store.reflect([(b"w0", 0, False)], [(TOPIC, 0, 12, 10)])  # 7-9 another's
    assert store.persisted_offset(ACTIVE) == 6
    store.reflect([(b"w1", 0, False)], [(TOPIC, 0, 13, 13)])
    assert store.persisted_offset(ACTIVE) == 6  # still not past 7-9
    store.apply_changelog_batch([event(ACTIVE, o, b"x", b"v") for o in range(7, 14)],
                                to_key=lambda k: k, to_value=lambda v: v)
    assert store.persisted_offset(ACTIVE) == 13  # the recovery read the gap and on
    store.reflect([(b"w1", 0, False)], [(TOPIC, 0, 16, 14)])
    assert store.persisted_offset(ACTIVE) == 16
