"""Schema evolution guard: refuse a change to schemas/*.avsc that breaks old readers or
writers, using Apache Avro's own compatibility checker.

Both directions are checked (full compatibility): consumers on the new schema must read
records already on the topics, and consumers not yet upgraded must read new records.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType


@dataclass(frozen=True)
class Finding:
    file: str
    direction: str  # "new reads old" or "old reads new"
    problem: str


def compare(old_text: str, new_text: str, file: str) -> list[Finding]:
    old, new = avro.schema.parse(old_text), avro.schema.parse(new_text)
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro ships no annotations here
    out = []
    for direction, reader, writer in (("new reads old", new, old), ("old reads new", old, new)):
        result = checker.get_compatibility(reader, writer)
        if result.compatibility is not SchemaCompatibilityType.compatible:
            where = ", ".join(sorted(result.locations)) or "/"
            what = ", ".join(sorted(str(m) for m in result.messages)) or "incompatible"
            out.append(Finding(file, direction, f"at {where}: {what}"))
    return out


def baseline_from_git(path: Path, rev: str) -> str | None:
    """The file as it was at ``rev`` (None when it did not exist there)."""
    rel = path.resolve().relative_to(_toplevel(path))
    proc = subprocess.run(["git", "show", f"{rev}:{rel.as_posix()}"], capture_output=True,
                          text=True, cwd=path.parent, check=False)
    return proc.stdout if proc.returncode == 0 else None


def _toplevel(path: Path) -> Path:
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True, cwd=path.parent, check=True)
    return Path(out.stdout.strip()).resolve()


def check_dir(schema_dir: Path, *, against: str) -> tuple[list[Finding], int]:
    """Compare every schema with its version in a directory or at a git revision."""
    findings: list[Finding] = []
    compared = 0
    base_dir = Path(against)
    for path in sorted(schema_dir.glob("*.avsc")):
        if base_dir.is_dir():
            old_path = base_dir / path.name
            old = old_path.read_text(encoding="utf-8") if old_path.exists() else None
        else:
            old = baseline_from_git(path, against)
        if old is None:
            continue  # a new schema breaks nobody
        compared += 1
        findings += compare(old, path.read_text(encoding="utf-8"), path.name)
    return findings, compared
