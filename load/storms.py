"""Connection scenarios against the gateway (one fresh broker and gateway per run):

* ``connections``: connect every car (CONNECT with will + Hello), wait until the gateway's
  /metrics shows them all online (``gateway_vehicles_online`` summed over bearers), then drop
  every link (wills; default) or say goodbye and DISCONNECT (``--clean``), and wait until all
  are offline. Cars on an inserted SIM or a hotspot stay online for their presence grace after
  a will (R20, roaming/presence.toml), so "all offline" takes at least that long.
* ``reconnect_storm``: from all online, every car loses its link at once and reconnects
  immediately (new connection id, Hello boot=false). Settled when every will and every new
  hello went through and all cars are online (a stale will must not take a car offline).
* ``restart_storm``: from all online (cars subscribed to their downlink), every car's owner
  buys a service (load/storm_grants.py; pending until the car's next boot, R13), then every
  head unit restarts once within ``--window`` seconds: Goodbye, DISCONNECT, reconnect, Hello
  boot=true. Measured at each car: boot Hello -> the EntitlementSet holding the service (the
  grant phase is outside the window). Settled when every car is online again, every granted
  car got its set and the gateway counts every granted entitlement active (the cars' acks).
"""

from __future__ import annotations

import math
import sys
import time
import tomllib
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from load import storm_grants
from load.bench import Params, next_group
from load.fleet import EMBEDDED_SIM, INSERTED_SIM, WIFI_HOTSPOT, Car, generate_fleet
from load.generator import Generator, source_ips
from load.harness import ROOT, BenchBroker, GatewayProcess, metric_sum
from load.stats import ProcWatch, percentile, spread

ONLINE = "gateway_vehicles_online"
HELLO = 'gateway_messages_received_total{kind="hello"}'
WILL = 'gateway_messages_received_total{kind="will"}'
GOODBYE = 'gateway_messages_received_total{kind="goodbye"}'
ACTIVE = 'gateway_entitlements{state="active"}'
DELIVERY = "gateway_entitlement_delivery_seconds"
Metrics = dict[str, float]


def presence_grace(cars: list[Car]) -> tuple[int, float]:
    """(cars with a grace period after a will, the longest grace) from roaming/presence.toml,
    for the radios the generator reports (4G, hotspot: Wi-Fi)."""
    table = tomllib.loads((ROOT / "roaming" / "presence.toml").read_text())["presence"]
    default = float(table.get("default_s", 0.0))
    radio: dict[int, tuple[str, str]] = {EMBEDDED_SIM: ("embedded_sim", "4g"),
                                         INSERTED_SIM: ("inserted_sim", "4g"),
                                         WIFI_HOTSPOT: ("wifi_hotspot", "wifi")}
    graces = []
    for car in cars:
        bearer, key = radio.get(car.bearer, ("", ""))
        graces.append(float(table.get(bearer, {}).get(key, default)))
    return sum(1 for g in graces if g > 0), max(graces, default=0.0)


