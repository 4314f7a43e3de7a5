#!/bin/sh
# First start of docker-compose.yml: development secrets in the `secrets` volume (/secrets),
# made once and kept (README "Many gateways"). Runs in the gateway image as root, then hands the
# files to the gateway's user (10001). Prints paths and the admin token's location, never a
# secret. SECRETS may point elsewhere (the tests run this script against a temporary folder).
set -eu
S="${SECRETS:-/secrets}"
OWNER="${SECRETS_OWNER:-10001:10001}"
if [ -f "$S/.complete" ]; then
  echo "secrets already in $S"
  exit 0
fi
umask 077
mkdir -p "$S/pki" "$S/broker" "$S/grpc" "$S/credentials"
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

# The development CA (its key signs every certificate: keep the volume private), the broker's
# TLS certificate for the names cars and gateways use, and the gRPC listeners' certificate.
telematics-gateway pki init --data-dir "$S"
telematics-gateway pki issue-server broker localhost 127.0.0.1 --data-dir "$S" --out "$S/broker"
telematics-gateway pki issue-server gateway-1 gateway-2 localhost 127.0.0.1 --data-dir "$S" --out "$S/grpc"

# PostgreSQL's password (the postgres image reads POSTGRES_PASSWORD_FILE at its first start).
random > "$S/postgres_password"

# The gateways' login on the broker's internal listener; the broker keeps only a hash.
random > "$S/broker_password"
: > "$S/broker/passwd"
mosquitto_passwd -b "$S/broker/passwd" gateway "$(cat "$S/broker_password")"

# One backend credential file for both gateways (stored hashed), so a token works on either.
# (The token is the command's one line of standard output.)
telematics-gateway credentials add --id admin --scope admin --file "$S/credentials/credentials.toml" \
  > "$S/credentials/admin.token"
test -s "$S/credentials/admin.token"

chown -R "$OWNER" "$S" 2>/dev/null || true
touch "$S/.complete"
echo "secrets in $S; the admin token for gRPC is $S/credentials/admin.token (docker compose cp init:$S/credentials/admin.token .)"
