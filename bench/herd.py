"""Timers through Kafka (issue 13, goal 1): a herd due in one second, and waits spread out.

N customer states (real states of synthetic customers, each left in a wait) are put on
the state changelog of a real Kafka node, every wait ending at a wall-clock moment a
little after the worker will be ready. The live worker (wall clock) restores them, its
timer hands each customer a tick record when due, the engine evaluates the tick and
writes the customer's new state to the changelog. Read back from the changelog, each
customer's first new state says when its wait was really handled:

- herd: all N due in the same second; seconds until the last of them is handled (goal:
  100k within 10 s);
- spread: N due evenly over ``--spread`` seconds; lateness p50 / p99 / max (goal: p99
  <= 1 s outside a herd).

Both say how many were handled early (before their due time, to the millisecond a
record's timestamp holds; must be 0) and how many were lost (never handled; must be 0).
The baseline, measured in the same run: the due index handing out the same herd
in-process, without Kafka or the engine.

    python bench/herd.py [--customers 100000] [--spread 200] [--partitions 8]
                         [--herd-only] [--workers 1] [--cold] [--warmup 1] [--profile]

Waiting customers' states are decoded into the worker's cache ahead of their due time
(``OMNIJOURNEY_WARM_AHEAD``, 60 s by default; the lead of 25 s and more leaves time for
that). ``--cold`` first runs the same herd with nothing decoded ahead, and prints the
ratio of the two. A fresh Kafka node spends its first minutes compiling (its JIT took
2.8 s of CPU during a cold herd run first, 1.7 s during the warm one after it), so
``--warmup`` herds of 20,000 run first, not timed (1 by default; the node's CPU and its
JIT's share are printed for each herd). ``--workers 2`` runs two workers in one group
(each owns half the partitions, and so half the herd) on the same machine as the broker.
``--profile`` samples the (first) worker with py-spy for 8 s from the herd's due time
and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from omnijourney.codecs import encode_state
from omnijourney.core import CustomerState
from omnijourney.runtime.timers import Clock, DueIndex
from omnijourney.runtime.topics import changelog_topic, ensure_topics
from omnijourney.settings import ClockMode, Settings, Topics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live import broker_cpu, cpu_seconds, log_events, where_time_goes  # as live.py reads
from recovery import bench_dir, kafka_node, produce, wait_line  # as the restore bench does
from scale import real_states  # the same states as the rebuild bench

ROOT = Path(__file__).resolve().parents[1]
# A warm-up herd (--warmup): enough ticks for the node's JIT to compile the herd's paths.
WARMUP_CUSTOMERS = 20_000


def waiting_templates(count: int) -> list[CustomerState]:
    """Real states with a run that waits (a wait, a wait_for or a deferred send)."""
    return [st for st in real_states(count) if st.next_due() is not None]


def herd_rows(n: int, partitions: int, due_of: list[datetime]
              ) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) for n customers; customer i's runs all end at due_of[i]."""
    templates = waiting_templates(2000)
    rows = []
    for i in range(n):
        st = templates[i % len(templates)].clone()
        for inst in st.instances.values():
            if inst.due_at is not None:
                inst.due_at = due_of[i]
        st.sent.clear()  # no frequency cap left over from the template's week
        cid = f"h{i:08d}"
        doc = encode_state(i % partitions, st).replace(f'"{st.customer_id}"'.encode(),
                                                        f'"{cid}"'.encode())
        rows.append((i % partitions, cid.encode(), doc))
    return rows


