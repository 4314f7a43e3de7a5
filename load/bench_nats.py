"""The benchmark's NATS JetStream server for the ``gateway-js`` system: ``nats-server -js`` on a
free port with its storage in the run's work directory (never a server already running)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from load.harness import free_port


class BenchNats:
    def __init__(self, store_dir: Path) -> None:
        binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
        if binary is None:
            raise RuntimeError("gateway-js needs nats-server (Debian package; make setup installs it)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "-js", "-sd", str(store_dir), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("nats-server did not start") from None
                time.sleep(0.05)  # paces the wait for a starting process's listener

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
