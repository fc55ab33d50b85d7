"""The core compiled by mypyc (omnijourney/native.py): it runs only when it is current,
the sources run otherwise, and the suite knows which one it tested."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from omnijourney import native

SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)
WHICH = ("import importlib; print(','.join(importlib.import_module('omnijourney.' + m)"
         ".__file__ for m in " + repr(native.MODULES) + "))")


def _files(env: dict[str, str], path: Path | None = None) -> tuple[list[str], str]:
    extra = {"PYTHONPATH": str(path)} if path else {}
    base = {k: v for k, v in os.environ.items() if k != native.SWITCH}
    out = subprocess.run([sys.executable, "-c", WHICH], capture_output=True, text=True,
                         check=True, env={**base, **env, **extra}, cwd=path or None)
    return out.stdout.strip().split(","), out.stderr


def test_the_suite_tests_the_core_the_build_says() -> None:
    mode = native.mode()
    loaded = [importlib.import_module(f"omnijourney.{m}").__file__ or ""
              for m in native.MODULES]
    if mode == "compiled":
        assert all(f.endswith(SUFFIXES) for f in loaded), loaded
    else:
        assert all(f.endswith(".py") for f in loaded), loaded
    if os.environ.get("CI") and os.environ.get(native.SWITCH) is None:
        # CI builds it (make install): a build that silently failed is caught here.
        assert mode == "compiled", json.loads(native.MANIFEST.read_text()).get("error")


def test_a_source_changed_since_the_build_is_stale(tmp_path: Path) -> None:
    for m in native.MODULES:
        native.source(m, tmp_path).parent.mkdir(exist_ok=True)
        native.source(m, tmp_path).write_text(f"X = {m!r}\n")
    manifest = {"modules": {m: native._digest(native.source(m, tmp_path))
                            for m in native.MODULES}}
    assert native.stale(manifest, tmp_path) == []
    (tmp_path / "core" / "gate.py").write_text("X = 'changed'\n")
    assert native.stale(manifest, tmp_path) == ["core.gate"]
    assert native.stale({"modules": {}}, tmp_path) == list(native.MODULES)  # not compiled
    assert native.stale({"error": "no compiler"}, tmp_path) == list(native.MODULES)


def _built() -> bool:
    """Compiled and current, whether or not this run switched it off."""
    try:
        manifest = json.loads(native.MANIFEST.read_text())
    except (OSError, ValueError):
        return False
    return bool(native._extensions()) and not native.stale(manifest)


@pytest.mark.skipif(not _built(), reason="the core is not compiled here")
def test_switched_off_or_stale_the_core_runs_from_its_sources(tmp_path: Path) -> None:
    on, _ = _files({})
    assert all(f.endswith(SUFFIXES) for f in on), on
    off, _ = _files({native.SWITCH: "off"})
    assert all(f.endswith(".py") for f in off), off
    # A copy of the package with the build, whose gate.py was edited after it.
    shutil.copytree(native.PACKAGE, tmp_path / "omnijourney", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for lib in native.SRC.glob(f"{native.GROUP}__mypyc*"):
        shutil.copy(lib, tmp_path / lib.name)
    copied, _ = _files({}, tmp_path)
    assert all(f.startswith(str(tmp_path)) and f.endswith(SUFFIXES) for f in copied)
    gate = tmp_path / "omnijourney" / "core" / "gate.py"
    gate.write_text(gate.read_text() + "\n# edited after the build\n")
    stale, err = _files({}, tmp_path)
    assert all(f.startswith(str(tmp_path)) and f.endswith(".py") for f in stale), stale
    assert "older than its sources" in err


def test_states_read_by_msgspec_into_the_compiled_classes_refuse_a_missing_field() -> None:
    """Compiled, msgspec reads a run's missing version as 0: the short way sends that to
    the long way, which refuses a stored run without its journey's version."""
    from omnijourney.codecs import _typed_state
    from omnijourney.core.state import Instance

    at = "2026-03-02T10:00:00Z"
    ev = {"event_id": "e1", "type": "cart.updated", "customer_id": "c1", "occurred_at": at,
          "source": "web", "properties": {}}
    run = {"journey": "j", "version": 3, "key": "k", "instance_id": "i", "trigger": ev,
           "last_event": ev, "entered_at": at, "step": "s", "status": "wait", "due_at": at}
    doc = {"p": 0, "d": at, "s": {"customer_id": "c1", "instances": {"j#k": run}}}
    read = _typed_state(json.dumps(doc).encode())
    assert read is not None and read[1].instances["j#k"].version == 3
    assert isinstance(read[1].instances["j#k"], Instance)
    del run["version"]
    assert _typed_state(json.dumps(doc).encode()) is None
