"""`telematics-gateway credentials add|list`: manage backend credentials (README: Backend
authentication). `add` prints the new token once, on stdout, and stores only its hash."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.config import Config
from gateway.security import credentials as creds


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("credentials", help="create or list backend credentials for gRPC")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create a credential; prints its token once")
    add.add_argument("--id", required=True, help="credential id (a-z, 0-9, '_', '-'); shown in audit lines")
    add.add_argument("--scope", action="append", required=True, choices=creds.SCOPES,
                     help="a scope the credential holds (repeat for several); admin implies all")
    listing = actions.add_parser("list", help="list credential ids and scopes (never secrets)")
    for p in (add, listing):
        p.add_argument("--config", help="TOML config file (also GATEWAY_CONFIG)")
        p.add_argument("--data-dir", help="data directory (file: data_dir/credentials/credentials.toml)")
        p.add_argument("--file", help="credentials file (default: grpc_credentials_file or under data_dir)")


def credentials_file(config: Config, override: str | None) -> Path:
    if override:
        return Path(override)
    if config.grpc_credentials_file:
        return Path(config.grpc_credentials_file)
    return Path(config.data_dir) / creds.CREDENTIALS_DIR / creds.CREDENTIALS_FILE


def run(args: argparse.Namespace, config: Config) -> int:
    path = credentials_file(config, args.file)
    try:
        if args.action == "add":
            token = creds.add_credential(path, args.id, args.scope)
            print(token)
            print(f"credential {args.id!r} ({', '.join(sorted(set(args.scope)))}) added to {path}; the token"
                  " above is shown only this once (a running gateway picks the file up on the next call)",
                  file=sys.stderr)
            return 0
        for credential in creds.parse_file(path):
            print(f"{credential.id}\t{','.join(sorted(credential.scopes))}")
        return 0
    except creds.CredentialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
