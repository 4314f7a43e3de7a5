"""Render the provisioned Grafana dashboard (deploy/grafana/dashboards/gateway.json) as one PNG,
from a real Prometheus's answers to the panels' own queries.

Grafana is not packaged for Debian, PyPI or npm here, so this stands in for a screenshot: the
same panels, titles, layout (gridPos), queries and legends, drawn with matplotlib. The picture
in the README (docs/dashboard.png) comes from the default run:

    .venv/bin/python scripts/render_dashboard.py            # -> docs/dashboard.png

which starts a broker and a gateway (load/harness.py), a Prometheus with the compose
configuration (deploy/prometheus/prometheus.yml, its target moved to that gateway, scraping
every second), drives a simulated fleet's day through them (load/sim.py: boots, drives,
telemetry, privacy, roaming, entitlement grants, FoD unlocks), then asks Prometheus for every
panel's range. To draw what a running Prometheus holds instead (e.g. the compose one):

    .venv/bin/python scripts/render_dashboard.py --prometheus http://localhost:9090 --minutes 30

Dashboard variables: `$instance` matches every gateway; `$__rate_interval` is four scrape
intervals, as Grafana computes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages (gateway, load)

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # no display: render to a file
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

if TYPE_CHECKING:
    from load.sim import SimRun

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "gateway.json"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
OUT = ROOT / "docs" / "dashboard.png"
SCRAPE_S = 1
# Grafana's dark theme, so the picture reads like the dashboard it stands for.
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLOURS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff",
           "#ff780a", "#96d98d", "#ca95e5", "#fade2a", "#ffa6b0"]


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # "row" or "timeseries"
    x: int
    y: int
    w: int
    h: int
    unit: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Series:
    label: str
    times: list[float]  # unix seconds
    values: list[float]


def load_panels(path: Path = DASHBOARD) -> list[Panel]:
    panels = []
    for p in json.loads(path.read_text(encoding="utf-8"))["panels"]:
        pos = p["gridPos"]
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        targets = tuple(Target(t["expr"], t.get("legendFormat", "")) for t in p.get("targets", []))
        panels.append(Panel(p["title"], p["type"], pos["x"], pos["y"], pos["w"], pos["h"], unit, targets))
    return panels


def resolve(expr: str, rate_interval: str) -> str:
    """The dashboard's variables as Grafana fills them: every gateway, its rate interval."""
    expr = re.sub(r"\$\{?instance\}?", ".*", expr)
    return expr.replace("$__rate_interval", rate_interval)


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def query_range(
    base: str, expr: str, start: float, end: float, step: float
) -> list[tuple[dict[str, str], list[Any]]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as resp:
        body = json.load(resp)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return [(r["metric"], r["values"]) for r in body["data"]["result"]]


def collect(
    base: str, panels: list[Panel], start: float, end: float, step: float, scrape_s: float = SCRAPE_S
) -> dict[str, list[Series]]:
    """Every panel's series over [start, end]. Grafana's $__rate_interval: four scrape
    intervals (at least one step plus a scrape)."""
    rate_interval = f"{max(4 * scrape_s, step + scrape_s):g}s"
    out: dict[str, list[Series]] = {}
    for panel in panels:
        for target in panel.targets:
            for labels, values in query_range(base, resolve(target.expr, rate_interval), start, end, step):
                out.setdefault(panel.title, []).append(Series(
                    legend(target.legend, labels),
                    [float(t) for t, _ in values],
                    [float(v) for _, v in values],
                ))
    return out


def _unit_formatter(unit: str) -> FuncFormatter:
    def fmt(value: float, _pos: object) -> str:
        if unit == "s":
            return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
        if unit == "bytes":
            return f"{value / 2**20:.0f} MiB"
        if unit == "percentunit":
            return f"{value * 100:.0f}%"
        if unit == "reqps":
            return f"{value:.3g}/s"
        return f"{value:.3g}"
    return FuncFormatter(fmt)


def _draw(ax: Axes, panel: Panel, series: list[Series]) -> None:
    ax.set_facecolor(PANEL)
    ax.set_title(panel.title, color=TEXT, loc="left", fontsize=10, fontweight="bold")
    ax.tick_params(colors=TEXT, labelsize=7)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.grid(True, color=GRID, linewidth=0.5)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: datetime.fromtimestamp(t).strftime("%H:%M:%S")))
    ax.yaxis.set_major_formatter(_unit_formatter(panel.unit))
    if not series:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    for i, s in enumerate(sorted(series, key=lambda s: s.label)):
        ax.plot(s.times, s.values, color=COLOURS[i % len(COLOURS)], linewidth=1.2, label=s.label)
    ax.set_ylim(bottom=min(0.0, *(min(s.values) for s in series if s.values)))
    ax.legend(loc="upper left", fontsize=6, ncols=2 if len(series) > 5 else 1, frameon=False,
              labelcolor=TEXT)


def render(panels: list[Panel], data: dict[str, list[Series]], out: Path, subtitle: str) -> None:
    rows = max(p.y + p.h for p in panels)
    unit_in = 0.42  # inches per grid row; 24 columns across 22 inches
    fig = plt.figure(figsize=(22, rows * unit_in + 0.8), facecolor=BACKGROUND)
    top = 1 - 0.8 / (rows * unit_in + 0.8)
    fig.text(0.01, top + (1 - top) * 0.45, f"Telematics gateway  ({subtitle})", color=TEXT, fontsize=14)
    pad_x, pad_y = 0.035, 0.45 / rows  # room for tick labels and titles inside each cell
    for p in panels:
        left, width = p.x / 24, p.w / 24
        bottom = top * (1 - (p.y + p.h) / rows)
        height = top * p.h / rows
        if p.kind == "row":
            fig.text(left + 0.005, bottom + height * 0.2, p.title, color=TEXT, fontsize=12, fontweight="bold")
            continue
        cell = (left + pad_x, bottom + pad_y * top, width - pad_x - 0.008, height - 3 * pad_y * top)
        ax = fig.add_axes(cell)
        _draw(ax, p, data.get(p.title, []))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72, facecolor=BACKGROUND)
    plt.close(fig)


