"""The Grafana dashboard and Prometheus config: valid, and only about exported series."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ruamel.yaml import YAML

from omnijourney.cli.common import WORKER_METRICS_PORT
from omnijourney.core.channels import CHANNELS
from omnijourney.ops.metrics import AdapterMetrics, WorkerMetrics, series

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "omnijourney.json"
PROMQL_FUNCS = {"sum", "max", "min", "avg", "rate", "increase", "histogram_quantile", "by",
                "without", "count"}


def exported() -> set[str]:
    return series(WorkerMetrics().registry) | series(AdapterMetrics("email").registry)


def test_the_dashboard_is_valid_grafana_json_with_distinct_non_overlapping_panels() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 10
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "prometheus"


def test_the_dashboard_uses_only_series_the_processes_export() -> None:
    names = exported()
    used = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            metrics = set(re.findall(r"\bomnijourney_[a-z_]+\b", target["expr"]))
            assert metrics, target["expr"]
            used |= metrics
    assert used <= names, sorted(used - names)
    # The picture ops asked for: lag, throughput, sends, suppression, dead letters.
    for must in ("omnijourney_consumer_lag", "omnijourney_events_total",
                 "omnijourney_commands_total", "omnijourney_suppressed_total",
                 "omnijourney_dead_letters_total"):
        assert must in used, must


def test_alert_rules_use_only_exported_series_and_are_loaded() -> None:
    prom_dir = REPO / "deploy" / "prometheus"
    rules = YAML(typ="safe").load((prom_dir / "alerts.yml").read_text())
    names = exported() | {"up"}  # Prometheus' own per-target series
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert alerts and all(r["alert"] and r["expr"] and r["annotations"]["summary"]
                          for r in alerts)
    for rule in alerts:
        used = set(re.findall(r"\b(omnijourney_[a-z_]+|up)\b(?=[{\[ )]|$)", rule["expr"]))
        assert used and used <= names, (rule["alert"], sorted(used - names))
    config = YAML(typ="safe").load((prom_dir / "prometheus.yml").read_text())
    compose = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())
    mounted = dict(v.split(":")[:2][::-1] for v in compose["services"]["prometheus"]["volumes"])
    for path in config["rule_files"]:
        assert (REPO / mounted[path]).resolve() == (prom_dir / "alerts.yml").resolve()


def test_the_exported_series_include_what_the_issue_lists() -> None:
    names = exported()
    for name in ("omnijourney_consumer_lag", "omnijourney_consumer_lag_seconds",
                 "omnijourney_events_total", "omnijourney_commands_total",
                 "omnijourney_suppressed_total", "omnijourney_deferred_total",
                 "omnijourney_dead_letters_total", "omnijourney_due_waits",
                 "omnijourney_timer_lateness_seconds_bucket",
                 "omnijourney_evaluation_seconds_bucket", "omnijourney_rebalances_total",
                 "omnijourney_journey_entries_total", "omnijourney_journey_steps_total",
                 "omnijourney_journey_exits_total", "omnijourney_journey_goals_total",
                 "omnijourney_journey_cohorts_total", "omnijourney_adapter_deliveries_total"):
        assert name in names, name


def test_compose_scrapes_every_process_on_its_default_port_and_mounts_the_dashboard() -> None:
    compose = YAML(typ="safe").load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    prom = YAML(typ="safe").load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    want = {"worker:" + str(WORKER_METRICS_PORT)}
    for name, svc in services.items():
        if svc.get("command", [None])[0] == "adapter":
            ch = svc["command"][1]
            want.add(f"{name}:{WORKER_METRICS_PORT + 1 + CHANNELS.index(ch)}")
    assert targets == want
    mounts = [v.split(":")[0] for s in ("prometheus", "grafana")
              for v in services[s]["volumes"]]
    for mount in mounts:
        assert (REPO / mount).exists(), mount
    assert any(DASHBOARD.is_relative_to(REPO / m) for m in mounts)
