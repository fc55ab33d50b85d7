"""``omnijourney worker`` whose table restore never progresses.

No broker stalls on demand, so Faust's recovery is made to report records still to read
that never arrive (what "No event received for active tp ..." looks like). Everything
else is the real worker: its timer, the watch, the graceful stop and the exit status.
"""

from __future__ import annotations

import sys

import faust
from faust.tables.recovery import Recovery

from omnijourney.cli import main

faust.App.in_recovery = property(lambda app: True, lambda app, value: None)  # type: ignore[assignment]
Recovery.active_remaining_total = lambda recovery: 7  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["worker"]))
