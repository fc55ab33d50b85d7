"""The wall clock, read in this one place. Outside the pure core, whatever needs the time
takes a clock (``Callable[[], datetime]``) and defaults to this one, so tests and replays
hand in their own and nothing reads the machine's time behind their back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

WallClock = Callable[[], datetime]


def now() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)
