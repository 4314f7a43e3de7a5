from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config


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


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text("mqtt_prot = 1\n")
    with pytest.raises(ConfigError, match="mqtt_prot"):
        load_config(str(f), env={})


def test_bad_number_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_MQTT_PORT"):
        load_config(env={"GATEWAY_MQTT_PORT": "lots"})


def test_bad_listen_address_is_an_error() -> None:
    with pytest.raises(ConfigError, match="grpc_listen"):
        load_config(env={"GATEWAY_GRPC_LISTEN": "nowhere"})


def test_entitlement_event_retention_is_its_own_setting() -> None:
    cfg = load_config(env={"GATEWAY_ENTITLEMENT_EVENT_RETENTION": "500"})
    assert (cfg.entitlement_event_retention, cfg.event_retention) == (500, 1_000_000)


@pytest.mark.parametrize("key", ["event_retention", "entitlement_event_retention"])
def test_a_retention_below_one_event_is_refused(key: str) -> None:
    # With nothing kept a pruned cursor could not be told from a new one (OUT_OF_RANGE).
    with pytest.raises(ConfigError, match=key):
        load_config(env={f"GATEWAY_{key.upper()}": "0"})
