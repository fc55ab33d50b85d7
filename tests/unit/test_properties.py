"""Property tests: the hard rules hold and replays are exact, for any timeline."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnijourney.config import load
from omnijourney.core import TICK, CustomerState, Event, evaluate
from omnijourney.core.channels import CHANNELS
from omnijourney.core.commands import ChannelCommand
from omnijourney.core.profile import address, has_address
from omnijourney.core.timeutil import ContactWindow
from omnijourney.simulator import simulate

REPO = Path(__file__).resolve().parents[2]
JS = load(REPO / "journeys").journey_set
assert JS is not None
START = datetime(2026, 3, 1, tzinfo=UTC)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", None]
WINDOW = ContactWindow.parse("09:00-21:00")
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@st.composite
def timelines(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    n_customers = draw(st.integers(1, 4))
    for c in range(n_customers):
        cid = f"c{c}"
        at = START + timedelta(minutes=draw(st.integers(0, 3000)))
        props = {
            "email": f"{cid}@example.com" if draw(st.booleans()) else None,
            "phone": "+1555000" if draw(st.booleans()) else None,
            "push_token": "tok" if draw(st.booleans()) else None,
            "email_opt_in": draw(st.booleans()), "sms_opt_in": draw(st.booleans()),
            "push_opt_in": draw(st.booleans()), "timezone": draw(st.sampled_from(ZONES)),
        }
        events.append(Event(f"{cid}-0", "customer.signed_up", cid, at, "web",
                            {k: v for k, v in props.items() if v is not None}))
        carts = draw(st.lists(st.sampled_from(["k1", "k2", "k3"]), min_size=1, max_size=3))
        for i in range(draw(st.integers(0, 14))):
            at += timedelta(minutes=draw(st.integers(1, 2000)))
            kind = draw(st.sampled_from(["product.viewed", "cart.item_added", "order.placed",
                                         "shipment.updated", "email.clicked"]))
            cart = draw(st.sampled_from(carts))
            p: dict[str, object] = {"cart_id": cart, "order_id": f"o-{cart}",
                                    "category": "shoes"}
            if kind == "shipment.updated":
                p["status"] = draw(st.sampled_from(["shipped", "delivered"]))
            events.append(Event(f"{cid}-{i + 1}", kind, cid, at, "app", p))
    return events


def _rows(commands: list[ChannelCommand]) -> list[str]:
    return [json.dumps(c.to_dict(), sort_keys=True) for c in commands]


@PROPERTY_SETTINGS
@given(timelines())
def test_replay_gives_identical_commands_and_ids(events: list[Event]) -> None:
    a = simulate(JS, events)
    b = simulate(JS, list(events))
    assert _rows(a.commands) == _rows(b.commands)
    ids = [c.command_id for c in a.commands]
    assert len(ids) == len(set(ids))


@PROPERTY_SETTINGS
@given(timelines(), st.data())
def test_redelivered_events_never_duplicate_a_command(events: list[Event],
                                                      data: st.DataObject) -> None:
    dupes = data.draw(st.lists(st.sampled_from(events), max_size=5))
    # A redelivery arrives right after the original (as after a consumer restart).
    stream: list[Event] = []
    for e in events:
        stream.append(e)
        stream.extend(d for d in dupes if d is e)
    assert _rows(simulate(JS, stream).commands) == _rows(simulate(JS, events).commands)


@PROPERTY_SETTINGS
@given(timelines(), st.data())
def test_extra_timer_ticks_change_nothing(events: list[Event], data: st.DataObject) -> None:
    """Event time, not tick timing, decides: ticks at any moment before the next event
    (and state saved and restored in between) yield the simulator's commands exactly."""
    expected = simulate(JS, events)
    got: list[ChannelCommand] = []
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for e in sorted(events, key=lambda e: e.occurred_at):
        by_customer[e.customer_id].append(e)
    assert expected.until is not None
    for evs in by_customer.values():
        state: CustomerState | None = None
        for e in evs:
            if state is not None and state.clock is not None:
                # Offsets from the time before the ticks: a tick moves the state's clock,
                # and every tick must still come before the next event.
                base = state.clock
                gap = int((e.occurred_at - base).total_seconds())
                for offset in sorted(data.draw(st.lists(st.integers(0, max(gap - 1, 0)),
                                                        max_size=2))):
                    if offset < gap:
                        out = evaluate(JS, state, TICK, base + timedelta(seconds=offset))
                        got += out.commands
                        state = CustomerState.from_dict(json.loads(json.dumps(
                            out.state.to_dict())))
            out = evaluate(JS, state, e, e.occurred_at)
            got += out.commands
            state = out.state
        while state is not None and (due := state.next_due()) and due <= expected.until:
            out = evaluate(JS, state, TICK, due)
            got += out.commands
            state = out.state
    key = sorted(_rows(got))
    assert key == sorted(_rows(expected.commands))


