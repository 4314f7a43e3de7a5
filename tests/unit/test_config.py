import dataclasses
import os
import re
import typing
from pathlib import Path

import pytest

from gateway.broker.managed import BrokerCredentials
from gateway.config import CHECKS, Config, ConfigError, load_config

SECRET = "s3cret"


def test_defaults_use_a_managed_broker_on_18830() -> None:
    cfg = load_config(env={})
    assert cfg.broker_is_managed and cfg.mqtt_port == 18830
    assert cfg.grpc_listen == "127.0.0.1:50051" and cfg.http_listen == "127.0.0.1:8080"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text('mqtt_port = 19000\ndata_dir = "/tmp/x"\n')
    cfg = load_config(str(f), env={"GATEWAY_MQTT_PORT": "19001"})
    assert cfg.mqtt_port == 19001 and cfg.data_dir == "/tmp/x"


def test_external_broker_url_is_parsed_and_redacted() -> None:
    cfg = load_config(env={"GATEWAY_MQTT_URL": "mqtt://gw:secret@broker.example:1884"})
    address = cfg.broker()
    assert (address.host, address.port, address.username, address.password) == (
        "broker.example", 1884, "gw", "secret",
    )
    assert "secret" not in cfg.display_url
    assert "secret" not in address.display


def test_unknown_key_in_the_file_is_an_error_that_suggests_the_key(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text("mqtt_prot = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'mqtt_prot' \\(did you mean mqtt_port\\?\\)"):
        load_config(str(f), env={})


def test_bad_number_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_MQTT_PORT"):
        load_config(env={"GATEWAY_MQTT_PORT": "lots"})


def test_bad_listen_address_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_GRPC_LISTEN"):
        load_config(env={"GATEWAY_GRPC_LISTEN": "nowhere"})


def test_heartbeat_default_is_settable_and_must_be_positive() -> None:
    assert load_config(env={"GATEWAY_HEARTBEAT_DEFAULT_S": "45"}).heartbeat_default_s == 45.0
    with pytest.raises(ConfigError, match="GATEWAY_HEARTBEAT_DEFAULT_S: 0 s is out of range"):
        load_config(env={"GATEWAY_HEARTBEAT_DEFAULT_S": "0"})


def test_every_key_has_a_check_that_returns_its_default_unchanged() -> None:
    defaults = Config()
    assert set(CHECKS) == {f.name for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        value = getattr(defaults, f.name)
        assert CHECKS[f.name](value) == value
        assert isinstance(CHECKS[f.name](value), hints[f.name])


# -- mqtt_url: every error path with a password in the URL keeps the password out -------------

@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"ws://gw:{SECRET}@gw.example:8883", "scheme must be mqtt://"),
        (f"http://gw:{SECRET}@gw.example", "scheme must be mqtt://"),
        (f"gw:{SECRET}@gw.example:1883", "scheme must be mqtt://"),
        (f"mqtt://gw:{SECRET}@", "no host"),
        (f"mqtt://gw:{SECRET}@gw.example:99999", "bad host or port"),
        (f"mqtt://gw:{SECRET}@gw.example:port", "bad host or port"),
        (f"mqtt://gw:{SECRET}@gw.example:0", "bad port"),
        (f"mqtt://gw:{SECRET}@[::1", "bad host or port"),
        ("mqtt://gw:s3/cret@gw.example", "bad host or port"),
        (f"mqtt://gw:{SECRET}@gw.example/x?y=1", "unexpected path"),
    ],
)
@pytest.mark.parametrize("source", ["env", "file", "flag"])
def test_bad_mqtt_url_error_names_the_problem_and_withholds_the_password(
    tmp_path: Path, url: str, reason: str, source: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        if source == "env":
            load_config(env={"GATEWAY_MQTT_URL": url})
        elif source == "file":
            f = tmp_path / "g.toml"
            f.write_text(f"mqtt_url = {url!r}\n".replace("'", '"'))
            load_config(str(f), env={})
        else:
            load_config(env={}, mqtt_url=url)
    message = str(caught.value)
    assert reason in message and "gw:***@" in message
    assert "cret" not in message and "cret" not in repr(caught.value.__cause__)
    assert "\n" not in message


def test_a_wrongly_typed_mqtt_url_in_the_file_does_not_echo_it(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text('mqtt_url = ["mqtt://gw:s3cret@host"]\n')
    with pytest.raises(ConfigError, match="expected a string, got list") as caught:
        load_config(str(f), env={})
    assert SECRET not in str(caught.value)


def test_a_toml_syntax_error_does_not_echo_the_line(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text('mqtt_url = "mqtt://gw:s3cret@host\n')  # unterminated string
    with pytest.raises(ConfigError) as caught:
        load_config(str(f), env={})
    assert SECRET not in str(caught.value) and str(f) in str(caught.value)


# -- every key's value is checked ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("GATEWAY_LOG_LEVEL", "verbose", "is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("GATEWAY_MQTT_PORT", "0", "out of range 1..65,535"),
        ("GATEWAY_MQTT_PORT", "70000", "out of range"),
        ("GATEWAY_MQTT_PORT", "1.5", "is not an integer"),
        ("GATEWAY_MQTT_HOST", "not a host", "is not a host name or IP address"),
        ("GATEWAY_MQTT_HOST", "", "is not a host name"),
        ("GATEWAY_MQTT_CLIENT_ID", "", "must not be empty"),
        ("GATEWAY_MQTT_CLIENT_ID", "two words", "without spaces"),
        ("GATEWAY_MQTT_SHARED_GROUP", "a/b", "must not contain"),
        ("GATEWAY_MQTT_SHARED_GROUP", "g+", "must not contain"),
        ("GATEWAY_MOSQUITTO_BIN", "/nonexistent/mosquitto", "is not an executable file"),
        ("GATEWAY_DATA_DIR", "", "must not be empty"),
        ("GATEWAY_GRPC_LISTEN", "127.0.0.1", "expected host:port"),
        ("GATEWAY_GRPC_LISTEN", "127.0.0.1:99999", "out of range 0..65535"),
        ("GATEWAY_GRPC_LISTEN", "::1:50051", "IPv6 goes in brackets"),
        ("GATEWAY_HTTP_LISTEN", "bad host:8080", "bad host"),
        ("GATEWAY_HTTP_LISTEN", "127.0.0.1:-1", "expected host:port"),
        ("GATEWAY_REFERENCE_DIR", " ", "must not be empty"),
        ("GATEWAY_MAX_PAYLOAD_BYTES", "100", "out of range 256.."),
        ("GATEWAY_INGRESS_QUEUE_MESSAGES", "0", "out of range 1.."),
        ("GATEWAY_EVENT_RETENTION", "0", "out of range 1.."),
        ("GATEWAY_TELEMETRY_SUBSCRIBER_QUEUE", "-3", "out of range 1.."),
        ("GATEWAY_SHUTDOWN_GRACE_S", "-1", "out of range"),
        ("GATEWAY_SHUTDOWN_GRACE_S", "nan", "not a finite number"),
        ("GATEWAY_FOD_IDLE_S", "inf", "not a finite number"),
        ("GATEWAY_FOD_IDLE_S", "ten", "is not a number"),
        ("GATEWAY_ENTITLEMENT_ACK_TIMEOUT_S", "0", "out of range (0,"),
    ],
)
def test_a_bad_value_in_the_environment_is_one_line_naming_the_variable(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and expected in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("mqtt_port = true", "expected an integer, got a boolean"),
        ("mqtt_port = 1.5", "expected an integer, got float"),
        ("fod_idle_s = \"soon\"", "'soon' is not a number"),
        ("log_level = 10", "expected a string, got int"),
        ("grpc_listen = 50051", "expected a string, got int"),
    ],
)
def test_a_wrongly_typed_value_in_the_file_names_the_file_and_key(
    tmp_path: Path, line: str, expected: str
) -> None:
    f = tmp_path / "g.toml"
    f.write_text(line + "\n")
    key = line.split(" ")[0]
    with pytest.raises(ConfigError, match=re.escape(f"config file {f}: {key}: {expected}")):
        load_config(str(f), env={})


