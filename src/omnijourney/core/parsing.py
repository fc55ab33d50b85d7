"""Parse journey, policy and template YAML text, keeping line numbers for every node.

Takes text, not paths: reading files is the caller's business (omnijourney.config).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from omnijourney.core import model as m
from omnijourney.core.diagnostics import Violation, did_you_mean

T = TypeVar("T", bound=BaseModel)

_STEP_MODELS: dict[str, type[BaseModel]] = {
    "wait": m.WaitStep, "wait_for": m.WaitForStep, "branch": m.BranchStep,
    "split": m.SplitStep, "send": m.SendStep, "update_profile": m.UpdateProfileStep,
    "webhook": m.WebhookStep, "handoff": m.HandoffStep, "goto": m.GotoStep,
    "end": m.EndStep,
}
_NESTED: dict[str, type[BaseModel]] = {
    "trigger": m.Trigger, "entry": m.Entry, "exit_on": m.EventRule, "goal": m.Goal,
    "branches": m.BranchCase, "variants": m.Variant, "defaults": m.Defaults,
    "frequency_caps": m.Cap,
}


@dataclass
class Source:
    """A parsed YAML document with the line of every key and list item."""

    file: str
    doc: Any

    def line(self, *path: str | int | None) -> int | None:
        node: Any = self.doc  # ruamel's CommentedMap/CommentedSeq carry .lc positions
        line = 1
        for key in path:
            try:
                if isinstance(node, dict) and key in node:
                    line = _positions(node).key(key)[0] + 1
                    node = node[key]
                elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
                    line = _positions(node).item(key)[0] + 1
                    node = node[key]
                else:
                    continue
            except (AttributeError, KeyError, IndexError, TypeError):
                continue
        return line

    def step_line(self, index: int, field: str | None = None) -> int | None:
        return self.line("steps", index, field) if field else self.line("steps", index)


def _positions(node: Any) -> Any:
    """ruamel's line/column record of a loaded mapping or sequence."""
    return node.lc


@dataclass
class Parsed(Generic[T]):
    source: Source | None
    model: T | None
    violations: list[Violation]
    # When the shape is invalid: the same document with its broken parts replaced by
    # placeholders, so every other check can still run and report in the same pass.
    stand_in: T | None = None


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def _yaml_in_words(problem: str, context: str) -> tuple[str, str] | None:
    """What the YAML parser's usual complaints mean, for someone writing a journey."""
    if "expected <block end>" in problem or "expected <block end>" in context:
        return ("this line is not indented like the lines around it",
                "keys of one block start in the same column; list items start with '- ' "
                "under their key")
    if "mapping values are not allowed here" in problem:
        return ("a ':' inside a value",
                "put text that contains ': ' in quotes, e.g. subject: \"Hi: welcome\"")
    if "found character '\t'" in problem:
        return "a tab character", "indent with spaces, never tabs"
    if "found unhashable key" in problem or "while parsing a flow mapping" in context:
        return ("a '{' that YAML reads as a mapping",
                "put Liquid text in quotes: text: \"{{ profile.first_name }}\"")
    return None


def parse_yaml(text: str, file: str) -> tuple[Source | None, list[Violation]]:
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc).splitlines()[0]
        hint = "check indentation and that text containing ':' or '{{' is in quotes"
        if "duplicate key" in str(exc):
            hint = "each key may appear once per block"
        words = _yaml_in_words(problem, str(exc.context or ""))
        if words is not None:
            problem, hint = words
        return None, [Violation(file, line, f"YAML syntax: {problem}", hint=hint)]
    except YAMLError as exc:
        return None, [Violation(file, None, f"YAML syntax: {exc}")]
    if doc is None:
        return None, [Violation(file, 1, "the file is empty")]
    if not isinstance(doc, dict):
        return None, [Violation(file, 1, "the file must be a YAML mapping (key: value lines)")]
    return Source(file, doc), []