async def handled(bootstrap: str, topic: str, start: dict[int, int], n: int,
                  timeout: float) -> dict[str, float]:
    """Customer -> the time (s since the epoch) of its first state written after
    ``start`` (the changelog's end offsets once the worker was ready)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    first: dict[str, float] = {}
    try:
        parts = [TopicPartition(topic, p) for p in start]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, start[tp.partition])
        until = time.monotonic() + timeout
        while len(first) < n and time.monotonic() < until:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for msgs in batch.values():
                for m in msgs:
                    key = (m.key or b"").decode(errors="replace")
                    if key.startswith("h") and key not in first:
                        first[key] = m.timestamp / 1000
    finally:
        await consumer.stop()
    return first


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def index_baseline(n: int, partitions: int) -> float:
    """Seconds for the due index to hand out a herd of n in-process (no Kafka)."""
    due = datetime(2026, 3, 2, tzinfo=UTC)
    index = DueIndex.of((f"h{i:08d}", i % partitions, due) for i in range(n))
    clock = Clock(ClockMode.WALL, wall=lambda: due + timedelta(seconds=1))
    t0 = time.perf_counter()
    out = index.due(clock, set(range(partitions)))
    took = time.perf_counter() - t0
    assert len(out) == n
    return took


def settled(logs: list[Path], partitions: int) -> bool:
    """Every worker has built its due index, and together they own every partition."""
    owned = []
    for log in logs:
        rebuilt = log_events(log, "due_index_rebuilt")
        if not rebuilt:
            return False
        owned.extend(rebuilt[-1]["partitions"])
    return sorted(owned) == list(range(partitions))


def run(kind: str, n: int, *, spread: float, partitions: int, bootstrap: str, work: Path,
        workers: int = 1, profile: Path | None = None,
        extra_env: dict[str, str] | None = None) -> dict[str, float]:
    run_id = uuid.uuid4().hex[:6]
    settings = Settings(bootstrap=bootstrap, app_id=f"omnijourney-herd-{run_id}",
                        partitions=partitions, topics=Topics.with_prefix(f"herd-{run_id}-"))
    ensure_topics(settings)
    topic = changelog_topic(settings)
    lead = 25.0 + n / 20_000  # the worker restores and indexes them before the first is due
    first_due = datetime.now(UTC) + timedelta(seconds=lead)
    step = spread / n if kind == "spread" else 0.0
    due_of = [first_due + timedelta(seconds=i * step) for i in range(n)]
    rows = herd_rows(n, partitions, due_of)
    asyncio.run(produce(bootstrap, topic, rows))
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap,
           "OMNIJOURNEY_TOPIC_PREFIX": f"herd-{run_id}-", "OMNIJOURNEY_APP_ID": settings.app_id,
           "OMNIJOURNEY_PARTITIONS": str(partitions), "OMNIJOURNEY_CLOCK": "wall",
           "OMNIJOURNEY_JOURNEYS": str(ROOT / "journeys"), "OMNIJOURNEY_METRICS_PORT": "off",
           "OMNIJOURNEY_RECOVERY_STALL": "0", "OMNIJOURNEY_DATADIR": str(work / f"{kind}-data"),
           **(extra_env or {})}
    logs = [work / (f"{kind}.log" if w == 0 else f"{kind}-{w + 1}.log")
            for w in range(workers)]
    procs = []
    for w, log in enumerate(logs):
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "omnijourney", "worker"],
                env={**env, "OMNIJOURNEY_DATADIR": str(work / f"{kind}-data-{w}")},
                stdout=out, stderr=subprocess.STDOUT))
    try:
        ready = wait_line(procs[0], logs[0], '"due_index_rebuilt"', lead + 60)
        while not settled(logs, partitions):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited; logs in {work}")
            if (first_due - datetime.now(UTC)).total_seconds() < -60:
                raise RuntimeError(f"the workers never settled; logs in {work}")
            time.sleep(0.1)
        start = asyncio.run(end_offsets(bootstrap, topic, partitions))
        cpu_before = sum(cpu_seconds(p.pid) for p in procs)
        node_before = broker_cpu()
        slack = (first_due - datetime.now(UTC)).total_seconds()
        if slack < 0:
            print(f"  ({kind}: the worker was ready {-slack:.1f} s after the first due time;"
                  " raise the lead)")
        spy: list[subprocess.Popen[bytes]] = []
        if profile is not None:  # from the due time, while the herd is handled
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            threading.Timer(max(0.0, slack), lambda: spy.append(subprocess.Popen(
                [py_spy, "record", "--pid", str(procs[0].pid), "-d", "8", "-r", "100",
                 "--format", "raw", "--nonblocking", "-o", str(profile)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))).start()
        seen = asyncio.run(handled(bootstrap, topic, start, n,
                                   timeout=max(0.0, slack) + spread + 120))
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
        node = [after - before for after, before in zip(broker_cpu(), node_before, strict=True)]
        for sampler in spy:
            sampler.wait(30)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    # A record's timestamp is whole milliseconds, the time it was appended, cut down: a
    # state written 0.3 ms after a due time of x.720 ms carries x ms. The due times are
    # compared at that resolution (a wait is early when its state's millisecond is
    # before its due time's), or such a state would count as early by 0.72 ms.
    due_s = {f"h{i:08d}": math.floor(due_of[i].timestamp() * 1000) / 1000 for i in range(n)}
    late = [seen[c] - due_s[c] for c in seen]
    warmed = sum(doc["states"] for log in logs for doc in log_events(log, "states_warmed"))
    return {"ready": ready, "handled": len(seen), "lost": n - len(seen), "warmed": warmed,
            "early": sum(1 for x in late if x < 0), "p50": pct(late, 0.5),
            "p99": pct(late, 0.99), "max": max(late, default=float("nan")),
            "drained": max(seen.values(), default=float("nan")) - first_due.timestamp(),
            "cpu_us": cpu / max(len(seen), 1) * 1e6, "node_cpu": node[0], "node_jit": node[1]}



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--spread", type=float, default=200.0)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--herd-only", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cold", action="store_true",
                    help="first the same herd with nothing decoded ahead "
                         "(OMNIJOURNEY_WARM_AHEAD=0): the ratio of the two")
    ap.add_argument("--warmup", type=int, default=1,
                    help=f"herds of {WARMUP_CUSTOMERS:,} run first and not timed, while the "
                         "Kafka node's JIT compiles its hot paths")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy the worker for 8 s of the herd: where its time goes")
    args = ap.parse_args()
    n = args.customers
    work = bench_dir("herd-")
    base = index_baseline(n, args.partitions)
    print(f"{n:,} waiting customers, {args.partitions} partitions, {args.workers} "
          f"worker(s); logs in {work}")
    with kafka_node() as bootstrap:
        for i in range(args.warmup):  # while the node's JIT compiles: not timed
            w = run(f"warmup-{i + 1}", min(n, WARMUP_CUSTOMERS), spread=0.0,
                    partitions=args.partitions, bootstrap=bootstrap, work=work,
                    workers=args.workers)
            print(f"  warm-up herd {i + 1}, not timed: the node's JIT {w['node_jit']:.1f} s of "
                  f"{w['node_cpu']:.1f} s of its CPU", flush=True)
        cold = run("herd-cold", n, spread=0.0, partitions=args.partitions,
                   bootstrap=bootstrap, work=work, workers=args.workers,
                   extra_env={"OMNIJOURNEY_WARM_AHEAD": "0"}) if args.cold else None
        herd = run("herd", n, spread=0.0, partitions=args.partitions, bootstrap=bootstrap,
                   work=work, workers=args.workers,
                   profile=work / "herd.pyspy" if args.profile else None)
        spread = None if args.herd_only else run(
            "spread", n, spread=args.spread, partitions=args.partitions, bootstrap=bootstrap,
            work=work, workers=args.workers)
    print(f"\nbaseline: the due index hands out the herd in-process in {base:.2f} s")
    print(f"herd, {n:,} due in one second: handled {herd['handled']:,}, lost "
          f"{herd['lost']:,}, early {herd['early']:,}; the last {herd['drained']:.1f} s after"
          f" the due time (goal 10 s for 100k; {herd['drained'] / base:,.0f}x the index alone;"
          f" {herd['handled'] / max(herd['drained'], 1e-9):,.0f} ticks/s)")
    print(f"  lateness p50 {herd['p50']:.2f} s, p99 {herd['p99']:.2f} s; the worker's CPU "
          f"{herd['cpu_us']:.0f} us per tick (all workers, from ready to the last handled)")
    print(f"  the Kafka node meanwhile: {herd['node_cpu']:.1f} s of CPU, "
          f"{herd['node_jit']:.1f} s of it compiling (its JIT)")
    print(f"  states decoded ahead of the due time (OMNIJOURNEY_WARM_AHEAD): "
          f"{herd['warmed']:,.0f}")
    if cold is not None:
        print(f"herd with nothing decoded ahead: the last {cold['drained']:.1f} s after the "
              f"due time (lost {cold['lost']:,}, early {cold['early']:,}; the worker's CPU "
              f"{cold['cpu_us']:.0f} us per tick; the node's JIT {cold['node_jit']:.1f} s of "
              f"CPU meanwhile); decoded ahead "
              f"{cold['drained'] / max(herd['drained'], 1e-9):.2f}x as fast")
    if args.profile and (work / "herd.pyspy").exists():
        print("  where the worker's time goes (py-spy, 8 s of the herd, self time):")
        for line in where_time_goes(work / "herd.pyspy", top=25):
            print(f"    {line}")
    if spread is None:
        return 0
    print(f"spread, {n:,} due over {args.spread:.0f} s ({n / args.spread:,.0f}/s): handled "
          f"{spread['handled']:,}, lost {spread['lost']:,}, early {spread['early']:,}")
    print(f"  lateness p50 {spread['p50']:.2f} s, p99 {spread['p99']:.2f} s, max "
          f"{spread['max']:.2f} s (goal p99 <= 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
