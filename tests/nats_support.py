"""A real nats-server with JetStream for the telemetry sink tests, on a free port with its own
storage directory (never the machine's 4222). Skips with a visible reason where nats-server is
not installed (scripts/bootstrap.sh installs it with apt-get where it can)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import free_port

START_TIMEOUT_S = 20.0


def nats_server_bin() -> str:
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.skip("nats-server is not installed (Debian package nats-server; make test installs it)")
    return found


class NatsServer:
    """One nats-server process; `stop` and `start` again keep its port and its stored streams."""

    def __init__(self, store_dir: Path) -> None:
        self.binary = nats_server_bin()
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
