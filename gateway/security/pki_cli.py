"""`telematics-gateway pki ...`: the development CA's commands (README "Identity").

Prints paths only, never a key.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from gateway.config import Config
from gateway.security import pki


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "pki", help="development CA: car, gateway and broker certificates (data_dir/pki)"
    )
    commands = parser.add_subparsers(dest="pki_command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="TOML config file (also GATEWAY_CONFIG)")
        p.add_argument("--data-dir", help="the gateway's data directory (the CA is in its pki/)")
        return p

    common(commands.add_parser(
        "init",
        help="create the CA and the broker's and gateway's certificates where missing (as `run` does)",
    ))
    car = common(commands.add_parser("issue-car", help="a car's client certificate, subject CN = its VIN"))
    car.add_argument("vin", help="the car's VIN (17 characters)")
    car.add_argument("--out", help="directory for <VIN>.crt, <VIN>.key, ca.crt (default data_dir/pki/cars)")
    car.add_argument("--days", type=int, default=pki.LEAF_DAYS, help=f"validity (default {pki.LEAF_DAYS})")
    gateway = common(commands.add_parser(
        "issue-gateway",
        help="a client certificate for a gateway identity, subject CN = NAME (for a broker you run)",
    ))
    gateway.add_argument("name", help="the identity (A-Z, a-z, 0-9, '-', '_', '.'; not a VIN)")
    gateway.add_argument("--out", help="directory for <NAME>.crt, <NAME>.key (default data_dir/pki/gateways)")
    gateway.add_argument(
        "--days", type=int, default=pki.LEAF_DAYS, help=f"validity (default {pki.LEAF_DAYS})"
    )
    server = common(commands.add_parser(
        "issue-server",
        help="a server certificate for NAMES (a broker or gRPC listener you run, e.g. in docker-compose.yml)",
    ))
    server.add_argument("names", nargs="+", help="DNS names or IP addresses; the first is the subject CN")
    server.add_argument("--out", required=True, help="directory for server.crt, server.key and ca.crt")
    server.add_argument("--days", type=int, default=pki.LEAF_DAYS, help=f"validity (default {pki.LEAF_DAYS})")


def run(args: argparse.Namespace, config: Config) -> int:
    """`config`: loaded and checked by the CLI, like every subcommand's."""
    directory = config.pki_dir
    try:
        if args.pki_command == "init":
            files, created = pki.ensure_embedded_pki(
                directory, gateway_identity=config.mqtt_client_id, broker_hosts=[config.tls_connect_host]
            )
            for path in created:
                print(f"created {path}")
            print(f"CA: {files.ca_cert} (its key {files.ca_key} signs every certificate: keep it private)")
            return 0
        if args.pki_command == "issue-car":
            out = Path(args.out) if args.out else directory / "cars"
            cert, key = pki.issue_car(directory, args.vin, out, days=args.days)
            print(f"car certificate {cert} (CN {args.vin}), key {key}, CA {out / 'ca.crt'}")
            port = config.mqtt_tls_port or "<tls port>"
            print(
                f"connect: mosquitto_pub -V mqttv5 -h 127.0.0.1 -p {port} --cafile {out / 'ca.crt'} "
                f"--cert {cert} --key {key} -t v1/vehicles/{args.vin}/up -f <envelope>"
            )
            return 0
        if args.pki_command == "issue-server":
            out = Path(args.out)
            cert, key = out / "server.crt", out / "server.key"
            pki.issue_broker(directory, args.names, cert, key, days=args.days)
            shutil.copyfile(directory / "ca.crt", out / "ca.crt")
            print(f"server certificate {cert} ({', '.join(args.names)}), key {key}, CA {out / 'ca.crt'}")
            return 0
        out = Path(args.out) if args.out else directory / "gateways"
        cert, key = pki.issue_gateway(directory, args.name, out, days=args.days)
        print(f"gateway certificate {cert} (CN {args.name}), key {key}, CA {directory / 'ca.crt'}")
        return 0
    except (pki.PkiError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
