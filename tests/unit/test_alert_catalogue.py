"""The alert rules (deploy/prometheus/rules/*.yml) against their tests, the runbook and the
metrics catalogue: every alert has a promtool case that fires and one that stays quiet
(deploy/prometheus/tests/*.yml; tests/integration/test_alert_rules.py runs them), a severity,
a summary, a description and a runbook section (docs/runbook.md) saying what it means, the
first three things to check and how to mitigate; its expression selects only catalogued series,
and the catalogue's alert column names exactly the alerts that use each series."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from metrics_catalogue import alert_cells, catalogue, family_of, promql_metric_names

from gateway.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy" / "prometheus"
RUNBOOK = PROJECT_ROOT / "docs" / "runbook.md"
SEVERITIES = frozenset({"critical", "warning"})


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]


def _alerts() -> list[Alert]:
    alerts = []
    for path in sorted((DEPLOY / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts.append(Alert(rule["alert"], rule["expr"], rule.get("labels", {}),
                                        rule.get("annotations", {})))
    return alerts


def _cases() -> list[dict[str, Any]]:
    """Every alert_rule_test entry of the promtool test files."""
    cases: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "tests").glob("*.yml")):
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _runbook_sections() -> dict[str, str]:
    """docs/runbook.md's level-2 sections: anchor -> text."""
    sections: dict[str, str] = {}
    for chunk in RUNBOOK.read_text(encoding="utf-8").split("\n## ")[1:]:
        heading, _, body = chunk.partition("\n")
        sections[_slug(heading)] = body
    return sections


def test_there_are_alerts_and_their_names_are_unique() -> None:
    names = [a.name for a in _alerts()]
    assert names and len(names) == len(set(names))


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_url() -> None:
    wrong = {
        a.name: (a.labels.get("severity"), sorted(a.annotations))
        for a in _alerts()
        if a.labels.get("severity") not in SEVERITIES
        or not {"summary", "description", "runbook_url"} <= set(a.annotations)
    }
    assert wrong == {}


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    firing = {c["alertname"] for c in _cases() if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in _cases() if not c.get("exp_alerts")}
    names = {a.name for a in _alerts()}
    assert sorted(names - firing) == [], "alerts without a firing case"
    assert sorted(names - quiet) == [], "alerts without a quiet case"
    assert sorted((firing | quiet) - names) == [], "cases of alerts that do not exist"


def test_every_runbook_url_points_at_a_section_of_the_runbook() -> None:
    sections = _runbook_sections()
    wrong = {}
    for a in _alerts():
        path, _, anchor = a.annotations["runbook_url"].partition("#")
        if path != "docs/runbook.md" or anchor not in sections:
            wrong[a.name] = a.annotations["runbook_url"]
    assert wrong == {}


def test_every_alert_section_says_what_it_means_three_things_to_check_and_how_to_mitigate() -> None:
    sections = _runbook_sections()
    wrong = {}
    for anchor in {a.annotations["runbook_url"].partition("#")[2] for a in _alerts()}:
        body = sections.get(anchor, "")
        checks = body.partition("**Check first.**")[2].partition("**Mitigate.**")[0]
        numbered = re.findall(r"^(\d)\. ", checks, flags=re.MULTILINE)
        if "**What it means.**" not in body or numbered != ["1", "2", "3"] or "**Mitigate.**" not in body:
            wrong[anchor] = numbered
    assert wrong == {}


def test_every_alert_expression_selects_only_catalogued_series() -> None:
    cells = alert_cells()
    histograms = {name for name, row in catalogue().items() if row.type == "histogram"}
    unknown = {
        a.name: sorted(n for n in promql_metric_names(a.expr) if family_of(n, histograms) not in cells)
        for a in _alerts()
    }
    assert {k: v for k, v in unknown.items() if v} == {}


def test_the_catalogue_alert_column_names_exactly_the_alerts_that_use_each_series() -> None:
    histograms = {name for name, row in catalogue().items() if row.type == "histogram"}
    used: dict[str, set[str]] = {}
    for a in _alerts():
        for series in promql_metric_names(a.expr):
            used.setdefault(family_of(series, histograms), set()).add(a.name)
    names = {a.name for a in _alerts()}
    wrong = {}
    for series, cell in alert_cells().items():
        entries = [] if cell == "-" else [e.strip() for e in cell.split(";")]
        listed = {e for e in entries if not e.startswith("planned:")}
        planned = {e.removeprefix("planned:").strip() for e in entries if e.startswith("planned:")}
        if listed != used.get(series, set()) or planned & names:
            wrong[series] = (cell, sorted(used.get(series, set())))
    assert wrong == {}
