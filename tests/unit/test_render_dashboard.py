"""scripts/render_dashboard.py (the dashboard picture, docs/dashboard.png): it reads every panel
of the provisioned dashboard, fills the dashboard's variables as Grafana does, names series
with the panels' legends, and draws the whole layout."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from gateway.config import PROJECT_ROOT


def _script() -> ModuleType:
    path = PROJECT_ROOT / "scripts" / "render_dashboard.py"
    spec = importlib.util.spec_from_file_location("render_dashboard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


render_dashboard = _script()


def test_every_panel_query_is_read_and_no_dashboard_variable_is_left_unfilled() -> None:
    panels = render_dashboard.load_panels()
    graphs = [p for p in panels if p.kind == "timeseries"]
    assert len(graphs) >= 20 and all(p.targets for p in graphs)
    for panel in graphs:
        for target in panel.targets:
            expr = render_dashboard.resolve(target.expr, "4s")
            assert "$" not in expr, (panel.title, expr)
    assert render_dashboard.resolve('rate(x{instance=~"$instance"}[$__rate_interval])', "8s") == (
        'rate(x{instance=~".*"}[8s])'
    )


def test_a_series_is_named_by_its_panel_legend() -> None:
    assert render_dashboard.legend("{{kind}} {{outcome}}", {"kind": "set", "outcome": "ok"}) == "set ok"
    assert render_dashboard.legend("", {"code": "OK"}) == "code=OK"


def test_the_whole_layout_is_drawn_to_a_png(tmp_path: Path) -> None:
    panels = render_dashboard.load_panels()
    series = render_dashboard.Series("hello", [1_700_000_000.0, 1_700_000_060.0], [1.0, 3.0])
    out = tmp_path / "dashboard.png"
    render_dashboard.render(panels, {"Ingest rate by kind": [series]}, out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