def test_a_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--http-listen: expected host:port"):
        load_config(env={}, http_listen="8080")


def test_values_are_normalised_where_forms_differ() -> None:
    cfg = load_config(env={
        "GATEWAY_LOG_LEVEL": "debug", "GATEWAY_FOD_IDLE_S": "2", "GATEWAY_GRPC_LISTEN": "[::1]:0",
        "GATEWAY_HTTP_LISTEN": "localhost:0", "GATEWAY_MQTT_PORT": " 19001 ",
    })
    assert (cfg.log_level, cfg.fod_idle_s, cfg.mqtt_port) == ("DEBUG", 2.0, 19001)
    assert load_config(env={"GATEWAY_LOG_LEVEL": "warn"}).log_level == "WARNING"


def test_an_executable_mosquitto_bin_is_accepted(tmp_path: Path) -> None:
    binary = tmp_path / "mosquitto"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert load_config(env={"GATEWAY_MOSQUITTO_BIN": str(binary)}).mosquitto_bin == str(binary)
    assert os.access(binary, os.X_OK)


# -- unknown GATEWAY_* variables -------------------------------------------------------------------

def test_unknown_gateway_variables_warn_once_each_naming_the_likely_key_and_not_the_value() -> None:
    warnings: list[str] = []
    cfg = load_config(
        env={"GATEWAY_MQTT_PROT": SECRET, "GATEWAY_LOGLEVEL": "DEBUG", "GATEWAY_ZZZ": "1",
             "GATEWAY_CONFIG": "", "OTHER_VAR": "1", "GATEWAY_MQTT_PORT": "19001"},
        warn=warnings.append,
    )
    assert cfg.mqtt_port == 19001
    assert warnings == [
        "unknown environment variable GATEWAY_LOGLEVEL ignored (did you mean GATEWAY_LOG_LEVEL?)",
        "unknown environment variable GATEWAY_MQTT_PROT ignored (did you mean GATEWAY_MQTT_PORT?)",
        "unknown environment variable GATEWAY_ZZZ ignored",
    ]