# -- the default run: broker, gateway, Prometheus and a simulated fleet -------------------------


@contextmanager
def prometheus_scraping(home: Path, target: str) -> Iterator[str]:
    """Prometheus with the compose configuration, scraping `target` every second; its URL."""
    from load.harness import free_port

    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = f"{SCRAPE_S}s"
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    shutil.copytree(PROMETHEUS_CONFIG.parent / "rules", home / "rules")
    (home / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(home / "prometheus.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # ready once it has scraped the gateway
            try:
                if query_range(base, 'up{job="gateway"}', time.time() - 5, time.time(), 1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                log = (home / "prometheus.log").read_text()[-2000:]
                raise RuntimeError(f"Prometheus did not start:\n{log}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


async def _mistakes(port: int, grpc_target: str, token: str) -> None:
    """What a real fleet and backend also send, so the error panels have something to show: a
    head unit publishing garbage (rejected: malformed_protobuf), a backend asking for an
    entitlement that does not exist (NOT_FOUND) and a client without a credential
    (UNAUTHENTICATED, refused at the edge). A few every couple of seconds, until cancelled."""
    import aiomqtt
    import grpc

    from gateway import topics
    from gateway._gen.telematics.v1 import entitlements_pb2 as ent
    from gateway._gen.telematics.v1 import entitlements_pb2_grpc as ent_grpc
    from gateway.api.client import aio_channel

    vin = "WP0ZZZ99ZLS999999"  # a syntactically valid VIN of no simulated car
    async with aiomqtt.Client("127.0.0.1", port, identifier=vin,
                              protocol=aiomqtt.ProtocolVersion.V5) as car, \
            aio_channel(grpc_target, token) as backend, aio_channel(grpc_target, None) as anonymous:
        while True:
            await car.publish(topics.uplink(vin), b"\xff\x00not a protobuf", qos=1)
            for channel in (backend, anonymous):
                with suppress(grpc.aio.AioRpcError):  # the error is the point: the gateway counts it
                    await ent_grpc.EntitlementServiceStub(channel).GetEntitlement(
                        ent.GetEntitlementRequest(entitlement_id="no-such-order"), timeout=5)
            await asyncio.sleep(2)


async def _with_mistakes(day: Coroutine[Any, Any, SimRun], port: int, grpc_target: str, token: str) -> SimRun:
    mistakes = asyncio.create_task(_mistakes(port, grpc_target, token))
    try:
        return await day
    finally:
        mistakes.cancel()
        with suppress(asyncio.CancelledError):
            await mistakes


def simulated_fleet(cars: int, hours: float, speed: float, out: Path) -> str:
    """Run the fleet's day through a fresh broker, gateway and Prometheus and render what
    Prometheus stored to `out`; a line saying what was run."""
    panels = load_panels()
    with tempfile.TemporaryDirectory(prefix="render-dashboard-") as tmp_dir:
        tmp = Path(tmp_dir)
        return _simulated_fleet(tmp, panels, cars, hours, speed, out)


def _simulated_fleet(tmp: Path, panels: list[Panel], cars: int, hours: float, speed: float, out: Path) -> str:
    from load.harness import BenchBroker, GatewayProcess
    from load.sim import SimOptions, simulate

    with BenchBroker(tmp / "broker") as broker:
        gw = GatewayProcess(tmp / "gateway", broker, settings={
            "GATEWAY_FOD_IDLE_S": "2", "GATEWAY_ENTITLEMENT_ACK_TIMEOUT_S": "20"})
        try:
            gw.wait_ready()
            (tmp / "prometheus").mkdir()
            with prometheus_scraping(tmp / "prometheus", f"127.0.0.1:{gw.http_port}") as base:
                start = time.time()
                opts = SimOptions(cars=cars, hours=hours, speed=speed)
                day = simulate(broker.port, opts, gw.grpc_target, gw.token)
                run = asyncio.run(_with_mistakes(day, broker.port, gw.grpc_target, gw.token))
                time.sleep(5 * SCRAPE_S)  # the last scrapes after the fleet's day
                end = time.time()
                step = max(SCRAPE_S, round((end - start) / 300))
                data = collect(base, panels, start, end, step)
        finally:
            gw.stop()
    sent = sum(run.stats.sent.values())
    subtitle = (f"{cars} simulated cars, {hours:g} h of their day in {end - start:.0f} s wall, "
                f"{sent} uplink messages; Prometheus {SCRAPE_S} s scrapes, step {step} s")
    render(panels, data, out, subtitle)
    return subtitle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--prometheus", default="", help="render this Prometheus's last --minutes instead")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--scrape-s", type=float, default=15.0, help="with --prometheus: its scrape interval")
    ap.add_argument("--cars", type=int, default=60)
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours of the fleet's day")
    ap.add_argument("--speed", type=float, default=720.0, help="simulated seconds per real second")
    a = ap.parse_args(argv)
    if a.prometheus:
        end = time.time()
        start = end - a.minutes * 60
        step = max(SCRAPE_S, round((end - start) / 300))
        panels = load_panels()
        data = collect(a.prometheus.rstrip("/"), panels, start, end, step, a.scrape_s)
        render(panels, data, a.out, f"{a.prometheus}, last {a.minutes:g} min")
    else:
        print(simulated_fleet(a.cars, a.hours, a.speed, a.out))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
