"""docs/metrics.md is the code's metrics, exactly: every family the gateway registers (and no
other), its type, its label names, every label value the gateway initialises, and the
dashboard panels that use it. Every series exists from the start (issue 13: rate() works, no
alert needs absent())."""

from __future__ import annotations

import json

from metrics_catalogue import (
    DASHBOARD,
    catalogue,
    family_name,
    family_of,
    promql_metric_names,
    started_metrics,
)
from prometheus_client.metrics_core import Metric

# Label values that are not an enum the catalogue can list: it describes them instead.
DESCRIBED = frozenset(
    {"method", "code", "version", "python", "implementation", "major", "minor", "patchlevel"}
)


def _families() -> dict[str, Metric]:
    return {family_name(f.name, f.type): f for f in started_metrics().registry.collect()}


def _label_values(family: Metric) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {}
    for sample in family.samples:
        for label, value in sample.labels.items():
            if label != "le":  # a histogram bucket's bound, not a label of the family
                values.setdefault(label, set()).add(value)
    return values


def test_every_registered_family_is_catalogued_and_every_catalogued_one_is_registered() -> None:
    registered, documented = set(_families()), set(catalogue())
    assert sorted(registered - documented) == [], "registered but not in docs/metrics.md"
    assert sorted(documented - registered) == [], "in docs/metrics.md but not registered"


def test_each_catalogued_type_is_the_registered_type() -> None:
    rows = catalogue()
    wrong = {
        name: (rows[name].type, f.type)
        for name, f in _families().items()
        if name in rows and rows[name].type != f.type
    }
    assert wrong == {}


def test_every_series_exists_from_the_start() -> None:
    empty = sorted(name for name, family in _families().items() if not family.samples)
    assert empty == [], "families without a series until their first event"


def test_each_catalogued_label_set_is_the_registered_one() -> None:
    rows = catalogue()
    wrong = {
        name: (sorted(rows[name].label_names()), sorted(_label_values(f)))
        for name, f in _families().items()
        if name in rows and rows[name].label_names() != set(_label_values(f))
    }
    assert wrong == {}


def test_every_initialised_label_value_is_named_in_the_catalogue() -> None:
    rows = catalogue()
    missing: dict[str, list[str]] = {}
    for name, family in _families().items():
        for label, values in _label_values(family).items():
            if label in DESCRIBED or name not in rows:
                continue
            words = set(rows[name].label_text(label).replace(",", " ").split())
            if values - words:
                missing[f"{name}{{{label}}}"] = sorted(values - words)
    assert missing == {}


def test_each_catalogued_panel_list_is_exactly_the_panels_that_query_the_family() -> None:
    rows = catalogue()
    histograms = {name for name, row in rows.items() if row.type == "histogram"}
    used: dict[str, set[str]] = {}
    for panel in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
        for target in panel.get("targets", []):
            for series in promql_metric_names(target["expr"]):
                used.setdefault(family_of(series, histograms), set()).add(panel["title"])
    wrong = {
        name: (sorted(row.panels), sorted(used.get(name, set())))
        for name, row in rows.items()
        if row.panels != used.get(name, set())
    }
    assert wrong == {}


def test_the_build_info_names_the_installed_version() -> None:
    family = _families()["gateway_build_info"]
    (sample,) = family.samples
    assert sample.value == 1
    assert sample.labels["version"] not in ("", "unknown")  # the package is installed in tests
