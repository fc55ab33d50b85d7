"""What every part of the command line shares: settings from flags, ports, files."""

from __future__ import annotations

import argparse
import os

from omnijourney.core.events import Event
from omnijourney.settings import Settings
from omnijourney.simulator import read_events


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(bootstrap=getattr(args, "bootstrap", None),
                             journeys=getattr(args, "journeys", None),
                             clock=getattr(args, "clock", None))


WORKER_METRICS_PORT = 9400  # adapters: 9401 (email) ... 9405 (webhook), CHANNELS order


def metrics_port(args: argparse.Namespace, default: int) -> int | None:
    """--metrics-port, else OMNIJOURNEY_METRICS_PORT, else ``default``; "off" disables."""
    given = getattr(args, "metrics_port", None) or os.environ.get("OMNIJOURNEY_METRICS_PORT")
    if given is None or given == "":
        return default
    if str(given).lower() in ("off", "none", "disabled"):
        return None
    return int(given)


def read_jsonl(path: str) -> tuple[list[Event], list[str]]:
    with open(path, encoding="utf-8") as fh:
        events, bad = read_events(fh)
    return events, [f"{path}:{b.line}: {b.reason}" for b in bad]


def journey_ids(folder: str) -> list[str]:
    from omnijourney.config import load_or_raise

    return sorted(load_or_raise(folder).current)
