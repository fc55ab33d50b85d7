"""The marketer-facing commands: simulate, graph, schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from omnijourney.cli import main

REPO = Path(__file__).resolve().parents[2]
EVENTS = str(REPO / "examples" / "events.jsonl")
JOURNEYS = str(REPO / "journeys")
FIELDS = {"command_id", "journey", "journey_version", "step", "channel", "customer_id",
          "send_at", "template", "to", "content", "transactional", "trigger_event_id"}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_simulate_prints_one_json_command_per_line_ordered_by_send_at(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "simulate", "--journeys", JOURNEYS, "--events", EVENTS)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 28
    assert all(set(r) >= FIELDS for r in rows)
    assert [r["send_at"] for r in rows] == sorted(r["send_at"] for r in rows)
    assert {r["channel"] for r in rows} == {"email", "sms", "push", "ads"}
    assert "-> 28 commands" in err
    sms = next(r for r in rows if r["step"] == "welcome_sms" and r["customer_id"] == "c-ana")
    assert sms["content"]["text"].startswith("Willkommen bei Northwind, Ana!")  # de-DE -> de
    assert "WELCOME-" in sms["content"]["text"]


def test_simulate_until_stops_the_virtual_clock(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "simulate", "--journeys", JOURNEYS, "--events", EVENTS,
                    "--until", "2026-03-03T00:00:00Z")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and all(r["send_at"] <= "2026-03-03T00:00:00Z" for r in rows)
    assert len(rows) == 5


def test_simulate_explain_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = run(capsys, "simulate", "--journeys", JOURNEYS, "--events", EVENTS,
                    "--explain", "--customer", "c-dan")
    assert "== customer c-dan" in err and "== customer c-ana" not in err
    assert "NOT sent on email: frequency cap (2 per 1d)" in err
    assert "branch: profile.reachable.email is true -> welcome_followup" in err


def test_simulate_reports_bad_lines_and_keeps_going(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "e.jsonl"
    good = (REPO / "examples" / "events.jsonl").read_text().splitlines()[0]
    f.write_text("\n".join([good, "{not json", '{"event_id": "x", "type": "order.placed"}',
                            '{"event_id":"y","type":"Order Placed","customer_id":"c",'
                            '"occurred_at":"2026-03-02T10:00:00Z"}']) + "\n")
    code, out, err = run(capsys, "simulate", "--journeys", JOURNEYS, "--events", str(f))
    assert code == 0
    # The one good line is Ana's sign-up: SMS at once, the follow-up email a day later.
    assert [json.loads(x)["step"] for x in out.splitlines()] == ["welcome_sms", "welcome_followup"]
    assert f"{f}:2: invalid event skipped: not JSON" in err
    assert f"{f}:3: invalid event skipped: missing or empty 'customer_id'" in err
    assert "is not of the form" in err
    assert "3 invalid line(s) skipped" in err


def test_simulate_refuses_invalid_journeys(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text("trigger: {event: order.placed}\nsteps: []\n")
    code, out, err = run(capsys, "simulate", "--journeys", str(tmp_path), "--events", EVENTS)
    assert code == 1 and out == ""
    assert "bad.yaml" in err


def test_graph_is_a_mermaid_flowchart_of_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "graph", str(REPO / "journeys" / "cart_abandonment.yaml"))
    assert code == 0
    assert out.startswith("flowchart TD\n")
    for step in ("wait_1h", "cart_reminder", "wait_for_click", "retarget", "done"):
        assert f"  {step}" in out
    assert 'wait_for_click -->|"timeout"| retarget' in out
    assert "exit on order.placed" in out
    _, md, _ = run(capsys, "graph", "--markdown", str(REPO / "journeys" / "winback.yaml"))
    assert md.startswith("```mermaid\n") and 'holdout 10%' in md


def test_stats_shows_the_funnel_as_text_json_and_a_picture(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", "cart_abandonment", "--journeys", JOURNEYS,
                       "--events", EVENTS, "--json")
    assert code == 0
    doc = json.loads(out)
    _, sim, _ = run(capsys, "simulate", "--journeys", JOURNEYS, "--events", EVENTS)
    carts = [json.loads(line) for line in sim.splitlines()
             if json.loads(line)["journey"] == "cart_abandonment"]
    by_channel: dict[str, int] = {}
    for c in carts:
        by_channel[c["channel"]] = by_channel.get(c["channel"], 0) + 1
    assert doc["sends"] == by_channel  # the same commands simulate prints
    assert doc["steps"]["cart_reminder"] == by_channel["email"] + doc["suppressed"].get(
        "frequency_cap", 0)  # reached: sent or held back by the cap
    assert doc["entries"] >= doc["steps"]["wait_1h"] >= doc["steps"]["cart_reminder"]
    _, text, _ = run(capsys, "stats", "cart_abandonment", "--journeys", JOURNEYS,
                     "--events", EVENTS)
    assert f"entries {doc['entries']}" in text and "step reach" in text
    _, graph, _ = run(capsys, "stats", "cart_abandonment", "--journeys", JOURNEYS,
                      "--events", EVENTS, "--graph")
    assert graph.startswith("flowchart TD")
    assert f"<b>{doc['entries']}</b> entered" in graph
    assert f"<b>{doc['steps']['cart_reminder']}</b> reached" in graph
    assert f"({doc['goals']} converted)" in graph
    code, _, err = run(capsys, "stats", "no_such_journey", "--journeys", JOURNEYS,
                       "--events", EVENTS)
    assert code == 2 and "cart_abandonment" in err


def test_schema_describes_the_language(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    step_types = json.dumps(schema["$defs"])
    for kind in ("wait_for", "branch", "split", "update_profile", "webhook", "goto"):
        assert f'"const": "{kind}"' in step_types
    assert schema["additionalProperties"] is False
    _, out, _ = run(capsys, "schema", "--kind", "policies")
    assert "frequency_caps" in json.loads(out)["properties"]


def test_console_script_runs_as_a_module() -> None:
    out = subprocess.run([sys.executable, "-m", "omnijourney", "validate", JOURNEYS],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "0 error(s)" in out.stderr