class Watch:
    """Polls the gateway's /metrics and the generator; keeps the series for the plot."""

    def __init__(self, gw: GatewayProcess, gen: Generator, t0: float, total: int) -> None:
        self.gw, self.gen, self.t0, self.total = gw, gen, t0, total
        self.series: list[list[float]] = []
        self.marks: dict[str, float] = {}
        self.metrics: Metrics = {}
        self.slow_scrapes = 0  # /metrics did not answer within its timeout (the gateway's loop was busy)

    def now(self) -> float:
        return round(time.time() - self.t0, 3)

    def until(self, label: str, done: Callable[[Metrics], bool], *, wait_gen: bool = True,
              timeout: float = 300.0, since: float = 0.0, poll_s: float = 0.2,
              ) -> tuple[float | None, float | None]:
        """(seconds until the generator answered, seconds until ``done``), counted from
        ``since`` (a time.time(); default: now); None on timeout. /metrics is scraped every
        ``poll_s`` (each scrape costs the gateway CPU: 5 a second were ~14 % of its samples in a
        restart storm)."""
        start = since or time.time()
        gen_at: float | None = None if wait_gen else 0.0
        done_at: float | None = None
        with tqdm(total=self.total, desc=f"{label:>22}", unit="veh", dynamic_ncols=True, mininterval=0.3,
                  leave=False) as bar:
            while time.time() - start < timeout:
                try:
                    m = self.gw.metrics()
                except (TimeoutError, urllib.error.URLError):  # a busy gateway is a finding, not an end
                    self.slow_scrapes += 1
                    if gen_at is None and self.gen.poll() is not None:
                        gen_at = time.time() - start
                    continue
                self.metrics = m
                online = metric_sum(m, ONLINE)
                self.series.append([self.now(), self.gen.connected, online])
                bar.update(int(online) - bar.n)
                bar.set_postfix_str(f"connected={self.gen.connected:,} wills={metric_sum(m, WILL):,.0f}")
                if gen_at is None and self.gen.poll() is not None:
                    gen_at = time.time() - start
                if done_at is None and done(m):
                    done_at = time.time() - start
                if gen_at is not None and done_at is not None:
                    break
                time.sleep(poll_s)
        if gen_at is None:  # the generator must answer before the next command
            self.gen.wait(120)
        self.marks[label] = round(start - self.t0, 3)
        return gen_at, done_at


def run_storm_once(p: Params, fleet: list[Car], workdir: Path, run_no: int) -> dict[str, Any]:
    n = len(fleet)
    graced, max_grace = presence_grace(fleet)
    timings: dict[str, float | None] = {}
    other: dict[str, Any] = {}
    with BenchBroker(workdir / f"broker-{run_no}") as broker:
        gw = GatewayProcess(workdir / f"gateway-{run_no}", broker, log_level="WARNING")
        gen = Generator(fleet, port=broker.port, workers=p.workers, ips=source_ips(p.workers, next_group()),
                        seed=p.seed)
        try:
            gw.wait_ready()
            watch_gw, watch_broker = ProcWatch(gw.pid), ProcWatch(broker.pid)
            rss0 = watch_gw.rss_kib()
            gen.start()
            gen.run("ping", timeout=60)  # workers spawned and idle: the clock starts now
            watch_gw.begin()
            watch_broker.begin()
            t0 = time.time()
            w = Watch(gw, gen, t0, n)
            restart = p.scenario == "restart_storm"
            gen.send("connect", boot=True, concurrency=p.concurrency, subscribe=restart)
            timings["connect_all_s"], timings["online_all_s"] = w.until(
                "connect", lambda m: metric_sum(m, ONLINE) >= n)
            other["connect_ms_p50"], other["connect_ms_p99"] = _connect_latency(gen)
            rss_online = watch_gw.rss_kib()
            other["rss_per_vehicle_kib"] = round((rss_online - rss0) / n, 3) if n else None
            took = timings["connect_all_s"]
            other["connects_per_s"] = round(n / took, 1) if took else None

            if p.scenario == "connections":
                if p.unclean:
                    dropped_at = time.time()
                    gen.send("drop")
                    timings["drop_s"], timings["wills_all_s"] = w.until(
                        "drop", lambda m: metric_sum(m, WILL) >= n)
                    _, timings["offline_no_grace_s"] = w.until(
                        "offline (no grace)", lambda m: metric_sum(m, ONLINE) <= graced, wait_gen=False,
                        since=dropped_at)
                    _, timings["offline_all_s"] = w.until(
                        "offline (after grace)", lambda m: metric_sum(m, ONLINE) <= 0, wait_gen=False,
                        timeout=max_grace + 60, since=dropped_at)
                    other["cars_with_grace"] = graced
                    other["max_grace_s"] = max_grace
                else:
                    gen.send("disconnect", goodbye=True)
                    timings["disconnect_s"], timings["offline_all_s"] = w.until(
                        "goodbye", lambda m: metric_sum(m, ONLINE) <= 0)
            elif p.scenario == "reconnect_storm":
                gen.send("drop")
                w.until("drop", lambda m: True)
                gen.send("connect", boot=False, concurrency=p.concurrency)
                timings["reconnect_all_s"], timings["storm_settled_s"] = w.until(
                    "reconnect", lambda m: metric_sum(m, WILL) >= n and metric_sum(m, HELLO) >= 2 * n
                    and metric_sum(m, ONLINE) >= n)
            elif restart:
                other.update(_restart_storm(p, gw, gen, w, watch_gw, timings, run_no))
            if p.scenario != "connections":
                time.sleep(1.0)  # late (stale) wills must not take reconnected cars offline
                m = gw.metrics()
                other["online_after_settle"] = metric_sum(m, ONLINE)
            m = gw.metrics()
            processed = metric_sum(m, "gateway_messages_received_total")
            cpu = watch_gw.cpu()
            other.update(
                gateway_cpu_s=round(cpu, 3),
                gateway_cpu_s_per_100k=round(cpu / processed * 1e5, 3) if processed else None,
                broker_cpu_s=round(watch_broker.cpu(), 3),
                gateway_peak_rss_mib=round(watch_gw.hwm_kib() / 1024, 1),
                messages_processed=processed,
                hellos=metric_sum(m, HELLO), wills=metric_sum(m, WILL), goodbyes=metric_sum(m, GOODBYE),
                rejected=metric_sum(m, "gateway_messages_rejected_total"),
                backpressure_pauses=metric_sum(m, "gateway_ingress_backpressure_total"),
                generator_errors=gen.errors,
                slow_metrics_scrapes=w.slow_scrapes,
            )
            series, marks = w.series, w.marks
        finally:
            gen.close()
            code = gw.stop()
    complete = all(v is not None for v in timings.values())
    if p.scenario != "connections":
        complete = complete and other.get("online_after_settle") == n
    if p.scenario == "restart_storm":  # every car granted, and every granted car got its set
        complete = complete and other.get("grants") == n and other.get("sets_missed") == 0 \
            and other.get("granted_not_booted") == 0 and other.get("early_sets") == 0
    return {"run": run_no, "complete": complete, "timings_s": _round(timings), **other,
            "gateway_exit_code": code, "log_problems": gw.log_problems(), "series": series, "marks": marks}


