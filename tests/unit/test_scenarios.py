"""Scenario tests are data: tests/scenarios/*.yaml hold a timeline and the expected outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from omnijourney.config import load
from omnijourney.simulator import read_events, simulate

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((REPO / "tests" / "scenarios").glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    sc = _load(path)
    js = load(REPO / sc["journeys"]).journey_set
    assert js is not None
    if "events_file" in sc:
        lines = (REPO / sc["events_file"]).read_text(encoding="utf-8").splitlines()
    else:
        lines = [json.dumps(e) for e in sc["events"]]
    events, bad = read_events(lines)
    assert bad == []
    result = simulate(js, events)
    got = [[c.customer_id, c.journey, c.step, c.channel,
            c.send_at.isoformat().replace("+00:00", "Z")] for c in result.commands]
    want = sc["expect"]["commands"]
    assert sorted(got, key=lambda r: (r[4], r[0], r[2])) == sorted(
        want, key=lambda r: (r[4], r[0], r[2]))
    trace = {(x.customer_id, x.kind, x.journey, x.detail.get("reason")) for x in result.trace}
    for row in sc["expect"].get("trace", []):
        assert tuple(row) in trace, f"missing trace entry {row}"


def test_every_command_id_is_unique_in_the_sample_run() -> None:
    js = load(REPO / "journeys").journey_set
    assert js is not None
    events, _ = read_events((REPO / "examples" / "events.jsonl").read_text().splitlines())
    ids = [c.command_id for c in simulate(js, events).commands]
    assert len(ids) == len(set(ids)) > 0
