"""Evaluator throughput: N synthetic customers through all five example journeys.

Two mixes, each measured against a baseline in the same run (the same evaluator with no
journeys loaded: dedup, state copy and profile folding only):

- realistic: a week of traffic shaped like a shop's stream. Most customers already exist
  (a profile update, no sign-up); browsing dominates (5-25 product views each), then
  carts, orders with shipments and clicks at typical rates.
- send-heavy: every customer signs up, browses a little, fills a cart; half order. Nearly
  every event leads to a send, so this is the cost per message (Liquid rendering).

    python bench/evaluator.py [--customers 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

from omnijourney.config import load
from omnijourney.core import TICK, CustomerState, Event, JourneySet, evaluate
from omnijourney.synthetic import START, synth

ROOT = Path(__file__).resolve().parents[1]
def run(js: JourneySet, timelines: list[list[Event]]) -> tuple[float, int, int, int]:
    """Seconds, events, timer ticks, commands for every timeline run to completion."""
    n_events = n_ticks = n_cmds = 0
    horizon = START + timedelta(days=120)
    t0 = time.perf_counter()
    for evs in timelines:
        state: CustomerState | None = None
        for e in evs:
            out = evaluate(js, state, e, e.occurred_at)
            state = out.state
            n_cmds += len(out.commands)
        n_events += len(evs)
        while state is not None and (due := state.next_due()) is not None and due <= horizon:
            out = evaluate(js, state, TICK, due)
            state = out.state
            n_cmds += len(out.commands)
            n_ticks += 1
    return time.perf_counter() - t0, n_events, n_ticks, n_cmds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    args = ap.parse_args()
    full = load(ROOT / "journeys").journey_set
    assert full is not None
    empty = JourneySet.build([], {}, None)
    run(full, synth(2000, seed=1))  # warm caches (CEL programs, zone files) outside timing
    print(f"single core, {args.customers:,} customers, all five journeys")
    for label, realistic in (("realistic", True), ("send-heavy", False)):
        timelines = synth(args.customers, realistic=realistic)
        base_s, events, _, _ = run(empty, timelines)
        full_s, _, ticks, cmds = run(full, timelines)
        print(f"\n[{label}] events {events:,}  timer ticks {ticks:,}  commands {cmds:,} "
              f"({cmds / events:.2f} per event)")
        print(f"  baseline (no journeys): {events / base_s:>9,.0f} events/s "
              f"{base_s / events * 1e6:6.1f} ms per 1k events")
        print(f"  full evaluator:         {events / full_s:>9,.0f} events/s "
              f"{full_s / events * 1e6:6.1f} ms per 1k events "
              f"({(events + ticks) / full_s:,.0f} inputs/s incl. ticks)")
        print(f"  ratio full/baseline throughput: {base_s / full_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
