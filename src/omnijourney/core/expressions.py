"""Conditions in CEL (Common Expression Language): safe, compiled, no ``eval``.

Conditions see ``profile``, ``event`` (the trigger), ``last_event`` (the latest event that
moved the instance), ``journey`` and ``now`` (the moment being evaluated, a timestamp).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cel

CONDITION_VARIABLES = ("profile", "event", "last_event", "journey", "now")
_BINDER = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_REFERENCE = re.compile(
    r"\b(" + "|".join(CONDITION_VARIABLES) + r")((?:\s*\.\s*[A-Za-z_]\w*)*)(\s*[(\[])?")

# A pruning plan: for each root name, None (pass it whole) or a tree of the fields used,
# whose leaves are None (that field whole).
Plan = dict[str, Any]


class ExpressionError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Condition:
    source: str
    program: Any  # cel.Program; the extension module ships no usable type
    plan: Plan

    def evaluate(self, ctx: dict[str, Any]) -> tuple[bool, str | None]:
        """(value, error). Errors (a missing field, a type mismatch) count as false."""
        try:
            value = self.program.execute(_prune(ctx, self.plan))
        except Exception as exc:
            return False, _short_error(exc)
        if not isinstance(value, bool):
            return False, f"condition gave {type(value).__name__} {value!r}, not true/false"
        return value, None


_CACHE: dict[str, Condition] = {}


def compile_condition(source: str) -> Condition:
    """Compile once; raise ExpressionError with a readable message on bad syntax or names."""
    cached = _CACHE.get(source)
    if cached is not None:
        return cached
    try:
        program = cel.compile(source)
    except Exception as exc:
        raise ExpressionError(_syntax_message(str(exc))) from None
    bound = set(_BINDER.findall(source))
    unknown = sorted(set(program.variables()) - set(CONDITION_VARIABLES) - bound)
    if unknown:
        raise ExpressionError(
            f"unknown name(s) {', '.join(unknown)}; conditions can use "
            + ", ".join(CONDITION_VARIABLES)
        )
    cond = Condition(source, program, _plan(source))
    _CACHE[source] = cond
    return cond


def _plan(source: str) -> Plan:
    """Which parts of the context an expression can read.

    Handing CEL only those parts matters: the binding converts every value it is given,
    and a whole profile costs ~40 us where the one field a condition reads costs ~2 us.
    Conservative: a root used bare, indexed or called passes whole from that point.
    """
    plan: Plan = {}
    for m in _REFERENCE.finditer(source):
        root, chain, opener = m.group(1), m.group(2), m.group(3)
        fields = [f.strip() for f in chain.split(".") if f.strip()]
        if opener and opener.strip() == "(" and fields:
            fields.pop()  # x.y.startsWith(...): the last name is a method
        if not fields:
            plan[root] = None
            continue
        node: Any = plan.setdefault(root, {})
        for f in fields[:-1]:
            if node is None:
                break  # an enclosing field is already passed whole
            node = node.setdefault(f, {})
        if node is not None:
            node[fields[-1]] = None
    return plan


def _prune(ctx: dict[str, Any], plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for root, tree in plan.items():
        if root in ctx:
            out[root] = ctx[root] if tree is None else _take(ctx[root], tree)
    return out


def _take(value: Any, tree: dict[str, Any]) -> Any:
    if not isinstance(value, dict):
        return value  # not a map: let CEL report the type error as it would
    out = {}
    for key, sub in tree.items():
        if key in value:  # absent stays absent, so has() and errors are unchanged
            out[key] = value[key] if sub is None else _take(value[key], sub)
    return out


def _syntax_message(raw: str) -> str:
    # The binding's message repeats the source and a caret line; keep the parser's sentence.
    for line in raw.splitlines():
        if "ERROR:" in line:
            msg = line.split("ERROR:", 1)[1].strip().removeprefix("<input>:")
            if " expecting {" in msg:  # the parser lists every token it could take
                msg = msg.split(" expecting {", 1)[0] + " (the condition looks incomplete)"
            return "CEL syntax error at " + msg
    return f"CEL syntax error: {raw.splitlines()[0] if raw else 'unparseable'}"


def _short_error(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such field {exc.args[0]!r}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
