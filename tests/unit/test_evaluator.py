"""Each step type and each rule of the evaluator, driven in virtual time."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from omnijourney.core import TICK, CustomerState, evaluate
from omnijourney.core.catalog import JourneySet
from omnijourney.core.evaluator import Evaluation, Input
from omnijourney.core.profile import view
from omnijourney.core.redaction import digest
from omnijourney.core.steps import MAX_STEPS_PER_RUN, cohort_bucket
from tests.helpers import Driver, build, ev, signup, t

SEND_EMAIL = """
    trigger: {{event: {trigger}}}
    entry: {{re_entry: {re_entry}}}
    steps:
      - {{id: mail, type: send, channel: email, template: hello_email}}
"""


def journey(trigger: str = "product.viewed", re_entry: str = "always") -> str:
    return SEND_EMAIL.format(trigger=trigger, re_entry=re_entry)


# ---------------------------------------------------------------- sends and policies

def test_send_renders_the_template_and_ids_are_deterministic() -> None:
    js = build(journey())
    d = Driver(js).send(signup(first_name="Ana"), ev("product.viewed", "2026-03-02T10:05:00Z",
                                                    event_id="view-1"))
    (cmd,) = d.commands
    assert (cmd.channel, cmd.to, cmd.template) == ("email", "c1@example.com", "hello_email")
    assert cmd.content == {"subject": "Hi Ana", "text": "Hello"}
    assert cmd.send_at == t("2026-03-02T10:05:00Z")
    assert cmd.deadline == t("2026-03-03T10:05:00Z")
    assert (cmd.trigger_event_id, cmd.journey_version, cmd.locale) == ("view-1", "1", "en")
    again = Driver(js).send(signup(first_name="Ana"), ev("product.viewed",
                                                         "2026-03-02T10:05:00Z",
                                                         event_id="view-1"))
    assert again.commands[0].command_id == cmd.command_id


def test_locale_falls_back_from_region_to_language_to_default() -> None:
    js = build(journey())
    for locale, subject in (("de-AT", "Hallo"), ("de", "Hallo"), ("fr-FR", "Hi there")):
        d = Driver(js).send(signup(locale=locale), ev("product.viewed", "2026-03-02T11:00:00Z"))
        assert d.commands[0].content["subject"] == subject


def test_no_marketing_send_without_consent_and_none_without_address() -> None:
    js = build(journey())
    d = Driver(js).send(signup(email_opt_in=False), ev("product.viewed", "2026-03-02T11:00:00Z"))
    assert d.commands == []
    assert [x.detail["reason"] for x in d.kinds("suppressed")] == ["no_consent"]
    d = Driver(js).send(signup(email=None), ev("product.viewed", "2026-03-02T11:00:00Z"))
    assert d.commands == []
    assert [x.detail["reason"] for x in d.kinds("suppressed")] == ["no_address"]


def test_consent_follows_consent_events_and_unsubscribes() -> None:
    js = build(journey())
    d = Driver(js).send(
        signup(email_opt_in=False),
        ev("consent.updated", "2026-03-02T10:01:00Z", channel="email", granted=True),
        ev("product.viewed", "2026-03-02T11:00:00Z"),
        ev("email.unsubscribed", "2026-03-02T11:30:00Z"),
        ev("product.viewed", "2026-03-02T12:00:00Z"),
    )
    assert len(d.commands) == 1
    assert d.states["c1"].profile["consent"]["email"] is False


def test_transactional_ignores_consent_quiet_hours_and_caps_but_needs_an_address() -> None:
    js = build("""
        trigger: {event: order.placed}
        entry: {re_entry: always}
        steps:
          - {id: r, type: send, channel: sms, template: receipt}
    """)
    night = [ev("order.placed", f"2026-03-02T23:0{i}:00Z", order_id=f"o{i}") for i in range(3)]
    d = Driver(js).send(signup(sms_opt_in=False), *night)
    assert [c.content["text"] for c in d.commands] == ["Order o0", "Order o1", "Order o2"]
    assert all(c.transactional and c.send_at.hour == 23 for c in d.commands)
    d = Driver(js).send(signup(phone=None), *night)
    assert d.commands == []


def test_a_bounced_address_gets_nothing_more_until_the_customer_gives_another() -> None:
    js = build(journey(), """
        trigger: {event: order.placed}
        entry: {re_entry: always}
        steps:
          - {id: r, type: send, channel: sms, template: receipt}
    """)
    d = Driver(js).send(
        signup(),
        ev("product.viewed", "2026-03-02T11:00:00Z"),
        ev("email.bounced", "2026-03-02T11:01:00Z", reason="550 5.1.1 no such user"),
        ev("product.viewed", "2026-03-02T12:00:00Z"),
        ev("sms.bounced", "2026-03-02T12:01:00Z"),
        ev("order.placed", "2026-03-02T12:30:00Z", order_id="o1"),  # transactional too
    )
    assert [c.channel for c in d.commands] == ["email"]
    assert [(x.detail["channel"], x.detail["reason"]) for x in d.kinds("suppressed")] == [
        ("email", "address_bounced"), ("sms", "address_bounced")]
    profile = d.states["c1"].profile
    assert "c1@example.com" not in json.dumps(profile["bounced"])  # a digest, not a copy
    seen = view(profile, js.policies)
    assert seen["bounced"] == {"email": True, "sms": True, "push": False, "ads": False}
    assert seen["reachable"]["email"] is False and seen["consent"]["email"] is True
    d.send(ev("customer.updated", "2026-03-02T13:00:00Z", email="C1.New@example.com"),
           ev("product.viewed", "2026-03-02T14:00:00Z"))
    assert [c.to for c in d.commands] == ["c1@example.com", "C1.New@example.com"]
    assert view(d.states["c1"].profile, js.policies)["reachable"]["email"] is True


def test_quiet_hours_defer_to_the_next_window_in_the_customers_zone() -> None:
    js = build(journey())
    d = Driver(js).send(signup(timezone="America/New_York"),
                        ev("product.viewed", "2026-03-03T03:30:00Z"))  # 22:30 in New York
    assert d.commands == []
    (deferred,) = d.kinds("deferred")
    assert deferred.text_detail()["until"] == "2026-03-03T14:00:00Z"
    d.advance("2026-03-04T00:00:00Z")
    assert [c.send_at for c in d.commands] == [t("2026-03-03T14:00:00Z")]


def test_a_personal_contact_window_overrides_the_default() -> None:
    js = build(journey())
    d = Driver(js).send(signup(contact_window="18:00-20:00"),
                        ev("product.viewed", "2026-03-02T12:00:00Z"))
    d.advance("2026-03-03T00:00:00Z")
    assert [c.send_at for c in d.commands] == [t("2026-03-02T18:00:00Z")]


def test_consent_is_rechecked_when_a_deferred_send_comes_due() -> None:
    js = build(journey())
    d = Driver(js).send(signup(), ev("product.viewed", "2026-03-02T22:00:00Z"),
                        ev("consent.updated", "2026-03-03T07:00:00Z", channel="email",
                           granted=False))
    d.advance("2026-03-04T00:00:00Z")
    assert d.commands == []
    assert d.kinds("suppressed")[0].detail["reason"] == "no_consent"


def test_frequency_cap_is_rolling_and_across_journeys() -> None:
    js = build(journey("product.viewed"), journey("cart.item_added"))
    d = Driver(js).send(
        signup(),
        ev("product.viewed", "2026-03-02T10:00:00Z"),
        ev("cart.item_added", "2026-03-02T11:00:00Z"),
        ev("product.viewed", "2026-03-02T12:00:00Z"),  # third in 24h: capped
        ev("product.viewed", "2026-03-03T10:00:01Z"),  # first has rolled out of the window
    )
    assert [c.send_at for c in d.commands] == [
        t("2026-03-02T10:00:00Z"), t("2026-03-02T11:00:00Z"), t("2026-03-03T10:00:01Z")]
    (capped,) = d.kinds("suppressed")
    assert capped.detail == {"channel": "email", "reason": "frequency_cap", "cap": "2 per 1d"}


def test_template_errors_skip_the_send_with_the_reason() -> None:
    js = build("""
        trigger: {event: product.viewed}
        steps:
          - {id: bad, type: send, channel: email, template: broken}
          - {id: good, type: send, channel: sms, template: hello_sms, data: {code: "X{{ 1 | plus: 1 }}"}}
    """)
    d = Driver(js).send(signup(), ev("product.viewed", "2026-03-02T11:00:00Z"))
    assert [c.step for c in d.commands] == ["good"]
    assert d.commands[0].content["text"] == "Hi there X2"
    assert "no_such_field" in d.kinds("suppressed")[0].detail["error"]


def test_ads_and_webhook_commands() -> None:
    js = build("""
        trigger: {event: product.viewed}
        steps:
          - {id: ad, type: send, channel: ads, audience: viewers}
          - id: hook
            type: webhook
            url: "https://crm.example/customers/{{ profile.customer_id }}"
            body: '{"viewed": "{{ event.properties.sku }}"}'
            headers: {X-Source: omnijourney}
    """)
    d = Driver(js).send(signup(email="Ana@Example.com "), ev("product.viewed",
                                                            "2026-03-02T23:00:00Z", sku="s1"))
    ad, hook = d.commands
    assert ad.content == {"audience": "viewers", "action": "add"}
    assert ad.to is not None and ad.to.startswith("sha256:") and "example" not in ad.to
    assert ad.send_at == t("2026-03-02T23:00:00Z")  # quiet hours are for people, not audiences
    assert hook.to == "https://crm.example/customers/c1"
    assert json.loads(hook.content["body"]) == {"viewed": "s1"}
    assert json.loads(hook.content["headers"]) == {"X-Source": "omnijourney"}


# ---------------------------------------------------------------------- waits

def test_wait_duration_and_until_local_time() -> None:
    js = build("""
        trigger: {event: product.viewed}
        steps:
          - {id: w1, type: wait, duration: 2h}
          - {id: s1, type: send, channel: email, template: hello_email}
          - {id: w2, type: wait, until_local_time: "10:30"}
          - {id: s2, type: send, channel: email, template: hello_email}
    """)
    d = Driver(js).send(signup(timezone="Europe/Berlin"),
                        ev("product.viewed", "2026-03-02T11:00:00Z"))
    assert d.commands == []
    d.advance("2026-03-05T00:00:00Z")
    # 13:00Z, then the next 10:30 in Berlin (09:30Z the following day).
    assert [c.send_at for c in d.commands] == [t("2026-03-02T13:00:00Z"),
                                               t("2026-03-03T09:30:00Z")]


def test_wait_until_a_date_attribute_with_offset() -> None:
    js = build("""
        trigger: {event: order.placed}
        steps:
          - {id: w, type: wait, until: "{{ event.properties.event_date }}", offset: "-1d"}
          - {id: s, type: send, channel: email, template: hello_email}
    """)
    d = Driver(js).send(signup(), ev("order.placed", "2026-03-02T11:00:00Z",
                                     event_date="2026-03-10T18:00:00Z"))
    assert d.states["c1"].next_due() == t("2026-03-09T18:00:00Z")
    d.advance("2026-03-20T00:00:00Z")
    assert [c.send_at for c in d.commands] == [t("2026-03-09T18:00:00Z")]
    # A date already past does not strand the customer: the wait is skipped.
    d = Driver(js).send(signup(), ev("order.placed", "2026-03-02T11:00:00Z",
                                     event_date="2026-03-01T18:00:00Z"))
    assert len(d.commands) == 1
    assert d.kinds("wait_skipped")


@pytest.mark.parametrize("date", [None, "10/04/2026", ""])
def test_a_missing_or_unreadable_until_date_ends_the_run_unless_told_to_go_on(
        date: str | None) -> None:
    """Issue 11, point 8: with no renewal date the wait was skipped and the mail went out
    at entry."""
    steps = """
        trigger: {event: order.placed}
        steps:
          - {id: w, type: wait, until: "{{ event.properties.renewal_date }}"IF}
          - {id: s, type: send, channel: email, template: hello_email}
    """
    props = {} if date is None else {"renewal_date": date}
    d = Driver(build(steps.replace("IF", ""))).send(
        signup(), ev("order.placed", "2026-03-02T11:00:00Z", **props))
    assert d.commands == []
    (why,) = d.kinds("wait_unresolved")
    assert why.step == "w" and why.detail["reason"] == "no readable time to wait until"
    assert d.kinds("no_time") and not d.states["c1"].instances
    going_on = Driver(build(steps.replace("IF", ", if_missing: continue"))).send(
        signup(), ev("order.placed", "2026-03-02T11:00:00Z", **props))
    assert len(going_on.commands) == 1 and going_on.kinds("wait_skipped")


def test_an_error_that_quotes_a_profile_value_names_an_address_by_its_digest() -> None:
    """A wait's ``until`` rendering the customer's email is an unreadable time; the error
    the trace keeps (and the worker logs in its decision lines) quotes what it read: its
    digest, not the address."""
    js = build("""
        trigger: {event: order.placed}
        steps:
          - {id: w, type: wait, until: "{{ profile.email }}", if_missing: continue}
          - {id: s, type: send, channel: email, template: hello_email}
    """)
    d = Driver(js).send(signup(email="Ana.Secret@example.com"),
                        ev("order.placed", "2026-03-02T11:00:00Z"))
    (bad,) = [x for x in d.kinds("error") if x.detail.get("reason") == "bad_until"]
    assert bad.detail["error"] == f"'{digest('Ana.Secret@example.com')}' is not an RFC " \
        "3339 timestamp", bad.detail
    assert "example.com" not in json.dumps([x.detail for x in d.trace], default=str)
    assert len(d.commands) == 1  # the run went on, as told, and sent


def test_nothing_fires_early() -> None:
    js = build("""
        trigger: {event: product.viewed}
        steps:
          - {id: w, type: wait, duration: 1h}
          - {id: s, type: send, channel: email, template: hello_email}
    """)
    d = Driver(js).send(signup(), ev("product.viewed", "2026-03-02T11:00:00Z"))
    out = evaluate(js, d.states["c1"], TICK, t("2026-03-02T11:59:59Z"))
    assert out.commands == []
    out = evaluate(js, out.state, TICK, t("2026-03-02T12:00:00Z"))
    assert len(out.commands) == 1


WAIT_FOR = """
    trigger: {event: cart.item_added, correlate_by: cart_id}
    entry: {re_entry: always}
    steps:
      - id: wf
        type: wait_for
        event: [email.clicked, cart.checked_out]
        when: event.properties.get_or_missing != "no"
        timeout: 1h
        next: clicked
        on_timeout: timed_out
      - {id: clicked, type: send, channel: sms, template: hello_sms, data: {code: C}, next: fin}
      - {id: timed_out, type: send, channel: email, template: hello_email}
      - {id: fin, type: end}
