"""Prometheus metrics, ``/healthz`` and ``/readyz`` for the worker and the adapters.

Every series a dashboard or alert uses is declared here, in one registry per process, so
``series()`` of these registries is the complete list the Grafana dashboard and the alert
rules may reference (a test holds them to that). Counting rules for journeys come from
``omnijourney.core.analytics``.
"""

from __future__ import annotations

import hmac
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from datetime import datetime

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from omnijourney import wallclock
from omnijourney.core.analytics import FACTS, tally
from omnijourney.core.trace import TraceEntry, TraceKind
from omnijourney.ops.lag import LagReader, PartitionLag, known_groups
from omnijourney.serving import LOOPBACK, BackgroundServer, QuietHandler
from omnijourney.settings import Settings

log = structlog.get_logger("omnijourney.metrics")
NS = "omnijourney"
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
LATENESS_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
Tallied = dict[tuple[Counter, tuple[str, ...]], int]  # increments per label set
# Trace kinds counted by counters of their own (beside the journey facts).
_RARE_KINDS = frozenset({TraceKind.RUNAWAY, TraceKind.TRAIT_REJECTED, TraceKind.MERGED,
                         TraceKind.MERGE_REFUSED})


def observe_all(histogram: Histogram, amounts: Iterable[float]) -> None:
    """``histogram.observe`` for each amount, with each bucket's lock taken once for all
    of them rather than once each (a herd observes two amounts a tick). The same counts
    as observing one at a time; a client library without the internals this reads gets
    exactly that."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    amounts = list(amounts)
    if not amounts:
        return
    counts: Tally[int] = Tally()
    last = len(bounds)
    for amount in amounts:
        i = bisect_left(bounds, amount)
        if i < last and amount <= bounds[i]:  # as observe: the first bound at or above it
            counts[i] += 1
    total.inc(sum(amounts))
    for i, n in counts.items():
        buckets[i].inc(n)


class LagGauges:
    """Consumer lag of one process's group(s), refreshed in the background."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["group", "topic", "partition"]
        self.records = Gauge(f"{NS}_consumer_lag", "Records not yet processed "
                             "(end offset - committed offset)", labels, registry=registry)
        self.seconds = Gauge(f"{NS}_consumer_lag_seconds", "Age of the oldest unprocessed "
                             "record", labels, registry=registry)
        self.errors = Counter(f"{NS}_lag_probe_errors", "Failed lag measurements",
                              registry=registry)


