"""Load a journeys directory from disk: journeys, ``templates/`` and ``policies.yaml``.

All file reading lives here; the core gets text. Returns every violation at once, and a
JourneySet only when there are no errors (never a half-loaded configuration).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from omnijourney.core import model as m
from omnijourney.core.catalog import JourneySet
from omnijourney.core.diagnostics import Violation, did_you_mean, has_errors
from omnijourney.core.parsing import Source, parse_journey, parse_policies, parse_template
from omnijourney.core.timeutil import is_known_zone
from omnijourney.core.validation import check_template, validate_journey

POLICIES_FILE = "policies.yaml"
TEMPLATES_DIR = "templates"


@dataclass
class Loaded:
    root: Path
    journeys: list[tuple[m.JourneyDef, Source]] = field(default_factory=list)
    templates: dict[str, m.TemplateDef] = field(default_factory=dict)
    template_files: dict[str, str] = field(default_factory=dict)
    policies: m.PoliciesDef | None = None
    violations: list[Violation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unreadable files outside ``only``
    journey_set: JourneySet | None = None

    @property
    def ok(self) -> bool:
        return not has_errors(self.violations)


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def journey_id_of(stem: str) -> str:
    """The id a journey file gives when it names none: its name, before a version
    suffix (``promo.v1.yaml`` and ``promo.v2.yaml`` are both ``promo``)."""
    return re.sub(r"\.v\d+$", "", stem)


def load(root: Path | str, only: list[Path] | None = None) -> Loaded:
    """Load ``root``; with ``only``, report journey violations just for those files."""
    root = Path(root)
    out = Loaded(root)
    if not root.is_dir():
        out.violations.append(Violation(str(root), None, "not a directory of journeys"))
        return out
    _load_templates(root / TEMPLATES_DIR, out)
    _load_policies(root / POLICIES_FILE, out)
    wanted = {p.resolve() for p in only} if only else None
    topics = out.policies.topics if out.policies else {}
    seen: dict[tuple[str, int], str] = {}
    for path in _yaml_files(root):
        if path.name == POLICIES_FILE:
            continue
        parsed_j = parse_journey(path.read_text(encoding="utf-8"), _rel(path),
                                 journey_id_of(path.stem))
        report = wanted is None or path.resolve() in wanted
        if report:
            out.violations += parsed_j.violations
        j, src = parsed_j.model, parsed_j.source
        if j is None and parsed_j.stand_in is not None and src is not None and report:
            out.violations += validate_journey(parsed_j.stand_in, src, out.templates,
                                               out.template_files, graph=False,
                                               topics=topics)
        if j is None or src is None:
            if not report:  # still refuse to build a set that silently lacks this journey
                out.skipped.append(_rel(path))
            continue
        problems = validate_journey(j, src, out.templates, out.template_files, topics=topics)
        if report:
            out.violations += problems
        key = (j.id, j.version)
        if key in seen:
            out.violations.append(Violation(
                src.file, src.line("version"),
                f"journey '{j.id}' version {j.version} is also defined in {seen[key]}",
                journey=j.id, hint="bump version when you change a live journey"))
        seen[key] = src.file
        out.journeys.append((j, src))
    found_any = any(p.name != POLICIES_FILE for p in _yaml_files(root))
    if not out.journeys and wanted is None and not found_any:
        # (A folder whose only journey is invalid has that file's problems to show.)
        out.violations.append(Violation(_rel(root), None, "no journey files (*.yaml) found"))
    # Read a report top to bottom: files in the order loaded, each by line.
    order = {f: i for i, f in enumerate(dict.fromkeys(v.file for v in out.violations))}
    out.violations.sort(key=lambda v: (order[v.file], v.line or 0))
    if out.ok and not out.skipped:
        out.journey_set = JourneySet.build([j for j, _ in out.journeys], out.templates,
                                           out.policies)
    return out


def _load_templates(tdir: Path, out: Loaded) -> None:
    if not tdir.is_dir():
        return
    for path in _yaml_files(tdir):
        parsed = parse_template(path.read_text(encoding="utf-8"), _rel(path))
        out.violations += parsed.violations
        if parsed.model is not None and parsed.source is not None:
            out.violations += check_template(path.stem, parsed.model, parsed.source)
            out.templates[path.stem] = parsed.model
            out.template_files[path.stem] = _rel(path)


def _load_policies(pfile: Path, out: Loaded) -> None:
    if not pfile.is_file():
        return
    parsed = parse_policies(pfile.read_text(encoding="utf-8"), _rel(pfile))
    out.violations += parsed.violations
    out.policies = parsed.model
    if parsed.model is not None and parsed.source is not None:
        out.violations += _check_policies(parsed.model, parsed.source, out.templates)


def _check_policies(p: m.PoliciesDef, src: Source,
                    templates: dict[str, m.TemplateDef]) -> list[Violation]:
    out = []
    if not is_known_zone(p.defaults.timezone):
        out.append(Violation(src.file, src.line("defaults", "timezone"),
                             f"unknown time zone '{p.defaults.timezone}'",
                             hint="use an IANA name such as Europe/Berlin or UTC"))
    for i, name in enumerate(p.transactional):
        if templates and name not in templates:
            out.append(Violation(src.file, src.line("transactional", i),
                                 f"transactional lists unknown template '{name}'",
                                 hint=did_you_mean(name, templates)))
    return out


def load_or_raise(root: Path | str) -> JourneySet:
    """For workers: the JourneySet, or ConfigError carrying the validator's report."""
    loaded = load(root)
    if loaded.journey_set is None:
        raise ConfigError(loaded.violations)
    return loaded.journey_set


class ConfigError(Exception):
    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        errors = [v for v in violations if v.severity == "error"]
        super().__init__("\n".join(v.format() for v in errors))
