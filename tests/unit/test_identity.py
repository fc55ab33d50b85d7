"""Identity resolution and merging: the rules of core/identity.py and core/merging.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from omnijourney.codecs import decode_message, encode_message
from omnijourney.config import load
from omnijourney.core import evaluate
from omnijourney.core.catalog import JourneySet
from omnijourney.core.events import Event, parse_event
from omnijourney.core.identity import (
    Absorbed,
    IdentityPolicy,
    InvalidIdentifier,
    MergeOffer,
    generated_id,
    identifier_key,
    normalize,
    parse_identifiers,
    start,
    survivor,
    too_many,
    visit,
)
from omnijourney.core.merging import Identified, merge_profiles
from omnijourney.core.trace import TraceKind
from omnijourney.ops.metrics import WorkerMetrics
from omnijourney.simulator import simulate

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 16, 9, 0, tzinfo=UTC)


def journeys() -> JourneySet:
    js = load(REPO / "journeys").journey_set
    assert js is not None
    return js


def ev(event_id: str, etype: str, minutes: int, customer: str = "", *,
       ids: dict[str, str] | None = None, source: str | None = "web",
       **props: object) -> Event:
    return parse_event({"event_id": event_id, "type": etype, "customer_id": customer,
                        "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat(),
                        "source": source, "identifiers": ids or {}, "properties": props})


# ------------------------------------------------------------- identifiers

def test_identifiers_normalize_and_their_keys_hold_no_address() -> None:
    assert normalize("email", "  Ana@Example.COM ") == "ana@example.com"
    assert normalize("phone", "+49 (151) 123-4567") == "+491511234567"
    key = identifier_key("email", "ana@example.com")
    assert key.startswith("email:") and "ana" not in key and "example" not in key
    assert key == identifier_key("email", normalize("email", "ANA@example.com"))
    assert generated_id(key) == generated_id(key)  # a replay finds the same customer
    assert generated_id(key) != generated_id(identifier_key("email", "bo@example.com"))
    ordered = parse_identifiers({"anonymous_id": "a", "device_id": "d", "email": "x@y.io",
                                 "marketplace:amazon": "m", "loyalty_id": "l"})
    assert list(ordered) == ["loyalty_id", "email", "marketplace:amazon", "device_id",
                             "anonymous_id"]
    for kind, value in (("email", "<script>@x"), ("phone", "call me"),
                        ("anonymous_id", "x" * 201), ("Email", "a@b.co"), ("marketplace:", "m")):
        with pytest.raises(InvalidIdentifier):
            normalize(kind, value)


def test_a_hop_claims_what_nobody_holds_and_links_what_another_holds() -> None:
    policy = IdentityPolicy()
    event = {"event_id": "e", "occurred_at": "2026-03-16T09:00:00Z", "customer_id": ""}
    res = start(event, {"email": "x@y.io", "anonymous_id": "a-1", "device_id": "d-1"})
    claim, res = visit(res, None, policy)  # email: nobody
    new = generated_id(identifier_key("email", "x@y.io"))
    assert (claim, res.customer) == (new, new)
    claim, res = visit(res, "cus_other", policy)  # the anonymous id: someone else's
    assert claim is None and res.links == ("cus_other",)
    claim, res = visit(res, "cus_tablet", policy)  # a device never merges customers
    assert claim is None and res.refused == (("device_id", "cus_tablet"),)
    assert res.done and res.links == ("cus_other",)
    # An event that names its customer only links: it was applied there already.
    named = start({**event, "customer_id": "c-1"}, {"anonymous_id": "a-1"})
    assert named.link_only and named.customer == "c-1"
    assert visit(named, None, policy)[0] == "c-1"
    assert visit(named, "c-1", policy)[0] is None


def test_the_survivor_is_a_rule_on_the_pair() -> None:
    assert survivor("cus_b", "c-shop") == survivor("c-shop", "cus_b") == "c-shop"
    assert survivor("cus_b", "cus_a") == survivor("cus_a", "cus_b") == "cus_a"
    assert survivor("c-2", "c-1") == "c-1"


def test_the_guard_counts_distinct_identifiers_per_kind() -> None:
    policy = IdentityPolicy()
    assert too_many({"loyalty_id": ["L1"]}, {"loyalty_id": ["L2"]}, policy) == ("loyalty_id", 1)
    assert too_many({"loyalty_id": ["L1"]}, {"loyalty_id": ["L1"]}, policy) is None
    emails = {"email": ["a", "b"]}
    assert too_many(emails, {"email": ["c"]}, policy) is None
    assert too_many(emails, {"email": ["c", "d"]}, policy) == ("email", 3)


# ------------------------------------------------------------------ merges

def test_merged_profiles_keep_the_survivors_traits_and_every_revocation() -> None:
    mine = {"customer_id": "c-1", "email": "new@x.io", "consent": {"email": True, "sms": True},
            "attributes": {"tier": "gold"}, "counts": {"order.placed": 1},
            "first_seen_at": "2026-03-10T00:00:00Z", "last_seen_at": "2026-03-16T00:00:00Z",
            "identifiers": {"anonymous_id": ["a-2"]}}
    theirs = {"customer_id": "cus_x", "email": "old@x.io", "phone": "+4915100000",
              "consent": {"sms": False, "push": True}, "attributes": {"tier": "basic",
                                                                       "size": "M"},
              "counts": {"order.placed": 2, "product.viewed": 5},
              "first_seen_at": "2026-03-01T00:00:00Z", "last_seen_at": "2026-03-12T00:00:00Z",
              "identifiers": {"anonymous_id": ["a-1"]},
              "channels": {"app": {"first_seen_at": "2026-03-01T00:00:00Z",
                                   "last_seen_at": "2026-03-12T00:00:00Z"}}}
    out = merge_profiles(mine, theirs, IdentityPolicy())
    assert out["email"] == "new@x.io" and out["phone"] == "+4915100000"
    assert out["consent"] == {"email": True, "sms": False, "push": True}
    assert out["attributes"] == {"tier": "gold", "size": "M"}
    assert out["counts"] == {"order.placed": 3, "product.viewed": 5}
    assert (out["first_seen_at"], out["last_seen_at"]) == ("2026-03-01T00:00:00Z",
                                                            "2026-03-16T00:00:00Z")
    assert out["identifiers"] == {"anonymous_id": ["a-1", "a-2"]}
    assert set(out["channels"]) == {"app"}


def test_a_merge_moves_runs_sends_and_memory_and_answers_each_message_once() -> None:
    js = journeys()
    survivor_id, absorbed_id = "c-hal", "cus_anon"
    a = evaluate(js, None, ev("c1", "cart.item_added", 0, absorbed_id, cart_id="k1"),
                 T0).state
    a = evaluate(js, a, ev("v1", "product.viewed", 5, absorbed_id, product_id="p"),
                 T0 + timedelta(minutes=5)).state
    a.sent["email"] = [T0 - timedelta(hours=3)]
    s = evaluate(js, None, ev("v2", "product.viewed", 10, survivor_id, product_id="q"),
                 T0 + timedelta(minutes=10)).state
    s.sent["email"] = [T0 - timedelta(hours=1)]
    at = T0 + timedelta(minutes=20)
    out = evaluate(js, s, Absorbed(absorbed_id, survivor_id, a.to_dict(), at), at)
    merged = out.state
    assert merged.instances["browse_abandonment#"].instance_id == \
        a.instances["browse_abandonment#"].instance_id  # entered first: goes on
    assert "cart_abandonment#k1" in merged.instances  # moved with its timer
    assert merged.next_due() == a.instances["cart_abandonment#k1"].due_at
    assert merged.sent["email"] == sorted(a.sent["email"] + s.sent["email"])  # caps hold
    assert {"v1", "c1", "v2"} <= set(merged.seen)
    kinds = [x.kind for x in out.trace]
    assert kinds[0] == TraceKind.MERGED and TraceKind.RUN_MERGED in kinds
    again = evaluate(js, merged, Absorbed(absorbed_id, survivor_id, a.to_dict(), at), at)
    assert again.state is merged and [x.kind for x in again.trace] == [
        TraceKind.DUPLICATE_EVENT]


def test_the_absorbed_customer_hands_over_and_then_forwards() -> None:
    js = journeys()
    at = T0 + timedelta(minutes=1)
    a = evaluate(js, None, ev("v1", "product.viewed", 0, "cus_b", product_id="p"), T0).state
    # cus_b receives c-1's offer; the shop's id survives, so cus_b sends its state over.
    out = evaluate(js, a, MergeOffer("c-1", "cus_b", {}, at), at)
    assert out.state.merged_into == "c-1" and not out.state.instances
    assert out.state.profile == {}  # nothing of the person is left behind
    (absorbed,) = out.outbox
    assert isinstance(absorbed, Absorbed) and absorbed.customer_id == "c-1"
    assert absorbed.state["instances"]
    later = ev("v2", "product.viewed", 2, "cus_b", product_id="q")
    fwd = evaluate(js, out.state, later, at)
    (moved,) = fwd.outbox
    assert isinstance(moved, Identified) and moved.event.customer_id == "c-1"
    assert fwd.state is out.state and not fwd.commands
    # A message of the merge read twice (a replay) is answered once.
    assert evaluate(js, out.state, MergeOffer("c-1", "cus_b", {}, at), at).outbox == []
    for msg in (absorbed, moved, MergeOffer("c-1", "cus_b", {"email": ["sha256:x"]}, at)):
        assert decode_message(encode_message(msg)) == msg


def test_a_refused_merge_is_traced_and_counted() -> None:
    events = [ev("i1", "customer.signed_up", 0, "c-ivy", source="store",
                 ids={"loyalty_id": "L-201", "email": "desk@store.example"}),
              ev("j1", "customer.signed_up", 5, "c-jon", source="store",
                 ids={"loyalty_id": "L-202", "email": "desk@store.example"})]
    result = simulate(journeys(), events)
    refused = [x for x in result.trace if x.kind == TraceKind.MERGE_REFUSED]
    assert [(x.customer_id, x.detail["reason"], x.detail["kind"]) for x in refused] == [
        ("c-ivy", "too_many_identifiers", "loyalty_id")]
    assert {s.merged_into for s in result.states.values()} == {None}
    metrics = WorkerMetrics()
    metrics.observe(inputs=(), dead=(), trace=result.trace, evaluation_seconds=(),
                    batch_seconds=0.0)
    assert metrics.merges.labels("too_many_identifiers")._value.get() == 1


def test_without_the_guard_one_shared_email_would_glue_every_shopper_into_one() -> None:
    """The guard's reason to be: twenty shoppers, each with a card, all given the front
    desk's email. With the default policy they stay twenty; with no limit they become one."""
    shoppers = [ev(f"s{i}", "customer.signed_up", i, f"c-{i:02}", source="store",
                   ids={"loyalty_id": f"L-{i}", "email": "desk@store.example"})
                for i in range(20)]
    guarded = simulate(journeys(), shoppers)
    assert sum(1 for s in guarded.states.values() if s.merged_into is None) == 20
    loose = journeys()
    object.__setattr__(loose.policies, "identity",
                       IdentityPolicy(max_per_customer={"loyalty_id": 1000, "email": 1000}))
    glued = simulate(loose, shoppers)
    assert sum(1 for s in glued.states.values() if s.merged_into is None) == 1


