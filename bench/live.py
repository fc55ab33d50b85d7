"""Live engine vs a raw aiokafka consume->produce loop: same broker, same payloads, one run.

All drain the same pre-filled records (Avro touchpoint events from the realistic mix of
bench/evaluator.py). The raw loop only forwards each record to another topic; so does a
Faust agent with the engine's batching (bench/faust_floor.py: the floor of any Faust
worker on this broker, sending as the engine sends: one record batch per partition); the
engine decodes, evaluates all five journeys, sends commands, waits for their acks and
writes state to its changelog. Prints events/s for each and the ratios.

    python bench/live.py [--customers 5000] [--broker kafka|embedded|both|none] [--scale]
                         [--warmup 3] [--rounds 2]
                         [--latency] [--rate EVENTS_PER_S] [--seconds 60]
                         [--worker-log info|debug]

--broker: a real Apache Kafka node started here (default), the embedded broker, both one
after the other, or none (with --scale: the scale-out only); KAFKA_BOOTSTRAP instead names a
running cluster. --scale adds 1 vs 2 workers on a real 3-node cluster (replication 3): both
started and assigned first, then the events are produced, the same way for each. The
nodes are warmed up first by drains that are not timed (--warmup, 3 by default): a fresh
JVM spends most of its first minutes compiling Kafka's hot paths (in the first drain its
JIT took 17-18 s of CPU, more than the brokers' own work, by the fourth 2-4 s), which
took from whichever run came first. Then --rounds pairs of drains, 1 and 2 workers in
turn (the order flipped each round), each on topics of its own, deleted after it (the
followers' fetches cost more with each partition left).

--latency then offers a fresh engine half the load it just drained at (events produced
at a steady rate for 60 s, the first 20 s not sampled) and prints the time from an
event's send to the arrival of the first command it triggered (p50, p99; goal p99 <= 100
ms): the command's ack lies between the two, so it is an upper bound. --rate R measures
only the latency, at R events/s, for --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from omnijourney.codecs import decode_command, encode_event
from omnijourney.core import Event
from omnijourney.runtime.broker import EmbeddedBroker
from omnijourney.runtime.kraft import KafkaCluster
from omnijourney.runtime.topics import ensure_topics, with_admin
from omnijourney.settings import Settings, Topics
from omnijourney.synthetic import synth  # the same customers as the evaluator bench

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4


async def fill(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
               batch_bytes: int = 16384) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=batch_bytes)
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
    # Batches as large as the engine's (Settings.producer_batch_bytes).
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=Settings.producer_batch_bytes)
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


def engine_env(settings: Settings, prefix: str, log: Path) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP": settings.bootstrap,
            "OMNIJOURNEY_TOPIC_PREFIX": prefix, "OMNIJOURNEY_APP_ID": settings.app_id,
            "OMNIJOURNEY_PARTITIONS": str(PARTITIONS), "OMNIJOURNEY_CLOCK": "event",
            "OMNIJOURNEY_JOURNEYS": str(ROOT / "journeys"), "OMNIJOURNEY_METRICS_PORT": "off",
            "OMNIJOURNEY_DATADIR": str(log.parent / f"{log.stem}-data"),
            "OMNIJOURNEY_BATCH_LOG": "1"}  # the batch lines the drains are timed by


# At info, as in production; the batch lines come at info with OMNIJOURNEY_BATCH_LOG.
# Until 2026-12-02 the bench ran the worker at debug, a line per evaluation: ~5 % slower
# drains (--worker-log debug measures that again).
WORKER = [sys.executable, "-m", "omnijourney", "worker", "--log-level", "info"]


def live_engine(settings: Settings, prefix: str, n: int, log: Path, *,
                profile: Path | None = None) -> float:
    """Seconds from the worker's first batch to the batch that completes n records."""
    return drain_seconds(WORKER, engine_env(settings, prefix, log), n, log, profile,
                         label="engine")