"""


def test_wait_for_event_or_timeout() -> None:
    js = build(WAIT_FOR.replace('when: event.properties.get_or_missing != "no"', ""))
    d = Driver(js).send(signup(), ev("cart.item_added", "2026-03-02T11:00:00Z", cart_id="k1"),
                        ev("email.clicked", "2026-03-02T11:30:00Z", cart_id="k1"))
    assert [c.step for c in d.commands] == ["clicked"]
    d = Driver(js).send(signup(), ev("cart.item_added", "2026-03-02T11:00:00Z", cart_id="k1"))
    d.advance("2026-03-03T00:00:00Z")
    assert [c.step for c in d.commands] == ["timed_out"]
    assert d.commands[0].send_at == t("2026-03-02T12:00:00Z")


def test_wait_for_respects_correlation_and_conditions() -> None:
    js = build(WAIT_FOR.replace("get_or_missing", "reason"))
    d = Driver(js).send(
        signup(),
        ev("cart.item_added", "2026-03-02T11:00:00Z", cart_id="k1"),
        ev("cart.item_added", "2026-03-02T11:01:00Z", cart_id="k2"),
        ev("email.clicked", "2026-03-02T11:10:00Z", cart_id="k2", reason="yes"),
        ev("email.clicked", "2026-03-02T11:20:00Z", cart_id="k1", reason="no"),
    )
    d.advance("2026-03-03T00:00:00Z")
    got = sorted((c.instance_key, c.step) for c in d.commands)
    assert got == [("k1", "timed_out"), ("k2", "clicked")]
    assert [x.key for x in d.kinds("wait_for_ignored")] == ["k1"]


def test_an_event_at_the_exact_timeout_wins_over_the_timeout() -> None:
    js = build(WAIT_FOR.replace('when: event.properties.get_or_missing != "no"', ""))
    d = Driver(js).send(signup(), ev("cart.item_added", "2026-03-02T11:00:00Z", cart_id="k"),
                        ev("email.clicked", "2026-03-02T12:00:00Z"))
    assert [c.step for c in d.commands] == ["clicked"]


# ------------------------------------------------------------ branch, split, goto

def test_branch_takes_the_first_true_condition_and_records_why() -> None:
    js = build("""
        trigger: {event: order.placed}
        entry: {re_entry: always}
        steps:
          - id: b
            type: branch
            branches:
              - {when: "event.properties.total > 100.0", next: big}
              - {when: "profile.missing_field == 1", next: big}
            else: small
          - {id: big, type: send, channel: email, template: hello_email, next: fin}
          - {id: small, type: send, channel: sms, template: hello_sms, data: {code: S}}
          - {id: fin, type: end}
    """)
    d = Driver(js).send(signup(), ev("order.placed", "2026-03-02T11:00:00Z", total=150.0),
                        ev("order.placed", "2026-03-02T12:00:00Z", total=20))
    assert [c.step for c in d.commands] == ["big", "small"]
    errors = d.kinds("condition_error")
    assert errors and "missing_field" in errors[0].detail["error"]
    assert [b.detail["next"] for b in d.kinds("branch")] == ["big", "small"]


def test_split_is_deterministic_and_proportional_with_holdout() -> None:
    js = build("""
        trigger: {event: product.viewed}
        goal: {event: order.placed, within: 2d}
        steps:
          - id: ab
            type: split
            variants:
              - {name: a, percent: 50, next: sa}
              - {name: b, percent: 30, next: sb}
            holdout: 20
          - {id: sa, type: send, channel: ads, audience: a, next: fin}
          - {id: sb, type: send, channel: ads, audience: b}
          - {id: fin, type: end}
    """)
    counts = {"a": 0, "b": 0, "holdout": 0}
    d = Driver(js)
    for i in range(2000):
        cid = f"cust-{i}"
        d.send(signup(customer=cid), ev("product.viewed", "2026-03-02T11:00:00Z", cid))
    for x in d.kinds("split"):
        counts[x.detail["cohort"]] += 1
    assert sum(counts.values()) == 2000
    assert 900 <= counts["a"] <= 1100 and 500 <= counts["b"] <= 700
    assert 300 <= counts["holdout"] <= 500
    assert len(d.commands) == counts["a"] + counts["b"]
    assert cohort_bucket("j0", "ab", "cust-7") == cohort_bucket("j0", "ab", "cust-7")
    # Holdout customers still count towards the goal, tagged with their cohort.
    held = next(x.customer_id for x in d.kinds("split") if x.detail["cohort"] == "holdout")
    d.send(ev("order.placed", "2026-03-03T11:00:00Z", held))
    (goal,) = d.kinds("goal")
    assert (goal.customer_id, goal.detail["cohort"]) == (held, "holdout")


def test_update_profile_and_goto_with_a_wait_in_the_loop() -> None:
    js = build("""
        trigger: {event: product.viewed}
        steps:
          - {id: mark, type: update_profile, set: {last_viewed: "{{ event.properties.sku }}"}}
          - {id: w, type: wait, duration: 1d}
          - id: again
            type: branch
            branches:
              - {when: "profile.counts['product.viewed'] < 3", next: loop}
            else: fin
          - {id: loop, type: goto, next: w}
          - {id: fin, type: end}
    """)
    d = Driver(js).send(signup(), ev("product.viewed", "2026-03-02T11:00:00Z", sku="s9"))
    assert d.states["c1"].profile["attributes"]["last_viewed"] == "s9"
    d.send(ev("product.viewed", "2026-03-02T12:00:00Z"))
    d.advance("2026-03-03T11:00:00Z")
    assert "c1" in d.states and d.states["c1"].instances  # 2 views: loops and waits again
    d.send(ev("product.viewed", "2026-03-03T12:00:00Z"))
    d.advance("2026-03-05T00:00:00Z")
    assert not d.states["c1"].instances
    assert [x.step for x in d.kinds("completed")] == ["fin"]


def test_runtime_step_cap_stops_a_loop_that_slipped_past_validation() -> None:
    from omnijourney.core import model as m
    from omnijourney.core.catalog import JourneySet

    looping = m.JourneyDef.model_validate({
        "id": "spin", "trigger": {"event": "product.viewed"},
        "steps": [{"id": "a", "type": "goto", "next": "b"}, {"id": "b", "type": "goto", "next": "a"}],
    })
    js = JourneySet.build([looping], {})
    d = Driver(js).send(signup(), ev("product.viewed", "2026-03-02T11:00:00Z"))
    (err,) = d.kinds("error")
    assert err.detail == {"reason": "step_limit", "limit": MAX_STEPS_PER_RUN}
    assert not d.states["c1"].instances


# --------------------------------------------------------- entry, exit and goals

def test_trigger_condition_audience_and_reentry_rules() -> None:
    js = build(
        journey("product.viewed", "never").replace(
            "trigger: {event: product.viewed}",
            "trigger: {event: product.viewed, when: 'event.properties.price > 10'}"),
        journey("cart.item_added", "after 2d").replace(
            "entry: {re_entry: after 2d}",
            "entry: {re_entry: after 2d, audience: \"profile.attributes.tier == 'gold'\"}"),
    )
    d = Driver(js).send(
        signup(tier="gold"),
        ev("product.viewed", "2026-03-02T11:00:00Z", price=5),    # condition false
        ev("product.viewed", "2026-03-02T11:01:00Z", price=50),   # enters
        ev("cart.item_added", "2026-03-02T12:00:00Z"),            # enters
        ev("cart.item_added", "2026-03-03T12:00:00Z"),            # too soon
        ev("cart.item_added", "2026-03-04T12:00:00Z"),            # 2 days later: enters
        ev("product.viewed", "2026-03-09T11:00:00Z", price=50),   # never again
    )
    reasons = [x.detail["reason"] for x in d.kinds("not_entered")]
    assert reasons == ["trigger_condition_false", "re_entry_too_soon", "re_entry_never"]
    assert len(d.kinds("entered")) == 3
    d = Driver(js).send(signup(tier="silver"), ev("cart.item_added", "2026-03-02T12:00:00Z"))
    assert [x.detail["reason"] for x in d.kinds("not_entered")] == ["not_in_audience"]


def test_exit_on_wins_when_it_happens_at_or_before_the_wait_ends() -> None:
    js = build("""
        trigger: {event: cart.item_added, correlate_by: cart_id}
        exit_on: [{event: order.placed}]
        steps:
          - {id: w, type: wait, duration: 1h}
          - {id: s, type: send, channel: email, template: hello_email}
    """)
    # The order arrives late (after the tick time) but happened exactly when the wait ended.
    d = Driver(js).send(signup(), ev("cart.item_added", "2026-03-02T11:00:00Z", cart_id="k1"),
                        ev("order.placed", "2026-03-02T12:00:00Z", cart_id="k1"))
    assert d.commands == []
    assert d.kinds("exited")
    # An order for another cart does not end this one.
    d = Driver(js).send(signup(), ev("cart.item_added", "2026-03-02T11:00:00Z", cart_id="k1"),
                        ev("order.placed", "2026-03-02T11:30:00Z", cart_id="other"))
    d.advance("2026-03-03T00:00:00Z")
    assert len(d.commands) == 1


def test_one_live_instance_per_correlation_key() -> None:
    js = build("""
        trigger: {event: cart.item_added, correlate_by: cart_id}
        entry: {re_entry: always}
        steps:
          - {id: w, type: wait, duration: 1h}
          - {id: s, type: send, channel: ads, audience: carts}
    """)
    d = Driver(js).send(signup(),
                        ev("cart.item_added", "2026-03-02T11:00:00Z", cart_id="k1"),
                        ev("cart.item_added", "2026-03-02T11:10:00Z", cart_id="k1"),
                        ev("cart.item_added", "2026-03-02T11:20:00Z", cart_id="k2"),
                        ev("cart.item_added", "2026-03-02T11:30:00Z"))
    d.advance("2026-03-03T00:00:00Z")
    assert sorted(c.instance_key for c in d.commands) == ["k1", "k2"]
    reasons = [x.detail["reason"] for x in d.kinds("not_entered")]
    assert reasons == ["already_active", "missing_correlation_key"]


def test_goal_within_window_counts_once_even_after_the_journey_ended() -> None:
    js = build(journey().replace("steps:", "goal: {event: order.placed, within: 3d}\n    steps:"))
    d = Driver(js).send(signup(), ev("product.viewed", "2026-03-02T11:00:00Z"),
                        ev("order.placed", "2026-03-03T11:00:00Z"),
                        ev("order.placed", "2026-03-03T12:00:00Z"))
    (goal,) = d.kinds("goal")
    assert goal.detail["after"] == "1d"
    d = Driver(js).send(signup(), ev("product.viewed", "2026-03-02T11:00:00Z"),
                        ev("order.placed", "2026-03-06T11:00:00Z"))
    assert d.kinds("goal") == []


# ------------------------------------------------------------ replay and state

def test_duplicate_events_are_ignored() -> None:
    js = build(journey())
    view = ev("product.viewed", "2026-03-02T11:00:00Z")
    d = Driver(js).send(signup(), view, view)
    assert len(d.commands) == 1
    assert d.kinds("duplicate_event")[0].detail == {"event_id": view.event_id}


def test_evaluate_never_mutates_the_state_it_was_given() -> None:
    js = build(journey())
    first = evaluate(js, None, signup(), t("2026-03-02T10:00:00Z")).state
    before = json.dumps(first.to_dict(), sort_keys=True)
    evaluate(js, first, ev("product.viewed", "2026-03-02T11:00:00Z"), t("2026-03-02T11:00:00Z"))
    assert json.dumps(first.to_dict(), sort_keys=True) == before


def _replay(realistic: bool, seed: int,
            step: Callable[[JourneySet, CustomerState | None, Input, datetime], Evaluation],
            ) -> None:
    """A whole replay of the example journeys over the benchmark's timelines (sends,
    waits, wait-fors, goals, caps), then every wait a customer is left in ticked, to the
    end. ``step`` evaluates each input (and checks what it likes); its outcome's state
    is the next input state."""
    from omnijourney.config import load
    from omnijourney.synthetic import synth

    js = load(Path(__file__).resolve().parents[2] / "journeys").journey_set
    assert js is not None
    for timeline in synth(150, seed=seed, realistic=realistic):
        state: CustomerState | None = None
        inputs: list[tuple[Input, datetime]] = [(e, e.occurred_at) for e in timeline]
        ticks = 0
        while inputs and ticks < 100:
            inp, now = inputs.pop(0)
            state = step(js, state, inp, now).state
            if not inputs and (due := state.next_due()) is not None:
                inputs.append((TICK, due))
                ticks += 1


@pytest.mark.parametrize("realistic", [True, False], ids=["realistic", "send-heavy"])
def test_no_evaluation_of_a_whole_replay_mutates_the_state_it_was_given(
        realistic: bool) -> None:
    """Every input state of a whole replay (``_replay``) compared with its snapshot
    after ``evaluate``: the guard for anything that makes the state copy cheaper."""
    checked = sends = 0

    def step(js: JourneySet, state: CustomerState | None, inp: Input,
             now: datetime) -> Evaluation:
        nonlocal checked, sends
        before = json.dumps(state.to_dict(), sort_keys=True) if state else None
        out = evaluate(js, state, inp, now)
        if state is not None:
            assert json.dumps(state.to_dict(), sort_keys=True) == before, (inp, now)
            checked += 1
        sends += len(out.commands)
        return out

    _replay(realistic, 3, step)
    assert checked > 1000 and sends > 100


@pytest.mark.parametrize("realistic", [True, False], ids=["realistic", "send-heavy"])
def test_a_state_handed_over_is_evaluated_in_place_to_the_same_outcome(
        realistic: bool) -> None:
    """``unshared``: the worker hands over a state it loaded for one evaluation and the
    evaluator works on it in place, without its copy. Over a whole replay of both mixes
    (each input state a fresh copy, handed over), every outcome equals the outcome on a
    shared state: the state, the commands, the trace, the outbox. The result is the
    object handed over, says so, and is no longer marked as handed over."""
    compared = in_place = 0

    def step(js: JourneySet, state: CustomerState | None, inp: Input,
             now: datetime) -> Evaluation:
        nonlocal compared, in_place
        shared = evaluate(js, state, inp, now)
        assert not shared.in_place
        if state is None:
            return shared
        mine = CustomerState.from_dict(json.loads(json.dumps(state.to_dict())))
        mine.hand_over()
        out = evaluate(js, mine, inp, now)
        assert out.state.to_dict() == shared.state.to_dict(), (inp, now)
        assert [c.to_dict() for c in out.commands] == [c.to_dict() for c in shared.commands]
        assert out.trace == shared.trace and out.outbox == shared.outbox
        if out.in_place:
            assert out.state is mine and not mine.unshared
            in_place += 1
        else:  # nothing evaluated (a repeat): handed back as it was
            assert out.state is not mine or shared.state is state
        compared += 1
        return shared

    _replay(realistic, 4, step)
    assert compared > 1000 and in_place > 1000


def test_state_round_trips_through_json_mid_journey() -> None:
    js = build(WAIT_FOR.replace('when: event.properties.get_or_missing != "no"', ""))
    d = Driver(js).send(signup(), ev("cart.item_added", "2026-03-02T11:00:00Z", cart_id="k1"))
    st = d.states["c1"]
    restored = CustomerState.from_dict(json.loads(json.dumps(st.to_dict())))
    assert restored.to_dict() == st.to_dict()
    a = evaluate(js, st, TICK, t("2026-03-02T12:00:00Z"))
    b = evaluate(js, restored, TICK, t("2026-03-02T12:00:00Z"))
    assert [c.to_dict() for c in a.commands] == [c.to_dict() for c in b.commands]


def test_live_instances_keep_the_version_they_entered_on() -> None:
    v1 = """
        version: 1
        trigger: {event: product.viewed}
        steps:
          - {id: w, type: wait, duration: 1h}
          - {id: s, type: send, channel: email, template: hello_email}
    """
    v2 = v1.replace("version: 1", "version: 2").replace("duration: 1h", "duration: 5h")
    old = Driver(build(v1)).send(signup(), ev("product.viewed", "2026-03-02T11:00:00Z"))
    both = Driver(build(v1, v2))
    both.states = dict(old.states)
    both.send(ev("product.viewed", "2026-03-02T11:00:00Z", "c2"))
    both.advance("2026-03-03T00:00:00Z", "c1")
    assert [(c.journey_version, c.send_at) for c in both.commands] == [
        ("1", t("2026-03-02T12:00:00Z"))]
    # If the pinned version is gone, the instance ends and says why.
    gone = Driver(build(v2))
    gone.states = dict(old.states)
    gone.advance("2026-03-03T00:00:00Z", "c1")
    assert gone.commands == []
    assert gone.kinds("version_retired")


def test_naive_now_is_refused() -> None:
    from datetime import datetime

    js = build(journey())
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(js, None, signup(), datetime(2026, 3, 2))  # noqa: DTZ001 - the point of the test


def _unvalidated(steps: list[dict[str, object]]) -> object:
    """A journey built without validation: what a live edit or a date in the past makes."""
    from omnijourney.core import model as m
    from omnijourney.core.catalog import JourneySet

    looping = m.JourneyDef.model_validate({"id": "spin", "trigger": {"event": "product.viewed"},
                                           "steps": steps})
    return JourneySet.build([looping], {})


@pytest.mark.parametrize("steps", [
    [{"id": "ping", "type": "webhook", "url": "https://hooks.example/x"},
     {"id": "hold", "type": "wait_for", "event": "order.placed", "timeout": "0s",
      "on_timeout": "ping"}],
    [{"id": "ping", "type": "webhook", "url": "https://hooks.example/x"},
     {"id": "pause", "type": "wait", "duration": "0s"},
     {"id": "again", "type": "goto", "next": "ping"}],
])
def test_one_evaluation_never_sends_a_customer_more_than_the_cap(
        steps: list[dict[str, object]]) -> None:
    from omnijourney.core.steps import MAX_COMMANDS_PER_EVALUATION

    js = _unvalidated(steps)
    state = evaluate(js, None, signup(), t("2026-03-02T10:00:00Z")).state  # type: ignore[arg-type]
    per_evaluation, kinds = [], []
    inputs = [(ev("product.viewed", "2026-03-02T11:00:00Z"), t("2026-03-02T11:00:00Z")),
              (TICK, t("2026-03-02T11:00:01Z")), (TICK, t("2026-03-03T11:00:00Z"))]
    for inp, now in inputs:
        if inp is TICK and state.next_due() is None:
            per_evaluation.append(0)
            continue
        out = evaluate(js, state, inp, now)  # type: ignore[arg-type]
        state = out.state
        per_evaluation.append(len(out.commands))
        kinds += [x.kind for x in out.trace]
    # Never more than the cap in one evaluation (was 1000 for the wait_for, 25 for the
    # wait), the cap really reached once, and then the run is over: nothing repeats.
    assert max(per_evaluation) == MAX_COMMANDS_PER_EVALUATION, per_evaluation
    assert kinds.count("runaway") == 1 and "aborted" in kinds
    assert not state.instances and per_evaluation[-1] == 0


def test_update_profile_keeps_the_types_of_what_it_stores() -> None:
    """Issue 11, point 7: ``score: "{{ event.properties.total }}"`` stored "80", and
    ``profile.attributes.score > 50`` then failed ("No such overload")."""
    js = build("""
        trigger: {event: order.placed}
        steps:
          - id: keep
            type: update_profile
            set:
              score: "{{ event.properties.total }}"
              ratio: "{{ event.properties.ratio }}"
              vip: "{{ event.properties.vip }}"
              label: "order {{ event.properties.total }}"
              code: "{{ event.properties.code }}"
              level: 3
              active: true
          - id: big
            type: branch
            branches:
              - {when: "profile.attributes.score > 50 && profile.attributes.vip", next: fin}
          - {id: fin, type: end}
    """)
    d = Driver(js).send(signup(), ev("order.placed", "2026-03-02T11:00:00Z", total=80,
                                     ratio=0.25, vip=True, code="007"))
    attrs = d.states["c1"].profile["attributes"]
    assert attrs["score"] == 80 and isinstance(attrs["score"], int)
    assert attrs["ratio"] == 0.25 and attrs["vip"] is True
    assert attrs["label"] == "order 80"  # more than one output: text
    assert attrs["code"] == "007"  # not a number as JSON writes one: stays text
    assert attrs["level"] == 3 and attrs["active"] is True
    (branch,) = d.kinds("branch")
    assert branch.detail.get("next") == "fin" and not d.kinds("condition_error")


def test_an_uncorrelated_goal_event_converts_one_run_the_latest() -> None:
    """Issue 11, point 9: three carts, then one store order without a cart id, counted the
    goal for all three runs (100 %)."""
    from omnijourney.config import load
    from tests.unit.test_engine import REPO

    js = load(REPO / "journeys").journey_set
    assert js is not None
    d = Driver(js).send(signup(), *[
        ev("cart.item_added", f"2026-03-02T1{i}:00:00Z", cart_id=f"k{i}", product_name="x",
           total=30.0) for i in range(3)])
    d.send(ev("order.placed", "2026-03-02T15:00:00Z", source="store", total=40.0))
    goals = [x for x in d.kinds("goal") if x.journey == "cart_abandonment"]
    assert len(goals) == 1
    # The latest cart's run converted (its watch is closed); the other two still wait.
    assert {g.key for g in d.states["c1"].goals if g.journey == "cart_abandonment"} == {"k0",
                                                                                      "k1"}
    # An order that names its cart converts that cart's run, whatever came later.
    d.send(ev("order.placed", "2026-03-02T16:00:00Z", cart_id="k0", total=40.0))
    assert [x for x in d.kinds("goal") if x.journey == "cart_abandonment"][-1].detail[
        "instance_id"] != goals[0].detail["instance_id"]
    assert {g.key for g in d.states["c1"].goals if g.journey == "cart_abandonment"} == {"k1"}


def test_an_invalid_timezone_or_window_is_refused_and_traced_not_silently_defaulted() -> None:
    """Issue 11, point 12: Europe/Berln became UTC and 18-20 the default window, unseen."""
    from omnijourney.ops.metrics import WorkerMetrics

    d = Driver(build(journey())).send(
        signup(timezone="Europe/Berlin", contact_window="08:00-20:00"),
        ev("customer.updated", "2026-03-02T10:05:00Z", timezone="Europe/Berln",
           contact_window="18-20", first_name="Ana"))
    profile = d.states["c1"].profile
    assert profile["timezone"] == "Europe/Berlin" and profile["contact_window"] == "08:00-20:00"
    assert profile["first_name"] == "Ana"  # the valid traits of the same event apply
    rejected = d.kinds("trait_rejected")
    assert sorted(x.detail["trait"] for x in rejected) == ["contact_window", "timezone"]
    assert all("Berln" not in str(x.detail) for x in rejected)
    metrics = WorkerMetrics()
    metrics.observe(inputs=(), dead=(), trace=rejected, evaluation_seconds=(), batch_seconds=0)
    assert metrics.rejected.labels("timezone")._value.get() == 1


CAPPED_POLICIES = """
    defaults: {timezone: UTC, contact_window: "09:00-21:00"}
    consent: {email: opt_in, sms: opt_in, push: opt_in, ads: opt_in}
    frequency_caps: {sms: {max: 1, per: 24h}}
