"""CEL conditions: compile errors, names, and context pruning that never changes a result."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import cel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnijourney.core.expressions import ExpressionError, compile_condition

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
        try:
            whole: Any = cel.compile(src).execute(ctx)
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