def scale_out(bootstrap: str, records: list[tuple[bytes, bytes]], workers: int,
              log_dir: Path) -> float:
    """``workers`` engines of one app, all assigned before the events are produced; seconds
    from the first batch of any to the batch that completes them all."""
    run = uuid.uuid4().hex[:6]
    prefix = f"scale-{run}-"
    settings = Settings(bootstrap=bootstrap, app_id=f"omnijourney-scale-{run}",
                        partitions=PARTITIONS, topics=Topics.with_prefix(prefix))
    ensure_topics(settings)
    logs = [log_dir / f"scale{workers}-{i}.log" for i in range(workers)]
    procs = []
    for log in logs:
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(WORKER, env=engine_env(settings, prefix, log),
                                          stdout=out, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 180
        while not all(_owned(log) for log in logs) or sum(map(len, map(_owned, logs))) \
                != PARTITIONS:  # every worker holds its share, none holds all
            assert time.monotonic() < deadline, "workers never settled their assignment"
            time.sleep(0.5)
        # Produced while the workers drain, in batches as large as theirs: fewer
        # requests, so the load takes less of the cores the workers and nodes share.
        asyncio.run(fill(bootstrap, settings.topics.touchpoints, records,
                         batch_bytes=Settings.producer_batch_bytes))
        return _wait_drained(procs, logs, len(records))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        try:  # a failed clean-up must not hide how the drain went
            with_admin(settings, lambda admin: admin.delete_topics(
                [name for name in admin.list_topics() if name.startswith(prefix)]))
        except Exception as exc:
            print(f"  (the drain's topics were not deleted: {exc!r})", flush=True)


def broker_cpu() -> tuple[float, float]:
    """CPU seconds used so far by the Kafka nodes running on this machine (the JVMs of
    ``kafka.Kafka``): all told, and by the JIT's compiler threads among them."""
    total = jit = 0.0
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or b"kafka.Kafka" not in (proc / "cmdline").read_bytes():
                continue
            for task in (proc / "task").iterdir():
                stat = (task / "stat").read_text()
                seconds = stat_seconds(stat)
                total += seconds
                if "CompilerThre" in stat[stat.index("("):stat.rindex(")")]:
                    jit += seconds
        except OSError:  # gone meanwhile
            continue
    return total, jit


def scale_rounds(records: list[tuple[bytes, bytes]], log_dir: Path, warmup: int,
                 rounds: int) -> list[float]:
    """1 vs 2 workers on a 3-node cluster, warmed up first: the ratio of each round."""
    n = len(records)
    with KafkaCluster(3, quiet=True) as cluster:
        print(f"\n[scale-out, Apache Kafka {cluster.version}, 3 nodes, replication 3]")

        def drain(workers: int, label: str) -> float:
            cpu0, jit0 = broker_cpu()
            seconds = scale_out(cluster.bootstrap, records, workers, log_dir)
            cpu, jit = broker_cpu()
            print(f"  {label} {workers} worker{'s' if workers > 1 else ' '}: "
                  f"{n / seconds:>9,.0f} events/s  ({seconds:.1f} s; the brokers "
                  f"{cpu - cpu0:.1f} s of CPU, {jit - jit0:.1f} s of it compiling)", flush=True)
            return seconds

        for i in range(warmup):
            drain(2 - i % 2, "warm-up, not timed:")
        ratios = []
        for r in range(rounds):
            took = {w: drain(w, f"round {r + 1}:") for w in ((1, 2) if r % 2 == 0 else (2, 1))}
            ratios.append(took[1] / took[2])
    return ratios


WARMUP = 20.0  # seconds of the offered load not sampled: the broker's JIT, the worker's caches


def latency(bootstrap: str, events: list[Event], rate: float,
            log_dir: Path) -> tuple[list[float], list[float]]:
    """A fresh engine on the wall clock, offered ``rate`` events/s, each stamped with the
    moment it is sent (so waits of hours do not fire during the run, as they would if a
    replay ran days of event time through in seconds); for each event that sends a command
    at once, the seconds from its send to that command read back from a command topic.
    A command for a run's earlier trigger, or deferred to a contact window, is not one.
    The first WARMUP seconds of the load are offered but not sampled. Also returned: for
    each sample, the seconds until the worker produced the command (its record's
    CreateTime), which tells the worker's share from the ack and the read back."""
    run = uuid.uuid4().hex[:6]
    prefix = f"lat-{run}-"
    settings = Settings(bootstrap=bootstrap, app_id=f"omnijourney-lat-{run}",
                        partitions=PARTITIONS, topics=Topics.with_prefix(prefix))
    ensure_topics(settings)
    log = log_dir / f"latency-{run}.log"
    env = {**engine_env(settings, prefix, log), "OMNIJOURNEY_CLOCK": "wall"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(WORKER, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while len(_owned(log)) != PARTITIONS:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the worker never took its partitions"
            time.sleep(0.5)
        return asyncio.run(_offer(bootstrap, settings, events, rate,
                                  log.with_suffix(".samples.json")))
    finally:
        proc.terminate()
        proc.wait(30)


async def _offer(bootstrap: str, settings: Settings, events: list[Event], rate: float,
                 samples: Path) -> tuple[list[float], list[float]]:
    sent: dict[str, float] = {}  # event id -> when sent (wall clock, as record timestamps)
    first: dict[str, float] = {}
    produced: dict[str, float] = {}
    consumer = AIOKafkaConsumer(*settings.topics.commands, bootstrap_servers=bootstrap,
                                group_id=f"lat-{uuid.uuid4()}", auto_offset_reset="earliest",
                                fetch_max_wait_ms=5)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await consumer.start()
    await producer.start()
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            for msgs in (await consumer.getmany(timeout_ms=50)).values():
                now = time.time()
                for m in msgs:
                    command = decode_command(m.value)
                    cause = command.trigger_event_id
                    # Sent at once: stamped (by the engine's clock) within a second of
                    # the event's own stamp; a deferred send is stamped hours later.
                    if cause in sent and cause not in first and \
                            command.send_at - stamps[cause] < timedelta(seconds=1):
                        first[cause] = now - sent[cause]
                        produced[cause] = m.timestamp / 1000 - sent[cause]

    stamps: dict[str, datetime] = {}
    reader = asyncio.create_task(read())
    try:
        started = time.perf_counter()
        for i, ev in enumerate(events):
            pause = started + i / rate - time.perf_counter()  # a steady offered load
            if pause > 0:
                await asyncio.sleep(pause)
            stamped = replace(ev, occurred_at=datetime.now(UTC))
            stamps[ev.event_id] = stamped.occurred_at
            if time.perf_counter() - started >= WARMUP:
                sent[ev.event_id] = time.time()
            await producer.send(settings.topics.touchpoints, encode_event(stamped),
                                key=ev.customer_id.encode())
        await producer.flush()
        await asyncio.sleep(5)  # the last commands
    finally:
        done.set()
        await reader
        await consumer.stop()
        await producer.stop()
    # Each sample (wall clock of its send, seconds to read back, seconds to produced), to
    # look for a pattern in time.
    samples.write_text(json.dumps(sorted((sent[k], first[k], produced[k]) for k in first)))
    return sorted(first.values()), sorted(produced.values())


def enough(events: list[Event], customers: int, n: int) -> list[Event]:
    """The first n events of the drain's customers, or of as many more as it takes: the
    load must last its seconds at the rate offered (88,863 events at 5,000/s end before
    the warm-up does, and nothing is sampled)."""
    if len(events) < n:
        more = synth(math.ceil(customers * n / max(len(events), 1)) + 1)
        events = sorted((e for tl in more for e in tl), key=lambda e: e.occurred_at)
    return events[:n]


def _owned(log: Path) -> set[int]:
    """The partitions a worker's latest due_index_rebuilt line names."""
    owned: set[int] = set()
    for line in log.read_text(errors="replace").splitlines():
        if '"due_index_rebuilt"' in line:
            owned = set(json.loads(line[line.index("{"):])["partitions"])
    return owned


def faust_floor(bootstrap: str, source: str, sink: str, n: int, log: Path, *,
                profile: Path | None = None) -> float:
    """The same, for a Faust agent that only forwards records (bench/faust_floor.py)."""
    env = {**os.environ, "FLOOR_BOOTSTRAP": bootstrap, "FLOOR_SOURCE": source,
           "FLOOR_SINK": sink, "FLOOR_APP": f"floor-{uuid.uuid4().hex[:6]}",
           "FLOOR_DATADIR": str(log.parent / "floor")}
    return drain_seconds([sys.executable, str(Path(__file__).with_name("faust_floor.py"))],
                         env, n, log, profile, label="faust_floor")


def where_time_goes(raw: Path, top: int = 10) -> list[str]:
    """Self time (the innermost frame of each sample) by package, then by function, from
    py-spy's raw stacks: where the process's CPU goes."""
    total = 0
    by_package: dict[str, int] = {}
    by_function: dict[str, int] = {}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n, leaf = int(count), stack.split(";")[-1]
        total += n
        where = leaf[leaf.find("(") + 1:].rstrip(")")
        package = (where.split("site-packages/")[1] if "site-packages/" in where
                   else where.split("/python3.11/")[-1]).split("/")[0].split(":")[0]
        by_package[package] = by_package.get(package, 0) + n
        function = f"{leaf.split(' (')[0]} ({where.split('/')[-1]})"
        by_function[function] = by_function.get(function, 0) + n
    if not total:
        return []
    lines = [f"{100 * c / total:5.1f}%  {name}"
             for name, c in sorted(by_package.items(), key=lambda kv: -kv[1])[:top]]
    lines.append("top functions (self):")
    lines += [f"{100 * c / total:5.1f}%  {name}"
              for name, c in sorted(by_function.items(), key=lambda kv: -kv[1])[:top]]
    return lines


def drain_seconds(argv: list[str], env: dict[str, str], n: int, log: Path,
                  profile: Path | None = None, *, label: str) -> float:
    """Run a worker until its "batch" log lines add up to n records; first to last batch.
    With ``profile``, py-spy samples the worker for 10 s from its first batch. ``label``
    names the worker in the line that gives its CPU use."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    spy = None
    deadline = time.monotonic() + 120
    while not _batches(log) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # past start-up first
    cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
    if profile is not None:
        py_spy = str(Path(sys.executable).with_name("py-spy"))  # installed beside python
        spy = subprocess.Popen([py_spy, "record", "--pid", str(proc.pid), "-d", "10", "-r",
                                "100", "--format", "raw", "--nonblocking", "-o",
                                str(profile)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        seconds = _wait_drained([proc], [log], n)
        cpu, wall = cpu_seconds(proc.pid) - cpu0, time.monotonic() - wall0
        print(f"  ({label}: {cpu / wall:.0%} of a core while draining)", flush=True)
        return seconds
    finally:
        if spy is not None:
            spy.wait(60)
        proc.terminate()
        proc.wait(30)


def stat_seconds(stat: str) -> float:
    """User and system CPU seconds in the text of a /proc ``stat`` file (a process's or
    one of its threads')."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process (Linux /proc); 0 once it is gone."""
    try:
        return stat_seconds(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return 0.0


def _wait_drained(procs: list[subprocess.Popen[bytes]], logs: list[Path], n: int) -> float:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        events = sorted((b for log in logs for b in _batches(log)), key=lambda b: b["timestamp"])
        if sum(b["records"] for b in events) >= n:
            first = datetime.fromisoformat(events[0]["timestamp"].replace("Z", "+00:00"))
            last = datetime.fromisoformat(events[-1]["timestamp"].replace("Z", "+00:00"))
            # The first batch's own processing time counts too.
            return (last - first).total_seconds() + events[0]["ms"] / 1000
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise RuntimeError("the workers did not finish in 10 minutes")


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The worker's JSON log lines of one ``event`` (``batch``, ``due_index_rebuilt`` ...)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if f'"{event}"' not in line:
            continue
        try:  # a line may still be half-written, or carry a terminal escape before it
            doc = json.loads(line[line.index("{"):])
        except ValueError:
            continue
        if doc.get("event") == event:
            out.append(doc)
    return out


def _batches(log: Path) -> list[dict[str, Any]]:
    return log_events(log, "batch")


def three_loops(bootstrap: str, records: list[tuple[bytes, bytes]], log_dir: Path,
                profile: bool = False) -> tuple[float, float, float]:
    """Seconds for the raw loop, the Faust floor and the engine, each on its own copy."""
    run = uuid.uuid4().hex[:6]
    prefix = f"bench-{run}-"
    settings = Settings(bootstrap=bootstrap, app_id=f"omnijourney-bench-{run}",
                        partitions=PARTITIONS, topics=Topics.with_prefix(prefix))
    ensure_topics(settings)
    pairs = {}
    for name in ("raw", "floor"):
        src, sink = f"{prefix}{name}-in", f"{prefix}{name}-out"
        ensure_topics(Settings(bootstrap=bootstrap, partitions=PARTITIONS,
                               topics=Topics(touchpoints=src, ticks=sink,
                                             deliveries=f"{prefix}{name}-d",
                                             dlq=f"{prefix}{name}-dlq",
                                             command_prefix=f"{prefix}{name}-c.")))
        pairs[name] = (src, sink)
        asyncio.run(fill(bootstrap, src, records))
    asyncio.run(fill(bootstrap, settings.topics.touchpoints, records))
    n = len(records)
    jit = broker_cpu()[1]

    def compiled(label: str) -> None:  # the node's JIT takes from whichever loop runs
        nonlocal jit
        now = broker_cpu()[1]
        print(f"  ({label}: the node's JIT {now - jit:.1f} s of CPU meanwhile)", flush=True)
        jit = now

    raw_s = asyncio.run(raw_loop(bootstrap, *pairs["raw"], n))
    compiled("raw loop")
    raw_profile = log_dir / f"floor-{run}.pyspy" if profile else None
    floor_s = faust_floor(bootstrap, *pairs["floor"], n, log_dir / f"floor-{run}.log",
                          profile=raw_profile)
    compiled("floor")
    show_profile("the Faust floor", raw_profile)
    engine_profile = log_dir / f"worker-{run}.pyspy" if profile else None
    live_s = live_engine(settings, prefix, n, log_dir / f"worker-{run}.log",
                         profile=engine_profile)
    compiled("engine")
    show_profile("the engine", engine_profile)
    return raw_s, floor_s, live_s


def show_profile(what: str, raw: Path | None) -> None:
    if raw is None or not raw.exists():
        return
    print(f"  where {what}'s time goes (py-spy, 10 s while draining, self time by package):")
    for line in where_time_goes(raw):
        print(f"    {line}")


def _quantiles(seconds: list[float]) -> str:
    p50, p90, p99 = (seconds[min(len(seconds) - 1, int(q * len(seconds)))]
                     for q in (0.5, 0.9, 0.99))
    return f"p50 {1000 * p50:.0f} ms, p90 {1000 * p90:.0f} ms, p99 {1000 * p99:.0f} ms"


def show_latency(rate: float, seconds: list[float], produced: list[float],
                 given: bool = False) -> None:
    if not seconds:
        print(f"  latency at {rate:,.0f} events/s: no command came back")
        return
    print(f"  event -> first command read back, {len(seconds):,} samples at "
          f"{rate:,.0f} events/s ({'as given' if given else 'half the drain rate'}): "
          f"{_quantiles(seconds)}, max {1000 * seconds[-1]:.0f} ms  (goal p99 <= 100 ms)")
    print(f"    of which until the worker produced the command: {_quantiles(produced)}")


def report(label: str, n: int, raw_s: float, floor_s: float, live_s: float) -> None:
    print(f"\n[{label}] {n:,} touchpoint events, {PARTITIONS} partitions")
    print(f"  raw aiokafka consume->produce: {n / raw_s:>9,.0f} events/s  ({raw_s:.1f} s)")
    print(f"  Faust forwarding agent:        {n / floor_s:>9,.0f} events/s  ({floor_s:.1f} s)")
    print(f"  live omnijourney engine:       {n / live_s:>9,.0f} events/s  ({live_s:.1f} s)")
    print(f"  ratio live/raw: {raw_s / live_s:.2f}x  (goal >= 0.3x)")
    print(f"  ratio Faust floor/raw: {raw_s / floor_s:.2f}x; live/Faust floor: "
          f"{floor_s / live_s:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--broker", choices=["kafka", "embedded", "both", "none"], default="kafka")
    ap.add_argument("--scale", action="store_true", help="also 1 vs 2 workers, 3 nodes")
    ap.add_argument("--warmup", type=int, default=3,
                    help="scale-out: drains not timed first, while the brokers' JIT compiles")
    ap.add_argument("--rounds", type=int, default=2,
                    help="scale-out: pairs of timed drains (1 and 2 workers)")
    ap.add_argument("--profile", action="store_true", help="py-spy the Faust floor and the engine")
    ap.add_argument("--latency", action="store_true",
                    help="then event->command latency at half the engine's drain rate")
    ap.add_argument("--rate", type=float, default=None,
                    help="only the latency, at this many events/s (no drains)")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="how long the latency load runs (the first 20 s not sampled)")
    ap.add_argument("--worker-log", choices=["info", "debug"], default="info",
                    help="the engine worker's log level (debug: a line per evaluation)")
    args = ap.parse_args()
    if args.scale and (args.rounds < 1 or args.warmup < 0):
        ap.error("--rounds must be 1 or more, --warmup 0 or more")
    WORKER[-1] = args.worker_log
    timelines = synth(args.customers)
    events = sorted((e for tl in timelines for e in tl), key=lambda e: e.occurred_at)
    records = [(e.customer_id.encode(), encode_event(e)) for e in events]
    log_dir = Path(os.environ.get("BENCH_LOG_DIR") or tempfile.mkdtemp(prefix="bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"{len(records):,} events of {args.customers:,} customers; logs in {log_dir}")
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        report(f"broker {given}", len(records), *three_loops(given, records, log_dir))
    else:
        kinds = {"both": ["kafka", "embedded"], "none": []}.get(args.broker, [args.broker])
        for kind in kinds:
            broker: EmbeddedBroker | KafkaCluster = (
                KafkaCluster(1, quiet=True) if kind == "kafka" else EmbeddedBroker())
            with broker:
                label = (f"Apache Kafka {broker.version}, 1 node"
                         if isinstance(broker, KafkaCluster) else "embedded broker")
                if args.rate:
                    print(f"\n[{label}]")
                    rate = args.rate
                else:
                    loops = three_loops(broker.bootstrap, records, log_dir, args.profile)
                    report(label, len(records), *loops)
                    rate = len(records) / loops[2] / 2
                if args.latency or args.rate:
                    offered = enough(events, args.customers, int(rate * args.seconds))
                    show_latency(rate, *latency(broker.bootstrap, offered, rate, log_dir),
                                 given=bool(args.rate))
    if args.scale:
        ratios = scale_rounds(records, log_dir, args.warmup, args.rounds)
        print(f"  ratio 2/1 by round: {', '.join(f'{r:.2f}x' for r in ratios)}; median "
              f"{statistics.median(ratios):.2f}x (goal >= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
