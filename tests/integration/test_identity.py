"""Identity on a real broker: events resolved through the identity topic, customers merged
between partitions, the same commands and ids as the simulator, also across a kill -9
in the middle of a merge."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from omnijourney.config import load
from omnijourney.core.commands import ChannelCommand
from omnijourney.core.events import Event, parse_event
from omnijourney.simulator import simulate
from tests.integration.harness import REPO, LiveEngine
from tests.integration.test_live_engine import as_rows

pytestmark = pytest.mark.integration
SCENARIOS = ("identity_two_live_customers", "identity_merge_guard")
# Every scenario written as data with its own events (the sample timeline has its own
# test): identity, topics and preferences, the hand-off, quiet hours across DST.
EVERY_SCENARIO = tuple(sorted(p.stem for p in (REPO / "tests" / "scenarios").glob("*.yaml")
                              if "events:" in p.read_text(encoding="utf-8")))


def timelines(names: tuple[str, ...] = SCENARIOS) -> tuple[list[Event], list[ChannelCommand]]:
    events: list[Event] = []
    for name in names:
        sc: dict[str, Any] = YAML(typ="safe").load(
            (REPO / "tests" / "scenarios" / f"{name}.yaml").read_text(encoding="utf-8"))
        events += [parse_event(e) for e in sc["events"]]
    events.sort(key=lambda e: e.occurred_at)
    js = load(REPO / "journeys").journey_set
    assert js is not None
    return events, simulate(js, events).commands


def expected_rows(expected: list[ChannelCommand]) -> set[str]:
    return {json.dumps(c.to_dict(), sort_keys=True) for c in expected}


def test_every_scenario_timeline_gives_the_simulators_commands_live(
        engine: LiveEngine) -> None:
    """The scenario tests' timelines (tests/scenarios/*.yaml) through the live engine on
    a real broker: the same commands, ids and all, as the simulator's."""
    assert {"support_callback", "preferences_and_topics", *SCENARIOS} <= set(EVERY_SCENARIO)
    events, expected = timelines(EVERY_SCENARIO)
    engine.start()
    engine.produce(events, watermark=events[-1].occurred_at + timedelta(days=90))
    got = engine.read(engine.settings.topics.commands, until=len(expected))
    assert as_rows(got) == expected_rows(expected), engine.log()
    assert len(got) == len(expected)
    # Both partitions learnt the merge: the absorbed customer is a redirect, the shop's
    # id holds the anonymous app identity and the run that went on.
    absorbed = engine.state_of("cus_b1814f3134656381ebf8dc76")
    assert absorbed is not None and absorbed["merged_into"] == "c-hal"
    assert absorbed["profile"] == {} and absorbed["instances"] == {}
    hal = engine.state_of("c-hal")
    assert hal is not None
    assert hal["profile"]["identifiers"]["anonymous_id"] == ["app-hal"]
    # The guard held: Ivy and Jon stay two.
    for cid in ("c-ivy", "c-jon"):
        state = engine.state_of(cid)
        assert state is not None and "merged_into" not in state


def test_kill_9_mid_merge_sends_nothing_twice_and_loses_nothing(engine: LiveEngine) -> None:
    """The worker is killed the moment the absorbed customer has handed its state over
    (its ``merged_into`` line): the state on its way, the redirect perhaps not yet on
    the changelog, offsets not committed. A new worker replays: every merge message
    again with the same id, each answered once."""
    events, expected = timelines()
    engine.start()
    feeding = threading.Thread(target=engine.produce, args=(events,),
                               kwargs={"watermark": events[-1].occurred_at + timedelta(days=90)})
    feeding.start()
    deadline = time.monotonic() + 120
    while '"merged_into"' not in engine.log():
        assert time.monotonic() < deadline and feeding.is_alive(), engine.log()
        time.sleep(0.01)
    engine.kill()
    engine.start()
    feeding.join(300)
    assert not feeding.is_alive()
    got = engine.read(engine.settings.topics.commands, until=len(expected),
                      distinct="command_id", timeout=150)
    by_id = {r["command_id"]: r for r in got}
    assert as_rows(list(by_id.values())) == expected_rows(expected), engine.log()
    # A repeat is allowed (at-least-once) but byte-identical: nothing went out twice in
    # two versions, and no merge made a second run or a second message.
    assert len(as_rows(got)) == len(expected)
    absorbed = engine.state_of("cus_b1814f3134656381ebf8dc76")
    assert absorbed is not None and absorbed["merged_into"] == "c-hal"
    assert Path(engine.log_dir / "worker-2.log").exists()
