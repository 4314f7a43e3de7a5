"""The systems measured against the same generated load (``steady``):

* ``reference``: ``mosquitto_sub -C N -t 'v1/vehicles/+/up' > /dev/null`` (C, libmosquitto),
  timed until it exits; the ceiling the broker and generator allow on this machine.
* ``naive``: aiomqtt iterator + protobuf decode + one gRPC message per record (load/naive.py)
  to a counting backend process (load/consumer.py).
* ``gateway``: ``python -m gateway run`` with a SubscribeTelemetry consumer process.
* ``gateway-pg``, ``gateway-pg2``: one and two gateways on PostgreSQL (load/fleet_sink.py).
* ``gateway-js``: ``gateway`` with ``telemetry_sink = "jetstream"`` (its own nats-server,
  load/bench_nats.py); the consumer reads the stream through SubscribeTelemetry.

Each implements the small ``Sink`` interface used by ``load.bench``.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from gateway import topics
from load.consumer import sink_main, subscriber_main
from load.harness import BenchBroker, GatewayProcess, metric_sum
from load.naive import naive_main
from load.stats import ProcWatch, cpu_seconds

CTX = mp.get_context("spawn")
TELEMETRY_RECEIVED = 'gateway_messages_received_total{kind="telemetry"}'
STORE_COMMIT = "gateway_store_commit_seconds"


def gateway_counts(metrics: dict[str, float]) -> dict[str, float]:
    """The counters a run reports from a gateway's /metrics."""
    return {
        "telemetry_received": metric_sum(metrics, TELEMETRY_RECEIVED),
        "rejected": metric_sum(metrics, "gateway_messages_rejected_total"),
        "stale": metric_sum(metrics, "gateway_messages_stale_total"),
        **{f"stale_{o}": metric_sum(metrics, f'gateway_messages_stale_total{{outcome="{o}"}}')
           for o in ("duplicate", "late", "too_old", "other_epoch")},
        "backpressure_pauses": metric_sum(metrics, "gateway_ingress_backpressure_total"),
        "vehicles_tracked": metric_sum(metrics, "gateway_vehicles_tracked"),
        # Several gateways on one database: batches re-applied after another gateway committed
        # the same car first, and cars reloaded from the database before a batch.
        "store_conflicts": metric_sum(metrics, "gateway_store_conflicts_total"),
        "vehicles_refreshed": metric_sum(metrics, "gateway_vehicles_refreshed_total"),
    }


def store_commit_ms(before: dict[str, float], after: dict[str, float]) -> tuple[float, int]:
    """Mean milliseconds per store commit (one per pipeline batch) between two /metrics scrapes
    of one gateway, and how many commits: the per-batch store cost inside the run."""
    count = metric_sum(after, f"{STORE_COMMIT}_count") - metric_sum(before, f"{STORE_COMMIT}_count")
    seconds = metric_sum(after, f"{STORE_COMMIT}_sum") - metric_sum(before, f"{STORE_COMMIT}_sum")
    return (seconds / count * 1000 if count else math.nan), int(count)


