"""Timers at scale (issue 13, goals 1 and 2): the due index and its rebuild.

Measured in one run against baselines in the same run: the previous index (a dict scanned
whole at every tick) and the previous rebuild (every table value decoded whole to find
its due time).

- idle tick: N waiting customers, nothing due; the cost of one timer tick.
- herd: HERD customers due in the same second; the time to hand them all out.
- rebuild: the timer's index built from REBUILD table values after an assignment
  (real states of synthetic customers, encoded as the worker writes them).

    python bench/scale.py [--customers 1000000] [--herd 100000] [--rebuild 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from omnijourney.codecs import decode_state, encode_state
from omnijourney.config import load
from omnijourney.core import CustomerState, evaluate
from omnijourney.runtime.states import StateStore
from omnijourney.runtime.timers import Clock, DueIndex
from omnijourney.synthetic import synth

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 12
T0 = datetime(2026, 3, 1, tzinfo=UTC)


class ScanIndex:
    """The index before issue 13: every tick looks at every waiting customer."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, datetime]] = {}
        self.pending: set[str] = set()

    def update(self, cid: str, partition: int, due: datetime) -> None:
        self.entries[cid] = (partition, due)

    def due(self, clock: Clock) -> list[tuple[str, int, datetime]]:
        out = []
        for cid, (part, due) in self.entries.items():
            if cid in self.pending:
                continue
            now = clock.now(part)
            if now is not None and due <= now:
                out.append((cid, part, now))
        for cid, _, _ in out:
            self.pending.add(cid)
        return out


def waiting(n: int, herd: int) -> list[tuple[str, int, datetime]]:
    """n customers due over 30 days from T0 + 1 day; the first ``herd`` all at T0."""
    step = timedelta(days=30) / max(1, n)
    return [(f"c{i}", i % PARTITIONS,
             T0 if i < herd else T0 + timedelta(days=1) + i * step) for i in range(n)]


def clock_at(at: datetime) -> Clock:
    clock = Clock("event")
    for p in range(PARTITIONS):
        clock.observe(p, at, inclusive=True)
    return clock


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def bench_index(n: int, herd: int) -> None:
    rows = waiting(n, herd)
    heap = DueIndex.of(rows)
    scan = ScanIndex()
    for cid, p, due in rows:
        scan.update(cid, p, due)
    quiet = clock_at(T0 - timedelta(seconds=1))
    idle_heap = timed(lambda: heap.due(quiet), 50)
    idle_scan = timed(lambda: scan.due(quiet), 3)
    print(f"idle tick, {n:,} waiting: heap {idle_heap * 1e3:.3f} ms, scan (baseline) "
          f"{idle_scan * 1e3:.1f} ms: {idle_scan / idle_heap:,.0f}x faster")
    at = clock_at(T0)
    t0 = time.perf_counter()
    got = heap.due(at)
    herd_heap = time.perf_counter() - t0
    t0 = time.perf_counter()
    got_scan = scan.due(at)
    herd_scan = time.perf_counter() - t0
    assert len(got) == len(got_scan) == herd, (len(got), len(got_scan))
    early = [c for c, p, _ in got if heap.entries[c][1] > T0]
    assert not early
    print(f"herd of {herd:,} due in one second: heap {herd_heap:.3f} s, scan {herd_scan:.3f} s "
          f"({herd_scan / herd_heap:.1f}x); the next idle tick: heap "
          f"{timed(lambda: heap.due(at), 20) * 1e3:.3f} ms")


def real_states(count: int) -> list[CustomerState]:
    """States of synthetic customers part-way through their week (most are waiting)."""
    js = load(ROOT / "journeys").journey_set
    assert js is not None
    out = []
    for timeline in synth(count, seed=5):
        st = None
        for ev in timeline[: max(1, len(timeline) * 2 // 3)]:
            st = evaluate(js, st, ev, ev.occurred_at).state
        if st is not None:
            out.append(st)
    return out


def bench_rebuild(n: int) -> None:
    states = real_states(min(n, 3000))
    new = [encode_state(i % PARTITIONS, st) for i, st in enumerate(states)]
    old = [json.dumps({"p": i % PARTITIONS, "s": st.to_dict()}, separators=(",", ":")).encode()
           for i, st in enumerate(states)]
    table_new = {f"c{i}".encode(): new[i % len(new)] for i in range(n)}
    table_old = {f"c{i}".encode(): old[i % len(old)] for i in range(n)}
    size = sum(len(v) for v in table_new.values()) / n
    owned = frozenset(range(PARTITIONS))

    def rebuild_new() -> DueIndex:
        return DueIndex.of(StateStore(lambda: table_new).waiting(owned))

    def rebuild_old() -> DueIndex:
        index = DueIndex()
        for key, raw in table_old.items():
            partition, st = decode_state(raw)
            due = st.next_due()
            if due is not None:
                index.update(key.decode(), partition, due)
        return index

    t_new, t_old = timed(rebuild_new, 3), timed(rebuild_old, 1)
    assert rebuild_new().entries == rebuild_old().entries
    waiting_now = len(rebuild_new().entries)
    print(f"rebuild from {n:,} table values ({size:,.0f} B each, {waiting_now:,} waiting): "
          f"head read {t_new:.2f} s ({t_new / n * 1e6:.1f} µs each), full decode (baseline) "
          f"{t_old:.2f} s ({t_old / n * 1e6:.1f} µs each): {t_old / t_new:.1f}x; "
          f"1M customers: ~{t_new / n * 1e6:.1f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--herd", type=int, default=100_000)
    ap.add_argument("--rebuild", type=int, default=100_000)
    args = ap.parse_args()
    bench_index(args.customers, args.herd)
    bench_rebuild(args.rebuild)
    return 0


if __name__ == "__main__":
    sys.exit(main())
