"""The flood scenario's parameters and report (the run itself: python -m load.bench --scenario flood)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from load import report
from load.bench import parse_args


def test_flood_defaults_to_fifty_paced_cars_and_one_run() -> None:
    p, _ = parse_args(["--scenario", "flood"])
    assert (p.cars, p.rate, p.repeat, p.phase_s) == (50, 500.0, 1, 15.0)
    smoke, _ = parse_args(["--scenario", "flood", "--smoke"])
    assert (smoke.cars, smoke.rate, smoke.phase_s) == (20, 200.0, 2.0)


def test_the_flood_report_names_each_phase_and_the_ratios(tmp_path: Path) -> None:
    phase: dict[str, Any] = {
        "normal_sent": 10, "normal_received": 10, "latency": {"p50_ms": 2.0, "p99_ms": 8.0},
        "flood_sent": 1000, "flood_sent_per_s": 500.0, "rate_limited": 990.0, "quarantined": 7.0,
        "onset_p99_ms": 12.5,
    }
    doc: dict[str, Any] = {
        "scenario": "flood", "params": {"repeat": 1},
        "runs": [{"defence": "quarantine",
                  "phases": {"baseline": phase, "flood_good": phase, "flood_bad": phase}}],
        "summary": {"ratios": {"quarantine: flood_good/baseline p99": 1.0}},
    }
    text = report.text_summary(doc)
    assert "defence quarantine:" in text
    assert "flood_good: normal cars p50/p99 2.0 / 8.0 ms" in text
    assert "quarantined 7; onset p99 12.5 ms" in text
    assert "ratio quarantine: flood_good/baseline p99: 1.0" in text
    written = report.write(doc, tmp_path)
    assert {p.name for p in written} >= {"latest.json"} and not (tmp_path / "latest.png").exists()
