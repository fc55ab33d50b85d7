"""Conditions in CEL (Common Expression Language): safe, compiled, no ``eval``.

Conditions see ``profile``, ``event`` (the trigger), ``last_event`` (the latest event that
moved the instance), ``journey`` and ``now`` (the moment being evaluated, a timestamp).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import cel

CONDITION_VARIABLES = ("profile", "event", "last_event", "journey", "now")
_BINDER = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_REFERENCE = re.compile(
    r"\b(" + "|".join(CONDITION_VARIABLES) + r")((?:\s*\.\s*[A-Za-z_]\w*)*)(\s*[(\[])?")


def _zoned(ts: datetime, tz: str | None) -> datetime:
    """``ts`` in ``tz``: an IANA name (``Europe/Berlin``) or a fixed offset (``+02:00``),
    as CEL's timestamp accessors take it; UTC without one."""
    if not tz:
        return ts.astimezone(UTC)
    m = re.fullmatch(r"([+-])(\d{2}):(\d{2})", tz.strip())
    if m:
        sign = 1 if m.group(1) == "+" else -1
        return ts.astimezone(timezone(sign * timedelta(hours=int(m.group(2)),
                                                       minutes=int(m.group(3)))))
    return ts.astimezone(ZoneInfo(tz))


def _accessor(of_time: Any, of_duration: Any = None) -> Any:
    def call(value: Any, tz: str | None = None) -> int:
        if isinstance(value, timedelta):
            if of_duration is None:
                raise ValueError("not defined for a duration")
            return int(of_duration(value))
        if not isinstance(value, datetime):
            raise ValueError(f"expected a timestamp, got {type(value).__name__}")
        return int(of_time(_zoned(value, tz)))
    return call


# CEL's timestamp (and duration) accessors, with the optional time zone argument the CEL
# specification gives them (the binding knows them only without one). Conventions as in
# the specification: months, days of the month and of the year count from 0, getDate from
# 1, getDayOfWeek 0 = Sunday.
TIMESTAMP_FUNCTIONS: dict[str, Any] = {
    "getFullYear": _accessor(lambda t: t.year),
    "getMonth": _accessor(lambda t: t.month - 1),
    "getDayOfYear": _accessor(lambda t: t.timetuple().tm_yday - 1),
    "getDayOfMonth": _accessor(lambda t: t.day - 1),
    "getDate": _accessor(lambda t: t.day),
    "getDayOfWeek": _accessor(lambda t: (t.weekday() + 1) % 7),
    "getHours": _accessor(lambda t: t.hour, lambda d: d.total_seconds() // 3600),
    "getMinutes": _accessor(lambda t: t.minute, lambda d: d.total_seconds() // 60),
    "getSeconds": _accessor(lambda t: t.second, lambda d: d.total_seconds()),
    "getMilliseconds": _accessor(lambda t: t.microsecond // 1000,
                                 lambda d: d.total_seconds() * 1000),
}
# Every function a condition may call: CEL's standard ones (macros such as has, exists,
# all, map and filter expand to operators) and the accessors above. Anything else fails
# at run time every time, so validation refuses it.
STANDARD_FUNCTIONS = frozenset({
    "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double",
    "string", "bytes", "bool", "timestamp", "duration", "dyn", "type", *TIMESTAMP_FUNCTIONS})

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
    # Missing values, as a marketer reads them: an attribute or property the customer does
    # not have is null (so ``tier != 'staff'`` holds for someone without a tier), a count
    # of events never seen is 0. Paths the condition tests with has() are left absent.
    defaults: tuple[tuple[tuple[str, ...], Any], ...] = ()
    timed: bool = False  # calls a timestamp accessor (needs a cel.Context)

    def evaluate(self, ctx: dict[str, Any]) -> tuple[bool, str | None]:
        """(value, error). Errors (a missing field, a type mismatch) count as false."""
        try:
            given = _prune(ctx, self.plan)
            for path, default in self.defaults:
                given = _with_default(given, path, default)
            value = self.program.execute(
                cel.Context(variables=given, functions=TIMESTAMP_FUNCTIONS) if self.timed
                else given)
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
        message = _syntax_message(str(exc))
        words = sorted(set(re.findall(r"\b(and|or|not)\b", _outside_strings(source))))
        if words:
            message += ("; CEL writes " + ", ".join(
                {"and": "&& for and", "or": "|| for or", "not": "! for not"}[w]
                for w in words))
        raise ExpressionError(message) from None
    bound = set(_BINDER.findall(source))
    unknown = sorted(set(program.variables()) - set(CONDITION_VARIABLES) - bound)
    if unknown:
        raise ExpressionError(
            f"unknown name(s) {', '.join(unknown)}; conditions can use "
            + ", ".join(CONDITION_VARIABLES)
        )
    called = set(program.functions())
    unknown_fns = sorted(f for f in called if f[:1] not in "_@!-" and
                         f not in STANDARD_FUNCTIONS)
    if unknown_fns:
        raise ExpressionError(
            f"unknown function(s) {', '.join(unknown_fns)}; conditions can call "
            + ", ".join(sorted(STANDARD_FUNCTIONS, key=str.lower))
            + " (and the macros has, all, exists, exists_one, map, filter)")
    cond = Condition(source, program, _plan(source), _defaults(source),
                     bool(called & set(TIMESTAMP_FUNCTIONS)))
    _CACHE[source] = cond
    return cond


_ATTRIBUTE = re.compile(r"\bprofile\s*\.\s*attributes\s*\.\s*([A-Za-z_]\w*)")
_PROPERTY = re.compile(r"\b(event|last_event)\s*\.\s*properties\s*\.\s*([A-Za-z_]\w*)")
_COUNT = re.compile(r"\bprofile\s*\.\s*counts\s*\[\s*(['\"])([^'\"]+)\1\s*\]")
_HAS = re.compile(r"\bhas\s*\(([^()]*)\)")


def _defaults(source: str) -> tuple[tuple[tuple[str, ...], Any], ...]:
    tested = {re.sub(r"\s+", "", m.group(1)) for m in _HAS.finditer(source)}
    out: dict[tuple[str, ...], Any] = {}
    for m in _ATTRIBUTE.finditer(source):
        if f"profile.attributes.{m.group(1)}" not in tested:
            out[("profile", "attributes", m.group(1))] = None
    for m in _PROPERTY.finditer(source):
        if f"{m.group(1)}.properties.{m.group(2)}" not in tested:
            out[(m.group(1), "properties", m.group(2))] = None
    for m in _COUNT.finditer(source):
        out[("profile", "counts", m.group(2))] = 0
    return tuple(out.items())


def _with_default(ctx: dict[str, Any], path: tuple[str, ...], default: Any) -> dict[str, Any]:
    """``ctx`` with ``default`` at ``path`` where nothing is; the dicts on the way are
    copied, never changed (they may be the caller's)."""
    node: Any = ctx
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return ctx  # no such container: CEL reports it as it would
    if path[-1] in node:
        return ctx
    top = dict(ctx)
    cur = top
    for key in path[:-1]:
        cur[key] = dict(cur[key])
        cur = cur[key]
    cur[path[-1]] = default
    return top


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


def _outside_strings(source: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", source)


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
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
