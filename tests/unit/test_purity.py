"""The core must stay pure: no Kafka, no Faust, no logging framework, no clocks, no I/O."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import omnijourney.core

CORE = Path(omnijourney.core.__file__).parent
# Streaming, codec, logging and network client libraries must never load with the core.
FORBIDDEN_MODULES = ["faust", "aiokafka", "kafka", "fastavro", "structlog", "requests", "httpx",
                     "aiohttp", "urllib3"]
# Our own core source must not import these either (python-liquid loads asyncio for its
# async API, so this is checked on our source rather than on sys.modules).
FORBIDDEN_IN_SOURCE = [*FORBIDDEN_MODULES, "socket", "asyncio", "random", "os", "pathlib",
                       "subprocess", "time"]


def test_importing_core_loads_no_io_or_streaming_module() -> None:
    code = (
        "import sys, omnijourney.core, omnijourney.core.graph, omnijourney.core.validation\n"
        f"bad = [m for m in {FORBIDDEN_MODULES!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core pulled in: {out.stdout.strip()}"


CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"),
               ("date", "today"), ("time", "time"), ("time", "monotonic"),
               ("time", "perf_counter"), ("time", "sleep")}
IO_NAMES = {"open", "print", "input", "eval", "exec"}


def _violations(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                if (f.value.id, f.attr) in CLOCK_CALLS:
                    found.append(f"{f.value.id}.{f.attr}() at line {node.lineno}")
            elif isinstance(f, ast.Name) and f.id in IO_NAMES:
                found.append(f"{f.id}() at line {node.lineno}")
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            for name in names:
                if name.split(".")[0] in FORBIDDEN_IN_SOURCE:
                    found.append(f"import {name} at line {node.lineno}")
                elif (name.startswith("omnijourney.") and name != "omnijourney.core"
                      and not name.startswith("omnijourney.core.")):
                    found.append(f"import of an outer ring {name} at line {node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "omnijourney":
                found.extend(f"import of an outer ring omnijourney.{a.name} at line "
                             f"{node.lineno}" for a in node.names if a.name != "core")
    return found


def test_core_source_reads_no_clock_and_does_no_io() -> None:
    problems = {}
    paths = sorted(CORE.rglob("*.py"))
    assert len(paths) > 15  # the whole core, packages inside it too
    for path in paths:
        bad = _violations(ast.parse(path.read_text(encoding="utf-8")))
        if bad:
            problems[str(path.relative_to(CORE))] = bad
    assert problems == {}


def test_the_purity_check_itself_catches_a_clock_read() -> None:
    tree = ast.parse("from datetime import datetime\nx = datetime.now()\nopen('f')\nimport socket")
    assert len(_violations(tree)) == 3


def test_the_purity_check_catches_the_core_importing_an_outer_ring() -> None:
    tree = ast.parse("from omnijourney.codecs import encode_event\n"
                     "from omnijourney import wallclock\n"
                     "import omnijourney.runtime.engine\n"
                     "from omnijourney.core.trace import TraceKind\n"
                     "from omnijourney import core\n")
    assert [v.split(" at ")[0] for v in _violations(tree)] == [
        "import of an outer ring omnijourney.codecs", "import of an outer ring omnijourney.wallclock",
        "import of an outer ring omnijourney.runtime.engine"]


def test_nothing_in_the_core_or_its_libraries_reads_the_machines_clock() -> None:
    """The source check above sees our own calls only; Liquid's ``'now' | date`` read the
    wall clock inside the library (a replay of March rendered December's date). Here the
    machine's clock (C level, every library) is moved to two other years: the simulated
    commands and a template using 'now' and 'today' must not change."""
    import time_machine

    from omnijourney.config import load
    from omnijourney.core.templates import compile_text
    from omnijourney.simulator import read_events, simulate

    repo = Path(__file__).resolve().parents[2]
    js = load(repo / "journeys").journey_set
    assert js is not None
    events, _ = read_events((repo / "examples" / "events.jsonl").read_text().splitlines())
    text = compile_text("{{ 'now' | date: '%Y-%m-%d %H:%M' }} {{ 'today' | date: '%Y' }}")
    when = events[0].occurred_at

    def run() -> tuple[list[str], str]:
        cmds = [json.dumps(c.to_dict(), sort_keys=True) for c in simulate(js, events).commands]
        return cmds, text.render({"now": when})

    with time_machine.travel("2031-07-01 12:00:00+00:00", tick=False):
        first = run()
    with time_machine.travel("2044-01-15 03:00:00+00:00", tick=False):
        second = run()
    assert first == second
    assert first[1] == f"{when:%Y-%m-%d %H:%M} {when:%Y}"


WALL_CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"),
                    ("date", "today"), ("time", "time")}


def test_the_outer_rings_read_the_wall_clock_only_through_wallclock() -> None:
    """Issue 12: outside the core, whatever needs the time takes a clock and defaults to
    ``omnijourney.wallclock.now``; nothing else reads the machine's time (monotonic
    timers for durations are not the time of day, and are fine)."""
    package = CORE.parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "wallclock.py" or CORE in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and (node.func.value.id, node.func.attr) in WALL_CLOCK_CALLS):
                found.append(f"{path.relative_to(package)}:{node.lineno}")
    assert found == []
