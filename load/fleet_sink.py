"""Gateways on PostgreSQL as systems of the ``steady`` benchmark (load/bench.py):

* ``gateway-pg``: one ``python -m gateway run`` with ``store_url`` on a fresh PostgreSQL
  database (with ``mqtt_url`` that is one ingest slot, leased in the database);
* ``gateway-pg2``: two of them on one fresh database and the run's BenchBroker, in one MQTT 5
  shared subscription (``mqtt_shared_group``) with two ingest slots (``mqtt_slots = 2``), as
  README "Several gateways on one broker" describes. Mosquitto hands the shared messages out
  round robin, so one car's messages reach both gateways.

Each gateway has its own SubscribeTelemetry consumer process; their records are counted
together and their latencies (receipt - ``sent_at``) merged exactly (each consumer sends its raw
values back). CPU is the gateway processes' summed; the PostgreSQL server processes serving the
run's database are measured apart (``store_cpu_s``). The database is created per run on the
server at GATEWAY_BENCH_PG_DSN (a URL of any database there; default the local server on
127.0.0.1:5432 as ``postgres``) and dropped afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from load.bench_db import BenchDatabase
from load.consumer import subscriber_main
from load.harness import BenchBroker, GatewayProcess, metric_sum
from load.stats import Latencies, ProcWatch, cpu_seconds
from load.systems import CTX, Sink, _recv, gateway_counts, store_commit_ms

FLEET_SYSTEMS = {"gateway-pg": 1, "gateway-pg2": 2}  # system -> gateway processes
SHARED_GROUP = "bench"
CLIENT_ID = "telematics-gateway"  # slots are <client id>-1 .. -N
# Short leases: a gateway that started first holds every slot until the other's join is seen at
# a renewal (every third of the lease); the run starts once each holds its share.
SLOT_LEASE_S = 3.0


class BackendCpu:
    """CPU seconds of the PostgreSQL server processes serving one database over a window:
    those connected at the start from their count then, those that connected later in full
    (the gateways' pools keep their connections, so few come and go)."""

    def __init__(self, db: BenchDatabase) -> None:
        self.db = db
        self.start: dict[int, float] = {}

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            return cpu_seconds(pid)
        except OSError:  # gone meanwhile, or another machine's server (GATEWAY_BENCH_PG_DSN)
            return None

    def begin(self) -> None:
        self.start = {pid: cpu for pid in self.db.backend_pids() if (cpu := self._cpu(pid)) is not None}

    def cpu(self) -> float:
        total = 0.0
        for pid in self.db.backend_pids():
            cpu = self._cpu(pid)
            if cpu is not None:
                total += cpu - self.start.get(pid, 0.0)
        return total


def merge_streams(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several SubscribeTelemetry consumers' stats (each with ``latencies_ms``) as one."""
    latencies = Latencies()
    for s in stats:
        latencies.values.frombytes(s.get("latencies_ms", b""))
    firsts = [s["first_record_at"] for s in stats if s.get("first_record_at")]
    return {
        "records": sum(s["records"] for s in stats),
        "grpc_messages": sum(s["grpc_messages"] for s in stats),
        "first_record_at": min(firsts) if firsts else 0.0,
        "last_record_at": max((s["last_record_at"] for s in stats), default=0.0),
        "latency": latencies.summary(),
        "records_per_instance": [s["records"] for s in stats],
        "error": "; ".join(s["error"] for s in stats if s.get("error")),
    }


class FleetSink(Sink):
    """``instances`` gateways on one fresh PostgreSQL database and the run's broker."""

    def __init__(self, name: str, instances: int, admin: str) -> None:
        self.name = name
        self.instances = instances
        self.db = BenchDatabase(admin)
        self.store_watch = BackendCpu(self.db)
        self.counters = [CTX.Value("q", 0, lock=False) for _ in range(instances)]
        self.pipes = [CTX.Pipe() for _ in range(instances)]
        self.gws: list[GatewayProcess] = []
        self.subs: list[Any] = []
        self.watches: list[ProcWatch] = []
        self.metrics0: list[dict[str, float]] = []
        self.expect = 0

    def settings(self) -> dict[str, str]:
        out = {
            "GATEWAY_STORE_URL": self.db.url,
            "GATEWAY_MQTT_CLIENT_ID": CLIENT_ID,
            "GATEWAY_MQTT_SLOTS": str(self.instances),
            "GATEWAY_MQTT_SLOT_LEASE_S": str(SLOT_LEASE_S),
        }
        if self.instances > 1:
            out["GATEWAY_MQTT_SHARED_GROUP"] = SHARED_GROUP
        return out

    def start(self, broker: BenchBroker, workdir: Path, expect_messages: int, expect_records: int) -> None:
        self.expect = expect_records
        self.db.create()
        self.gws = [GatewayProcess(workdir / f"gateway-{i + 1}", broker, log_level="WARNING",
                                   settings=self.settings()) for i in range(self.instances)]
        for gw in self.gws:
            gw.wait_ready(60)
        self._wait_each("gateway_ingest_slots_held", 1, 60)
        for i, gw in enumerate(self.gws):
            sub = CTX.Process(target=subscriber_main,
                              args=(gw.grpc_target, self.counters[i], self.pipes[i][1], 0, gw.token, True),
                              daemon=True, name=f"bench-{self.name}-subscriber-{i + 1}")
            sub.start()
            self.subs.append(sub)
            _recv(self.pipes[i][0], 30, f"telemetry subscriber {i + 1}")
            gw.wait_metric("gateway_grpc_stream_subscribers", 1, 30)

    def _wait_each(self, name: str, want: float, timeout: float) -> None:
        """Until every gateway's ``name`` equals ``want`` in the same poll."""
        deadline = time.monotonic() + timeout
        values: list[float] = []
        while time.monotonic() < deadline:
            values = [metric_sum(gw.metrics(), name) for gw in self.gws]
            if all(v == want for v in values):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} per gateway = {values}, wanted {want} each within {timeout}s")

    def _total(self, name: str) -> float:
        return sum(metric_sum(gw.metrics(), name) for gw in self.gws)

    def wait_hellos(self, cars: int, timeout: float = 120.0) -> None:
        """The hellos are split among the gateways: wait for their sum."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self._total('gateway_messages_received_total{kind="hello"}') >= cars
                    and self._total("gateway_vehicles_online") >= cars):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the hellos of {cars} cars did not reach the gateways within {timeout}s")

    def begin(self) -> None:
        self.watches = [ProcWatch(gw.pid) for gw in self.gws]
        for w in self.watches:
            w.begin()
        self.store_watch.begin()
        self.metrics0 = [gw.metrics() for gw in self.gws]

    def received(self) -> int:
        return sum(int(c.value) for c in self.counters)

    def complete(self) -> bool:
        return self.received() >= self.expect

    def finish(self) -> dict[str, Any]:
        cpu = sum(w.cpu() for w in self.watches)
        store_cpu = self.store_watch.cpu()
        hwm = max(w.hwm_kib() for w in self.watches)
        metrics = [gw.metrics() for gw in self.gws]
        for parent, _ in self.pipes:
            parent.send("stop")
        merged = merge_streams([_recv(parent, 60, "a telemetry subscriber") for parent, _ in self.pipes])
        codes = [gw.stop() for gw in self.gws]
        counts = [gateway_counts(m) for m in metrics]
        commits = [store_commit_ms(m0, m1) for m0, m1 in zip(self.metrics0, metrics, strict=True)]
        n_commits = sum(n for _, n in commits)
        commit_total_ms = sum(ms * n for ms, n in commits if n)
        return {
            "complete": merged["records"] >= self.expect,
            "end_at": merged["last_record_at"],
            "records": merged["records"],
            "records_per_instance": merged["records_per_instance"],
            "grpc_messages": merged["grpc_messages"],
            "latency": merged["latency"],
            "cpu_s": cpu,
            "store_cpu_s": store_cpu,
            "peak_rss_kib": hwm,  # the larger gateway process
            "instances": self.instances,
            "database": self.db.name,
            "store_commits": n_commits,
            "store_commit_ms": round(commit_total_ms / n_commits, 3) if n_commits else float("nan"),
            "gateway_metrics": {k: sum(c[k] for c in counts) for k in counts[0]},
            "exit_code": next((c for c in codes if c != 0), 0),
            "log_problems": [f"gateway-{i + 1}: {line}" for i, gw in enumerate(self.gws)
                             for line in gw.log_problems(10)],
            "error": merged["error"],
        }

    def close(self) -> None:
        try:
            for sub in self.subs:
                if sub.is_alive():
                    sub.kill()
                    sub.join(5)
            for gw in self.gws:
                if gw.proc.poll() is None:
                    gw.stop()
        finally:
            self.db.drop()
