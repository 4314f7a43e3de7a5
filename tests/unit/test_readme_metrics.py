"""The README's metrics table names every metric the gateway registers, and every label value
it initialises (reject reasons, stale outcomes, message kinds but the elided middle)."""

from __future__ import annotations

import re

from gateway.config import PROJECT_ROOT
from gateway.metrics import REJECT_REASONS, STALE_OUTCOMES, Metrics


def _metrics_table() -> dict[str, str]:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("| `gateway_"):
            names, labels = line.strip("|").split("|", 1)
            for name in re.findall(r"`(gateway_[a-z_]+)`", names):
                rows[name] = labels
    return rows


def test_every_registered_metric_is_in_the_readme_table() -> None:
    registered = {
        family.name.removesuffix("_total") + ("_total" if family.type == "counter" else "")
        for family in Metrics().registry.collect()
    }
    missing = sorted(registered - set(_metrics_table()))
    assert not missing, f"README metrics table lacks {missing}"


def test_every_reject_reason_and_stale_outcome_is_listed_with_its_metric() -> None:
    table = _metrics_table()
    reasons = set(re.findall(r"[a-z_]+", table["gateway_messages_rejected_total"]))
    assert set(REJECT_REASONS) <= reasons, sorted(set(REJECT_REASONS) - reasons)
    outcomes = set(re.findall(r"[a-z_]+", table["gateway_messages_stale_total"]))
    assert set(STALE_OUTCOMES) <= outcomes, sorted(set(STALE_OUTCOMES) - outcomes)
