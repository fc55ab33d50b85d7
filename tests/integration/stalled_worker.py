"""``omnijourney worker`` whose table restore never completes.

No broker stalls on demand, so the changelog ends Faust's recovery reads are moved
``MISSING`` records past the real ones: the restore reads every record there is, then
waits for records that never arrive (what "No event received for active tp ..." looks
like). Everything else is the real worker: streams paused until the restore is done, its
timer, the watch, the graceful stop and the exit status.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from faust.tables.recovery import Recovery

from omnijourney.cli import main

MISSING = 1000
real_highwaters = Recovery._build_highwaters


async def unreachable_highwaters(recovery: Recovery, consumer: Any, tps: Any,
                                 destination: Counter[Any], title: str) -> None:
    await real_highwaters(recovery, consumer, tps, destination, title)
    for tp in tps:
        destination[tp] += MISSING


Recovery._build_highwaters = unreachable_highwaters  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["worker"]))
