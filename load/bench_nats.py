"""A NATS JetStream server of our own: ``nats-server -js`` on a free port of 127.0.0.1 with its
storage in a directory of the caller's (never a server already running, such as one on 4222).
The benchmark's ``gateway-js`` system starts one per run; the telemetry sink tests use the same
class (tests/nats_support.py), stopping and starting it again on the same port and storage."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from load.harness import free_port

START_TIMEOUT_S = 20.0


def nats_server_binary() -> str | None:
    """nats-server on PATH or where the Debian package puts it (sbin is not on every PATH)."""
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")


class NatsServer:
    """One nats-server process; `stop` and `start` again keep its port and its stored streams."""

    def __init__(self, store_dir: Path) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed (Debian package; make setup installs it)")
        self.binary = binary
        self.port = free_port()
        self.store_dir = store_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)  # paces the wait for the listener of a starting process
        self.stop()
        raise RuntimeError("nats-server did not listen in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