def runqueue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (the second field of
    /proc/<pid>/task/*/schedstat; threads that ended are not counted). On a shared machine a
    large share next to the CPU seconds says the latency is the machine's, not the gateway's."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that just ended, or no schedstats
            continue
    return total / 1e9


def _restart_storm(p: Params, gw: GatewayProcess, gen: Generator, w: Watch, watch_gw: ProcWatch,
                   timings: dict[str, float | None], run_no: int) -> dict[str, Any]:
    """Grants (not timed), then the storm; boot -> entitlement set per car, from the cars."""
    n = len(gen.cars)
    print(f"granting {storm_grants.SERVICE} to {n:,} cars ({storm_grants.IN_FLIGHT} calls in flight) ...",
          file=sys.stderr)
    grants = storm_grants.run_grants(gw.grpc_target, gw.token, [c.vin for c in gen.cars], f"storm-{run_no}")
    granted = len(grants.granted)
    granted_vins = set(grants.granted)
    per_worker = [{"vins": [c.vin for c in part if c.vin in granted_vins]} for part in gen.slices]
    gen.run("watch", per_worker=per_worker, service=storm_grants.SERVICE)
    before = gw.metrics()
    cpu0, wait0 = watch_gw.cpu(), runqueue_wait_s(gw.pid)
    started = time.time()
    gen.send("restart", window_s=p.window_s, concurrency=p.concurrency, subscribe=True)
    timings["restart_done_s"], timings["storm_settled_s"] = w.until(
        "restart", lambda m: metric_sum(m, HELLO) >= 2 * n and metric_sum(m, GOODBYE) >= n
        and metric_sum(m, ONLINE) >= n, timeout=p.window_s + 300, poll_s=1.0)
    # The generator answered once every Hello went out; sets may still be on their way.
    settle = p.window_s + 120  # from the storm's start: the last boot comes up to a window late
    _, timings["sets_all_s"] = w.until("entitlement sets", lambda m: gen.sets >= granted, wait_gen=False,
                                       timeout=settle, since=started, poll_s=1.0)
    _, timings["active_all_s"] = w.until("entitlements active", lambda m: m.get(ACTIVE, 0) >= granted,
                                         wait_gen=False, timeout=settle, since=started, poll_s=1.0)
    storm_cpu = watch_gw.cpu() - cpu0
    storm_wait = runqueue_wait_s(gw.pid) - wait0
    storm_s = time.time() - started
    after = gw.metrics()
    reports = gen.run("set_report")
    lat = sorted(x for r in reports for x in r["latencies_ms"])
    booted = sum(r["booted"] for r in reports)
    count = after.get(DELIVERY + "_count", 0) - before.get(DELIVERY + "_count", 0)
    total = after.get(DELIVERY + "_sum", 0) - before.get(DELIVERY + "_sum", 0)
    print(f"boot -> entitlement set: p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms, "
          f"max {max(lat, default=math.nan):.1f} ms; {len(lat):,} of {granted:,} granted cars got it, "
          f"{booted - len(lat):,} missed", file=sys.stderr)
    return {
        **grants.summary(),
        "boot_to_set_ms_p50": percentile(lat, 50) if lat else None,
        "boot_to_set_ms_p99": percentile(lat, 99) if lat else None,
        "boot_to_set_ms_max": lat[-1] if lat else None,
        "cars_with_set": len(lat),
        "sets_missed": booted - len(lat),
        "granted_not_booted": granted - booted,
        "missed_vins": [v for r in reports for v in r["missed_vins"]][:20],
        "early_sets": sum(r["early_sets"] for r in reports),  # R13: must be 0
        "bad_downlinks": sum(r["bad_downlinks"] for r in reports),
        "entitlements_active": after.get(ACTIVE, 0),
        "gateway_delivery_ms_mean": round(total / count * 1000, 3) if count else None,
        "storm_gateway_cpu_s": round(storm_cpu, 3),
        "storm_gateway_cpu_ms_per_boot": round(storm_cpu / n * 1000, 3) if n else None,
        "storm_s": round(storm_s, 3),
        "storm_gateway_runqueue_wait_s": round(storm_wait, 3),
    }


def _round(d: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (round(v, 3) if v is not None else None) for k, v in d.items()}


def _connect_latency(gen: Generator) -> tuple[float | None, float | None]:
    """Connect -> CONNACK (ms) from the generator's last connect replies (sampled)."""
    samples = sorted(x for r in (gen.last_replies or []) for x in r.get("connect_ms", []))
    if not samples:
        return None, None
    return percentile(samples, 50), percentile(samples, 99)


def run_storms(p: Params, workdir: Path) -> dict[str, Any]:
    fleet = generate_fleet(p.cars, p.seed)
    runs = [run_storm_once(p, fleet, workdir, i) for i in range(p.repeat)]
    names = list(dict.fromkeys(k for r in runs for k in r["timings_s"]))
    timings = {k: spread([r["timings_s"].get(k) for r in runs]) for k in names}
    numeric = ("connects_per_s", "connect_ms_p50", "connect_ms_p99", "rss_per_vehicle_kib",
               "gateway_cpu_s_per_100k", "gateway_peak_rss_mib", "broker_cpu_s",
               "grants_per_s", "boot_to_set_ms_p50", "boot_to_set_ms_p99", "boot_to_set_ms_max",
               "cars_with_set", "sets_missed", "gateway_delivery_ms_mean", "storm_gateway_cpu_ms_per_boot",
               "storm_gateway_cpu_s", "storm_gateway_runqueue_wait_s")
    other = {k: spread([r.get(k) for r in runs if r.get(k) is not None]) for k in numeric}
    return {"runs": runs, "summary": {"timings_s": timings, "other": other}}