class Sink:
    name = ""
    counts_records = True  # False: received() is unknown until the end

    def start(self, broker: BenchBroker, workdir: Path, expect_messages: int, expect_records: int) -> None:
        raise NotImplementedError

    def wait_hellos(self, cars: int, timeout: float = 120.0) -> None:
        """Until the hellos of the connect phase went through, so they stay out of the window."""

    def begin(self) -> None:
        """The measured window starts (CPU counters)."""

    def received(self) -> int:
        return -1

    def complete(self) -> bool:
        raise NotImplementedError

    def finish(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop whatever is still running (idempotent)."""


def _recv(pipe: Any, timeout: float, what: str) -> dict[str, Any]:
    if not pipe.poll(timeout):
        raise TimeoutError(f"no answer from {what} within {timeout}s")
    answer: dict[str, Any] = pipe.recv()
    return answer


class ReferenceSink(Sink):
    name = "reference"
    counts_records = False

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_at = 0.0
        self.rusage: Any = None
        self.status = 0
        self.cpu0 = 0.0
        self._done = threading.Event()

    def start(self, broker: BenchBroker, workdir: Path, expect_messages: int, expect_records: int) -> None:
        binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
        self.proc = subprocess.Popen(
            [binary, "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5", "-i", "bench-reference",
             "-u", broker.user, "-P", broker.password, "-q", "1", "-t", topics.UPLINK_FILTER,
             "-C", str(expect_messages)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        pid = self.proc.pid

        def reap() -> None:  # wait4 gives the child's own CPU time and peak RSS
            _, self.status, self.rusage = os.wait4(pid, 0)
            self.exit_at = time.time()
            if self.proc is not None:
                self.proc.returncode = os.waitstatus_to_exitcode(self.status)
            self._done.set()

        threading.Thread(target=reap, daemon=True).start()
        time.sleep(0.5)  # connect + subscribe on loopback take milliseconds; no ready signal exists

    def wait_hellos(self, cars: int, timeout: float = 120.0) -> None:
        time.sleep(0.3)

    def begin(self) -> None:
        # Its CPU before the window (connect, subscribe, the hellos), taken off the total that
        # wait4 reports at its exit, so it covers the window as the other systems' CPU does.
        assert self.proc is not None
        self.cpu0 = cpu_seconds(self.proc.pid) if not self._done.is_set() else 0.0

    def complete(self) -> bool:
        return self._done.is_set()

    def finish(self) -> dict[str, Any]:
        if not self._done.is_set():
            return {"complete": False}
        ru = self.rusage  # its own CPU; ru_maxrss is not its own (it keeps the forking parent's peak)
        return {
            "complete": self.proc is not None and self.proc.returncode == 0,
            "end_at": self.exit_at,
            "cpu_s": ru.ru_utime + ru.ru_stime - self.cpu0,
        }

    def close(self) -> None:
        if self.proc is not None and not self._done.is_set():
            self.proc.kill()
            self._done.wait(5)


class NaiveSink(Sink):
    name = "naive"

    def __init__(self, mode: str = "stream") -> None:
        self.mode = mode
        self.records = CTX.Value("q", 0, lock=False)
        self.messages = CTX.Value("q", 0, lock=False)
        self.sink_pipe, sink_child = CTX.Pipe()
        self.naive_pipe, self._naive_child = CTX.Pipe()
        self.sink = CTX.Process(target=sink_main, args=(self.records, sink_child), daemon=True,
                                name="bench-naive-backend")
        self.naive: Any = None
        self.expect = 0
        self.watch: list[ProcWatch] = []

    def start(self, broker: BenchBroker, workdir: Path, expect_messages: int, expect_records: int) -> None:
        self.expect = expect_records
        self.sink.start()
        port = _recv(self.sink_pipe, 30, "the naive backend")["port"]
        self.naive = CTX.Process(
            target=naive_main,
            args=(broker.port, broker.user, broker.password, port, self.mode, self.messages,
                  self._naive_child),
            daemon=True, name="bench-naive",
        )
        self.naive.start()
        _recv(self.naive_pipe, 30, "the naive pipeline")

    def wait_hellos(self, cars: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.messages.value < cars and time.monotonic() < deadline:
            time.sleep(0.02)

    def begin(self) -> None:
        assert self.sink.pid is not None
        self.watch = [ProcWatch(self.naive.pid), ProcWatch(self.sink.pid)]
        for w in self.watch:
            w.begin()
        self._messages0 = self.messages.value

    def received(self) -> int:
        return int(self.records.value)

    def complete(self) -> bool:
        return bool(self.records.value >= self.expect)

    def finish(self) -> dict[str, Any]:
        cpu, backend_cpu = (w.cpu() for w in self.watch)
        hwm = self.watch[0].hwm_kib()
        self.naive_pipe.send("stop")
        naive = _recv(self.naive_pipe, 30, "the naive pipeline")
        self.sink_pipe.send("stop")
        backend = _recv(self.sink_pipe, 30, "the naive backend")
        return {
            "complete": backend["records"] >= self.expect,
            "end_at": backend["last_record_at"],
            "records": backend["records"],
            "mqtt_messages": naive["mqtt_messages"] - self._messages0,
            "latency": backend["latency"],
            "cpu_s": cpu,
            "backend_cpu_s": backend_cpu,
            "peak_rss_kib": hwm,
            "error": naive.get("error", ""),
            "mode": self.mode,
        }

    def close(self) -> None:
        for proc in (self.naive, self.sink):
            if proc is not None and proc.is_alive():
                proc.kill()
                proc.join(5)


class GatewaySink(Sink):
    name = "gateway"

    def __init__(self, *, jetstream: bool = False) -> None:
        """jetstream: the durable sink (its own nats-server) instead of the live fan-out."""
        self.jetstream = jetstream
        self.nats: Any = None
        self.records = CTX.Value("q", 0, lock=False)
        self.pipe, self._child = CTX.Pipe()
        self.gw: GatewayProcess | None = None
        self.sub: Any = None
        self.expect = 0
        self.watch: ProcWatch | None = None
        self.rss_base_kib = 0
        self.rss_online_kib = 0
        self.cars = 0
        self.metrics0: dict[str, float] = {}

    def start(self, broker: BenchBroker, workdir: Path, expect_messages: int, expect_records: int) -> None:
        self.expect = expect_records
        settings: dict[str, str] = {}
        if self.jetstream:
            from load.bench_nats import NatsServer

            (workdir / "nats").mkdir(parents=True, exist_ok=True)
            self.nats = NatsServer(workdir / "nats")
            self.nats.start()
            settings = {"GATEWAY_TELEMETRY_SINK": "jetstream", "GATEWAY_NATS_URL": self.nats.url}
        self.gw = GatewayProcess(workdir / "gateway", broker, log_level="WARNING", settings=settings)
        self.gw.wait_ready()
        self.sub = CTX.Process(target=subscriber_main,
                               args=(self.gw.grpc_target, self.records, self._child, 0, self.gw.token),
                               daemon=True, name="bench-gateway-subscriber")
        self.sub.start()
        _recv(self.pipe, 30, "the telemetry subscriber")
        self.gw.wait_metric("gateway_grpc_stream_subscribers", 1, 30)
        self.rss_base_kib = ProcWatch(self.gw.pid).rss_kib()

    def wait_hellos(self, cars: int, timeout: float = 120.0) -> None:
        assert self.gw is not None
        self.cars = cars
        self.gw.wait_metric('gateway_messages_received_total{kind="hello"}', cars, timeout)
        self.gw.wait_metric("gateway_vehicles_online", cars, timeout)
        self.rss_online_kib = ProcWatch(self.gw.pid).rss_kib()

    def begin(self) -> None:
        assert self.gw is not None
        self.watch = ProcWatch(self.gw.pid)
        self.watch.begin()
        self.metrics0 = self.gw.metrics()

    def received(self) -> int:
        return int(self.records.value)

    def complete(self) -> bool:
        return bool(self.records.value >= self.expect)

    def finish(self) -> dict[str, Any]:
        assert self.gw is not None and self.watch is not None
        cpu = self.watch.cpu()
        hwm, rss = self.watch.hwm_kib(), self.watch.rss_kib()
        metrics = self.gw.metrics()
        commit_ms, commits = store_commit_ms(self.metrics0, metrics)
        self.pipe.send("stop")
        sub = _recv(self.pipe, 30, "the telemetry subscriber")
        code = self.gw.stop()
        per_vehicle = (self.rss_online_kib - self.rss_base_kib) / self.cars if self.cars else 0.0
        return {
            "complete": sub["records"] >= self.expect,
            "end_at": sub["last_record_at"],
            "records": sub["records"],
            "grpc_messages": sub["grpc_messages"],
            "latency": sub["latency"],
            "cpu_s": cpu,
            "peak_rss_kib": hwm,
            "rss_end_kib": rss,
            "rss_per_vehicle_kib": round(per_vehicle, 2),
            "store_commits": commits,
            "store_commit_ms": round(commit_ms, 3),
            "gateway_metrics": gateway_counts(metrics),
            "exit_code": code,
            "log_problems": self.gw.log_problems(),
            "error": sub.get("error", ""),
        }

    def close(self) -> None:
        if self.sub is not None and self.sub.is_alive():
            self.sub.kill()
            self.sub.join(5)
        if self.gw is not None and self.gw.proc.poll() is None:
            self.gw.stop()
        if self.nats is not None:
            self.nats.stop()


def make_sink(name: str, naive_mode: str = "stream") -> Sink:
    if name == "reference":
        return ReferenceSink()
    if name == "naive":
        return NaiveSink(naive_mode)
    if name == "gateway":
        return GatewaySink()
    if name == "gateway-js":
        sink = GatewaySink(jetstream=True)
        sink.name = name
        return sink
    from load.bench_db import admin_url
    from load.fleet_sink import FLEET_SYSTEMS, FleetSink  # imports this module

    if name in FLEET_SYSTEMS:
        return FleetSink(name, FLEET_SYSTEMS[name], admin_url())
    raise ValueError(f"unknown system {name!r}")
