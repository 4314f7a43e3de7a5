"""The store-cost benchmark runs and reports per batch and per vehicle (load/store_cost.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from load import store_cost


def test_the_store_cost_benchmark_reports_each_size_on_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cost.json"
    assert store_cost.main(["--no-postgres", "--cars", "40", "--sizes", "4,20", "--batches", "3",
                            "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"sqlite/4", "sqlite/20"}
    for r in results.values():
        assert r["batch_p50_ms"] > 0 and r["us_per_vehicle"] > 0 and r["vehicles_per_s"] > 0
    assert "sqlite/20: batch p50/p99" in capsys.readouterr().out
