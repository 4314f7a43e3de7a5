"""Benchmark harness: ``python -m load.bench`` (see load/README.md).

``--scenario steady`` (default) runs the SAME generated load (same fleet, message count and
payloads) against several systems, interleaved, ``--repeat`` times: the reference sink
(mosquitto_sub), the naive baseline (aiomqtt + one gRPC message per record) and the gateway
(embedded SQLite), each with a fresh broker; ``--systems`` adds ``gateway-pg`` and
``gateway-pg2`` (one and two gateways on a fresh PostgreSQL database, load/fleet_sink.py), and
with those the per-batch store cost (load/store_cost.py) is measured after the runs.
``--half-load`` then runs the gateway and the reference paced at half the gateway's median
rate, and a ``targets`` block judges issue 12's steady targets (load/targets.py). ``soak``
(load/soak.py) runs the gateway at a paced ``--rate`` for ``--duration`` seconds and judges
whether its RSS stays flat.
``connections``, ``reconnect_storm`` and ``restart_storm`` measure the gateway's presence
tracking with many connections (load/storms.py).

Output: a live tqdm bar, ``<out>/bench-<timestamp>.json``, ``<out>/latest.json`` and
``<out>/latest.png``. Results are medians over the repeats with min and max.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from load import report
from load.fleet import Car, generate_fleet
from load.generator import SCENARIOS, Generator, source_ips
from load.harness import BenchBroker
from load.stats import ProcWatch, safe_ratio, spread, us_per_message
from load.systems import Sink, make_sink
from load.targets import steady_targets

SYSTEMS = ("reference", "naive", "gateway")  # the default set
PG_SYSTEMS = ("gateway-pg", "gateway-pg2")  # load/fleet_sink.py: need a PostgreSQL server
JS_SYSTEMS = ("gateway-js",)  # the JetStream telemetry sink: needs nats-server (load/bench_nats.py)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Params:
    scenario: str = "steady"
    cars: int = 1000
    messages: int = 300_000
    samples: int = 1
    workers: int = 2
    qos: int = 0
    burst: int = 4
    rate: float = 0.0
    repeat: int = 3
    seed: int = 1
    naive_mode: str = "stream"
    systems: tuple[str, ...] = SYSTEMS
    concurrency: int = 64
    stall_s: float = 20.0
    unclean: bool = True
    window_s: float = 10.0
    smoke: bool = False
    phase_s: float = 15.0
    flood_rate: float = 0.0
    store_cost: bool = True
    half_load: bool = False
    duration_s: float = 600.0


_phase = 0


def next_group() -> int:
    """A fresh set of source addresses per phase (no port clashes with old TIME_WAITs)."""
    global _phase
    _phase += 1
    return _phase


def follow(sink: Sink, gen: Generator, start_at: float, expect: int, p: Params, label: str) -> tuple[
        list[list[float]], list[dict[str, Any]]]:
    """Progress until the sink has everything (or stalls); returns the series and the
    generator's replies."""
    series: list[list[float]] = []
    replies: list[dict[str, Any]] | None = None
    counts_records = sink.counts_records
    last_change, last_seen = time.monotonic(), (-2, -2)
    window: list[tuple[float, int]] = []
    unit = "rec" if counts_records else "msg"
    with tqdm(total=expect if counts_records else p.messages, desc=label, unit=unit, dynamic_ncols=True,
              mininterval=0.2, leave=True, file=sys.stderr) as bar:
        while True:
            now = time.time()
            got, sent = sink.received(), gen.sent
            series.append([round(now - start_at, 3), sent, got])
            shown = got if counts_records else sent
            bar.update(max(0, shown) - bar.n)
            window = [*window[-9:], (now, max(0, shown))]
            if len(window) > 1 and window[-1][0] > window[0][0]:
                rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
                bar.set_postfix_str(f"{rate:,.0f}/s sent={sent:,}")
            if replies is None:
                replies = gen.poll()
            if sink.complete():
                break
            if (got, sent) != last_seen:
                last_change, last_seen = time.monotonic(), (got, sent)
            elif replies is not None and time.monotonic() - last_change > p.stall_s:
                bar.write(f"{label}: stalled at {got:,} of {expect:,} for {p.stall_s:.0f}s")
                break
            time.sleep(0.1)
    if replies is None:
        replies = gen.wait(120)
    return series, replies


