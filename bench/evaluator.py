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
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from omnijourney.config import load
from omnijourney.core import TICK, CustomerState, Event, JourneySet, evaluate

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 3, 2, tzinfo=UTC)
ZONES = ["Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo", None]


def synth(customers: int, seed: int = 7, *, realistic: bool = True) -> list[list[Event]]:
    """Per customer: sign-up or profile update, browsing, carts, orders, shipments, clicks."""
    rnd = random.Random(seed)  # the benchmark's data, not the engine's decisions
    out = []
    for n in range(customers):
        cid = f"c{n}"
        at = START + timedelta(seconds=rnd.randrange(0, 7 * 86400))
        seq = 0

        def mk(kind: str, at: datetime, props: dict[str, object], cid: str = cid) -> Event:
            nonlocal seq
            seq += 1
            return Event(f"{cid}-{seq}", kind, cid, at, "web", props)

        traits: dict[str, object] = {"email": f"{cid}@example.com", "first_name": "Sam",
                                     "email_opt_in": rnd.random() < 0.8,
                                     "sms_opt_in": rnd.random() < 0.5,
                                     "push_opt_in": rnd.random() < 0.4}
        if rnd.random() < 0.7:
            traits["phone"] = "+15550100"
        if rnd.random() < 0.5:
            traits["push_token"] = f"tok-{cid}"
        tz = rnd.choice(ZONES)
        if tz:
            traits["timezone"] = tz
        new = not realistic or rnd.random() < 0.15
        evs = [mk("customer.signed_up" if new else "customer.updated", at, traits)]
        cart = f"{cid}-cart"
        views = rnd.randrange(5, 26) if realistic else rnd.randrange(1, 4)
        for _ in range(views):
            at += timedelta(minutes=rnd.randrange(1, 600))
            evs.append(mk("product.viewed", at, {"product_id": f"p{rnd.randrange(500)}",
                                             "product_name": "Shoe", "category": "shoes"}))
            if realistic and rnd.random() < 0.05:
                evs.append(mk("cart.item_added", at, {"cart_id": cart, "product_name": "Shoe"}))
        if not realistic or rnd.random() < 0.3:
            at += timedelta(minutes=rnd.randrange(5, 300))
            evs.append(mk("cart.item_added", at, {"cart_id": cart, "product_name": "Shoe"}))
        if rnd.random() < 0.3:
            at += timedelta(minutes=rnd.randrange(60, 300))
            evs.append(mk("email.clicked", at, {"cart_id": cart}))
        if rnd.random() < (0.5 if not realistic else 0.15):
            order = f"{cid}-o1"
            at += timedelta(minutes=rnd.randrange(10, 3000))
            evs.append(mk("order.placed", at, {"order_id": order, "cart_id": cart,
                                           "total": 42.0, "category": "shoes"}))
            for status in ("shipped", "delivered"):
                at += timedelta(hours=rnd.randrange(6, 48))
                evs.append(mk("shipment.updated", at, {"order_id": order, "status": status}))
        out.append(evs)
    return out


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
