"""Message texts printed without Liquid, where that gives exactly what Liquid gives.

Most message texts are literal text, ``{{ path }}`` outputs (with ``| default: '…'`` or
``| short_hash: '…'``), and ``{% if path %}`` / ``{% case path %}{% when '…' %}`` around
more of the same. ``compile_parts`` turns such a text's Liquid tree into parts that
``render_parts`` prints directly from the context, without a Liquid render context (most
of a render's time). Whenever it meets a case it does not decide (a value of another type,
a missing value printed without a default, a markup value), it returns None and Liquid
renders the text itself, so the output is Liquid's in every case: a property test compares
the two on random texts and contexts (tests/unit/test_template_safety.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from liquid.ast import BlockNode
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions import FilteredExpression, Path, PositionalArgument, StringLiteral
from liquid.builtin.expressions.logical import BooleanExpression
from liquid.builtin.output import OutputNode
from liquid.builtin.tags.case_tag import CaseNode, MultiExpressionBlockNode
from liquid.builtin.tags.if_tag import IfNode
from markupsafe import escape as _escape

_SPECIAL = frozenset({"size", "first", "last"})  # Liquid's own properties of sequences


def short_hash(value: object, salt: object = "") -> str:
    """Deterministic 8-character code, e.g. a personal discount code (``| short_hash``)."""
    digest = hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()
    return digest[:8].upper()


@dataclass(frozen=True, slots=True)
class Output:
    """``{{ path }}``, ``{{ path | default: 'text' }}`` or ``{{ path | short_hash: 'salt' }}``."""

    path: tuple[str, ...]
    default: str | None = None
    salt: str | None = None  # set: the value's short_hash with this salt is printed


@dataclass(frozen=True, slots=True)
class Choice:
    """``{% if %}``/``{% elsif %}``/``{% else %}`` on paths' truth, or ``{% case path %}``
    with string ``when``s: ``arms`` in order, each a test and its parts."""

    case: tuple[str, ...] | None  # the case's path; None for an if
    # (a path whose truth opens the arm, or the case's words; None: else, its parts)
    arms: tuple[tuple[tuple[str, ...] | None, tuple[Part, ...]], ...]


Part = str | Output | Choice

_UNDECIDED = object()


def compile_parts(nodes: list[Any]) -> tuple[Part, ...] | None:
    """The parts of a text this module prints, or None for a text Liquid must render."""
    parts: list[Part] = []
    for node in nodes:
        kind = type(node)
        if kind is ContentNode:
            parts.append(node.text)
            continue
        part: Part | None
        if kind is OutputNode:
            part = _output(node.expression)
        elif kind is IfNode:
            part = _if(node)
        elif kind is CaseNode:
            part = _case(node)
        else:
            return None
        if part is None:
            return None
        parts.append(part)
    return tuple(parts)


def _path(expr: Any) -> tuple[str, ...] | None:
    if type(expr) is not Path or not all(type(seg) is str and seg not in _SPECIAL
                                         for seg in expr.path):
        return None
    return tuple(str(seg) for seg in expr.path)  # all str, as checked above (for mypy)


def _literal(arg: Any) -> str | None:
    if type(arg) is not PositionalArgument or type(arg.value) is not StringLiteral:
        return None
    return str(arg.value.value)


def _output(expr: Any) -> Output | None:
    if type(expr) is not FilteredExpression or (path := _path(expr.left)) is None:
        return None
    if not expr.filters:
        return Output(path)
    (only, *more) = expr.filters
    if more or only.name not in ("default", "short_hash") or len(only.args) > 1:
        return None
    if not only.args:  # short_hash's salt defaults to ""; default needs its text
        return Output(path, salt="") if only.name == "short_hash" else None
    arg = _literal(only.args[0])
    if arg is None:
        return None
    if only.name == "default":
        return Output(path, default=arg)  # printed as written, also in HTML (Liquid's rule)
    return Output(path, salt=arg)


def _block(block: Any) -> tuple[Part, ...] | None:
    # A block of whitespace alone prints nothing in Liquid (blank blocks are suppressed):
    # left to Liquid rather than copied here.
    if type(block) is not BlockNode or block.blank:
        return None
    return compile_parts(block.nodes)


def _truth(expr: Any) -> tuple[str, ...] | None:
    return _path(expr.expression) if type(expr) is BooleanExpression else None


def _if(node: Any) -> Choice | None:
    arms: list[tuple[tuple[str, ...] | None, tuple[Part, ...]]] = []
    for test, block in [(node.condition, node.consequence),
                        *((alt.expression, alt.block) for alt in node.alternatives)]:
        path, parts = _truth(test), _block(block)
        if path is None or parts is None:
            return None
        arms.append((path, parts))
    if node.default is not None:
        parts = _block(node.default)
        if parts is None:
            return None
        arms.append((None, parts))
    return Choice(None, tuple(arms))


def _case(node: Any) -> Choice | None:
    path = _path(node.expression)
    if path is None:
        return None
    arms: list[tuple[tuple[str, ...] | None, tuple[Part, ...]]] = []
    for block in node.blocks:
        if type(block) is MultiExpressionBlockNode:
            words = [e.value for e in block.expression.expressions if type(e) is StringLiteral]
            if len(words) != len(block.expression.expressions):
                return None
            parts = _block(block.block)
            if parts is None:
                return None
            arms.append((tuple(words), parts))
        else:
            parts = _block(block)
            if parts is None:
                return None
            arms.append((None, parts))
    return Choice(path, tuple(arms))


def _lookup(ctx: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path``, None when missing, _UNDECIDED past a value not a dict."""
    value: Any = ctx
    for seg in path:
        if type(value) is not dict:
            return _UNDECIDED
        if seg not in value:
            return None
        value = value[seg]
    return value