def run_steady_once(system: str, p: Params, fleet: list[Car], workdir: Path, run_no: int,
                    phase: str = "saturation") -> dict[str, Any]:
    sink = make_sink(system, p.naive_mode)
    expect_records = p.messages * p.samples
    label = f"{system:>11} {'half ' if phase == 'half_load' else ''}run {run_no + 1}/{p.repeat}"
    with BenchBroker(workdir / f"broker-{system}-{run_no}") as broker:
        gen = Generator(fleet, port=broker.port, workers=p.workers, ips=source_ips(p.workers, next_group()),
                        seed=p.seed)
        try:
            sink.start(broker, workdir / f"{system}-{run_no}", p.messages + len(fleet), expect_records)
            gen.start()
            gen.run("connect", boot=True, concurrency=p.concurrency, timeout=300)
            if gen.connected < len(fleet):
                raise RuntimeError(f"only {gen.connected} of {len(fleet)} cars connected")
            sink.wait_hellos(len(fleet))
            broker_watch = ProcWatch(broker.pid)
            broker_watch.begin()
            sink.begin()
            start_at = time.time() + 0.3
            gen.send("steady", per_worker=gen.split_messages(p.messages), start_at=start_at,
                     rate=p.rate / gen.workers, qos=p.qos, burst=p.burst, samples=p.samples)
            series, replies = follow(sink, gen, start_at, expect_records, p, label)
            broker_cpu = broker_watch.cpu()
            result = sink.finish()
        finally:
            gen.close()
            sink.close()
    t0 = min(r["first_send"] for r in replies)
    sent = sum(r["sent"] for r in replies)
    send_s = max(r["last_send"] for r in replies) - t0
    duration = result.get("end_at", math.nan) - t0 if result.get("complete") else math.nan
    records = result.get("records", expect_records if result.get("complete") else 0)
    out: dict[str, Any] = {
        "system": system,
        "run": run_no,
        "phase": phase,
        "offered_rate": p.rate or None,
        "complete": bool(result.get("complete")),
        "sent": sent,
        "generator_send_s": round(send_s, 4),
        "generator_rate": round(sent / send_s) if send_s > 0 else None,
        # Workers pace from their own start: a late one stretches the window (lower real rate).
        "generator_start_skew_s": round(max(r["first_send"] for r in replies) - t0, 4),
        "duration_s": round(duration, 4),
        "messages": p.messages,
        "records": records if system != "reference" else None,
        "messages_per_s": round(p.messages / duration, 1) if duration > 0 else math.nan,
        "records_per_s": round(records / duration, 1) if duration > 0 and system != "reference" else None,
        "cpu_s": round(result.get("cpu_s", math.nan), 3),
        "cpu_s_per_100k": round(result.get("cpu_s", math.nan) / p.messages * 1e5, 3),
        "broker_cpu_s": round(broker_cpu, 3),
        # CPU per message over the same window for the system and the run's broker, and their
        # ratio: the "gateway CPU/msg <= 1.5x broker's" (reference: mosquitto_sub).
        "cpu_us_per_msg": round(us_per_message(result.get("cpu_s"), p.messages), 3),
        "broker_cpu_us_per_msg": round(us_per_message(broker_cpu, p.messages), 3),
        "cpu_vs_broker": round(safe_ratio(result.get("cpu_s", math.nan), broker_cpu), 3),
        "peak_rss_mib": round(result["peak_rss_kib"] / 1024, 1) if "peak_rss_kib" in result else None,
        "series": series,
    }
    for key in ("latency", "rss_per_vehicle_kib", "gateway_metrics", "exit_code", "log_problems", "error",
                "backend_cpu_s", "mqtt_messages", "grpc_messages", "mode", "instances", "database",
                "records_per_instance", "store_commits", "store_commit_ms"):
        if key in result:
            out[key] = result[key]
    if "backend_cpu_s" in result:  # naive: its gRPC backend, apart from the pipeline itself
        out["backend_cpu_us_per_msg"] = round(us_per_message(result["backend_cpu_s"], p.messages), 3)
    if "store_cpu_s" in result:
        out["store_cpu_s"] = round(result["store_cpu_s"], 3)
        out["store_cpu_s_per_100k"] = round(result["store_cpu_s"] / p.messages * 1e5, 3)
    return out