class ProcessMetrics:
    """What every process exposes: its registry, consumer lag and readiness."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.lag = LagGauges(self.registry)
        self.ready = Gauge(f"{NS}_ready", "1 while ready: recovered, not rebalancing, "
                           "consuming", registry=self.registry)


class WorkerMetrics(ProcessMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.events = Counter(f"{NS}_events", "Records processed, by event type (tick for "
                              "timer ticks)", ["type"], registry=r)
        self.dead = Counter(f"{NS}_dead_letters", "Records sent to the dead-letter topic",
                            ["reason"], registry=r)
        self.due = Gauge(f"{NS}_due_waits", "Journey instances waiting for a time on this "
                         "worker's partitions", registry=r)
        self.ticks = Counter(f"{NS}_ticks", "Timer ticks given to due customers: "
                             "in_process (their partition was caught up) or topic (sent on "
                             "the ticks topic, behind records not handled yet)", ["way"],
                             registry=r)
        self.lateness = Histogram(f"{NS}_timer_lateness_seconds", "How late a due wait "
                                  "was picked up by the timer", buckets=LATENESS_BUCKETS,
                                  registry=r)
        self.evaluation = Histogram(f"{NS}_evaluation_seconds", "Time to evaluate one input "
                                    "for one customer", buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram(f"{NS}_batch_seconds", "Time to process one batch, commands "
                               "and states acked", buckets=LATENCY_BUCKETS, registry=r)
        self.runaway = Counter(f"{NS}_runaway", "Journey runs ended for trying to send a "
                               "customer more than the per-evaluation cap", ["journey"],
                               registry=r)
        self.rejected = Counter(f"{NS}_traits_rejected", "Profile traits refused as invalid "
                                "(the last valid value stays)", ["trait"], registry=r)
        self.hops = Counter(f"{NS}_identity_hops", "Resolution hops: an event visiting one "
                            "of its identifiers' partitions", registry=r)
        self.merges = Counter(f"{NS}_identity_merges", "Customers found to be one person, by "
                              "outcome: merged, or refused by the guard "
                              "(kind_does_not_merge, too_many_identifiers)", ["outcome"],
                              registry=r)
        self.rebalances = Counter(f"{NS}_rebalances", "Partition assignments received",
                                  registry=r)
        self.warmed = Counter(f"{NS}_states_warmed", "Waiting customers' states decoded "
                              "into the state cache ahead of their due time "
                              "(OMNIJOURNEY_WARM_AHEAD)", registry=r)
        self.lease_waits = Counter(f"{NS}_lease_waits", "Writes held because this worker's "
                                   "group lease had run out, by outcome: renewed (a "
                                   "heartbeat came back) or fenced (a rebalance began; the "
                                   "batch was given up, to be read again)", ["outcome"],
                                   registry=r)
        self.assigned = Gauge(f"{NS}_assigned_partitions", "Source partitions this worker "
                              "owns", registry=r)
        self.restoring = Gauge(f"{NS}_recovery_remaining", "Changelog records this worker "
                               "still has to restore before it serves (0 when serving)",
                               registry=r)
        self.journey = {name: Counter(f"{NS}_{f.metric}", f.help, list(f.labels), registry=r)
                        for name, f in FACTS.items()}

    def observe(self, *, inputs: Iterable[str], dead: Iterable[str],
                trace: Iterable[TraceEntry], evaluation_seconds: Iterable[float],
                batch_seconds: float) -> None:
        # Counted per label set first: a batch of 500 holds a few dozen distinct ones,
        # and each ``labels`` lookup takes a lock.
        counts: Tallied = {}
        key: tuple[Counter, tuple[str, ...]]
        for kind in inputs:
            key = (self.events, (kind,))
            counts[key] = counts.get(key, 0) + 1
        for reason in dead:
            key = (self.dead, (reason,))
            counts[key] = counts.get(key, 0) + 1
        facts, rare = tally(trace, _RARE_KINDS)
        journey = self.journey
        for (name, values), n in facts.items():
            key = (journey[name], values)
            counts[key] = counts.get(key, 0) + n
        for entry in rare:
            kind = entry.kind
            if kind == TraceKind.RUNAWAY:
                key = (self.runaway, (entry.journey or "",))
            elif kind == TraceKind.TRAIT_REJECTED:
                key = (self.rejected, (str(entry.detail.get("trait", "")),))
            elif kind == TraceKind.MERGED:
                key = (self.merges, ("merged",))
            else:  # MERGE_REFUSED
                key = (self.merges, (str(entry.detail.get("reason", "")),))
            counts[key] = counts.get(key, 0) + 1
        for (counter, values), n in counts.items():
            counter.labels(*values).inc(n)
        observe_all(self.evaluation, evaluation_seconds)
        self.batch.observe(batch_seconds)


class AdapterMetrics(ProcessMetrics):
    def __init__(self, channel: str, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.channel = channel
        self.outcomes = Counter(f"{NS}_adapter_deliveries", "Commands settled by the adapter",
                                ["channel", "status"], registry=r)
        self.retries = Counter(f"{NS}_adapter_retries", "Transient provider errors retried",
                               ["channel"], registry=r)
        self.latency = Histogram(f"{NS}_adapter_delivery_seconds", "Provider call time per "
                                 "command, retries included", ["channel"],
                                 buckets=(*LATENCY_BUCKETS, 5.0, 10.0, 30.0), registry=r)

    def outcome(self, status: str) -> None:
        self.outcomes.labels(self.channel, status).inc()


# Every series name a process exposes (the Grafana dashboard may use only these).
def series(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "sum", "count"))
        else:
            names.add(family.name)
    return names


class LagRefresher:
    """Measures this process's consumer lag every ``interval`` seconds in a thread."""

    def __init__(self, gauges: LagGauges, measure: Callable[[datetime], list[PartitionLag]],
                 interval: float = 10.0) -> None:
        self.gauges, self.measure, self.interval = gauges, measure, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag", daemon=True)

    def start(self) -> LagRefresher:
        self._thread.start()
        return self

    def refresh(self) -> None:
        for row in self.measure(wallclock.now()):
            labels = (row.group, row.topic, str(row.partition))
            self.gauges.records.labels(*labels).set(row.lag)
            self.gauges.seconds.labels(*labels).set(row.time_lag or 0.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:  # a broker hiccup must not kill the probe
                self.gauges.errors.inc()
                log.warning("lag_probe_failed", error=str(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class MetricsServer(BackgroundServer):
    """``/metrics`` (Prometheus text), ``/healthz`` (alive) and ``/readyz`` (serving).

    With ``token``, ``/metrics`` answers only ``Authorization: Bearer <token>`` (the
    series name journeys, steps and partitions); the probes stay open, they tell nothing.
    """

    def __init__(self, registry: CollectorRegistry, *, healthy: Callable[[], bool],
                 ready: Callable[[], bool], host: str = LOOPBACK, port: int = 0,
                 token: str | None = None) -> None:
        outer = self
        self.registry, self.healthy, self.ready = registry, healthy, ready
        want = f"Bearer {token}" if token else None

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    given = self.headers.get("Authorization") or ""
                    if want is not None and not hmac.compare_digest(given, want):
                        self._send(401, b"a bearer token is required\n", "text/plain")
                        return
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok = (outer.healthy if path == "/healthz" else outer.ready)()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"not ok\n",
                               "text/plain")
                else:
                    self._send(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler, host, port, "metrics")


class Heartbeat:
    """Alive while ``beat()`` was called within ``within`` seconds."""

    def __init__(self, within: float) -> None:
        self.within = within
        self.last = time.monotonic()
        self.failed: str | None = None

    def beat(self) -> None:
        self.last = time.monotonic()

    def fail(self, why: str) -> None:
        """Unhealthy from now on, whatever beats: the process is going down."""
        self.failed = why

    def __call__(self) -> bool:
        return self.failed is None and time.monotonic() - self.last <= self.within


class ProgressWatch:
    """Stalled when work stays under way without moving for ``within`` seconds.

    Fed a progress marker (e.g. changelog records still to restore) on every check, or
    None when nothing is under way; ``within`` <= 0 never reports a stall.
    """

    def __init__(self, within: float) -> None:
        self.within = within
        self.marker: int | None = None
        self.since = 0.0

    def observe(self, marker: int | None, now: float) -> bool:
        if marker is None or self.within <= 0:
            self.marker = None
            return False
        if marker != self.marker:
            self.marker, self.since = marker, now
            return False
        return now - self.since >= self.within

    def stuck_for(self, now: float) -> float:
        return 0.0 if self.marker is None else now - self.since


def start_ops(metrics: ProcessMetrics, settings: Settings, group: str, port: int | None, *,
              healthy: Callable[[], bool], ready: Callable[[], bool], what: str,
              host: str = LOOPBACK, token: str | None = None) -> None:
    """/metrics, /healthz, /readyz on ``port`` (None: disabled) and a background probe of
    ``group``'s consumer lag. A taken port is logged, not fatal."""
    metrics.ready.set_function(lambda: float(ready()))
    if port is None:
        return
    try:
        server = MetricsServer(metrics.registry, healthy=healthy, ready=ready,
                               host=host, port=port, token=token).start()
    except OSError as exc:
        log.error("metrics_unavailable", what=what, port=port, error=str(exc))
        return  # nobody to show lag gauges to
    log.info("metrics", what=what, url=f"http://{host}:{server.port}/metrics",
             token_required=bool(token))
    reader = LagReader(settings)
    groups = {group: known_groups(settings)[group]}
    LagRefresher(metrics.lag, lambda now: reader.measure(groups, now)).start()