def test_conditions_see_the_identifiers_and_channels_a_customer_has_used(
        tmp_path: Path) -> None:
    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeys" / "store_fans.yaml").write_text(
        "name: Store fans\nversion: 1\ntrigger:\n  event: order.placed\n"
        "  when: \"'store' in profile.channels && 'loyalty_id' in profile.identifiers\"\n"
        "steps:\n  - id: thanks\n    type: send\n    channel: email\n"
        "    template: thanks\n")
    (tmp_path / "journeys" / "templates").mkdir()
    (tmp_path / "journeys" / "templates" / "thanks.yaml").write_text(
        "channel: email\nlocales:\n  en:\n    subject: Thanks\n    text: Thanks\n")
    loaded = load(tmp_path / "journeys")
    assert loaded.journey_set is not None, loaded.violations
    events = [ev("k1", "customer.signed_up", 0, "c-kim", source="store",
                 ids={"loyalty_id": "L-9"}, email="kim@x.io", email_opt_in=True),
              ev("k2", "order.placed", 5, source="store", ids={"loyalty_id": "L-9"},
                 order_id="o-1"),
              ev("m1", "customer.signed_up", 0, "c-max", source="web", email="max@x.io",
                 email_opt_in=True),
              ev("m2", "order.placed", 5, "c-max", source="web", order_id="o-2")]
    result = simulate(loaded.journey_set, events)
    assert [c.customer_id for c in result.commands] == ["c-kim"]
    channels = result.states["c-kim"].profile["channels"]
    assert channels["store"] == {"first_seen_at": "2026-03-16T09:00:00Z",
                                 "last_seen_at": "2026-03-16T09:05:00Z"}
    assert json.dumps(result.states["c-kim"].profile["identifiers"]) == '{"loyalty_id": ["L-9"]}'