def summarize_steady(runs: list[dict[str, Any]], p: Params) -> tuple[dict[str, Any], dict[str, Any]]:
    summary: dict[str, Any] = {}
    for system in p.systems:
        mine = [r for r in runs if r["system"] == system]
        lat = [r.get("latency") or {} for r in mine]
        summary[system] = {
            "complete_runs": sum(1 for r in mine if r["complete"]),
            "messages_per_s": spread([r["messages_per_s"] for r in mine]),
            "records_per_s": spread([r["records_per_s"] for r in mine if r["records_per_s"] is not None]),
            "latency_p50_ms": spread([x["p50_ms"] for x in lat if x]),
            "latency_p99_ms": spread([x["p99_ms"] for x in lat if x]),
            "latency_p999_ms": spread([x["p999_ms"] for x in lat if x]),
            "cpu_s_per_100k": spread([r["cpu_s_per_100k"] for r in mine]),
            "cpu_us_per_msg": spread([r.get("cpu_us_per_msg", math.nan) for r in mine]),
            "broker_cpu_us_per_msg": spread([r.get("broker_cpu_us_per_msg", math.nan) for r in mine]),
            "cpu_vs_broker": spread([r.get("cpu_vs_broker", math.nan) for r in mine]),
            "peak_rss_mib": spread([r["peak_rss_mib"] for r in mine if r["peak_rss_mib"] is not None]),
            "generator_rate": spread([r["generator_rate"] or math.nan for r in mine]),
        }
        if system == "gateway":
            per_vehicle = [r.get("rss_per_vehicle_kib", math.nan) for r in mine]
            summary[system]["rss_per_vehicle_kib"] = spread(per_vehicle)
        for key in ("store_commit_ms", "store_cpu_s_per_100k", "backend_cpu_us_per_msg"):
            if any(key in r for r in mine):
                summary[system][key] = spread([r.get(key, math.nan) for r in mine])
    return summary, ratio_pairs(runs, p.systems, p.repeat)


def ratio_pairs(runs: list[dict[str, Any]], systems: tuple[str, ...], repeat: int) -> dict[str, Any]:
    """messages/s ratios, each the median of the per-run ratios (same repeat, same drift): every
    system to ``reference``, the gateway to ``naive``, the PostgreSQL ones to ``gateway``."""
    pairs = [(s, "reference") for s in systems if s != "reference"]
    pairs += [("gateway", "naive")] + [(s, "gateway") for s in (*PG_SYSTEMS, *JS_SYSTEMS)]
    by = {(r["system"], r["run"]): r for r in runs}
    return {
        f"{a}/{b}": spread([
            safe_ratio(by[(a, i)]["messages_per_s"], by[(b, i)]["messages_per_s"])
            for i in range(repeat) if (a, i) in by and (b, i) in by
        ])
        for a, b in pairs if a in systems and b in systems
    }