"""


def _competing(a_priority: int, z_priority: int, on_cap: str = "skip") -> Driver:
    def j(name: str, prio: int, extra: str = "") -> str:
        return f"""
            id: {name}
            priority: {prio}
            trigger: {{event: product.viewed}}
            steps:
              - {{id: text, type: send, channel: sms, template: hello_sms,
                 data: {{code: X}}{extra}}}
        """
    js = build(j("aaa_newsletter", a_priority), j("zzz_cart_rescue", z_priority,
                                                  f", on_cap: {on_cap}"),
               policies=CAPPED_POLICIES)
    # Both are deferred by quiet hours to the same 09:00, where only one SMS fits the cap.
    return Driver(js).send(signup(), ev("product.viewed", "2026-03-02T23:00:00Z"))


def test_competing_sends_at_the_same_moment_go_by_priority_not_by_name() -> None:
    """Issue 11, point 10: aaa_newsletter won over zzz_cart_rescue alphabetically."""
    d = _competing(0, 10)
    d.advance("2026-03-03T10:00:00Z")
    assert [c.journey for c in d.commands] == ["zzz_cart_rescue"]
    (capped,) = [x for x in d.kinds("suppressed") if x.detail["reason"] == "frequency_cap"]
    assert capped.journey == "aaa_newsletter"
    assert [c.journey for c in _competing(10, 0).advance("2026-03-03T10:00:00Z").commands] \
        == ["aaa_newsletter"]


def test_on_cap_defer_sends_when_the_cap_allows_instead_of_skipping() -> None:
    d = _competing(10, 0, on_cap="defer")
    d.advance("2026-03-03T10:00:00Z")
    assert [c.journey for c in d.commands] == ["aaa_newsletter"]
    deferred = [x for x in d.kinds("deferred") if x.detail["reason"] == "frequency_cap"]
    assert [x.journey for x in deferred] == ["zzz_cart_rescue"]
    d.advance("2026-03-05T00:00:00Z")
    sent = {c.journey: c.send_at for c in d.commands}
    assert sent["zzz_cart_rescue"] == sent["aaa_newsletter"] + timedelta(hours=24)


@pytest.mark.parametrize(("grace", "sent"), [("0s", 1), ("5s", 0)])
def test_exit_grace_lets_a_late_exit_event_win_over_the_wall_clock(grace: str,
                                                                    sent: int) -> None:
    """Issue 11, point 11: with the wall clock an order at 09:59 that arrived at 10:00:02
    did not stop the 10:00 reminder. With exit_grace the wait fires that much later."""
    js = build("""
        trigger: {event: cart.item_added}
        exit_on: [{event: order.placed}]
        steps:
          - {id: w, type: wait, duration: 1h}
          - {id: remind, type: send, channel: email, template: hello_email}
    """, policies=f"""
        defaults: {{timezone: UTC, contact_window: "00:00-23:59"}}
        exit_grace: {grace}
    """)
    state = evaluate(js, None, signup(at="2026-03-02T08:00:00Z"), t("2026-03-02T08:00:00Z")).state
    state = evaluate(js, state, ev("cart.item_added", "2026-03-02T09:00:00Z"),
                     t("2026-03-02T09:00:00Z")).state
    commands = []
    # The worker's timer ticks at 10:00:00 and 10:00:01; the order (09:59:59) arrives at
    # 10:00:02; ticks go on.
    for inp, now in [(TICK, "2026-03-02T10:00:00Z"), (TICK, "2026-03-02T10:00:01Z"),
                     (ev("order.placed", "2026-03-02T09:59:59Z"), "2026-03-02T10:00:02Z"),
                     (TICK, "2026-03-02T10:00:10Z")]:
        if inp is TICK and (state.next_due() is None or state.next_due() > t(now)):
            continue
        out = evaluate(js, state, inp, t(now))
        state, commands = out.state, commands + out.commands
    assert len(commands) == sent
    assert not state.instances


def test_explain_says_every_decision_in_words() -> None:
    """Issue 11, point 16: error, profile_updated, holdout and version_retired came out
    as raw JSON; "already active" did not say which run; long errors were cut."""
    from omnijourney.core.trace import TraceEntry
    from omnijourney.simulator import describe

    at = t("2026-03-02T10:00:00Z")
    long_error = "x" * 300
    entries = [
        TraceEntry(at, "c1", "error", "j", None, "s", {"reason": "step_limit", "limit": 100}),
        TraceEntry(at, "c1", "error", "j", None, "s", {"reason": "template_error",
                                                       "field": "score", "error": long_error}),
        TraceEntry(at, "c1", "profile_updated", "j", None, "s", {"fields": ["score", "vip"]}),
        TraceEntry(at, "c1", "holdout", "j", None, "ab", {"cohort": "holdout"}),
        TraceEntry(at, "c1", "version_retired", "j", None, "s", {"version": 2}),
        TraceEntry(at, "c1", "not_entered", "cart", None, None,
                   {"reason": "already_active", "key": "cart-7", "event_id": "e1"}),
        TraceEntry(at, "c1", "runaway", "j", None, "s", {"channel": "webhook", "limit": 16}),
        TraceEntry(at, "c1", "wait_unresolved", "j", None, "w",
                   {"until": "{{ x }}", "reason": "no readable time to wait until"}),
        TraceEntry(at, "c1", "trait_rejected", None, None, None,
                   {"trait": "timezone", "reason": "not an IANA time zone"}),
    ]
    lines = [describe(x) for x in entries]
    for line in lines:
        assert '{"' not in line, line
    assert "more than 100 steps" in lines[0]
    assert long_error in lines[1] and "in score" in lines[1]
    assert "attributes.score, attributes.vip" in lines[2]
    assert "'cart-7'" in lines[5]


def test_evaluating_leaves_the_state_it_was_given_as_it_was() -> None:
    """The evaluator works on a copy: a batch that is retried starts again from the
    state as it was (a bounce mark once leaked into it through a shared map)."""
    js = build(journey())
    st = evaluate(js, None, signup(), t("2026-03-02T10:00:00Z")).state
    st = evaluate(js, st, ev("email.bounced", "2026-03-02T10:05:00Z"),
                  t("2026-03-02T10:05:00Z")).state
    before = json.dumps(st.to_dict(), sort_keys=True)
    for later in (ev("email.bounced", "2026-03-02T11:00:00Z", address_digest="ab" * 32),
                  ev("customer.updated", "2026-03-02T11:05:00Z", tier="gold"),
                  ev("sms.bounced", "2026-03-02T11:10:00Z")):
        evaluate(js, st, later, later.occurred_at)
        assert json.dumps(st.to_dict(), sort_keys=True) == before
