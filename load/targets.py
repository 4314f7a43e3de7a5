"""The steady targets of issue 12, judged from one ``load.bench`` invocation's runs.

Each target is measured per repeat (a gateway run against the reference or broker of the same
repeat, so drift on a shared machine hits both sides alike) and reported as median [min-max]
with its threshold. ``met`` judges the median; ``met_every_run`` the worst repeat, so a target
met only on a good run shows as such.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from load.stats import safe_ratio, spread

THROUGHPUT_VS_REFERENCE_MIN = 0.8  # gateway msg/s >= 0.8x mosquitto_sub's, same load
CPU_VS_BROKER_MAX = 1.5  # gateway CPU/msg <= 1.5x the broker's CPU/msg
CPU_HALF_VS_SATURATION_MAX = 1.10  # CPU/msg must not grow as load falls (10 % for noise)
P99_MAX_MS = 10.0  # at half the gateway's max rate
P999_MAX_MS = 50.0


def target(values: list[float], threshold: float, *, at_most: bool) -> dict[str, Any]:
    """One target: the per-repeat values, their spread and the verdicts. No value (a system
    missing, a run incomplete): not met, the honest answer when nothing was measured."""
    s = spread(values)
    clean = [v for v in values if not math.isnan(v)]

    def ok(v: float) -> bool:
        return v <= threshold if at_most else v >= threshold

    return {
        "value": s,
        "threshold": threshold,
        "comparison": "<=" if at_most else ">=",
        "met": bool(clean) and ok(s["median"]),
        "met_every_run": bool(clean) and all(ok(v) for v in clean),
    }


def _by_run(runs: list[dict[str, Any]], system: str) -> dict[int, dict[str, Any]]:
    return {r["run"]: r for r in runs if r["system"] == system and r.get("complete")}


def _paired(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]],
            f: Callable[[dict[str, Any], dict[str, Any]], float]) -> list[float]:
    return [f(a[i], b[i]) for i in sorted(a) if i in b]


def _latency(runs: dict[int, dict[str, Any]], key: str) -> list[float]:
    return [float((r.get("latency") or {}).get(key, math.nan)) for _, r in sorted(runs.items())]


def steady_targets(saturation: list[dict[str, Any]], half: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The targets block: throughput and CPU at saturation, and with half-load runs also CPU
    and latency at half load. Runs carry ``cpu_us_per_msg`` and ``broker_cpu_us_per_msg``."""
    gw, ref = _by_run(saturation, "gateway"), _by_run(saturation, "reference")

    def cpu_ratio(r: dict[str, Any], _: dict[str, Any]) -> float:
        return safe_ratio(r.get("cpu_us_per_msg"), r.get("broker_cpu_us_per_msg"))

    out: dict[str, Any] = {
        "throughput_vs_reference": target(
            _paired(gw, ref, lambda g, r: safe_ratio(g["messages_per_s"], r["messages_per_s"])),
            THROUGHPUT_VS_REFERENCE_MIN, at_most=False),
        "cpu_vs_broker_saturation": target(_paired(gw, gw, cpu_ratio), CPU_VS_BROKER_MAX, at_most=True),
    }
    if half is None:
        return out
    hgw = _by_run(half, "gateway")
    out["cpu_vs_broker_half_load"] = target(_paired(hgw, hgw, cpu_ratio), CPU_VS_BROKER_MAX, at_most=True)
    out["cpu_half_vs_saturation"] = target(
        _paired(hgw, gw, lambda h, s: safe_ratio(h.get("cpu_us_per_msg"), s.get("cpu_us_per_msg"))),
        CPU_HALF_VS_SATURATION_MAX, at_most=True)
    out["p99_ms_half_load"] = target(_latency(hgw, "p99_ms"), P99_MAX_MS, at_most=True)
    out["p999_ms_half_load"] = target(_latency(hgw, "p999_ms"), P999_MAX_MS, at_most=True)
    return out
