"""Command line: `telematics-gateway run` (also `python -m gateway run`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import uvloop

from gateway import logs
from gateway.app import Gateway, GatewayStartError
from gateway.broker.managed import BrokerStartError
from gateway.config import ConfigError, load_config
from gateway.entitlements.ledger import LedgerError
from gateway.security import credentials_cli, pki_cli
from gateway.store.base import StoreError
from gateway.version import gateway_version

log = logging.getLogger("gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telematics-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {gateway_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway (managed Mosquitto + SQLite by default)")
    run.add_argument("--config", help="TOML config file (also GATEWAY_CONFIG)")
    run.add_argument("--mqtt-url", help="external broker, e.g. mqtt://user:pass@host:1883")
    run.add_argument("--data-dir", help="directory for the SQLite store and the managed broker")
    run.add_argument("--store-url", help="PostgreSQL instead of SQLite: postgresql://user@host:5432/db")
    run.add_argument("--grpc-listen", help="host:port for gRPC (default 127.0.0.1:50051)")
    run.add_argument("--http-listen", help="host:port for /metrics, /healthz, /readyz")
    pki_cli.add_parser(sub)
    credentials_cli.add_parser(sub)
    return parser


async def _run(gateway: Gateway) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
    except (GatewayStartError, BrokerStartError, StoreError, LedgerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        await gateway.stop()
        return 2
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_reference)
    failed = asyncio.create_task(gateway.wait(), name="gateway.watch-components")
    stopped = asyncio.create_task(stop.wait(), name="gateway.wait-signal")
    await asyncio.wait([failed, stopped], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if failed.done() and not failed.cancelled() and failed.exception() is not None:
        log.error("a component failed: %s", failed.exception())
        code = 1
    failed.cancel()
    stopped.cancel()
    log.info("shutting down")
    await gateway.stop()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags = {"data_dir": args.data_dir}
    if args.command == "run":
        flags.update(
            mqtt_url=args.mqtt_url, store_url=args.store_url, grpc_listen=args.grpc_listen,
            http_listen=args.http_listen,
        )
    try:
        config = load_config(
            args.config, warn=lambda line: print(f"warning: {line}", file=sys.stderr), **flags
        )
    except ConfigError as exc:
        # One line, exit 2; the message never holds a secret (see gateway/redact.py).
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "credentials":
        return credentials_cli.run(args, config)
    if args.command == "pki":
        return pki_cli.run(args, config)
    # Both checked by load_config: a level name, "text" or "json" (gateway/logs.py).
    logs.configure(config.log_level, config.log_format)
    # uvloop: ~1.2-1.5x on the MQTT path on this machine kind (docs/mqtt-client-choice.md).
    return uvloop.run(_run(Gateway(config)))


if __name__ == "__main__":
    sys.exit(main())
