"""Recovery (issue 13, goal 2): how long a worker that owns N customers takes to be ready.

N customer states (real states of synthetic customers part-way through their week,
encoded as the worker writes them) are put on the state changelog of a real Kafka node,
then:

- the live worker (memory store) starts cold: seconds from its start to its due index
  being built over the restored table (``due_index_rebuilt``), and the memory it holds;
- it stops gracefully and restarts with its local files kept (a "warm" restart: the
  snapshot files its stop saved are loaded, and only what the changelog got since is
  read; runtime/restore.py);
- the same changelog restored by a bare Faust app (bench/restore_probe.py) with the
  memory store and with the RocksDB store (rocksdict), cold and then warm (RocksDB keeps
  its files and the offsets it restored to, so a warm start reads only what is new).

    python bench/recovery.py [--customers 200000] [--partitions 8] [--stores memory,rocksdb]

Prints seconds, records/s and MB of resident memory per 100k customers, and the ratios of
each against the live worker's cold start measured in the same run.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaProducer

from omnijourney.codecs import encode_state
from omnijourney.runtime.kraft import KafkaCluster
from omnijourney.runtime.topics import changelog_topic, ensure_topics
from omnijourney.settings import Settings, Topics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import real_states  # the same states as the rebuild bench

ROOT = Path(__file__).resolve().parents[1]


def state_values(n: int, partitions: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) for n customers, cycling through 2,000 real states with
    each customer's own id written into its copy."""
    templates = real_states(2000)
    out = []
    for i in range(n):
        st = templates[i % len(templates)]
        cid = f"r{i:08d}"
        p = i % partitions
        doc = encode_state(p, st).replace(f'"{st.customer_id}"'.encode(), f'"{cid}"'.encode())
        out.append((p, cid.encode(), doc))
    return out


async def produce(bootstrap: str, topic: str, rows: list[tuple[int, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=1 << 20, max_request_size=8 << 20)
    await producer.start()
    try:
        pending = []
        for p, key, value in rows:
            pending.append(await producer.send(topic, value, key=key, partition=p))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def bench_dir(prefix: str) -> Path:
    """Where a run keeps its logs: BENCH_LOG_DIR, else a new temporary folder."""
    work = Path(os.environ.get("BENCH_LOG_DIR") or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work


@contextmanager
def kafka_node() -> Iterator[str]:
    """The cluster KAFKA_BOOTSTRAP names, else a real node started here for the run."""
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    cluster = KafkaCluster(1, quiet=True, heap="1g")
    cluster.start()
    try:
        yield cluster.bootstrap
    finally:
        cluster.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_line(proc: subprocess.Popen[bytes], log: Path, marker: str, timeout: float) -> float:
    """Seconds until ``marker`` appears in the log (from now)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if marker in log.read_text(errors="replace"):
            return time.monotonic() - started
        if proc.poll() is not None:
            raise RuntimeError(f"exited: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"no {marker!r} within {timeout:.0f} s: {log}")


def run_until_ready(argv: list[str], env: dict[str, str], log: Path, marker: str
                    ) -> tuple[float, float]:
    """Start, wait for ``marker``, note seconds and resident MB, stop gracefully."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        seconds = wait_line(proc, log, marker, 600)
        time.sleep(0.5)
        return seconds, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--stores", default="memory,rocksdb")
    args = ap.parse_args()
    n = args.customers
    work = bench_dir("recovery-")
    t0 = time.perf_counter()
    rows = state_values(n, args.partitions)
    size = sum(len(v) for _, _, v in rows) / n
    print(f"{n:,} customer states ({size:,.0f} B each, built in "
          f"{time.perf_counter() - t0:.1f} s); logs in {work}")
    with kafka_node() as bootstrap:
        run = uuid.uuid4().hex[:6]
        settings = Settings(bootstrap=bootstrap, app_id=f"omnijourney-rec-{run}",
                            partitions=args.partitions, topics=Topics.with_prefix(f"rec-{run}-"))
        ensure_topics(settings)
        t0 = time.perf_counter()
        asyncio.run(produce(bootstrap, changelog_topic(settings), rows))
        took = time.perf_counter() - t0
        print(f"changelog filled: {took:.1f} s ({n / took:,.0f} records/s)")
        env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap,
               "OMNIJOURNEY_TOPIC_PREFIX": f"rec-{run}-", "OMNIJOURNEY_APP_ID": settings.app_id,
               "OMNIJOURNEY_PARTITIONS": str(args.partitions), "OMNIJOURNEY_CLOCK": "event",
               "OMNIJOURNEY_JOURNEYS": str(ROOT / "journeys"), "OMNIJOURNEY_METRICS_PORT": "off",
               "OMNIJOURNEY_RECOVERY_STALL": "0", "OMNIJOURNEY_DATADIR": str(work / "worker-data")}
        worker = [sys.executable, "-m", "omnijourney", "worker"]
        results: list[tuple[str, float, float]] = []
        for label in ("worker cold", "worker restart"):
            s, mb = run_until_ready(worker, env, work / f"{label.replace(' ', '-')}.log",
                                    '"due_index_rebuilt"')
            results.append((label, s, mb))
        probe = [sys.executable, str(Path(__file__).with_name("restore_probe.py"))]
        for store in [s for s in args.stores.split(",") if s]:
            penv = {**env, "PROBE_BOOTSTRAP": bootstrap, "PROBE_APP": settings.app_id,
                    "PROBE_STORE": store, "PROBE_PARTITIONS": str(args.partitions),
                    "PROBE_DATADIR": str(work / f"probe-{store}")}
            for kind in ("cold", "warm"):
                s, mb = run_until_ready(probe, penv, work / f"probe-{store}-{kind}.log",
                                        '"restored"')
                results.append((f"Faust table, {store}, {kind}", s, mb))
        base = results[0][1]
        print(f"\n{'':34s} {'ready':>8s} {'records/s':>10s} {'RSS MB':>8s} "
              f"{'MB/100k':>8s} {'vs worker cold':>14s}")
        for label, s, mb in results:
            print(f"{label:34s} {s:7.1f}s {n / s:10,.0f} {mb:8.0f} {mb / n * 1e5:8.0f} "
                  f"{base / s:13.2f}x")
        per_m = base / n * 1e6
        print(f"\nextrapolated to 1M customers: worker cold start ~{per_m:.0f} s "
              f"(goal 30 s); resident ~{results[0][2] / n * 1e6 / 1024:.1f} GB")
        print(json.dumps({"customers": n, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
