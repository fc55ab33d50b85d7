"""Lag thresholds and table, the metrics endpoint and health checks (no broker)."""

from __future__ import annotations

import math
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from omnijourney.core.trace import TraceEntry, TraceKind
from omnijourney.ops.lag import PartitionLag, over, render
from omnijourney.ops.metrics import (
    Heartbeat,
    MetricsServer,
    ProgressWatch,
    WorkerMetrics,
    observe_all,
)
from tests.helpers import t

ROWS = [PartitionLag("omnijourney", "touchpoints", 0, 10, 10, 0, None),
        PartitionLag("omnijourney", "touchpoints", 1, 5, 25, 20, 340.0),
        PartitionLag("omnijourney-adapter-sms", "commands.sms", 0, None, 3, 3, 4.0)]


def test_thresholds_pick_the_partitions_over_either_limit() -> None:
    assert over(ROWS, max_lag=None, max_time_lag=None) == []
    assert over(ROWS, max_lag=5, max_time_lag=None) == [ROWS[1]]
    assert over(ROWS, max_lag=None, max_time_lag=3.0) == [ROWS[1], ROWS[2]]
    assert over(ROWS, max_lag=0, max_time_lag=None) == [ROWS[1], ROWS[2]]


def test_the_table_shows_each_partition_and_a_total_per_group() -> None:
    lines = render(ROWS).splitlines()
    assert lines[0].split() == ["GROUP", "TOPIC", "PART", "COMMITTED", "END", "LAG", "TIME-LAG"]
    assert lines[2].split() == ["omnijourney", "touchpoints", "1", "5", "25", "20", "5.7m"]
    assert lines[3].split() == ["total", "20", "5.7m"]
    assert lines[4].split() == ["omnijourney-adapter-sms", "commands.sms", "0", "-", "3", "3",
                                "4.0s"]
    marked = render(ROWS, lambda text, bad: ("! " if bad else "  ") + text).splitlines()
    assert [line[0] for line in marked[1:]] == [" ", "!", "!", "!", "!"]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_metrics_health_and_readiness_over_http() -> None:
    metrics = WorkerMetrics()
    state = {"ready": False}
    alive = Heartbeat(within=60)
    server = MetricsServer(metrics.registry, healthy=alive, ready=lambda: state["ready"],
                           host="127.0.0.1", port=0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        at = t("2026-03-02T10:00:00Z")
        metrics.observe(inputs=["cart.item_added", "cart.item_added", "tick"],
                        dead=["unknown_type"], evaluation_seconds=[0.001, 0.002, 0.0005],
                        batch_seconds=0.01, trace=[
                            TraceEntry(at, "c1", "entered", "cart", "k1", None, {"version": 2}),
                            TraceEntry(at, "c1", "sent", "cart", "k1", "mail",
                                       {"channel": "email", "command_id": "x"}),
                            TraceEntry(at, "c1", "suppressed", "cart", "k1", "sms",
                                       {"channel": "sms", "reason": "no_consent"}),
                            TraceEntry(at, "c1", "runaway", "spin", "", "ping",
                                       {"channel": "webhook", "limit": 16})])
        status, text = get(f"{base}/metrics")
        assert status == 200
        got = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
        assert got[("omnijourney_events_total", (("type", "cart.item_added"),))] == 2
        assert got[("omnijourney_dead_letters_total", (("reason", "unknown_type"),))] == 1
        assert got[("omnijourney_journey_entries_total",
                    (("journey", "cart"), ("version", "2")))] == 1
        assert got[("omnijourney_commands_total",
                    (("channel", "email"), ("journey", "cart"), ("step", "mail")))] == 1
        assert got[("omnijourney_suppressed_total", (("channel", "sms"), ("journey", "cart"),
                                                     ("reason", "no_consent"),
                                                     ("step", "sms")))] == 1
        assert got[("omnijourney_evaluation_seconds_count", ())] == 3
        assert got[("omnijourney_runaway_total", (("journey", "spin"),))] == 1
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/readyz")[0] == 503
        metrics.ready.set_function(lambda: float(state["ready"]))
        assert "omnijourney_ready 0.0" in get(f"{base}/metrics")[1]
        state["ready"] = True
        assert get(f"{base}/readyz")[0] == 200
        assert "omnijourney_ready 1.0" in get(f"{base}/metrics")[1]
        alive.last -= 120  # the loop stopped turning
        assert get(f"{base}/healthz")[0] == 503
        assert get(f"{base}/nope")[0] == 404
    finally:
        server.stop()


def test_a_restore_is_stalled_only_when_it_stays_put_for_the_whole_window() -> None:
    watch = ProgressWatch(within=20.0)
    assert not watch.observe(None, 0.0)        # serving: nothing under way
    assert not watch.observe(120, 1.0)         # restore starts, 120 records to go
    assert not watch.observe(120, 20.9)        # not moved, but not for 20 s yet
    assert watch.observe(120, 21.0)            # 20 s without a record: stalled
    assert watch.stuck_for(21.0) == 20.0
    assert not watch.observe(80, 22.0)         # it moved: the window starts again
    assert not watch.observe(80, 41.9)
    assert watch.observe(80, 42.0)
    assert not watch.observe(None, 43.0)       # restore done
    assert not watch.observe(80, 44.0)         # a new restore is a new window
    assert watch.stuck_for(44.0) == 0.0
    assert not ProgressWatch(within=0).observe(5, 1e9)  # 0 disables the watch


def test_a_failed_heartbeat_stays_unhealthy_whatever_beats() -> None:
    alive = Heartbeat(within=60)
    assert alive()
    alive.fail("KafkaTimeoutError: gone")
    alive.beat()  # a timer still turning does not make a dead agent alive
    assert not alive() and alive.failed == "KafkaTimeoutError: gone"


def test_metrics_can_require_a_bearer_token_and_probes_stay_open() -> None:
    metrics = WorkerMetrics()
    server = MetricsServer(metrics.registry, healthy=lambda: True, ready=lambda: True,
                           port=0, token="s3cret").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert server.host == "127.0.0.1"  # loopback unless told otherwise
        assert get(f"{base}/metrics")[0] == 401
        assert get(f"{base}/healthz")[0] == 200 and get(f"{base}/readyz")[0] == 200
        req = urllib.request.Request(f"{base}/metrics",
                                     headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200 and b"omnijourney_ready" in resp.read()
        bad = urllib.request.Request(f"{base}/metrics", headers={"Authorization": "Bearer x"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=5)
        assert refused.value.code == 401
        refused.value.close()
    finally:
        server.stop()


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples if not s.name.endswith("_created")}


@pytest.mark.parametrize("amounts", [
    [],
    [0.0],
    [0.1, 0.5, 1.0, 2.0],  # each exactly on a bound: counted in that bound's bucket
    [0.099999, 0.100001, 0.75, 3599.9, 3600.0, 3600.1, 1e9],
    [-1.0, 0.0, 45.5, 45.5, 45.5],
    [float("nan"), 0.2],  # NaN: in the sum, in no bucket, as observe does
])
def test_observing_all_at_once_counts_what_observing_each_counts(amounts: list[float]) -> None:
    one, many = CollectorRegistry(), CollectorRegistry()
    buckets = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
    each = Histogram("late", "x", buckets=buckets, registry=one)
    bulk = Histogram("late", "x", buckets=buckets, registry=many)
    for amount in amounts:
        each.observe(amount)
    observe_all(bulk, amounts)
    want, got = _samples(one), _samples(many)
    assert want.keys() == got.keys()
    for key, value in want.items():
        assert value == got[key] or (math.isnan(value) and math.isnan(got[key])), key


def test_observing_all_falls_back_to_observe_without_the_internals() -> None:
    seen: list[float] = []

    class Plain:
        def observe(self, amount: float) -> None:
            seen.append(amount)

    observe_all(Plain(), [0.3, 7.0])  # type: ignore[arg-type]
    assert seen == [0.3, 7.0]


def test_a_batch_counts_its_journey_facts_and_rare_kinds() -> None:
    metrics = WorkerMetrics()
    at = t("2026-03-02T10:00:00Z")
    trace = [TraceEntry(at, "c1", TraceKind.ENTERED, "welcome", detail={"version": 2}),
             TraceEntry(at, "c1", TraceKind.STEP, "welcome", step="sms", detail={"visit": 1}),
             TraceEntry(at, "c1", TraceKind.STEP, "welcome", step="sms", detail={"visit": 2}),
             TraceEntry(at, "c1", TraceKind.SENT, "welcome", step="sms",
                        detail={"channel": "sms"}),
             TraceEntry(at, "c1", TraceKind.SUPPRESSED, "welcome", step="mail",
                        detail={"channel": "email", "reason": "no_consent"}),
             TraceEntry(at, "c1", TraceKind.COMPLETED, "welcome"),
             TraceEntry(at, "c1", TraceKind.WAIT_OVER, "welcome"),  # counts nothing
             TraceEntry(at, "c1", TraceKind.RUNAWAY, "spin"),
             TraceEntry(at, "c1", TraceKind.MERGE_REFUSED, detail={"reason": "too_many"})]
    metrics.observe(inputs=["tick", "tick"], dead=["invalid_event"], trace=trace,
                    evaluation_seconds=[0.001, 0.002], batch_seconds=0.01)
    s = _samples(metrics.registry)
    assert s[("omnijourney_events_total", (("type", "tick"),))] == 2
    assert s[("omnijourney_dead_letters_total", (("reason", "invalid_event"),))] == 1
    assert s[("omnijourney_journey_entries_total",
              (("journey", "welcome"), ("version", "2")))] == 1
    assert s[("omnijourney_journey_steps_total",
              (("cohort", ""), ("journey", "welcome"), ("step", "sms")))] == 1  # one reach
    assert s[("omnijourney_commands_total",
              (("channel", "sms"), ("journey", "welcome"), ("step", "sms")))] == 1
    assert s[("omnijourney_suppressed_total", (("channel", "email"), ("journey", "welcome"),
                                               ("reason", "no_consent"), ("step", "mail")))] == 1
    assert s[("omnijourney_journey_exits_total",
              (("cohort", ""), ("journey", "welcome"), ("reason", "completed")))] == 1
    assert s[("omnijourney_runaway_total", (("journey", "spin"),))] == 1
    assert s[("omnijourney_identity_merges_total", (("outcome", "too_many"),))] == 1
    assert s[("omnijourney_evaluation_seconds_count", ())] == 2
    assert s[("omnijourney_evaluation_seconds_sum", ())] == pytest.approx(0.003)
