#!/usr/bin/env bash
# What `make run` (bootstrap.sh run) or `make test` (bootstrap.sh dev) needs on a fresh
# Debian/Ubuntu machine: Mosquitto from the system package manager (when missing) and a
# virtualenv with the pinned dependencies.
#   run: the runtime dependencies only (the generated code gateway/_gen is committed, so
#        running needs no grpcio-tools), so the first `make run` answers soon;
#   dev: the runtime ones plus the [dev] extras (test, lint, codegen and benchmark tools), and
#        a PostgreSQL for the store tests (tests/pg_support.py) when none listens on
#        127.0.0.1:5432 and GATEWAY_TEST_PG_DSN names none: the `postgresql` package, its
#        cluster started, and a superuser role for the current user (reached on the Unix socket);
#        and buf (the contract's lint and breaking-change check, README "Contract checks") from
#        npm into .tools/ when npm is there;
#        and Prometheus (the Debian package) for the scrape test, when missing.
#        And nats-server (Debian package) for the JetStream sink tests, when missing.
#        And Debian's `ejabberd` (its mod_mqtt is the end-to-end tests' second broker), when missing.
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

pg_listening() {  # something accepts connections on 127.0.0.1:5432
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
}
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}
pg_cluster_version() {  # the newest installed cluster's version (empty: none)
  pg_lsclusters -h 2>/dev/null | awk '{print $1}' | sort -V | tail -n 1
}
ensure_test_postgres() {
  if [ -n "${GATEWAY_TEST_PG_DSN:-}" ] || pg_listening; then return 0; fi
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "note: no PostgreSQL on 127.0.0.1:5432 and no root to install one: its tests will be skipped." >&2
    return 0
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "note: no PostgreSQL and no apt-get: the PostgreSQL tests will be skipped (or set GATEWAY_TEST_PG_DSN)." >&2
      return 0
    fi
    echo "PostgreSQL is missing (for the store tests); installing it with apt-get ..."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local ver
  ver="$(pg_cluster_version)"
  if [ -z "$ver" ]; then
    ver="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    as_root pg_createcluster "$ver" main >/dev/null
  fi
  echo "Starting the PostgreSQL $ver cluster for the store tests ..."
  as_root pg_ctlcluster "$ver" main start 2>/dev/null \
    || as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
    || { pg_lsclusters -h | grep -q online; }
  # The tests connect on the Unix socket as the current user (peer authentication): that role.
  local user
  user="$(id -un)"
  if ! as_root runuser -u postgres -- psql -qAt -c "SELECT 1 FROM pg_roles WHERE rolname = '$user'" | grep -q 1; then
    as_root runuser -u postgres -- createuser --superuser "$user"
  fi
}
# buf from npm (@bufbuild/buf ships the Go binary), project-local so that nothing is installed
# globally; tests/unit/test_proto_contract.py runs it. Without npm: a note, and those tests skip
# saying so.
BUF_VERSION=1.75.0
ensure_buf() {
  local buf=.tools/node_modules/.bin/buf
  if [ -x "$buf" ] && [ "$("$buf" --version 2>/dev/null)" = "$BUF_VERSION" ]; then return 0; fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "note: npm is missing: buf (contract lint and breaking-change check) is not installed; its tests will be skipped." >&2
    return 0
  fi
  echo "Installing buf $BUF_VERSION into .tools/ (npm) ..."
  npm install --prefix .tools --no-audit --no-fund --silent "@bufbuild/buf@$BUF_VERSION" >/dev/null
}
# The Prometheus binary for tests/integration/test_prometheus_scrape.py (each test runs its own
# on a free port and a temporary storage path), and its promtool (same package) for the alert
# rules' unit tests (tests/integration/test_alert_rules.py). Debian's package also starts a system service
# on :9090, which the tests do not use: stopped and disabled again right after installing it.
ensure_test_prometheus() {
  if have prometheus; then return 0; fi
  if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; }; then
    echo "note: prometheus is missing and cannot be installed here (no apt-get or no root): its scrape and alert rule tests will be skipped." >&2
    return 0
  fi
  echo "Prometheus is missing (for the scrape test); installing it with apt-get ..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}
ensure_test_nats() {  # nats-server for the JetStream sink's tests (they start their own on a free port)
  if have nats-server; then return 0; fi
  if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; }; then
    echo "note: nats-server is missing and cannot be installed here (apt-get as root): the JetStream sink's tests will be skipped." >&2
    return 0
  fi
  echo "nats-server is missing (for the JetStream sink's tests); installing it with apt-get ..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null \
    || echo "note: apt-get could not install nats-server: the JetStream sink's tests will be skipped." >&2
}
ejabberd_installed() {  # the Erlang application load/ejabberd_node.py starts (not the service)
  compgen -G "/usr/lib/*/ejabberd-*/ebin/ejabberd.app" >/dev/null
}
ensure_test_ejabberd() {
  # The second MQTT 5 broker the end-to-end tests run against (load/ejabberd_node.py starts
  # a private node of it; the package's own service is not used).
  if ejabberd_installed; then return 0; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: ejabberd is not installed and there is no apt-get: the ejabberd tests will be skipped." >&2
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "note: ejabberd is not installed and there is no root to install it: the ejabberd tests will be skipped." >&2
    return 0
  fi
  echo "ejabberd is missing (the second broker of the end-to-end tests); installing it with apt-get ..."
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ejabberd >/dev/null \
    || { echo "note: installing ejabberd failed: the ejabberd tests will be skipped." >&2; return 0; }
  # The package starts its own service (XMPP ports, its own node): not used, stopped again.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now ejabberd >/dev/null 2>&1 || true
  fi
}
if [ "$level" = dev ]; then
  ensure_test_postgres
  ensure_buf
  ensure_test_prometheus
  ensure_test_nats
  ensure_test_ejabberd
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
