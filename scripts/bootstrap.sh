#!/usr/bin/env bash
# What `make run` (bootstrap.sh run) or `make test` (bootstrap.sh dev) needs on a fresh
# Debian/Ubuntu machine: Mosquitto from the system package manager (when missing) and a
# virtualenv with the pinned dependencies.
#   run: the runtime dependencies only (the generated code gateway/_gen is committed, so
#        running needs no grpcio-tools), so the first `make run` answers soon;
#   dev: the runtime ones plus the [dev] extras (test, lint, codegen and benchmark tools).
# Each level has a stamp holding the hash of pyproject.toml: a changed pyproject.toml (or a
# level never installed, e.g. `make test` after `make run`) installs again; otherwise nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

level="${1:-dev}"
case "$level" in
  run) extras="" ;;
  dev) extras="[dev]" ;;
  *) echo "usage: $0 [run|dev]" >&2; exit 2 ;;
esac

need_python_minor=11
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import sys; sys.exit(0 if sys.version_info >= (3, $need_python_minor) else 1)" 2>/dev/null; then
  echo "error: Python >= 3.$need_python_minor is required (found: $("$PYTHON" --version 2>&1 || echo none))." >&2
  exit 1
fi

have() {  # $1 on PATH or in the Debian package's directories (sbin is not on every PATH)
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}
if ! have mosquitto || ! have mosquitto_passwd; then
  echo "Mosquitto is missing; installing it with apt-get ..."
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "error: installing mosquitto needs root: run 'apt-get install mosquitto mosquitto-clients' as root." >&2
        exit 1
      fi
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
  else
    echo "error: mosquitto is not installed and apt-get is not available; install Mosquitto >= 2.0 (broker and clients) with your package manager, or run the gateway against an external broker (GATEWAY_MQTT_URL)." >&2
    exit 1
  fi
fi
if ! have mosquitto_sub; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients >/dev/null || true
  fi
fi

wanted="$( (sha256sum pyproject.toml 2>/dev/null || shasum -a 256 pyproject.toml) | cut -d' ' -f1)"
stamp_of() { cat ".venv/.installed-$1" 2>/dev/null || true; }
# dev includes run: a current dev stamp satisfies `run` too.
if [ "$(stamp_of "$level")" != "$wanted" ] && { [ "$level" = dev ] || [ "$(stamp_of dev)" != "$wanted" ]; }; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  echo "Installing the ${level} dependencies into .venv (first time: see README, 'The two commands') ..."
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
  echo "$wanted" > ".venv/.installed-$level"
fi