def render_parts(parts: tuple[Part, ...], ctx: dict[str, Any], html: bool) -> str | None:
    """The text, or None for Liquid to render it (a case this does not decide)."""
    out: list[str] = []
    return "".join(out) if _render(parts, ctx, html, out) else None


def _render(parts: tuple[Part, ...], ctx: dict[str, Any], html: bool, out: list[str]) -> bool:
    for part in parts:
        if type(part) is str:
            out.append(part)
        elif type(part) is Output:
            value = _lookup(ctx, part.path)
            kind = type(value)
            if part.salt is not None:
                if kind is not str and kind is not int:
                    return False
                out.append(short_hash(value, part.salt))
            elif kind is str and value:
                out.append(str(_escape(value)) if html else value)
            elif kind is int or kind is float:
                out.append(str(value))  # Liquid's own text for numbers; nothing to escape
            elif part.default is not None and (value is None or value == ""):
                out.append(part.default)
            else:
                return False
        else:
            assert type(part) is Choice
            arms = _chosen(part, ctx)
            if arms is None:
                return False
            for arm in arms:
                if not _render(arm, ctx, html, out):
                    return False
    return True


def _chosen(choice: Choice, ctx: dict[str, Any]) -> list[tuple[Part, ...]] | None:
    """The blocks a choice prints, in order, or None when undecided."""
    if choice.case is None:
        for test, parts in choice.arms:
            if test is None:
                return [parts]
            value = _lookup(ctx, test)
            kind = type(value)
            # Liquid's truth: everything but nil and false (0 and "" are true).
            if value is None or value is False:
                continue
            if kind is str or kind is int or value is True:
                return [parts]
            return None
        return []
    value = _lookup(ctx, choice.case)
    if value is not None and type(value) not in (str, int, bool):
        return None
    chosen: list[tuple[Part, ...]] = []
    matched = False
    for words, parts in choice.arms:
        if words is None:
            if not matched:  # an else prints only while no when before it matched
                chosen.append(parts)
            continue
        # Liquid's ==: a string equals only the same string; every when that matches
        # prints, as often as it matches.
        hits = sum(1 for w in words if type(value) is str and value == w)
        if hits:
            matched = True
            chosen.extend([parts] * hits)
    return chosen
