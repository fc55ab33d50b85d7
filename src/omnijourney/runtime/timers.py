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

    def upcoming(self, clock: Clock, ahead: timedelta, partitions: Iterable[int],
                 limit: int) -> list[str]:
        """Customers due within ``ahead`` of their partition's clock (already due ones
        too), not handed out, at most ``limit``, earliest first per partition; the
        index is left as it is. A heap's walk is pruned below any time past the bound
        (its subtree is later still), so it costs what it finds plus its border."""
        out: list[str] = []
        for part in partitions:
            heap = self._heaps.get(part)
            now = clock.now(part)
            if not heap or now is None:
                continue
            bound = now + ahead
            found: list[tuple[datetime, str]] = []
            stack = [0]
            size = len(heap)
            while stack:
                i = stack.pop()
                due, cid = heap[i]
                if due > bound:
                    continue
                if cid not in self.pending and self.entries.get(cid) == (part, due):
                    found.append((due, cid))
                child = 2 * i + 1
                if child < size:
                    stack.append(child)
                    if child + 1 < size:
                        stack.append(child + 1)
            found.sort()
            out.extend(cid for _, cid in found)
            if len(out) >= limit:
                return out[:limit]
        return out

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
