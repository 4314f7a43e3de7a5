"""docs/metrics.md read as data, the metric names a PromQL expression uses, and the registry as
a started gateway has it (shared by the catalogue, README and dashboard tests)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.api.auth import AuthInterceptor
from gateway.api.observe import LatencyInterceptor
from gateway.config import PROJECT_ROOT
from gateway.metrics import Metrics
from gateway.security.credentials import CredentialSource

CATALOGUE = PROJECT_ROOT / "docs" / "metrics.md"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "gateway.json"


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    labels: str  # the cell: "`label`: value, value; `other`: ..." or "-"
    panels: frozenset[str]
    alert: str

    def label_names(self) -> set[str]:
        return set(re.findall(r"`(\w+)`", self.labels))

    def label_text(self, label: str) -> str:
        """The cell's text about `label`: from its name to the next label's."""
        return self.labels.split(f"`{label}`", 1)[1].split("; `", 1)[0]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _panels(cell: str) -> frozenset[str]:
    return frozenset() if cell == "-" else frozenset(p.strip() for p in cell.split(";"))


def catalogue() -> dict[str, Row]:
    """The families of the metric tables (six columns) of docs/metrics.md."""
    rows: dict[str, Row] = {}
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = _cells(line)
        if len(cells) != 6:
            continue
        name = cells[0].strip("`")
        assert name not in rows, f"{name} is catalogued twice"
        rows[name] = Row(name, cells[1], cells[2], _panels(cells[4]), cells[5])
    return rows


def prometheus_series() -> dict[str, frozenset[str]]:
    """The series Prometheus itself adds (table "Series Prometheus adds"): name -> panels."""
    section = CATALOGUE.read_text(encoding="utf-8").split("## Series Prometheus adds", 1)[1]
    return {
        cells[0].strip("`"): _panels(cells[2])
        for cells in map(_cells, section.splitlines())
        if len(cells) == 4 and cells[0].startswith("`")
    }


def alert_cells() -> dict[str, str]:
    """Every catalogued series (both the gateway's families and the series Prometheus adds) ->
    its "alert" cell: "-", "planned: Name" or the alert names, separated by "; "."""
    cells = {name: row.alert for name, row in catalogue().items()}
    section = CATALOGUE.read_text(encoding="utf-8").split("## Series Prometheus adds", 1)[1]
    for row in map(_cells, section.splitlines()):
        if len(row) == 4 and row[0].startswith("`"):
            cells[row[0].strip("`")] = row[3]
    return cells


def started_metrics() -> Metrics:
    """The registry as a started gateway has it: the metrics, plus the series the gRPC edge
    creates for every method (gateway/app.py builds both interceptors before serving)."""
    metrics = Metrics()
    LatencyInterceptor(metrics=metrics)
    AuthInterceptor(credentials=CredentialSource(None), metrics=metrics)
    return metrics


def family_name(name: str, type_: str) -> str:
    """A collected family's name as it is exported and catalogued (counters end in _total)."""
    return name + "_total" if type_ == "counter" else name


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLES = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset({
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "atan2",
})


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names (inside {...} or a by/without/on clause), strings, durations or variables."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    text = _VARIABLES.sub("", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def family_of(series: str, histograms: set[str]) -> str:
    """A histogram's _bucket/_sum/_count series belong to their family."""
    for suffix in ("_bucket", "_sum", "_count"):
        stem = series.removesuffix(suffix)
        if stem != series and stem in histograms:
            return stem
    return series