def test_unknown_variables_are_reported_before_a_bad_value_stops_the_start() -> None:
    warnings: list[str] = []
    with pytest.raises(ConfigError, match="GATEWAY_LOG_LEVEL"):
        load_config(env={"GATEWAY_LOG_LEVEL": "verbose", "GATEWAY_MQTT_PROT": "1"}, warn=warnings.append)
    assert len(warnings) == 1 and "GATEWAY_MQTT_PROT" in warnings[0]


def test_no_repr_of_a_config_or_broker_address_or_credentials_holds_the_password() -> None:
    cfg = load_config(env={"GATEWAY_MQTT_URL": f"mqtt://gw:{SECRET}@broker.example"})
    assert cfg.broker().password == SECRET
    for shown in (repr(cfg), str(cfg), repr(cfg.broker()), repr(BrokerCredentials("gw", SECRET))):
        assert SECRET not in shown


def test_entitlement_event_retention_is_its_own_setting() -> None:
    cfg = load_config(env={"GATEWAY_ENTITLEMENT_EVENT_RETENTION": "500"})
    assert (cfg.entitlement_event_retention, cfg.event_retention) == (500, 1_000_000)


@pytest.mark.parametrize("key", ["event_retention", "entitlement_event_retention"])
def test_a_retention_below_one_event_is_refused(key: str) -> None:
    # With nothing kept a pruned cursor could not be told from a new one (OUT_OF_RANGE).
    with pytest.raises(ConfigError, match=f"GATEWAY_{key.upper()}: 0 is out of range 1"):
        load_config(env={f"GATEWAY_{key.upper()}": "0"})


def test_a_broker_url_that_lost_its_host_does_not_show_its_password() -> None:
    # `mqtt://user:secret` (the `@host` forgotten) parses as host `user`, port `secret`.
    with pytest.raises(ConfigError) as caught:
        load_config(env={"GATEWAY_MQTT_URL": f"mqtt://gw:{SECRET}"})
    assert SECRET not in str(caught.value) and "mqtt://***" in str(caught.value)


@pytest.mark.parametrize(
    "name", ["GATEWAY_GRPC_TLS_CERT", "GATEWAY_GRPC_TLS_KEY", "GATEWAY_GRPC_TLS_CLIENT_CA"]
)
def test_a_missing_grpc_tls_file_is_a_config_error_before_anything_starts(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: '/nonexistent/x.pem' is not a readable file"):
        load_config(env={name: "/nonexistent/x.pem"})
