"""What the bulk-restored store tells Faust's recovery (runtime/restore.py), without a
broker: an offset is claimed only for an active partition whose records are all in
memory, never for a standby (whose keys Faust drops after each recovery), and never kept
for a partition that is no longer active."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from omnijourney.runtime import snapshots
from omnijourney.runtime.restore import FENCE_HEADER, STORE_URL, BulkRestoredStore, fence

TOPIC = "probe-customer-state-changelog"
ACTIVE, STANDBY = TP(TOPIC, 0), TP(TOPIC, 1)


@dataclass
class Msg:
    tp: TP
    offset: int
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    key: bytes = b""

    @property
    def partition(self) -> int:
        return self.tp.partition


@dataclass
class Ev:
    key: bytes
    value: bytes | None
    message: Msg


def event(tp: TP, offset: int, key: bytes, value: bytes | None,
          fenced: bytes | None = None) -> Ev:
    headers = ((FENCE_HEADER, fenced),) if fenced is not None else ()
    return Ev(key, value, Msg(tp, offset, value, headers, key))


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


# ------------------------------------------------------------------------ the fence

def apply(store: BulkRestoredStore, *events: Ev) -> None:
    store.apply_changelog_batch(list(events), to_key=lambda k: k, to_value=lambda v: v)


def test_fences_compare_as_bytes_as_their_offset_and_generation_compare_as_numbers() -> None:
    pairs = list(itertools.product([-1, 0, 1, 255, 256, 70_000, 2**40], [0, 1, 7, 256, 2**31]))
    for (a, b), (c, d) in itertools.product(pairs, repeat=2):
        assert (fence(a, b) < fence(c, d)) == ((a, b) < (c, d))


def test_a_record_of_a_writer_fenced_out_is_skipped_wherever_it_lands() -> None:
    """The new owner (restore ended at 3, generation 5) wrote ``k`` after the zombie's
    ownership (ended at 1, generation 4); the zombie's record comes after the owner's,
    yet the owner's stays. The records are read past, none is lost, one without a fence
    (an older worker's) is read as it comes, and a key only the zombie wrote is left."""
    store, _ = store_with({ACTIVE})
    zombie, owner = fence(1, 4), fence(3, 5)
    apply(store, event(ACTIVE, 0, b"k", b"first", fence(-1, 3)),
          event(ACTIVE, 1, b"k", b"zombie-early", zombie),  # its ownership: legitimate
          event(ACTIVE, 4, b"k", b"owner", owner),
          event(ACTIVE, 5, b"k", b"zombie-late", zombie),
          event(ACTIVE, 6, b"z", b"zombie-only", zombie),
          event(ACTIVE, 7, b"old", b"no fence", None))
    assert store.data[b"k"] == b"owner"
    assert b"z" not in store.data
    assert store.data[b"old"] == b"no fence"
    assert store.persisted_offset(ACTIVE) == 7  # read past what was skipped
    assert store.fenced_out == 2
    # Both keys' latest records are the zombie's: to be written again by the owner, once
    # this worker owns the partition (its restore complete, it has a fence there).
    assert store.take_overwritten() == {}
    store.fences = {0: ((FENCE_HEADER, owner),)}
    assert store.take_overwritten() == {0: {b"k", b"z"}}
    assert store.take_overwritten() == {}
    apply(store, event(ACTIVE, 8, b"k", b"zombie again", zombie),
          event(ACTIVE, 9, b"k", b"owner again", owner))  # superseded: nothing to do
    assert store.take_overwritten() == {}


def test_the_bulk_read_skips_them_too_and_a_read_from_the_start_starts_over() -> None:
    store, _ = store_with({ACTIVE})
    owner, zombie = fence(3, 5), fence(1, 4)
    store._apply(ACTIVE, [Msg(ACTIVE, 4, b"owner", ((FENCE_HEADER, owner),), b"k"),
                          Msg(ACTIVE, 5, b"zombie", ((FENCE_HEADER, zombie),), b"k")])
    assert store.data[b"k"] == b"owner"
    # Read again from the start (the partition came back after it moved away): the
    # earlier owners' records count again, in order.
    store._forget({ACTIVE})
    store._apply(ACTIVE, [Msg(ACTIVE, 1, b"zombie-early", ((FENCE_HEADER, zombie),), b"k"),
                          Msg(ACTIVE, 4, b"owner", ((FENCE_HEADER, owner),), b"k")])
    assert store.data[b"k"] == b"owner"
    store._apply(ACTIVE, [Msg(ACTIVE, 1, b"zombie-early", ((FENCE_HEADER, zombie),), b"k")])
    assert store.data[b"k"] == b"zombie-early"  # an offset read before: a read anew


def test_a_worker_writes_with_the_fence_of_its_ownership_and_reads_on_from_it() -> None:
    """Its restore complete (last offset 41, generation 9): its writes carry (41, 9); a
    record with a lower fence read later (a writer it took over from) is skipped, even
    where the store had read nothing fenced before."""
    store, _ = store_with({ACTIVE})
    store.set_persisted_offset(ACTIVE, 41)
    store.app.consumer_generation_id = 9
    asyncio.run(store.on_recovery_completed({ACTIVE}, set()))
    assert store.fences == {0: ((FENCE_HEADER, fence(41, 9)),)}
    apply(store, event(ACTIVE, 42, b"k", b"fenced out", fence(30, 8)))
    assert b"k" not in store.data
    apply(store, event(ACTIVE, 43, b"k", b"ours", fence(41, 9)))
    assert store.data[b"k"] == b"ours"
    # Moved away: no fence to write with once the next restore completes without it.
    asyncio.run(store.on_recovery_completed(set(), set()))
    assert store.fences == {}


def test_a_snapshot_carries_the_fence_and_a_file_from_before_fences_still_loads(
        tmp_path: Path) -> None:
    rows = [(b"k", b"v")]
    snapshots.write(tmp_path, rows, topic=TOPIC, partition=0, offset=7, saved_at=1.0,
                    fence=fence(5, 2))
    header, keys, _ = snapshots.read(snapshots.path_of(tmp_path, 0))
    assert header.fence == fence(5, 2) and keys == [b"k"]
    snapshots.write(tmp_path, rows, topic=TOPIC, partition=1, offset=7, saved_at=1.0)
    old = snapshots.path_of(tmp_path, 1)
    assert b"fence" not in old.read_bytes().split(b"\n", 1)[0]  # as before fences
    header, keys, _ = snapshots.read(old)
    assert header.fence == b"" and keys == [b"k"]
