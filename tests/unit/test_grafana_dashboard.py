"""deploy/grafana/dashboards/gateway.json: every panel's PromQL names only catalogued metrics
(docs/metrics.md), and the panels an SRE opens first are there (issue 13)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from metrics_catalogue import DASHBOARD, catalogue, family_of, prometheus_series, promql_metric_names

REQUIRED_PANELS = (
    "Cars online by bearer",
    "Ingest rate by kind",
    "Rejects by reason",
    "Ingest latency percentiles",
    "Backpressure",
    "Entitlements by state",
    "Entitlement pipeline per minute",
    "Privacy-withheld records",
    "Roaming deferrals",
    "Presence grace",
    "MQTT session and reconnects",
    "gRPC rate by method",
    "gRPC errors by method and code",
    "gRPC latency by method (p95)",
    "Process CPU",
    "Process memory (RSS)",
)


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def uncatalogued(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Panel title -> the metric names its queries use that docs/metrics.md does not list."""
    rows = catalogue()
    known = set(rows) | set(prometheus_series())
    histograms = {name for name, row in rows.items() if row.type == "histogram"}
    unknown: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names = {family_of(n, histograms) for n in promql_metric_names(target["expr"])}
            if names - known:
                unknown.setdefault(panel["title"], set()).update(names - known)
    return unknown


def test_every_panel_queries_only_catalogued_metrics() -> None:
    assert uncatalogued(_dashboard()) == {}


def test_a_panel_querying_an_uncatalogued_metric_is_found() -> None:
    doc = _dashboard()
    doc["panels"].append({"title": "typo", "targets": [
        {"expr": 'histogram_quantile(0.9, sum by (le) (rate(gateway_grpc_latency_bucket{job="g"}[5m])))'},
        {"expr": "gateway_vehicles_online_total + on (instance) gateway_build_info"},
    ]})
    assert uncatalogued(doc) == {"typo": {"gateway_grpc_latency_bucket", "gateway_vehicles_online_total"}}


def test_every_panel_has_queries_and_a_unique_title_and_id() -> None:
    panels = [p for p in _dashboard()["panels"] if p["type"] != "row"]
    assert all(p.get("targets") and all(t["expr"].strip() for t in p["targets"]) for p in panels)
    titles = [p["title"] for p in _dashboard()["panels"]]
    ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(titles) == len(set(titles)) and len(ids) == len(set(ids))


def test_the_panels_an_sre_opens_first_are_there() -> None:
    titles = {p["title"] for p in _dashboard()["panels"]}
    assert sorted(set(REQUIRED_PANELS) - titles) == []


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (reason) (rate(gateway_messages_rejected_total{reason!="ok"}[5m])) > 0',
         {"gateway_messages_rejected_total"}),
        # Label names in a grouping, strings with braces, durations, offsets and numbers.
        ('histogram_quantile(0.95, sum without (code) (rate(a_bucket{x="}{by (le)"}[1h:5m] offset 1d)))',
         {"a_bucket"}),
        ("rate(a_total[$__rate_interval]) * 60 / on (instance) group_left (version) b_info",
         {"a_total", "b_info"}),
        ("a > bool b or c unless d", {"a", "b", "c", "d"}),
        ("1e3 * max(x:recorded:rate5m) - Inf", {"x:recorded:rate5m"}),
        ('label_replace(a, "dst", "$1", "src", "(.*)")', {"a"}),
    ],
)
def test_the_metric_names_of_an_expression_are_its_selectors(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names
