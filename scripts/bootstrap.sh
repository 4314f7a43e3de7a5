#!/usr/bin/env bash
# Everything `make run` and `make test` need on a fresh Debian/Ubuntu machine: Mosquitto from
# the system package manager (when missing) and a virtualenv with the pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

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

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
