"""What a timer tick costs the worker's engine, without Kafka (issue 13, goal 1's herd).

N customers left in waits (the herd bench's states), each read back from the table's
bytes as after a restart, ticked in batches of 500 as the worker ticks them: the engine
(decode, evaluate, encode), then the states kept and the decision lines logged (to
/dev/null). Run twice in the same process, alternating, best of ``--repeat`` each:

- baseline: Python's garbage-collector thresholds (700, 10, 10);
- worker: the thresholds the worker sets (``runtime.app.GC_THRESHOLDS``).

    python bench/ticks.py [--customers 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from herd import herd_rows  # the same states as the herd bench

from omnijourney.codecs import tick_record
from omnijourney.config import load_or_raise
from omnijourney.logs import configure
from omnijourney.runtime.app import GC_THRESHOLDS
from omnijourney.runtime.decisions import log_batch
from omnijourney.runtime.engine import Engine, Record
from omnijourney.runtime.states import StateStore
from omnijourney.runtime.timers import Clock
from omnijourney.settings import ClockMode, Topics

ROOT = Path(__file__).resolve().parents[1]
PYTHON_DEFAULT = (700, 10, 10)


def tick_all(rows: list[tuple[int, bytes, bytes]], engine: Engine, now: datetime
             ) -> tuple[float, float]:
    """Seconds per tick: all told, and in ``Engine.process`` alone."""
    data = {key: value for _, key, value in rows}
    store = StateStore(lambda: data)
    records = [Record(engine.topics.ticks, p, i, key, tick_record(key.decode(), now))
               for i, (p, key, _) in enumerate(rows)]
    in_engine = 0.0
    started = time.perf_counter()
    for i in range(0, len(records), 500):
        t0 = time.perf_counter()
        result = engine.process(records[i:i + 500], store.load)
        in_engine += time.perf_counter() - t0
        for cid, (_, st, doc) in result.states.items():
            store.put(cid, st, doc)
        log_batch(result)
    return (time.perf_counter() - started) / len(rows), in_engine / len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the decision lines, for the run
    configure("info")
    due = datetime(2026, 3, 2, 10, tzinfo=UTC)
    rows = herd_rows(args.customers, 8, [due] * args.customers)
    js = load_or_raise(str(ROOT / "journeys"))
    now = due + timedelta(seconds=1)
    engine = Engine(js, Topics(), Clock(ClockMode.WALL, wall=lambda: now))
    best: dict[tuple[int, int, int], tuple[float, float]] = {}
    for _ in range(args.repeat):
        for thresholds in (PYTHON_DEFAULT, GC_THRESHOLDS):
            gc.set_threshold(*thresholds)
            gc.collect()
            got = tick_all(rows, engine, now)
            best[thresholds] = min(best.get(thresholds, got), got)
    gc.set_threshold(*PYTHON_DEFAULT)
    base, tuned = best[PYTHON_DEFAULT], best[GC_THRESHOLDS]
    print(f"{args.customers:,} customers ticked in batches of 500, best of {args.repeat}:")
    print(f"  baseline, gc {PYTHON_DEFAULT}: {base[0] * 1e6:.1f} us per tick "
          f"({base[1] * 1e6:.1f} in the engine)")
    print(f"  worker,   gc {GC_THRESHOLDS}: {tuned[0] * 1e6:.1f} us per tick "
          f"({tuned[1] * 1e6:.1f} in the engine): {base[0] / tuned[0]:.2f}x the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
