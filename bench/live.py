"""Live engine vs a raw aiokafka consume->produce loop: same broker, same payloads, one run.

All drain the same pre-filled records (Avro touchpoint events from the realistic mix of
bench/evaluator.py). The raw loop only forwards each record to another topic; so does a
Faust agent with the engine's batching (bench/faust_floor.py: the floor of any Faust
worker on this broker); the engine decodes, evaluates all five journeys, sends
commands, waits for their acks and writes state to its changelog. Prints events/s for
each and the ratios.

    python bench/live.py [--customers 5000]     (KAFKA_BOOTSTRAP to use a real cluster)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from omnijourney.codecs import encode_event
from omnijourney.runtime.broker import EmbeddedBroker
from omnijourney.runtime.settings import Settings, Topics
from omnijourney.runtime.topics import ensure_topics
from omnijourney.synthetic import synth  # the same customers as the evaluator bench

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4


async def fill(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def raw_loop(bootstrap: str, source: str, sink: str, n: int) -> float:
    """Seconds to consume n records and produce each to another topic (acked)."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4()}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    seen, started = 0, None
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            futures = []
            for msgs in batches.values():
                if msgs and started is None:
                    started = time.perf_counter()
                for m in msgs:
                    futures.append(await producer.send(sink, m.value, key=m.key))
            seen += sum(len(v) for v in batches.values())
            if futures:
                await asyncio.gather(*futures)
            await consumer.commit()
        assert started is not None
        return time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()


def live_engine(settings: Settings, prefix: str, n: int, log: Path) -> float:
    """Seconds from the worker's first batch to the batch that completes n records."""
    env = {**os.environ, "KAFKA_BOOTSTRAP": settings.bootstrap, "OMNIJOURNEY_TOPIC_PREFIX": prefix,
           "OMNIJOURNEY_APP_ID": settings.app_id, "OMNIJOURNEY_PARTITIONS": str(PARTITIONS),
           "OMNIJOURNEY_CLOCK": "event", "OMNIJOURNEY_JOURNEYS": str(ROOT / "journeys"),
           "OMNIJOURNEY_METRICS_PORT": "off", "OMNIJOURNEY_DATADIR": str(log.parent / "engine")}
    return drain_seconds([sys.executable, "-m", "omnijourney", "worker", "--log-level", "debug"],
                         env, n, log)


def faust_floor(bootstrap: str, source: str, sink: str, n: int, log: Path) -> float:
    """The same, for a Faust agent that only forwards records (bench/faust_floor.py)."""
    env = {**os.environ, "FLOOR_BOOTSTRAP": bootstrap, "FLOOR_SOURCE": source,
           "FLOOR_SINK": sink, "FLOOR_APP": f"floor-{uuid.uuid4().hex[:6]}",
           "FLOOR_DATADIR": str(log.parent / "floor")}
    return drain_seconds([sys.executable, str(Path(__file__).with_name("faust_floor.py"))],
                         env, n, log)


def drain_seconds(argv: list[str], env: dict[str, str], n: int, log: Path) -> float:
    """Run a worker until its "batch" log lines add up to n records; first to last batch."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            events = _batches(log)
            done = sum(b["records"] for b in events)
            if done >= n:
                first = datetime.fromisoformat(events[0]["timestamp"].replace("Z", "+00:00"))
                last = datetime.fromisoformat(events[-1]["timestamp"].replace("Z", "+00:00"))
                # The first batch's own processing time counts too.
                return (last - first).total_seconds() + events[0]["ms"] / 1000
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        raise RuntimeError("the worker did not finish in 10 minutes")
    finally:
        proc.terminate()
        proc.wait(30)


def _batches(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if '"event": "batch"' not in line:
            continue
        try:  # a line may still be half-written, or carry a terminal escape before it
            out.append(json.loads(line[line.index("{"):]))
        except ValueError:
            continue
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=5000)
    args = ap.parse_args()
    timelines = synth(args.customers)
    events = sorted((e for tl in timelines for e in tl), key=lambda e: e.occurred_at)
    records = [(e.customer_id.encode(), encode_event(e)) for e in events]
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    try:
        run = uuid.uuid4().hex[:6]
        prefix = f"bench-{run}-"
        settings = Settings(bootstrap=bootstrap, app_id=f"omnijourney-bench-{run}",
                            partitions=PARTITIONS, topics=Topics.with_prefix(prefix))
        ensure_topics(settings)
        raw_src, raw_sink = f"{prefix}raw-in", f"{prefix}raw-out"
        ensure_topics(Settings(bootstrap=bootstrap, partitions=PARTITIONS,
                               topics=Topics(touchpoints=raw_src, ticks=raw_sink,
                                             deliveries=f"{prefix}raw-d", dlq=f"{prefix}raw-dlq",
                                             command_prefix=f"{prefix}raw-c.")))
        floor_src, floor_sink = f"{prefix}floor-in", f"{prefix}floor-out"
        ensure_topics(Settings(bootstrap=bootstrap, partitions=PARTITIONS,
                               topics=Topics(touchpoints=floor_src, ticks=floor_sink,
                                             deliveries=f"{prefix}floor-d",
                                             dlq=f"{prefix}floor-dlq",
                                             command_prefix=f"{prefix}floor-c.")))
        asyncio.run(fill(bootstrap, raw_src, records))
        asyncio.run(fill(bootstrap, floor_src, records))
        asyncio.run(fill(bootstrap, settings.topics.touchpoints, records))
        raw_s = asyncio.run(raw_loop(bootstrap, raw_src, raw_sink, len(records)))
        log_dir = Path(os.environ.get("BENCH_LOG_DIR") or tempfile.mkdtemp(prefix="bench-"))
        floor_s = faust_floor(bootstrap, floor_src, floor_sink, len(records),
                              log_dir / "floor.log")
        live_s = live_engine(settings, prefix, len(records), log_dir / "worker.log")
    finally:
        if broker is not None:
            broker.stop()
    n = len(records)
    print(f"{n:,} touchpoint events ({args.customers:,} customers), {PARTITIONS} partitions, "
          f"broker {'embedded' if broker else bootstrap}")
    print(f"  raw aiokafka consume->produce: {n / raw_s:>9,.0f} events/s  ({raw_s:.1f} s)")
    print(f"  Faust forwarding agent:        {n / floor_s:>9,.0f} events/s  ({floor_s:.1f} s)")
    print(f"  live omnijourney engine:       {n / live_s:>9,.0f} events/s  ({live_s:.1f} s)")
    print(f"  ratio live/raw: {raw_s / live_s:.2f}x  (goal >= 0.3x)")
    print(f"  ratio Faust floor/raw: {raw_s / floor_s:.2f}x; live/Faust floor: "
          f"{floor_s / live_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
