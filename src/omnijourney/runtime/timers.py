"""Time for the timer: the clock each partition runs on, and the due index it reads.

The agent moves the clock as it reads (``event`` mode) and keeps the index current as it
stores states; the timer asks the index who is due by that clock, and sends each one a
tick record (``codecs.tick_record``) on its own partition.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """customer -> (partition, next due time), for the timer to find work quickly."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, datetime]] = {}
        self.pending: set[str] = set()  # a tick is on its way

    def update(self, customer_id: str, partition: int, due: datetime | None) -> None:
        self.pending.discard(customer_id)
        if due is None:
            self.entries.pop(customer_id, None)
        else:
            self.entries[customer_id] = (partition, due)

    def due(self, clock: Clock,
            partitions: set[int] | None = None) -> list[tuple[str, int, datetime]]:
        out = []
        for cid, (part, due) in self.entries.items():
            if cid in self.pending or (partitions is not None and part not in partitions):
                continue
            now = clock.now(part)
            if now is not None and due <= now:
                out.append((cid, part, now))
        return out
