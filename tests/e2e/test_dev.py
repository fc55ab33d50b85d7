"""The whole system as a new user meets it: the README's main command, `omnijourney dev`
(what `make demo` runs), starting its own broker, worker and timeline."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.harness import REPO
from tests.integration.test_live_engine import sample

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("broker", ["kafka", "embedded"])
def test_dev_shows_every_command_and_the_live_journey_funnel(tmp_path: Path,
                                                             broker: str) -> None:
    """On the broker dev starts itself: real Kafka (what `make demo` gets where Java 17+ is),
    and the embedded zero-Java fallback, kept as a smoke test of that path."""
    _, expected = sample()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}  # its own broker
    proc = subprocess.run([sys.executable, "-m", "omnijourney", "dev", "--broker", broker,
                           "--log", str(tmp_path / "worker.log")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    started = "Apache Kafka" if broker == "kafka" else "embedded Kafka-protocol broker"
    assert f"starting the {started}" in proc.stderr or f"starting {started}" in proc.stderr
    assert not list(REPO.glob("omnijourney-dev-*-data"))  # nothing left behind
    lines = proc.stdout.splitlines()
    assert len(lines) == len(expected)
    shown = Counter((line.split()[0], line.split()[3]) for line in lines)
    assert shown == Counter((f"commands.{c.channel}", f"{c.journey}.{c.step}") for c in expected)
    by_channel = Counter(c.channel for c in expected)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(by_channel.items()))
    assert f"{len(expected)} commands from the live engine ({summary})" in proc.stderr
    funnel = {line.split()[0]: line.split() for line in proc.stderr.splitlines()
              if line.startswith("  ") and "entered" in line}
    assert set(funnel) == {"browse_abandonment", "cart_abandonment", "order_updates",
                           "support_callback", "welcome", "winback"}
    for journey, words in funnel.items():
        sent = int(words[words.index("sent") + 1])
        assert sent == sum(c.journey == journey for c in expected), journey
