"""The core's command and event are exactly the Avro contracts in schemas/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omnijourney.config import load
from omnijourney.simulator import read_events, simulate

REPO = Path(__file__).resolve().parents[2]


def schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / "schemas" / name).read_text())
    return data


def test_every_command_field_is_in_the_avro_contract_and_vice_versa() -> None:
    js = load(REPO / "journeys").journey_set
    assert js is not None
    events, _ = read_events((REPO / "examples" / "events.jsonl").read_text().splitlines())
    commands = simulate(js, events).commands
    fields = {f["name"] for f in schema("channel_command.avsc")["fields"]}
    channels = next(f["type"]["symbols"] for f in schema("channel_command.avsc")["fields"]
                    if f["name"] == "channel")
    for c in commands:
        d = c.to_dict()
        assert set(d) == fields
        assert d["channel"] in channels
        assert all(isinstance(v, str) for v in d["content"].values()), d["content"]


def test_event_contract_matches_the_json_envelope() -> None:
    fields = {f["name"] for f in schema("touchpoint_event.avsc")["fields"]}
    events, _ = read_events((REPO / "examples" / "events.jsonl").read_text().splitlines())
    # identifiers appear in the JSON form only when an event has some
    assert set(events[0].to_dict()) == fields - {"identifiers"}
    identified = next(e for e in events if e.identifiers)
    assert set(identified.to_dict()) == fields
