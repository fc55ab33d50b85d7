"""CEL conditions: compile errors, names, and context pruning that never changes a result."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import cel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnijourney.core.expressions import ExpressionError, _with_default, compile_condition

EXPRESSIONS = [
    "profile.reachable.sms",
    "profile.consent.email == true && event.properties.total > 10.0",
    "has(profile.attributes.tier) && profile.attributes.tier == 'gold'",
    "profile.counts['order.placed'] >= 1",
    "event.properties.name.startsWith('Tr')",
    "size(profile.attributes) > 1",
    "event.properties.items.exists(i, i > 2)",
    "last_event.properties.status == 'delivered' || journey.cohort == 'a'",
    "now > journey.entered_at",
    "profile.x.y.z == 1",
    "'profile.attributes' == 'profile.attributes'",
    "event.type in ['order.placed', 'cart.item_added'] && event.properties.total < 5.0",
]
WHEN = datetime(2026, 3, 2, tzinfo=UTC)

values = st.one_of(st.integers(-5, 5), st.floats(-10, 10, allow_nan=False), st.booleans(),
                   st.sampled_from(["gold", "Trail", "delivered", "a"]))
maps = st.dictionaries(st.sampled_from(["tier", "total", "status", "name", "x", "sms", "email",
                                        "order.placed", "items", "y", "z"]),
                       st.one_of(values, st.lists(st.integers(0, 5), max_size=3),
                                 st.dictionaries(st.sampled_from(["y", "z"]), values,
                                                 max_size=2)),
                       max_size=5)


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, Any]:
    def part(*keys: str) -> dict[str, Any]:
        return {k: draw(maps) for k in keys if draw(st.booleans())}

    return {
        "profile": part("reachable", "consent", "attributes", "counts", "x"),
        "event": {"type": draw(st.sampled_from(["order.placed", "product.viewed"])),
                  "properties": draw(maps)},
        "last_event": {"properties": draw(maps)},
        "journey": {"cohort": draw(st.sampled_from(["a", "b"])), "entered_at": WHEN},
        "now": WHEN,
    }


@settings(max_examples=150, deadline=None)
@given(contexts())
def test_pruned_context_gives_the_same_answer_as_the_whole_context(ctx: dict[str, Any]) -> None:
    for src in EXPRESSIONS:
        cond = compile_condition(src)
        full = ctx  # missing values as conditions read them (null, counts 0), unpruned
        for path, default in cond.defaults:
            full = _with_default(full, path, default)
        try:
            whole: Any = cel.compile(src).execute(full)
            expected = (whole, None) if isinstance(whole, bool) else (False, "not bool")
        except Exception:
            expected = (False, "error")
        value, error = cond.evaluate(ctx)
        assert value == expected[0], src
        assert (error is None) == (expected[1] is None), src


def test_pruning_keeps_only_what_is_named() -> None:
    assert compile_condition("profile.reachable.sms").plan == {
        "profile": {"reachable": {"sms": None}}}
    assert compile_condition("size(profile) > 0").plan == {"profile": None}


@pytest.mark.parametrize(("src", "message"), [
    ("profile.age >", "CEL syntax error at 1:14"),
    ("profle.age > 3", "unknown name(s) profle"),
    ("customer.id == 1", "unknown name(s) customer"),
])
def test_compile_errors_are_readable(src: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        compile_condition(src)


def test_non_boolean_results_and_missing_fields_count_as_false() -> None:
    assert compile_condition("profile.first_name").evaluate(
        {"profile": {"first_name": "Ana"}}) == (False, "condition gave str 'Ana', not true/false")
    value, error = compile_condition("profile.missing == 1").evaluate({"profile": {}})
    assert value is False
    assert error == "no such field 'missing'"


def test_missing_values_read_as_a_marketer_means_them() -> None:
    """Issue 11, point 5: someone without a tier is not staff; someone who never ordered
    has 0 orders. has() still tells a missing value from a present one."""
    nobody: dict[str, Any] = {"profile": {"attributes": {}, "counts": {}},
                              "event": {"properties": {}}}
    assert compile_condition("profile.attributes.tier != 'staff'").evaluate(nobody) == (True, None)
    assert compile_condition("profile.attributes.tier == 'staff'").evaluate(nobody) == (False, None)
    assert compile_condition("profile.counts['order.placed'] == 0").evaluate(nobody) == (True, None)
    assert compile_condition("event.properties.coupon != 'X'").evaluate(nobody) == (True, None)
    assert compile_condition("has(profile.attributes.tier)").evaluate(nobody) == (False, None)
    assert compile_condition(
        "!has(profile.attributes.tier) || profile.attributes.tier != 'staff'").evaluate(
            nobody) == (True, None)
    # An ordering comparison with nothing is still no: an error, counted as false.
    assert compile_condition("profile.attributes.score > 50").evaluate(nobody)[0] is False
    staff = {"profile": {"attributes": {"tier": "staff"}, "counts": {"order.placed": 2}}}
    assert compile_condition("profile.attributes.tier != 'staff'").evaluate(staff) == (False, None)
    assert compile_condition("profile.counts['order.placed'] == 0").evaluate(staff) == (False, None)
    assert nobody["profile"] == {"attributes": {}, "counts": {}}  # the caller's context intact


def test_unknown_functions_are_refused_and_timestamp_accessors_take_a_zone() -> None:
    """Issue 11, point 6: getDayOfWeek(zone) failed at run time every time."""
    with pytest.raises(ExpressionError, match=r"unknown function.*getDayOfWeeks"):
        compile_condition("now.getDayOfWeeks() == 6")
    with pytest.raises(ExpressionError, match=r"unknown function.*lowerAscii"):
        compile_condition("profile.first_name.lowerAscii() == 'ana'")
    sat_night_utc = {"now": datetime(2026, 3, 7, 23, 30, tzinfo=UTC)}  # Sunday in Berlin
    cases = {"now.getDayOfWeek() == 6": True,
             "now.getDayOfWeek('Europe/Berlin') == 0": True,
             "now.getHours('America/New_York') == 18": True,
             "now.getHours('+05:30') == 5": True,
             "now.getDate('Asia/Tokyo') == 8 && now.getMonth('Asia/Tokyo') == 2": True,
             "now.getDayOfYear() == 65 && now.getFullYear() == 2026": True}
    for src, want in cases.items():
        assert compile_condition(src).evaluate(sat_night_utc) == (want, None), src
