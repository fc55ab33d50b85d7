"""Journey analytics: the funnel a trace implies, per A/B cohort."""

from __future__ import annotations

from collections import Counter

from omnijourney.core.analytics import LABELS, JourneyStats, facts, tally
from omnijourney.core.trace import TraceKind
from tests.helpers import Driver, build, ev, signup

AB = """
    trigger: {event: product.viewed}
    goal: {event: order.placed, within: 2d}
    exit_on: [{event: customer.deleted}]
    steps:
      - id: ab
        type: split
        variants:
          - {name: a, percent: 50, next: sa}
          - {name: b, percent: 30, next: sb}
        holdout: 20
      - {id: sa, type: send, channel: ads, audience: a, next: wait}
      - {id: sb, type: send, channel: ads, audience: b}  # falls through to wait
      - {id: wait, type: wait, duration: 1d}
"""


def test_the_funnel_counts_entries_steps_exits_goals_and_cohorts() -> None:
    d = Driver(build(AB))
    for i in range(300):
        cid = f"c{i}"
        d.send(signup(customer=cid), ev("product.viewed", "2026-03-02T11:00:00Z", cid))
    cohort = {x.customer_id: x.detail["cohort"] for x in d.kinds("split")}
    # Every third customer buys within the window, one in ten only after it.
    buyers = [c for i, c in enumerate(sorted(cohort)) if i % 3 == 0]
    late = [c for i, c in enumerate(sorted(cohort)) if i % 10 == 1]
    deleted = [c for c in cohort if cohort[c] == "a"][:5]
    for c in deleted:
        d.send(ev("customer.deleted", "2026-03-02T12:00:00Z", c))
    for c in buyers:
        d.send(ev("order.placed", "2026-03-03T09:00:00Z", c))
    for c in late:
        d.send(ev("order.placed", "2026-03-09T09:00:00Z", c))
    for c in cohort:
        d.advance("2026-03-05T00:00:00Z", c)

    s = JourneyStats.from_trace("j0", d.trace)
    per = Counter(cohort.values())
    assert s.entries == 300
    assert {k: c.assigned for k, c in s.cohorts.items()} == dict(per)
    assert s.steps == {"ab": 300, "sa": per["a"], "sb": per["b"], "wait": per["a"] + per["b"]}
    # Reach within a cohort starts after the split that assigned it.
    assert s.cohorts["a"].steps == {"sa": per["a"], "wait": per["a"]}
    assert s.sends == {"ads": per["a"] + per["b"]}
    assert s.exits == {"holdout": per["holdout"], "exited": 5,
                       "completed": per["a"] - 5 + per["b"]}
    # Goals only inside the window, attributed to the buyer's cohort (holdout included).
    assert s.goals == len(buyers)
    assert {k: c.goals for k, c in s.cohorts.items() if c.goals} == dict(
        Counter(cohort[c] for c in buyers))
    assert s.conversion == len(buyers) / 300
    assert s.cohorts["b"].conversion == sum(cohort[c] == "b" for c in buyers) / per["b"]
    # Another journey's facts never leak in.
    assert JourneyStats.from_trace("other", d.trace).entries == 0


def test_every_fact_has_its_declared_labels() -> None:
    d = Driver(build(AB))
    d.send(signup(), ev("product.viewed", "2026-03-02T11:00:00Z"),
           ev("order.placed", "2026-03-02T12:00:00Z"))
    d.advance("2026-03-09T00:00:00Z")
    seen = set()
    for x in d.trace:
        for name, values in facts(x):
            assert len(values) == len(LABELS[name]), name
            seen.add(name)
    assert {"entries", "steps", "cohorts", "goals", "exits"} <= seen


def test_a_batch_s_trace_is_tallied_as_its_entries_facts_added_up() -> None:
    """``tally`` (the worker's one pass over a batch's trace): the same counts as ``facts``
    entry by entry, and the entries of the kinds asked for, in order."""
    d = Driver(build(AB))
    for i in range(40):
        d.send(signup(customer=f"c{i}"), ev("product.viewed", "2026-03-02T11:00:00Z", f"c{i}"))
    d.send(ev("customer.deleted", "2026-03-02T12:00:00Z", "c1"))
    d.advance("2026-03-09T00:00:00Z")
    one_by_one = Counter(f for x in d.trace for f in facts(x))
    also = frozenset({TraceKind.SPLIT, TraceKind.EXITED})
    counts, picked = tally(d.trace, also)
    assert counts == dict(one_by_one)
    assert sum(counts.values()) > 40 and {n for n, _ in counts} >= {"entries", "cohorts"}
    assert picked == [x for x in d.trace if x.kind in also] and len(picked) >= 40
    assert tally([], also) == ({}, [])
