"""Processes the benchmark starts: a Mosquitto with the project's configuration, and the
gateway as a subprocess (``python -m gateway run`` against that broker), observed from outside
(HTTP /readyz and /metrics, /proc)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from gateway.broker.managed import BrokerCredentials, ManagedBroker, TlsListener
from gateway.security.credentials import new_token
from gateway.security.pki import ensure_embedded_pki

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchBroker:
    """A fresh ManagedBroker (the project's mosquitto.conf and ACL) on a free port; with
    ``tls`` also its TLS listener (client certificates, CN = VIN) on another free port, with a
    development CA of its own in ``pki_dir`` (load.sim --tls issues the cars' certificates)."""

    def __init__(self, directory: Path, *, tls: bool = False) -> None:
        self.port = free_port()
        self.pki_dir = directory / "pki"
        self.tls_port = 0
        listener: TlsListener | None = None
        if tls:
            self.tls_port = free_port()
            pki, _ = ensure_embedded_pki(self.pki_dir, gateway_identity="telematics-gateway")
            listener = TlsListener(host="127.0.0.1", port=self.tls_port, cafile=pki.ca_cert,
                                   certfile=pki.broker_cert, keyfile=pki.broker_key,
                                   gateway_identity="telematics-gateway")
        self._broker = ManagedBroker(directory=directory, port=self.port, tls=listener)
        self.credentials: BrokerCredentials | None = None

    def __enter__(self) -> BenchBroker:
        self.credentials = self._broker.start_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self._broker.stop_sync()

    @property
    def pid(self) -> int:
        assert self._broker.pid is not None
        return self._broker.pid

    @property
    def user(self) -> str:
        assert self.credentials is not None
        return self.credentials.username

    @property
    def password(self) -> str:
        assert self.credentials is not None
        return self.credentials.password


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                continue
    return out


def metric_sum(metrics: dict[str, float], name: str) -> float:
    """Sum of every sample of ``name`` over its labels."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


class GatewayProcess:
    """``python -m gateway run`` with GATEWAY_* variables, against a BenchBroker or its own."""

    def __init__(
        self, data_dir: Path, broker: BenchBroker | None, *, log_level: str = "INFO",
        settings: dict[str, str] | None = None,
    ) -> None:
        """broker: None to have the gateway start its own (managed) broker, as `make run` does;
        its plain listener is then ``mqtt_port``. settings: more GATEWAY_* variables."""
        self.grpc_port = free_port()
        self.http_port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "gateway.log"
        # An admin credential given through the environment (hash only); clients send `token`.
        self.token, stored = new_token("load-harness")
        if broker is not None:
            self.mqtt_port = broker.port
            where = {"GATEWAY_MQTT_URL": f"mqtt://{broker.user}:{broker.password}@127.0.0.1:{broker.port}"}
        else:
            self.mqtt_port = free_port()
            where = {"GATEWAY_MQTT_PORT": str(self.mqtt_port), "GATEWAY_MQTT_TLS_PORT": str(free_port())}
        env = dict(
            os.environ,
            **where,
            **(settings or {}),
            GATEWAY_DATA_DIR=str(data_dir),
            GATEWAY_GRPC_LISTEN=f"127.0.0.1:{self.grpc_port}",
            GATEWAY_HTTP_LISTEN=f"127.0.0.1:{self.http_port}",
            GATEWAY_LOG_LEVEL=log_level,
            GATEWAY_GRPC_CREDENTIALS=f"load-harness=admin={stored}",
            PYTHONPATH=str(ROOT),
        )
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def http(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.http("/metrics")[1])

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.http("/readyz", 1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready within {timeout}s:\n{self.log_tail()}")

    def wait_metric(self, name: str, want: float, timeout: float = 60.0, *, at_most: bool = False) -> float:
        """Poll /metrics until sum(name) >= want (or <= want with ``at_most``); the last value."""
        deadline = time.monotonic() + timeout
        value = float("nan")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}")
            value = metric_sum(self.metrics(), name)
            if (value <= want) if at_most else (value >= want):
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{name} = {value}, wanted {'<=' if at_most else '>='} {want} within {timeout}s")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_problems(self, limit: int = 20) -> list[str]:
        """WARNING/ERROR lines and tracebacks from the gateway's log (for the report)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        hits = [ln for ln in text.splitlines() if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln]
        return hits[:limit]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