def _plain(node: Any) -> Any:
    """ruamel's commented containers and tagged scalars as plain Python values."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return str(node)


def _validate(model: type[T], data: Any, src: Source,
              label: str | None) -> tuple[T | None, list[Violation]]:
    value, violations, _ = _validate_locs(model, data, src, label)
    return value, violations


def _validate_locs(model: type[T], data: Any, src: Source, label: str | None
                   ) -> tuple[T | None, list[Violation], list[tuple[str | int, ...]]]:
    try:
        return model.model_validate(data), [], []
    except ValidationError as exc:
        errors = exc.errors()
        return (None, [_violation(src, err, model, label) for err in errors],
                [tuple(err["loc"]) for err in errors])


def _stand_in(data: dict[str, Any], locs: list[tuple[str | int, ...]]) -> m.JourneyDef | None:
    """The journey with each broken step replaced by a 1s wait under the same id (so links
    to it still resolve) and each broken top-level part dropped or neutralised."""
    d = copy.deepcopy(data)
    steps = d.get("steps")
    for loc in locs:
        top = loc[0] if loc else None
        if top == "steps" and len(loc) > 1 and isinstance(loc[1], int) and isinstance(steps, list):
            i = loc[1]
            raw = steps[i] if i < len(steps) and isinstance(steps[i], dict) else {}
            sid = raw.get("id")
            ok_id = isinstance(sid, str) and re.match(m.ID_PATTERN, sid)
            stand: dict[str, Any] = {"id": sid if ok_id else f"step-{i + 1}", "type": "wait",
                                     "duration": "1s"}
            if isinstance(raw.get("next"), str) and re.match(m.ID_PATTERN, raw["next"]):
                stand["next"] = raw["next"]
            if i < len(steps):
                steps[i] = stand
        elif top == "trigger":
            d["trigger"] = {"event": "placeholder.event"}
        elif top in ("entry", "exit_on", "goal", "name", "description", "version"):
            d.pop(str(top), None)
        elif top not in (None, "steps", "id"):
            d.pop(str(top), None)  # an unknown top-level field
    try:
        return m.JourneyDef.model_validate(d)
    except ValidationError:
        return None


def _violation(src: Source, err: Any, root: type[BaseModel], journey: str | None) -> Violation:
    loc: Sequence[str | int] = err["loc"]
    kind = err["type"]
    step_id = None
    doc_path = list(loc)
    owner: type[BaseModel] = root
    if loc and loc[0] == "steps" and len(loc) > 1 and isinstance(loc[1], int):
        raw = src.doc.get("steps") or []
        if loc[1] < len(raw) and isinstance(raw[loc[1]], dict):
            step_id = str(raw[loc[1]].get("id")) if raw[loc[1]].get("id") else f"#{loc[1] + 1}"
        if len(loc) > 2 and isinstance(loc[2], str) and loc[2] in _STEP_MODELS:
            owner = _STEP_MODELS[loc[2]]
            doc_path = [loc[0], loc[1], *loc[3:]]
    for part in doc_path[:-1]:
        if isinstance(part, str) and part in _NESTED:
            owner = _NESTED[part]
    line = src.line(*doc_path)
    field = str(doc_path[-1]) if doc_path else ""
    hint = None
    if kind == "extra_forbidden":
        allowed = [f.alias or name for name, f in owner.model_fields.items()]
        msg = f"unknown field '{field}'"
        hint = did_you_mean(field, allowed) or f"allowed here: {', '.join(sorted(allowed))}"
    elif kind == "missing":
        msg = f"missing required field '{field}'"
    elif kind == "union_tag_invalid":
        bad = err.get("ctx", {}).get("tag", "?")
        msg = f"unknown step type '{bad}'"
        hint = did_you_mean(bad, m.STEP_TYPES) or f"step types: {', '.join(m.STEP_TYPES)}"
        line = src.line(*doc_path, "type")
    elif kind == "union_tag_not_found":
        msg = "step has no 'type'"
        hint = f"add type: one of {', '.join(m.STEP_TYPES)}"
    elif kind == "literal_error":
        msg = f"'{err.get('input')}' is not allowed for '{field}'"
        hint = f"use {err.get('ctx', {}).get('expected', '')}"
    elif kind == "string_pattern_mismatch":
        msg = f"'{err.get('input')}' is not a valid id for '{field}'"
        hint = "ids start with a lowercase letter and use a-z, 0-9, _ and -"
    elif kind == "value_error":
        msg = f"{field}: {str(err['msg']).removeprefix('Value error, ')}"
    else:
        msg = f"{field}: {err['msg']}" if field else str(err["msg"])
    return Violation(src.file, line, msg, journey=journey, step=step_id, hint=hint)


def parse_journey(text: str, file: str, default_id: str) -> Parsed[m.JourneyDef]:
    src, violations = parse_yaml(text, file)
    if src is None:
        return Parsed(None, None, violations)
    data = _plain(src.doc)
    if "id" not in data:
        data["id"] = default_id
    journey, violations, locs = _validate_locs(m.JourneyDef, data, src, str(data.get("id")))
    stand_in = _stand_in(data, locs) if journey is None else None
    return Parsed(src, journey, violations, stand_in)


def parse_policies(text: str, file: str) -> Parsed[m.PoliciesDef]:
    return _parse_as(m.PoliciesDef, text, file)


def parse_template(text: str, file: str) -> Parsed[m.TemplateDef]:
    return _parse_as(m.TemplateDef, text, file)


def _parse_as(model: type[T], text: str, file: str) -> Parsed[T]:
    src, violations = parse_yaml(text, file)
    if src is None:
        return Parsed(None, None, violations)
    parsed, violations = _validate(model, _plain(src.doc), src, None)
    return Parsed(src, parsed, violations)
