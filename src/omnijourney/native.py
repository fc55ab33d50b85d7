"""The hot modules, compiled to C by mypyc (mypy's compiler for typed Python).

The same source, type-checked as it already is, runs as a C extension: of the pure core
the evaluator, its step machine, the state, the events, the profile, the policies' gate,
the contexts, the command ids, the plain-text templates, the time helpers and the counting
of a trace (analytics); of the runtime the engine, the decision lines, the timers and the
state table; the Avro reader of events, writer of commands and Kafka's murmur2 (``wire``);
and the rendering of JSON log lines (``linetext``) (``MODULES``).
The Python sources stay the reference and the fallback:

- ``python -m omnijourney.nativebuild build`` (``make install`` runs it) compiles them
  in place, each extension beside its source, and writes ``native.json``: each source's
  digest as compiled. Without a C compiler (or when mypyc refuses) it says so and
  everything runs from its sources.
- ``guard()``, run when the package is imported: when ``OMNIJOURNEY_NATIVE=off``, or when
  a compiled module's source no longer has the digest it was compiled from (an edit, a
  checkout), every compiled module is imported from its source instead, so nothing ever
  runs code older than its source. One line on stderr says so for a stale build.

Compiled, a dataclass's annotations are only runtime classes (``datetime | None``
becomes ``type``); msgspec reads the fields' types from them, so the codecs give the
state's and the event's classes back the ones in their source (``restore_annotations``).
msgspec reads a compiled class's missing integer field as 0 instead of refusing it: the
codecs' short way sends a version 0 the long way (``codecs._typed_state``).

Initialisers: a dataclass's ``__init__`` is generated at import by ``dataclasses``, so it
runs as interpreted Python even in a compiled module, and a frozen one sets each field
through ``object.__setattr__`` (2.5 us for a command's fifteen fields). The classes made
once or more per evaluation (a command, an evaluation, the gate's decision, an event, a
run, the engine's records) declare ``init=False`` and write their ``__init__`` out, with
``object.__setattr__`` where frozen: compiled, that is a slot's write (0.05 against 1.1 us
for seven frozen fields); from the sources, the same as the generated one. They stay
dataclasses: compared, shown, ``replace``-d and read by msgspec as before.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = Path(__file__).resolve().parent
SRC = PACKAGE.parent
MANIFEST = PACKAGE / "native.json"
GROUP = "omnijourney_core"  # the compiled modules' shared library: omnijourney_core__mypyc
MODULES = ("core.evaluator", "core.steps", "core.state", "core.events", "core.profile",
           "core.gate", "core.context", "core.commands", "core.plaintext", "core.timeutil",
           "core.analytics", "runtime.engine", "runtime.decisions", "runtime.timers",
           "runtime.states", "wire", "linetext")
SWITCH = "OMNIJOURNEY_NATIVE"  # "off": the sources, even when compiled


def source(module: str, package: Path = PACKAGE) -> Path:
    """The ``.py`` file of one of ``MODULES`` (``core.gate``: ``core/gate.py``)."""
    return package.joinpath(*module.split(".")).with_suffix(".py")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _extensions() -> list[Path]:
    """The compiled files a build left: every extension in the folders of ``MODULES``
    (one per module compiled, by this build or an earlier one with other modules) and
    the group's."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    folders = sorted({source(m).parent for m in MODULES})
    found = sorted(p for d in folders for p in d.iterdir() if p.name.endswith(suffixes))
    return found + [p for s in suffixes if (p := SRC / f"{GROUP}__mypyc{s}").exists()]


def stale(manifest: dict[str, Any], package: Path = PACKAGE) -> list[str]:
    """The compiled modules whose source is not the one they were compiled from (or that
    the manifest does not list): those that must not run."""
    compiled = manifest.get("modules") or {}
    return [m for m in MODULES
            if compiled.get(m) != (_digest(source(m, package)) if source(m, package).exists()
                                   else None)]


class _Sources(importlib.abc.MetaPathFinder):
    """Ahead of the path's finders: the compiled modules, from their ``.py`` files."""

    def __init__(self, names: dict[str, Path]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = self.names.get(fullname)
        return importlib.util.spec_from_file_location(fullname, file) if file else None


def mode() -> str:
    """``compiled``, ``sources`` (not built, or switched off) or ``stale``."""
    return _mode(bool(_extensions()))


def _mode(built: bool) -> str:
    if not built or os.environ.get(SWITCH, "").lower() in ("off", "0", "no", "false"):
        return "sources"
    try:
        manifest = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return "stale"
    return "stale" if stale(manifest) else "compiled"


def guard() -> str:
    """Unless the build is current and switched on, the compiled modules are imported
    from their sources (all of them: compiled modules call each other directly, so they
    are never mixed). Returns the mode. Runs at every start: the folders are listed
    once."""
    built = bool(_extensions())
    now = _mode(built)
    if now == "compiled" or not built:
        return now
    if now == "stale":
        print("omnijourney: the compiled core is older than its sources; running the sources"
              " (make install compiles it again)", file=sys.stderr)
    if not any(isinstance(f, _Sources) for f in sys.meta_path):
        sys.meta_path.insert(0, _Sources({f"omnijourney.{m}": source(m) for m in MODULES}))
    return "sources"


def restore_annotations(*classes: type) -> None:
    """Give the compiled modules' dataclasses the annotations written in their source:
    mypyc keeps only runtime classes (``datetime | None`` becomes ``type``), and msgspec
    reads the fields' types from the annotations. Classes run from source keep theirs."""
    for cls in classes:
        file = Path(sys.modules[cls.__module__].__file__ or "")
        if file.suffix == ".py":
            continue
        source = file.parent / f"{cls.__module__.rsplit('.', 1)[-1]}.py"
        tree = ast.parse(source.read_text(encoding="utf-8"))
        node = next(n for n in tree.body
                    if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
        cls.__annotations__ = {
            item.target.id: ast.unparse(item.annotation) for item in node.body
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
