"""Time for the timer: the clock each partition runs on, and the due index it reads.

The agent moves the clock as it reads (``event`` mode) and keeps the index current as it
stores states; the timer asks the index who is due by that clock, and sends each one a
tick record (``codecs.tick_record``) on its own partition.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from omnijourney import wallclock
from omnijourney.settings import ClockMode

ONE_MICROSECOND = timedelta(microseconds=1)


class Clock:
    """Wall time in production; in ``event`` mode (replays, ``omnijourney dev``) each
    partition's time is the latest event time seen there, or a clock record's time.

    In ``event`` mode a partition's time is durable: each batch that moves it writes the
    new time to the state changelog beside the states (``BatchResult.watermarks``), and a
    worker that takes the partition over starts from that (``stored``), not from nothing.
    Otherwise a clock record read and committed by the previous owner is never read
    again, and the new owner's timers on that partition never fire (found by the
    worker-chaos fault test: every win-back of one partition was missing).
    """

    def __init__(self, mode: ClockMode | str, wall: Callable[[], datetime] | None = None,
                 stored: Callable[[int], datetime | None] | None = None) -> None:
        self.mode = ClockMode(mode)
        self._wall = wall or wallclock.now
        self._stored = stored
        self.watermarks: dict[int, datetime] = {}

    def now(self, partition: int) -> datetime | None:
        if self.mode is ClockMode.WALL:
            return self._wall()
        if partition not in self.watermarks:
            self._seed(partition)
        return self.watermarks.get(partition)

    def observe(self, partition: int, at: datetime, *, inclusive: bool) -> None:
        # An event at T may be followed by another at T on the same partition, so timers
        # due exactly at T wait for a later event or an explicit clock record.
        if self.mode is not ClockMode.EVENT:
            return
        if partition not in self.watermarks:
            self._seed(partition)
        mark = at if inclusive else at - ONE_MICROSECOND
        if partition not in self.watermarks or mark > self.watermarks[partition]:
            self.watermarks[partition] = mark

    def forget(self) -> None:
        """Partitions moved (a rebalance): each one's time is read again from where it is
        stored, which is at least what this worker last wrote there."""
        self.watermarks.clear()

    def _seed(self, partition: int) -> None:
        mark = self._stored(partition) if self._stored is not None else None
        if mark is not None:
            self.watermarks[partition] = mark


class DueIndex:
    """customer -> (partition, next due time), and per partition a heap ordered by due time,
    so a tick costs what is due (plus one peek per partition), not one look per waiting
    customer.

    The heaps are lazy: an update pushes the new time and leaves the old one, which is
    dropped when it surfaces (it no longer matches ``entries``). A customer handed out by
    ``due`` is ``pending`` until its tick was handled: ``update`` (its new state) or
    ``release`` (the tick changed nothing) puts it back in line.
    """

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, datetime]] = {}
        self.pending: set[str] = set()  # a tick is on its way
        self._heaps: dict[int, list[tuple[datetime, str]]] = {}

    def update(self, customer_id: str, partition: int, due: datetime | None) -> None:
        handed_out = customer_id in self.pending  # popped from its heap: push it again
        self.pending.discard(customer_id)
        if due is None:
            self.entries.pop(customer_id, None)
            return
        if handed_out or self.entries.get(customer_id) != (partition, due):
            self.entries[customer_id] = (partition, due)
            heapq.heappush(self._heaps.setdefault(partition, []), (due, customer_id))

    def release(self, customer_id: str) -> None:
        """Its tick was handled without a new state: due again when its time comes."""
        if customer_id in self.pending:
            self.pending.discard(customer_id)
            entry = self.entries.get(customer_id)
            if entry is not None:
                heapq.heappush(self._heaps.setdefault(entry[0], []), (entry[1], customer_id))

    @classmethod
    def of(cls, waiting: Iterable[tuple[str, int, datetime | None]]) -> DueIndex:
        """Built at once from (customer, partition, due) rows: one heapify per partition."""
        index = cls()
        for cid, partition, due in waiting:
            if due is not None:
                index.entries[cid] = (partition, due)
                index._heaps.setdefault(partition, []).append((due, cid))
        for heap in index._heaps.values():
            heapq.heapify(heap)
        return index

    def any_due(self, clock: Clock, partitions: Iterable[int]) -> bool:
        """Whether a customer is due on one of ``partitions``, by a peek at each heap (a
        superseded time on top, not yet dropped by ``due``, also says yes)."""
        for part in partitions:
            heap = self._heaps.get(part)
            if heap:
                now = clock.now(part)
                if now is not None and heap[0][0] <= now:
                    return True
        return False

    def walk(self, clock: Clock, ahead: timedelta, partitions: Iterable[int]) -> Walk:
        """The customers due within ``ahead`` of their partition's clock (already due
        ones too), earliest first across ``partitions``, a few at a time (``Walk``)."""
        heaps: dict[int, tuple[list[tuple[datetime, str]], datetime]] = {}
        for part in partitions:
            heap = self._heaps.get(part)
            now = clock.now(part)
            if heap and now is not None and heap[0][0] <= now + ahead:
                heaps[part] = (list(heap), now + ahead)  # else nobody there within the span
        return Walk(self, heaps)

    def due(self, clock: Clock, partitions: Iterable[int] | None = None,
            limit: int | None = None) -> list[tuple[str, int, datetime]]:
        """Every customer due by its partition's clock (at most ``limit``), earliest first
        per partition, each marked pending; (customer, partition, the clock's now)."""
        out: list[tuple[str, int, datetime]] = []
        for part in (self._heaps if partitions is None else partitions):
            if limit is not None and len(out) >= limit:
                break
            heap = self._heaps.get(part)
            if not heap:
                continue
            now = clock.now(part)
            if now is None:
                continue
            while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
                due, cid = heapq.heappop(heap)
                if cid in self.pending or self.entries.get(cid) != (part, due):
                    continue  # superseded, or already handed out
                self.pending.add(cid)
                out.append((cid, part, now))
        return out


class Walk:
    """A walk of the due index's heaps in due-time order, up to a bound per partition,
    that goes on where it stopped (``take``) however the index changes in between: it
    walks copies of the heaps as they were when it began (a copy is one pass over a list
    of pointers). A heap's walk never goes below a time past its bound (that subtree is
    later still), so a walk costs what it finds plus its border. Each customer it names
    is checked against the index as it is then: still due at that time, not handed out."""

    def __init__(self, index: DueIndex,
                 heaps: dict[int, tuple[list[tuple[datetime, str]], datetime]]) -> None:
        self._index = index
        self._heaps = heaps
        # ``DueIndex.walk`` copies only heaps whose earliest time is within the bound.
        self._frontier: list[tuple[datetime, str, int, int]] = [
            (heap[0][0], heap[0][1], part, 0) for part, (heap, _) in heaps.items()]
        heapq.heapify(self._frontier)

    @property
    def done(self) -> bool:
        return not self._frontier

    def take(self, visits: int) -> list[str]:
        """The customers among the next ``visits`` heap items of the walk."""
        out: list[str] = []
        frontier = self._frontier
        entries, pending = self._index.entries, self._index.pending
        while frontier and visits > 0:
            visits -= 1
            due, cid, part, i = heapq.heappop(frontier)
            if cid not in pending and entries.get(cid) == (part, due):
                out.append(cid)
            heap, bound = self._heaps[part]
            child = 2 * i + 1
            for c in (child, child + 1):
                if c < len(heap):
                    at, who = heap[c]
                    if at <= bound:
                        heapq.heappush(frontier, (at, who, part, c))
        return out
