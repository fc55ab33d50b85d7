"""The floor of any Faust agent on a broker: take batches, forward each record, wait for
the acks. No decoding, no state. bench/live.py runs it beside the engine so the engine's
own cost can be told apart from Faust's and the broker's.

    FLOOR_BOOTSTRAP=... FLOOR_SOURCE=... FLOOR_SINK=... python faust_floor.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import faust

from omnijourney.runtime.batching import take_batches
from omnijourney.runtime.engine import Outgoing
from omnijourney.runtime.faustguard import deliver_without_tasks
from omnijourney.runtime.produce import send_all
from omnijourney.settings import Settings

app = faust.App(os.environ.get("FLOOR_APP", "omnijourney-floor"),
                broker=f"kafka://{os.environ.get('FLOOR_BOOTSTRAP', '127.0.0.1:9092')}",
                store="memory://", processing_guarantee="at_least_once",
                consumer_auto_offset_reset="earliest", producer_linger=0.0,  # as the engine
                producer_max_batch_size=Settings.producer_batch_bytes,  # as the engine
                web_enabled=False, autodiscover=False,
                datadir=os.environ.get("FLOOR_DATADIR", "floor-data"))
source = app.topic(os.environ.get("FLOOR_SOURCE", "floor-in"), key_serializer="raw",
                   value_serializer="raw")
SINK = os.environ.get("FLOOR_SINK", "floor-out")
if os.environ.get("FLOOR_FAST_DELIVERY", "1") == "1":  # the engine's guard 5 (faustguard)
    deliver_without_tasks(app)


# As the engine sends: one record batch per partition (runtime/produce.py). FLOOR_BATCHED=0
# sends a record at a time, the way Faust's own ``send`` does (the floor before 2026-12-05).
BATCHED = os.environ.get("FLOOR_BATCHED", "1") == "1"


@app.agent(source)
async def forward(stream: Any) -> None:
    async for events in take_batches(stream, 500, 0.05):
        started = time.perf_counter()
        if BATCHED:
            await send_all(app.producer, [Outgoing(SINK, e.message.key, e.message.value)
                                          for e in events])
        else:
            pending = [await app.producer.send(SINK, e.message.key, e.message.value, None,
                                               None, None) for e in events]
            await asyncio.gather(*pending)
        print(json.dumps({"event": "batch", "records": len(events),
                          "ms": round((time.perf_counter() - started) * 1000, 2),
                          "timestamp": datetime.now(UTC).isoformat()}), flush=True)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