@PROPERTY_SETTINGS
@given(timelines())
def test_hard_rules_hold_for_every_marketing_send(events: list[Event]) -> None:
    result = simulate(JS, events)
    signups = {e.customer_id: e.properties for e in events if e.type == "customer.signed_up"}
    per_channel: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for c in result.commands:
        traits = signups[c.customer_id]
        address_key = {"email": "email", "sms": "phone", "push": "push_token"}.get(c.channel)
        if address_key:
            assert c.to == traits.get(address_key), "never send without the customer's address"
        if c.transactional:
            continue
        if c.channel in ("email", "sms", "push"):
            assert traits.get(f"{c.channel}_opt_in") is True, "marketing needs consent"
            tz = ZoneInfo(str(traits.get("timezone") or "UTC"))
            local = c.send_at.astimezone(tz).time()
            assert WINDOW.contains(local), f"{c.channel} at {local} outside quiet hours"
        per_channel[(c.customer_id, c.channel)].append(c.send_at)
    caps = {"email": 2, "sms": 1}
    for (_, channel), times in per_channel.items():
        if channel in caps:
            times.sort()
            for i, start in enumerate(times):
                within = [x for x in times[i:] if x - start < timedelta(hours=24)]
                assert len(within) <= caps[channel], f"{channel} cap broken"
    # Suppressed sends are recorded with a reason, never silently dropped.
    for x in result.trace:
        if x.kind == "suppressed":
            assert x.detail["reason"] in {"no_consent", "no_address", "address_bounced",
                                          "frequency_cap", "template_error"}


@st.composite
def any_journey(draw: st.DrawFn) -> list[dict[str, object]]:
    """Up to six steps of sends, zero or short waits, gotos and branches, linked at random:
    loops of every kind, validated or not."""
    n = draw(st.integers(1, 6))
    ids = [f"s{i}" for i in range(n)]
    target = st.sampled_from(ids)
    steps: list[dict[str, object]] = []
    for sid in ids:
        kind = draw(st.sampled_from(["webhook", "wait", "wait_for", "goto", "branch"]))
        if kind == "webhook":
            step: dict[str, object] = {"type": "webhook", "url": "https://hooks.example/x"}
        elif kind == "wait":
            step = {"type": "wait", "duration": draw(st.sampled_from(["0s", "0s", "1s"]))}
        elif kind == "wait_for":
            step = {"type": "wait_for", "event": "order.placed",
                    "timeout": draw(st.sampled_from(["0s", "1s"])), "on_timeout": draw(target)}
        elif kind == "goto":
            step = {"type": "goto", "next": draw(target)}
        else:
            step = {"type": "branch", "branches": [{"when": "true", "next": draw(target)}],
                    "else": draw(target)}
        if kind in ("webhook", "wait") and draw(st.booleans()):
            step["next"] = draw(target)
        steps.append({"id": sid, **step})
    return steps


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_journey())
def test_no_evaluation_sends_a_customer_more_than_the_cap_whatever_the_journey(
        steps: list[dict[str, object]]) -> None:
    from omnijourney.core import model as m
    from omnijourney.core.catalog import JourneySet
    from omnijourney.core.steps import MAX_COMMANDS_PER_EVALUATION

    js = JourneySet.build([m.JourneyDef.model_validate(
        {"id": "any", "trigger": {"event": "product.viewed"}, "steps": steps})], {})
    start = datetime(2026, 3, 2, 11, tzinfo=UTC)
    state: CustomerState | None = None
    inputs: list[tuple[Event | object, datetime]] = [
        (Event("v1", "product.viewed", "c1", start, None, {}), start)]
    inputs += [(TICK, start + timedelta(seconds=s)) for s in (0, 1, 2, 5, 60)]
    for inp, now in inputs:
        if inp is TICK and (state is None or state.next_due() is None):
            continue
        out = evaluate(js, state, inp, now)  # type: ignore[arg-type]
        assert len(out.commands) <= MAX_COMMANDS_PER_EVALUATION <= 16
        state = out.state


_ADDRESS_VALUES = st.none() | st.integers() | st.sampled_from(["", "  ", "\t", "a@b.io", "+1 555",
                                                                 "x", "tok-1"]) | st.text(max_size=6)


@given(st.fixed_dictionaries({}, optional={
    "email": _ADDRESS_VALUES, "phone": _ADDRESS_VALUES, "push_token": _ADDRESS_VALUES}))
@PROPERTY_SETTINGS
def test_having_an_address_is_what_building_it_says(profile: dict[str, object]) -> None:
    """``reachable`` asks ``has_address``, which skips building the ads digest: for any
    profile, it answers as building the address would."""
    for channel in (*CHANNELS, "pigeon"):
        assert has_address(profile, channel) == (address(profile, channel) is not None), (
            channel, profile)
