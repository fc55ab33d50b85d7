"""Many customers at once, each customer's commands in order, offsets committed only
below the oldest command still in flight.

One slow provider reply (a Retry-After, a hanging SMTP server) holds one worker thread
and that customer's later commands, never the rest of the channel. A command is done
when its outcome is recorded and reported; the committed offset of a partition is the
lowest offset not yet done, so a crash repeats (and the delivered log drops) only what
was in flight, and loses nothing.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class KeyedPool:
    """Runs jobs on ``workers`` threads; jobs of one key one after another, in order."""

    def __init__(self, workers: int, name: str = "deliver") -> None:
        self.executor = ThreadPoolExecutor(max_workers=max(1, workers),
                                           thread_name_prefix=name)
        self.lock = threading.Lock()
        self.queues: dict[Hashable, deque[Callable[[], object]]] = {}
        self.error: BaseException | None = None  # the first job that raised

    def submit(self, key: Hashable, job: Callable[[], object]) -> None:
        with self.lock:
            queue = self.queues.get(key)
            if queue is not None:  # this key has a job running: wait behind it
                queue.append(job)
                return
            self.queues[key] = deque()
        self.executor.submit(self._run, key, job)

    def _run(self, key: Hashable, job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as exc:
            with self.lock:
                self.error = self.error or exc
        with self.lock:
            queue = self.queues[key]
            if not queue:
                del self.queues[key]
                return
            nxt = queue.popleft()
        self.executor.submit(self._run, key, nxt)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)


class Offsets:
    """Per partition: offsets handed out and not yet done, and where to commit."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[Any, set[int]] = {}
        self.next: dict[Any, int] = {}  # one past the highest offset handed out
        self.committed: dict[Any, int] = {}
        self.changed = threading.Condition(self.lock)

    def add(self, tp: Any, offset: int) -> None:
        with self.lock:
            self.pending.setdefault(tp, set()).add(offset)
            self.next[tp] = max(self.next.get(tp, 0), offset + 1)

    def done(self, tp: Any, offset: int) -> None:
        with self.lock:
            self.pending.get(tp, set()).discard(offset)
            self.changed.notify_all()

    def in_flight(self, tps: set[Any] | None = None) -> int:
        with self.lock:
            return sum(len(v) for tp, v in self.pending.items() if tps is None or tp in tps)

    def committable(self) -> dict[Any, int]:
        """Partitions whose commit point moved since the last call, with the new point."""
        with self.lock:
            out = {}
            for tp, nxt in self.next.items():
                pending = self.pending.get(tp)
                point = min(pending) if pending else nxt
                if point != self.committed.get(tp):
                    out[tp] = point
            return out

    def mark_committed(self, points: dict[Any, int]) -> None:
        with self.lock:
            self.committed.update(points)

    def wait_done(self, tps: set[Any], timeout: float) -> bool:
        """Until nothing of ``tps`` is in flight (a revocation), or ``timeout``."""
        with self.lock:
            return self.changed.wait_for(
                lambda: not any(self.pending.get(tp) for tp in tps), timeout)

    def forget(self, tps: set[Any]) -> None:
        with self.lock:
            for tp in tps:
                self.pending.pop(tp, None)
                self.next.pop(tp, None)
                self.committed.pop(tp, None)
