"""Violations: every problem found in a journey, policy or template file."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Violation:
    file: str
    line: int | None
    message: str
    severity: Literal["error", "warning"] = "error"
    journey: str | None = None
    step: str | None = None
    hint: str | None = None

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        step = f" [step {self.step}]" if self.step else ""
        hint = f"\n    hint: {self.hint}" if self.hint else ""
        return f"{where}: {self.severity}:{step} {self.message}{hint}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file, "line": self.line, "severity": self.severity,
            "journey": self.journey, "step": self.step, "message": self.message,
            "hint": self.hint,
        }


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean '{found[0]}'?" if found else None


def has_errors(violations: Iterable[Violation]) -> bool:
    return any(v.severity == "error" for v in violations)