def run_steady(p: Params, workdir: Path) -> dict[str, Any]:
    fleet = generate_fleet(p.cars, p.seed)
    runs: list[dict[str, Any]] = []
    for run_no in range(p.repeat):
        for system in p.systems:  # interleaved: drift on a shared machine hits every system alike
            runs.append(run_steady_once(system, p, fleet, workdir, run_no))
    summary, ratios = summarize_steady(runs, p)
    body: dict[str, Any] = {"runs": runs, "summary": summary, "ratios": ratios}
    half: list[dict[str, Any]] | None = None
    if p.half_load:
        body["half_load"] = run_half_load(p, fleet, workdir, summary)
        half = body["half_load"]["runs"]
    body["targets"] = steady_targets(runs, half)
    if p.store_cost and set(p.systems) & set(PG_SYSTEMS):
        body["store_cost"] = run_store_cost(p)
    return body


HALF_LOAD_SYSTEMS = ("reference", "gateway")


def run_half_load(p: Params, fleet: list[Car], workdir: Path, saturation: dict[str, Any]) -> dict[str, Any]:
    """After the saturation runs: the gateway and the reference, both paced at half of the
    gateway's median measured rate (the same offered load), ``--repeat`` times, interleaved.
    The rate is offered by the generator's pacing, so each run's ``generator_rate`` shows
    whether it was met."""
    gateway_rate = saturation.get("gateway", {}).get("messages_per_s", {}).get("median", math.nan)
    if gateway_rate is None or math.isnan(gateway_rate) or gateway_rate <= 0:
        raise RuntimeError("--half-load needs a completed gateway run at saturation")
    half = replace(p, rate=round(gateway_rate / 2), systems=HALF_LOAD_SYSTEMS)
    runs = [run_steady_once(system, half, fleet, workdir / "half", run_no, phase="half_load")
            for run_no in range(p.repeat) for system in HALF_LOAD_SYSTEMS]
    summary, ratios = summarize_steady(runs, half)
    return {"rate": half.rate, "runs": runs, "summary": summary, "ratios": ratios}


def run_store_cost(p: Params) -> dict[str, Any]:
    """The per-batch store cost (load/store_cost.py), SQLite and PostgreSQL, after the runs of
    the same invocation (so it does not compete with them)."""
    from load.bench_db import admin_url
    from load.store_cost import measure

    cars, sizes, batches = (200, [10, 100], 5) if p.smoke else (20_000, [10, 100, 1000], 50)
    print("store cost: SQLite and PostgreSQL, per batch ...", file=sys.stderr)
    return {"cars": cars, "batches": batches, "results": measure(cars, sizes, batches, admin_url())}


