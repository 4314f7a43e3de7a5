"""Benchmark output: the JSON document, the PNG (matplotlib Agg) and a text summary."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

COLORS = {"reference": "#7f7f7f", "naive": "#d62728", "gateway": "#1f77b4", "gateway-pg": "#9467bd",
          "gateway-pg2": "#ff7f0e", "gateway-js": "#17becf"}


def host_info() -> dict[str, Any]:
    mosquitto = ""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if os.access(binary, os.X_OK):
        try:
            run = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=5)
            mosquitto = (run.stdout or run.stderr).splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mosquitto": mosquitto,
    }


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, so the file is standard JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(_clean(doc), indent=1, sort_keys=False)
    paths = [out / f"bench-{stamp}.json", out / "latest.json"]
    for path in paths:
        path.write_text(text + "\n")
    png = out / "latest.png"
    if doc["scenario"] in ("flood", "overload"):
        return paths  # a table of phases, or one run: the JSON and the text summary say it all
    if doc["scenario"] == "steady":
        plot_steady(doc, png)
    elif doc["scenario"] == "soak":
        plot_soak(doc, png)
    else:
        plot_storms(doc, png)
    return [*paths, png]


def _median_run(runs: list[dict[str, Any]], system: str) -> dict[str, Any] | None:
    mine = sorted((r for r in runs if r["system"] == system and r.get("complete")),
                  key=lambda r: r["messages_per_s"])
    return mine[len(mine) // 2] if mine else None


def _rates(series: list[list[float]], col: int) -> tuple[list[float], list[float]]:
    """Per-second rates over ~0.5 s windows of the 0.1 s samples."""
    step = max(1, min(5, len(series) // 20))
    ts, rs = [], []
    for a, b in zip(series[::step], series[step::step], strict=False):
        dt = b[0] - a[0]
        if dt > 0 and b[0] > 0:
            ts.append(b[0])
            rs.append(max(0.0, (b[col] - a[col]) / dt))
    return ts, rs


def plot_steady(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, summary, p = doc["runs"], doc["summary"], doc["params"]
    fig, ((ax1, ax2), (ax3, ax4)) = plt.subplots(2, 2, figsize=(14, 9))
    fig.suptitle(f"steady: {p['cars']:,} cars, {p['messages']:,} telemetry envelopes x{p['samples']}, "
                 f"QoS {p['qos']}, medians of {p['repeat']} runs ({doc['host']['cpus']} CPUs)")
    for system in p["systems"]:
        run = _median_run(runs, system)
        if run is None:
            continue
        if system == "reference":
            ax1.hlines(run["messages_per_s"], 0, run["duration_s"], colors=COLORS[system],
                       label="reference (mosquitto_sub, mean)")
            continue
        ts, rs = _rates(run["series"], 2)
        ax1.plot(ts, rs, color=COLORS[system], label=f"{system} records/s at the backend")
        if system == "gateway":
            ts, rs = _rates(run["series"], 1)
            ax1.plot(ts, rs, color="#2ca02c", ls="--", lw=1, label="generator send rate (gateway run)")
    ax1.set(title="throughput over time (median run)", xlabel="s since start", ylabel="per second")
    ax1.legend(fontsize=8)
    for system in (s for s in p["systems"] if s != "reference"):
        run = _median_run(runs, system)
        hist = (run or {}).get("latency", {}).get("histogram")
        if not hist:
            continue
        total = sum(hist["counts"]) or 1
        acc, cdf = 0.0, []
        for c in hist["counts"]:
            acc += c
            cdf.append(acc / total * 100)
        lat = run["latency"] if run else {}
        ax2.step(hist["edges_ms"][1:], cdf, where="post", color=COLORS[system],
                 label=f"{system}: p50 {lat['p50_ms']:.1f} / p99 {lat['p99_ms']:.1f} ms")
    ax2.set(title="end-to-end latency (sent_at -> backend), CDF", xlabel="ms (log)", ylabel="% of records",
            xscale="log")
    ax2.legend(fontsize=8)
    _bars(ax3, summary, p["systems"], "messages_per_s", "messages/s (median, min-max)")
    ratios = doc.get("ratios", {})
    shown = [f"{k}: {v['median']:.2f}" for k, v in ratios.items() if v.get("median") is not None
             and not math.isnan(v["median"])]
    ax3.set_xlabel("\n".join("  ".join(shown[i:i + 3]) for i in range(0, len(shown), 3)))
    _bars(ax4, summary, p["systems"], "cpu_us_per_msg",
          "CPU us per message (sink; gateway-pg2: both gateways)")
    half = doc.get("half_load")
    if half:  # the half-load points next to the saturation bars, and their latency CDF
        names = list(p["systems"])
        for system, s in half["summary"].items():
            m = (s.get("cpu_us_per_msg") or {}).get("median")
            if system in names and m is not None and not math.isnan(m):
                ax4.plot([names.index(system)], [m], "D", color="k", ms=7)
                ax4.annotate(f"half load {m:.1f}", (names.index(system), m), xytext=(8, 0),
                             textcoords="offset points", fontsize=8, va="center")
        run = _median_run(half["runs"], "gateway")
        hist = (run or {}).get("latency", {}).get("histogram")
        if run and hist:
            total = sum(hist["counts"]) or 1
            acc, cdf = 0.0, []
            for c in hist["counts"]:
                acc += c
                cdf.append(acc / total * 100)
            lat = run["latency"]
            ax2.step(hist["edges_ms"][1:], cdf, where="post", color=COLORS["gateway"], ls="--",
                     label=f"gateway at half load ({half['rate']:,.0f}/s): p99 {lat['p99_ms']:.1f} / "
                           f"p99.9 {lat['p999_ms']:.1f} ms")
            ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _bars(ax: Any, summary: dict[str, Any], systems: list[str], key: str, title: str) -> None:
    names, med, lo, hi = [], [], [], []
    for s in systems:
        v = summary.get(s, {}).get(key) or {}
        m = v.get("median")
        if m is None or (isinstance(m, float) and math.isnan(m)):
            continue
        names.append(s)
        med.append(m)
        lo.append(m - v["min"])
        hi.append(v["max"] - m)
    ax.bar(names, med, yerr=[lo, hi], capsize=6, color=[COLORS.get(n, "#999") for n in names])
    for i, m in enumerate(med):
        ax.annotate(f"{m:,.0f}" if m >= 100 else f"{m:.2f}", (i, m), ha="center", va="bottom", fontsize=9)
    ax.set_title(title)


def plot_soak(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run, p = doc["runs"][0], doc["params"]
    fig, ax = plt.subplots(figsize=(10, 5))
    samples = run.get("rss_samples", [])
    ax.plot([t for t, _ in samples], [v / 1024 for _, v in samples], color=COLORS["gateway"],
            label="gateway RSS")
    rss = run.get("rss", {})
    if rss.get("mean_kib"):
        mean = rss["mean_kib"] / 1024
        ax.axhline(mean, color="#999", ls=":", label="mean after warm-up")
        ax.axhspan(mean * 0.95, mean * 1.05, color="#2ca02c", alpha=0.1, label="mean +-5 %")
    ax.axvline(run.get("warmup_s", 0), color="#999", ls="--", lw=1, label="end of warm-up")
    backlog = run.get("backlog_samples", [])
    if backlog:
        ax_b = ax.twinx()
        ax_b.plot([t for t, _ in backlog], [b for _, b in backlog], color="#d62728", lw=0.8, alpha=0.6)
        ax_b.set_ylabel("records sent, not yet received (red)")
    ax.set(title=f"soak: {p['cars']:,} cars at {p['rate']:,.0f} msg/s for {p['duration_s']:,.0f} s, "
                 f"QoS {p['qos']}", xlabel="s since start", ylabel="MiB")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_storms(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = doc["params"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    fig.suptitle(f"{doc['scenario']}: {p['cars']:,} cars, {p['workers']} generator processes, "
                 f"medians of {p['repeat']} runs")
    runs = doc["runs"]
    if runs:
        run = runs[len(runs) // 2]
        series = run.get("series", [])
        if series:
            t = [s[0] for s in series]
            ax1.plot(t, [s[1] for s in series], color="#2ca02c", label="connected (generator)")
            ax1.plot(t, [s[2] for s in series], color=COLORS["gateway"], label="online (gateway /metrics)")
            for name, at in run.get("marks", {}).items():
                ax1.axvline(at, color="#999", ls=":", lw=1)
                ax1.annotate(name, (at, 0), rotation=90, fontsize=7, va="bottom")
    ax1.set(title="connections and presence over time (middle run)", xlabel="s", ylabel="vehicles")
    ax1.legend(fontsize=8)
    timings = doc.get("summary", {}).get("timings_s", {})
    names = list(timings)
    med = [timings[n]["median"] or 0 for n in names]
    err = [[m - (timings[n]["min"] or m) for n, m in zip(names, med, strict=True)],
           [(timings[n]["max"] or m) - m for n, m in zip(names, med, strict=True)]]
    ax2.barh(names, med, xerr=err, capsize=4, color=COLORS["gateway"])
    for i, m in enumerate(med):
        ax2.annotate(f"{m:.2f}s", (m, i), va="center", fontsize=8)
    ax2.set(title="timings (median, min-max)", xlabel="seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(v: dict[str, Any] | None, unit: str = "", digits: int = 0) -> str:
    if not v or v.get("median") is None or (isinstance(v["median"], float) and math.isnan(v["median"])):
        return "n/a"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(v['median'])}{unit} [{f.format(v['min'])}-{f.format(v['max'])}]"


def store_cost_lines(cost: dict[str, Any] | None) -> list[str]:
    """The per-batch store cost (load/store_cost.py) measured in the same invocation."""
    if not cost:
        return []
    lines = [f"  store cost per batch ({cost['cars']:,} vehicles, {cost['batches']} batches each):"]
    for key, r in cost["results"].items():
        lines.append(f"  {key:>15}: batch p50/p99 {r['batch_p50_ms']:.2f} / {r['batch_p99_ms']:.2f} ms, "
                     f"{r['us_per_vehicle']:.1f} us per vehicle, {r['vehicles_per_s']:,} vehicles/s")
    return lines


def _num(v: Any, digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def steady_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for system, s in summary.items():
        lines.append(
            f"  {system:>11}: {_fmt(s['messages_per_s'])} msg/s, records/s {_fmt(s['records_per_s'])}, "
            f"latency p50/p99/p99.9 {_fmt(s['latency_p50_ms'], ' ms', 1)} / "
            f"{_fmt(s['latency_p99_ms'], ' ms', 1)} / {_fmt(s['latency_p999_ms'], ' ms', 1)}, "
            f"CPU {_fmt(s['cpu_s_per_100k'], ' s/100k', 2)}, "
            f"peak RSS {_fmt(s['peak_rss_mib'], ' MiB', 1)}"
        )
        lines.append(f"{'':>15}CPU per message: {_fmt(s.get('cpu_us_per_msg'), ' us', 2)}, broker "
                     f"{_fmt(s.get('broker_cpu_us_per_msg'), ' us', 2)}, "
                     f"system/broker {_fmt(s.get('cpu_vs_broker'), 'x', 2)}"
                     + (f", backend {_fmt(s['backend_cpu_us_per_msg'], ' us', 2)}"
                        if "backend_cpu_us_per_msg" in s else ""))
        if "rss_per_vehicle_kib" in s:
            rss = _fmt(s["rss_per_vehicle_kib"], " KiB", 1)
            lines.append(f"{'':>15}RSS per tracked vehicle {rss}")
        if "store_commit_ms" in s:
            lines.append(f"{'':>15}store commit per batch {_fmt(s['store_commit_ms'], ' ms', 2)}"
                         + (f", PostgreSQL CPU {_fmt(s['store_cpu_s_per_100k'], ' s/100k', 2)}"
                            if "store_cpu_s_per_100k" in s else ""))
    return lines


def target_lines(targets: dict[str, Any]) -> list[str]:
    lines = ["  targets (median [min-max] over the repeats; met by the median / by every run):"]
    for name, t in targets.items():
        verdict = "MET" if t["met"] else "NOT MET"
        lines.append(f"  {name:>25}: {_fmt(t['value'], '', 3)} {t['comparison']} {t['threshold']:g}: "
                     f"{verdict}{'' if t['met_every_run'] == t['met'] else ' (not every run)'}")
    return lines


def soak_lines(run: dict[str, Any]) -> list[str]:
    rss, lat = run.get("rss", {}), run.get("latency") or {}
    lines = [
        f"  offered {_num(run.get('offered_rate'), 0)} msg/s, generator {_num(run.get('generator_rate'), 0)} "
        f"msg/s over {_num(run.get('generator_send_s'))} s; sent {run['sent']:,} received "
        f"{run['received_records']:,} records (lost {run['lost_records']:,}); largest backlog "
        f"{run.get('backlog_max_records', 0):,} records",
        f"  CPU per message: gateway {_num(run.get('cpu_us_per_msg'), 2)} us, broker "
        f"{_num(run.get('broker_cpu_us_per_msg'), 2)} us, "
        f"gateway/broker {_num(run.get('cpu_vs_broker'), 2)}x",
        f"  latency p50/p99/p99.9/max {_num(lat.get('p50_ms'))} / {_num(lat.get('p99_ms'))} / "
        f"{_num(lat.get('p999_ms'))} / {_num(lat.get('max_ms'))} ms",
    ]
    if rss.get("flat_within_5pct") is None:
        lines.append(f"  RSS: too few samples after the {run.get('warmup_s')} s warm-up")
    else:
        mib = [rss[k] / 1024 for k in ("min_kib", "mean_kib", "max_kib")]
        lines.append(
            f"  RSS after {run.get('warmup_s')} s warm-up ({rss['samples']} samples over "
            f"{rss['window_s']} s): min {mib[0]:.1f} / mean {mib[1]:.1f} / max {mib[2]:.1f} MiB, "
            f"largest deviation {rss['max_deviation_pct']:.2f} %, trend {rss['slope_kib_per_min']:+.1f} "
            f"KiB/min, flat within 5 %: {rss['flat_within_5pct']}")
    return lines


def text_summary(doc: dict[str, Any]) -> str:
    lines = [f"scenario {doc['scenario']}: median [min-max] over {doc['params']['repeat']} runs"]
    if doc["scenario"] == "steady":
        lines.extend(steady_lines(doc["summary"]))
        for name, r in doc.get("ratios", {}).items():
            lines.append(f"  ratio {name}: {_fmt(r, '', 3)}")
        half = doc.get("half_load")
        if half:
            lines.append(f"  half load: paced at {half['rate']:,.0f} msg/s (half the gateway's median)")
            lines.extend(steady_lines(half["summary"]))
        if doc.get("targets"):
            lines.extend(target_lines(doc["targets"]))
        lines.extend(store_cost_lines(doc.get("store_cost")))
    elif doc["scenario"] == "soak":
        p = doc["params"]
        lines[0] = f"scenario soak: {p['duration_s']:,.0f} s at {p['rate']:,.0f} msg/s, {p['cars']:,} cars"
        lines.extend(soak_lines(doc["runs"][0]))
    elif doc["scenario"] == "flood":
        for run in doc.get("runs", []):
            lines.append(f"  defence {run.get('defence', '?')}:")
            for phase, ph in run["phases"].items():
                lat = ph["latency"]
                lines.append(
                    f"  {phase:>10}: normal cars p50/p99 {lat.get('p50_ms', float('nan')):.1f} / "
                    f"{lat.get('p99_ms', float('nan')):.1f} ms, received {ph['normal_received']:,} of "
                    f"{ph['normal_sent']:,}; flooder sent {ph['flood_sent']:,} "
                    f"({ph['flood_sent_per_s']:,.0f}/s), rate_limited {ph['rate_limited']:,.0f}, "
                    f"quarantined {ph.get('quarantined', 0):,.0f}"
                    + (f"; onset p99 {ph['onset_p99_ms']:.1f} ms" if phase != "baseline" else "")
                )
        for name, r in doc.get("summary", {}).get("ratios", {}).items():
            lines.append(f"  ratio {name}: {r}")
    elif doc["scenario"] == "overload":
        from load.overload import summary_lines

        lines.extend(summary_lines(doc))
    else:
        for name, v in doc.get("summary", {}).get("timings_s", {}).items():
            lines.append(f"  {name}: {_fmt(v, ' s', 2)}")
        for name, v in doc.get("summary", {}).get("other", {}).items():
            lines.append(f"  {name}: {_fmt(v, '', 2)}")
    return "\n".join(lines)
