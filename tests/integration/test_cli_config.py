"""`telematics-gateway run` with bad configuration, as a real process: exit code and stderr only.

A configuration error is one line on stderr, exit code 2, no traceback, and never a secret.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support import free_port

from gateway.broker.managed import ManagedBroker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-Pa55"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        GATEWAY_DATA_DIR=str(tmp_path / "data"),
        GATEWAY_MQTT_PORT=str(free_port()),
        GATEWAY_MQTT_TLS_PORT=str(free_port()),
        GATEWAY_GRPC_LISTEN="127.0.0.1:0",
        GATEWAY_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def run_gateway(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", *args],
        cwd=ROOT, env=_env(tmp_path, **env), capture_output=True, text=True, timeout=60,
    )


def assert_one_clean_error_line(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in lines[0], done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"ws://gw:{SECRET}@gw.example:8883", "scheme must be mqtt://"),
        (f"mqtt://gw:{SECRET}@gw.example:99999", "bad host or port"),
        (f"mqtt://gw:{SECRET}@", "no host"),
    ],
)
@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_a_bad_broker_url_exits_2_with_one_line_that_withholds_the_password(
    tmp_path: Path, url: str, reason: str, source: str
) -> None:
    if source == "flag":
        done = run_gateway(tmp_path, "--mqtt-url", url)
    elif source == "env":
        done = run_gateway(tmp_path, GATEWAY_MQTT_URL=url)
    else:
        config = tmp_path / "gateway.toml"
        config.write_text(f'mqtt_url = "{url}"\n')
        done = run_gateway(tmp_path, "--config", str(config))
    where = {"flag": "--mqtt-url: ", "env": "GATEWAY_MQTT_URL: ", "file": "gateway.toml: mqtt_url: "}
    assert_one_clean_error_line(done, where[source], reason, "gw:***@")
    assert SECRET not in done.stderr + done.stdout


def test_unreachable_broker_with_a_password_is_named_without_the_password(tmp_path: Path) -> None:
    port = free_port()
    done = run_gateway(tmp_path, "--mqtt-url", f"mqtt://gw:{SECRET}@127.0.0.1:{port}",
                       GATEWAY_LOG_LEVEL="DEBUG")
    assert done.returncode == 2, done.stderr
    assert f"mqtt://gw:***@127.0.0.1:{port}" in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_a_running_gateway_never_logs_its_broker_password_even_at_debug(
    tmp_path: Path, broker: ManagedBroker
) -> None:
    creds = broker.credentials
    assert creds is not None
    http_port = free_port()
    env = _env(tmp_path, GATEWAY_LOG_LEVEL="DEBUG", GATEWAY_HTTP_LISTEN=f"127.0.0.1:{http_port}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--mqtt-url",
         f"mqtt://{creds.username}:{creds.password}@127.0.0.1:{broker.port}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        ready = False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2) as r:
                    ready = r.status == 200
                    metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics").read()
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.05)
        assert ready, "gateway not ready"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"mqtt://{creds.username}:***@127.0.0.1:{broker.port}" in out
    assert creds.password not in out
    assert creds.password.encode() not in metrics


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GATEWAY_LOG_LEVEL": "verbose"}, "GATEWAY_LOG_LEVEL: 'verbose' is not one of DEBUG"),
        ({"GATEWAY_MQTT_PORT": "lots"}, "GATEWAY_MQTT_PORT: 'lots' is not an integer"),
        ({"GATEWAY_GRPC_LISTEN": "127.0.0.1:70000"}, "GATEWAY_GRPC_LISTEN: "),
        ({"GATEWAY_HTTP_LISTEN": "nowhere"}, "GATEWAY_HTTP_LISTEN: expected host:port"),
        ({"GATEWAY_SHUTDOWN_GRACE_S": "-1"}, "GATEWAY_SHUTDOWN_GRACE_S: "),
        ({"GATEWAY_MAX_PAYLOAD_BYTES": "1"}, "GATEWAY_MAX_PAYLOAD_BYTES: "),
    ],
)
def test_a_bad_value_exits_2_with_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    assert_one_clean_error_line(run_gateway(tmp_path, **env), expected)


def test_an_unknown_key_in_the_config_file_exits_2_suggesting_the_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("log_levl = \"DEBUG\"\n")
    done = run_gateway(tmp_path, "--config", str(config))
    assert_one_clean_error_line(done, "unknown key 'log_levl' (did you mean log_level?)")


def test_a_misspelt_variable_warns_with_the_likely_key_and_does_not_echo_its_value(tmp_path: Path) -> None:
    # A bad log level after the warning stops the start quickly; the warning comes first.
    done = run_gateway(tmp_path, GATEWAY_MQTT_PASWORD=SECRET, GATEWAY_LOG_LEVL="DEBUG",
                       GATEWAY_LOG_LEVEL="loud")
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: unknown environment variable GATEWAY_LOG_LEVL ignored (did you mean GATEWAY_LOG_LEVEL?)",
        "warning: unknown environment variable GATEWAY_MQTT_PASWORD ignored",
    ]
    assert_one_clean_error_line(done, "GATEWAY_LOG_LEVEL")
    assert SECRET not in done.stderr


def test_a_failing_mosquitto_passwd_exits_2_without_the_generated_password(tmp_path: Path) -> None:
    # The managed broker's password goes to mosquitto_passwd on its command line; a failure
    # must not show that command line. A stand-in tool records its argv and fails.
    argv_file = tmp_path / "argv"
    (tmp_path / "sbin").mkdir()
    (tmp_path / "bin").mkdir()
    mosquitto = tmp_path / "sbin" / "mosquitto"
    passwd = tmp_path / "bin" / "mosquitto_passwd"
    mosquitto.write_text("#!/bin/sh\nexit 1\n")
    passwd.write_text(f'#!/bin/sh\necho "$@" > {argv_file}\necho "cannot write $4" >&2\nexit 3\n')
    for tool in (mosquitto, passwd):
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    path = f"{passwd.parent}{os.pathsep}{os.environ.get('PATH', '')}"  # found first on PATH
    done = run_gateway(tmp_path, GATEWAY_MOSQUITTO_BIN=str(mosquitto), PATH=path)
    password = argv_file.read_text().split()[-1]
    # Not a configuration error: the start had begun, so log lines come before the error.
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "mosquitto_passwd failed with exit code 3: cannot write ***" in errors[0]
    assert password not in done.stderr + done.stdout
