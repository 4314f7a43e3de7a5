"""The README's short metrics table names only catalogued metrics (docs/metrics.md, which
tests/unit/test_metrics_catalogue.py keeps equal to the code), with their catalogued labels."""

from __future__ import annotations

import re

from metrics_catalogue import catalogue

from gateway.config import PROJECT_ROOT


def _metrics_table() -> list[tuple[set[str], set[str]]]:
    """Rows of the README's table: (metrics, labels named)."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows: list[tuple[set[str], set[str]]] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            names, labels = line.strip("|").split("|", 1)
            rows.append((set(re.findall(r"`(\w+)`", names)), set(re.findall(r"`(\w+)`", labels))))
    return rows


def test_the_readme_points_to_the_catalogue() -> None:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/metrics.md)" in text.split("## Metrics", 1)[1].split("\n## ", 1)[0]


def test_every_metric_in_the_readme_table_is_catalogued() -> None:
    named = {name for names, _ in _metrics_table() for name in names}
    assert named, "the README's metrics table is empty"
    assert sorted(named - set(catalogue())) == []


def test_each_label_the_readme_names_is_a_label_of_its_metric() -> None:
    rows = catalogue()
    for names, labels in _metrics_table():
        # A row of two metrics names the labels of either.
        assert labels <= {label for name in names for label in rows[name].label_names()}, names
