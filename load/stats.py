"""Small measurement helpers: latency recording and percentiles, /proc CPU and memory, medians."""

from __future__ import annotations

import math
import os
import statistics
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Latencies:
    """Per-record latencies in milliseconds, kept compactly (8 bytes each)."""

    def __init__(self) -> None:
        self.values = array("d")

    def add(self, ms: float) -> None:
        self.values.append(ms)

    def extend(self, ms: Iterable[float]) -> None:
        self.values.extend(ms)

    def __len__(self) -> int:
        return len(self.values)

    def summary(self) -> dict[str, Any]:
        """Percentiles and a log-spaced histogram (for the plot); empty dict when no data."""
        if not self.values:
            return {}
        data = sorted(self.values)
        return {
            "count": len(data),
            "min_ms": round(data[0], 3),
            "p50_ms": round(percentile(data, 50), 3),
            "p90_ms": round(percentile(data, 90), 3),
            "p99_ms": round(percentile(data, 99), 3),
            "p999_ms": round(percentile(data, 99.9), 3),
            "max_ms": round(data[-1], 3),
            "mean_ms": round(statistics.fmean(data), 3),
            "histogram": log_histogram(data),
        }


def percentile(sorted_data: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted data."""
    if not sorted_data:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_data)))
    return sorted_data[min(rank, len(sorted_data)) - 1]


def log_histogram(sorted_data: Sequence[float], per_decade: int = 10) -> dict[str, list[float]]:
    """Counts in log-spaced bins from 0.01 ms up; values below go to the first bin."""
    lo = 0.01
    top = max(sorted_data[-1], lo * 10)
    nbins = math.ceil(math.log10(top / lo) * per_decade) + 1
    edges = [lo * 10 ** (i / per_decade) for i in range(nbins + 1)]
    counts = [0] * nbins
    for v in sorted_data:
        i = 0 if v <= lo else min(nbins - 1, int(math.log10(v / lo) * per_decade))
        counts[i] += 1
    return {"edges_ms": [round(e, 4) for e in edges], "counts": [float(c) for c in counts]}


def spread(values: Sequence[float | None]) -> dict[str, float]:
    """Median with min and max (the way results are reported: never one run alone)."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "median": round(statistics.median(clean), 4),
        "min": round(min(clean), 4),
        "max": round(max(clean), 4),
        "n": len(clean),
    }


# -- /proc --
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status, e.g. VmRSS or VmHWM (0 when absent)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class ProcWatch:
    """CPU seconds of a process over a window, and its memory."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu0 = 0.0

    def begin(self) -> None:
        self.cpu0 = cpu_seconds(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid) - self.cpu0

    def rss_kib(self) -> int:
        return status_kib(self.pid, "VmRSS")

    def hwm_kib(self) -> int:
        return status_kib(self.pid, "VmHWM")


def safe_ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def us_per_message(cpu_s: float | None, messages: int) -> float:
    """CPU microseconds per message over a window (NaN when either side is unknown)."""
    if cpu_s is None or messages <= 0 or math.isnan(cpu_s):
        return math.nan
    return cpu_s / messages * 1e6


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (NaN with fewer than two distinct xs)."""
    if len(xs) != len(ys) or len(xs) < 2:
        return math.nan
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


RSS_FLAT_PCT = 5.0  # the soak target: RSS flat within 5 % at half load


def flatness(samples: Sequence[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """RSS samples ``(seconds since start, KiB)`` after ``warmup_s``: min/max/mean, the largest
    deviation from the mean in %, the linear trend in KiB per minute, and whether every sample
    stayed within ``RSS_FLAT_PCT`` of the mean (the soak's "RSS flat within 5%")."""
    kept = [(t, v) for t, v in samples if t >= warmup_s]
    if len(kept) < 2:
        return {"samples": len(kept), "flat_within_5pct": None}
    values = [v for _, v in kept]
    mean = statistics.fmean(values)
    deviation = max(abs(v - mean) for v in values) / mean * 100 if mean else math.nan
    slope = linear_slope([t / 60 for t, _ in kept], values)
    return {
        "samples": len(kept),
        "window_s": round(kept[-1][0] - kept[0][0], 1),
        "min_kib": min(values),
        "max_kib": max(values),
        "mean_kib": round(mean, 1),
        "max_deviation_pct": round(deviation, 3),
        "slope_kib_per_min": round(slope, 3),
        "flat_within_5pct": bool(deviation <= RSS_FLAT_PCT),
    }