def parse_args(argv: list[str] | None) -> tuple[Params, Path]:
    ap = argparse.ArgumentParser(prog="python -m load.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=(*SCENARIOS, "flood", "overload", "soak"), default="steady")
    ap.add_argument("--cars", type=int, help="steady: 1000; connections/storms: 15000; flood: 50")
    ap.add_argument("--messages", type=int, default=300_000, help="steady: telemetry envelopes per run")
    ap.add_argument("--samples", type=int, default=1, help="telemetry samples (records) per envelope")
    ap.add_argument("--workers", type=int, help="generator processes (steady: 2; others: 4)")
    ap.add_argument("--qos", type=int, choices=(0, 1), default=0, help="QoS of the telemetry publishes")
    ap.add_argument("--burst", type=int, default=4, help="envelopes per car per socket write")
    ap.add_argument("--rate", type=float, default=0.0, help="aggregate messages/s; 0 = as fast as possible")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--naive-mode", choices=("stream", "unary"), default="stream")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"steady: comma-separated, of {', '.join((*SYSTEMS, *PG_SYSTEMS))}")
    ap.add_argument("--no-store-cost", action="store_true",
                    help="steady with a gateway-pg system: skip the per-batch store cost (load.store_cost)")
    ap.add_argument("--concurrency", type=int, default=64, help="connects in flight per worker")
    ap.add_argument("--clean", action="store_true", help="connections: goodbye + DISCONNECT instead of drops")
    ap.add_argument("--window", type=float, default=10.0, help="restart_storm: boots spread over seconds")
    ap.add_argument("--phase", type=float, help="flood: seconds per phase (15); overload: seconds (30)")
    ap.add_argument("--flood-rate", type=float, default=0.0,
                    help="flood: the flooder's messages/s (0 = as fast as its socket allows)")
    ap.add_argument("--half-load", action="store_true",
                    help="steady: then gateway and reference paced at half the gateway's median rate")
    ap.add_argument("--duration", type=float, default=600.0, help="soak: seconds of paced telemetry")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for the test suite (< 30 s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args(argv)
    systems = tuple(s for s in a.systems.split(",") if s)
    if set(systems) - {*SYSTEMS, *PG_SYSTEMS, *JS_SYSTEMS}:
        ap.error(f"--systems: choose from {', '.join((*SYSTEMS, *PG_SYSTEMS, *JS_SYSTEMS))}")
    steady = a.scenario == "steady"
    steady_like = a.scenario in ("steady", "soak")  # 1000 cars, 2 generator processes
    flood = a.scenario == "flood"
    overload = a.scenario == "overload"  # load/overload.py
    p = Params(
        scenario=a.scenario, cars=a.cars or (1000 if steady_like or overload else 50 if flood else 15_000),
        messages=a.messages, samples=a.samples, workers=a.workers or (2 if steady_like or overload else 4),
        qos=1 if overload else a.qos,
        burst=a.burst, rate=a.rate or (500.0 if flood else 0.0), repeat=1 if flood or overload else a.repeat,
        phase_s=a.phase or (30.0 if overload else 15.0), seed=a.seed, naive_mode=a.naive_mode,
        systems=systems,
        concurrency=a.concurrency, unclean=not a.clean, window_s=a.window, smoke=a.smoke,
        flood_rate=a.flood_rate, store_cost=not a.no_store_cost, half_load=a.half_load,
        duration_s=a.duration,
    )
    if a.half_load and (not steady or "gateway" not in systems):
        ap.error("--half-load: scenario steady with the gateway in --systems")
    if a.scenario == "soak" and not a.rate:
        ap.error("--scenario soak needs --rate (about half the gateway's max: see --half-load)")
    if a.smoke:
        p = Params(**{**asdict(p), "cars": min(p.cars, 20), "messages": min(p.messages, 3000), "workers": 1,
                      "repeat": 1, "window_s": min(p.window_s, 1.0), "stall_s": 8.0,
                      "phase_s": min(p.phase_s, 2.0), "duration_s": min(p.duration_s, 12.0),
                      "rate": min(p.rate, 500.0 if p.scenario == "soak" else 200.0)})
    return p, a.out


def main(argv: list[str] | None = None) -> int:
    p, out = parse_args(argv)
    if p.scenario == "steady" and set(p.systems) & set(PG_SYSTEMS):
        from load.bench_db import PostgresUnavailable, admin_url, check_server

        try:
            check_server(admin_url())
        except PostgresUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        if p.scenario == "steady":
            body = run_steady(p, Path(tmp))
        elif p.scenario == "overload":
            from load.overload import run_overload

            body = run_overload(cars=p.cars, workers=p.workers, rate=p.rate, phase_s=p.phase_s,
                                stall_s=p.stall_s, seed=p.seed, workdir=Path(tmp),
                                queue_messages=100 if p.smoke else 0)
        elif p.scenario == "soak":
            from load.soak import run_soak

            body = run_soak(p, Path(tmp))
        elif p.scenario == "flood":
            from load.flood import run_flood

            body = run_flood(p.cars, p.rate, p.phase_s, p.seed, Path(tmp), p.flood_rate)
        else:
            from load.storms import run_storms

            body = run_storms(p, Path(tmp))
    doc = {
        "scenario": p.scenario,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "params": {**asdict(p), "systems": list(p.systems)},
        "host": report.host_info(),
        **body,
    }
    paths = report.write(doc, out)
    print(report.text_summary(doc))
    for path in paths:
        print(f"wrote {path}")
    runs = doc.get("runs", []) + doc.get("half_load", {}).get("runs", [])
    return 0 if runs and all(r.get("complete") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
