"""A real nats-server with JetStream for the telemetry sink tests (load/bench_nats.py, the
benchmark's own): on a free port with its own storage directory, never the machine's 4222.
Skips with a visible reason where nats-server is not installed (scripts/bootstrap.sh installs
it with apt-get where it can)."""

from __future__ import annotations

from pathlib import Path

import pytest

from load.bench_nats import NatsServer, nats_server_binary

__all__ = ["NatsServer", "make_nats_server"]


def make_nats_server(store_dir: Path) -> NatsServer:
    """A server (not started yet), or a skip saying why there is none."""
    if nats_server_binary() is None:
        pytest.skip("nats-server is not installed (Debian package nats-server; make test installs it)")
    return NatsServer(store_dir)
