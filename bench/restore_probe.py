"""A bare Faust app with the worker's state table, to time Faust's own restore of it with
one store or another (bench/recovery.py runs it). Prints ``{"event": "restored", ...}``
once the table's recovery has completed after the first assignment.

    PROBE_BOOTSTRAP=... PROBE_APP=<the worker's app id> PROBE_STORE=memory|rocksdb \\
    PROBE_PARTITIONS=8 PROBE_DATADIR=... OMNIJOURNEY_TOPIC_PREFIX=... python restore_probe.py

PROBE_CONF: more Faust settings as a JSON object, to try a knob against the same changelog
(e.g. ``{"broker_max_poll_records": 20000}``; here they moved Faust's restore by 10-25 %).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import faust

STORE = os.environ.get("PROBE_STORE", "memory")
started = time.monotonic()
app = faust.App(os.environ["PROBE_APP"], broker=f"kafka://{os.environ['PROBE_BOOTSTRAP']}",
                store="rocksdb://" if STORE == "rocksdb" else "memory://",
                topic_partitions=int(os.environ.get("PROBE_PARTITIONS", "8")),
                topic_allow_declare=False, topic_disable_leader=True,
                consumer_auto_offset_reset="earliest", web_enabled=False, autodiscover=False,
                datadir=os.environ.get("PROBE_DATADIR", "probe-data"),
                **json.loads(os.environ.get("PROBE_CONF") or "{}"))
table = app.Table("customer-state", partitions=int(os.environ.get("PROBE_PARTITIONS", "8")),
                  key_type=bytes, value_type=bytes,
                  options={"driver": "rocksdict"} if STORE == "rocksdb" else None)
source = app.topic(os.environ.get("OMNIJOURNEY_TOPIC_PREFIX", "") + "touchpoints",
                   key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def idle(stream: Any) -> None:
    async for _ in stream:
        pass


@app.task
async def report() -> None:
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    await recovery.completed.wait()
    print(json.dumps({"event": "restored", "store": STORE,
                      "seconds": round(time.monotonic() - started, 2)}), flush=True)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()
