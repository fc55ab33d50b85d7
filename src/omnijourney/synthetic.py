"""Synthetic customers for benchmarks and fault tests: a week of a shop's touchpoints.

Deterministic for a seed (the data's randomness, never the engine's decisions), so a test
can compute the expected commands with ``omnijourney simulate``'s core and compare them
with what the live engine delivered.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from omnijourney.core.events import Event

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

        email_ok = rnd.random() < 0.8
        traits: dict[str, object] = {"email": f"{cid}@example.com", "first_name": "Sam",
                                     "email_opt_in": email_ok,
                                     # Ads consent as email's: no new draw, so the rest
                                     # of every timeline stays what it was.
                                     "ads_opt_in": email_ok,
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
