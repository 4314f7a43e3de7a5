"""Backend credentials (gateway/security/credentials.py): hashed storage, constant-time check,
the first-start admin credential, the CLI, reload on change, and the TLS/listen config rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import cli
from gateway.config import Config, ConfigError, load_config
from gateway.security.credentials import (
    ADMIN_TOKEN_FILE,
    CREDENTIALS_FILE,
    CredentialError,
    CredentialSource,
    CredentialStore,
    add_credential,
    ensure_admin,
    hash_secret,
    make_credential,
    new_token,
    parse_entries,
    parse_file,
)


def test_a_token_verifies_against_its_hash_only_and_the_hash_is_salted() -> None:
    token, stored = new_token("svc")
    _, secret = token.split(".")
    assert secret not in stored and stored.startswith("hmac-sha256$")
    assert hash_secret(secret) != hash_secret(secret)  # a fresh salt each time
    store = CredentialStore([make_credential("svc", ["vehicles:read"], stored)])
    credential = store.verify(token)
    assert credential is not None and credential.id == "svc"
    assert store.verify(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    assert secret not in repr(credential) and stored.split("$")[2] not in repr(credential)


def test_ensure_admin_writes_a_0600_token_once_and_keeps_only_its_hash(tmp_path: Path) -> None:
    directory = tmp_path / "credentials"
    token_path = ensure_admin(directory)
    assert token_path == directory / ADMIN_TOKEN_FILE
    assert token_path.stat().st_mode & 0o777 == 0o600
    assert (directory / CREDENTIALS_FILE).stat().st_mode & 0o777 == 0o600
    token = token_path.read_text().strip()
    assert token.split(".")[1] not in (directory / CREDENTIALS_FILE).read_text()
    assert parse_file(directory / CREDENTIALS_FILE).verify(token) is not None
    assert ensure_admin(directory) is None  # second start: nothing new
    assert token_path.read_text().strip() == token


def test_add_refuses_unknown_scopes_bad_ids_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    add_credential(path, "billing", ["entitlements:write"])
    with pytest.raises(CredentialError, match="already exists"):
        add_credential(path, "billing", ["entitlements:read"])
    with pytest.raises(CredentialError, match="unknown scope"):
        add_credential(path, "other", ["everything"])
    with pytest.raises(CredentialError, match="credential id"):
        add_credential(path, "Bad Id", ["admin"])


def test_a_malformed_file_names_the_entry_but_never_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[credential]]\nid = "x"\nscopes = ["admin"]\nhash = "hmac-sha256$secretish"\n')
    with pytest.raises(CredentialError) as err:
        parse_file(path)
    assert "#1" in str(err.value) and "secretish" not in str(err.value)


def test_the_source_picks_up_a_new_credential_and_keeps_the_last_good_set_on_a_bad_edit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.toml"
    first = add_credential(path, "one", ["admin"])
    source = CredentialSource(path)
    second = add_credential(path, "two", ["vehicles:read"])
    store, error = source.current()
    assert error is None and store.verify(first) and store.verify(second)
    path.write_text("not toml [")
    store, error = source.current()
    assert error is not None and "keeping the last good set" in error
    assert store.verify(second) is not None


def test_environment_entries_hold_hashes_and_a_bad_one_is_a_config_error_without_the_hash() -> None:
    token, stored = new_token("ci")
    store = parse_entries(f"ci=vehicles:read,events:read={stored}")
    credential = store.verify(token)
    assert credential is not None and credential.scopes == {"vehicles:read", "events:read"}
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"GATEWAY_GRPC_CREDENTIALS": "ci=admin=hmac-sha256$topsecret"})
    assert "topsecret" not in str(err.value)
    config = load_config(None, env={"GATEWAY_GRPC_CREDENTIALS": f"ci=admin={stored}"})
    assert stored not in repr(config)


def test_grpc_beyond_loopback_needs_tls_and_cert_and_key_go_together(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    for f in (cert, key, ca):
        f.write_text("-\n")  # the configuration checks the files are readable, not their content
    with pytest.raises(ConfigError, match="not loopback"):
        load_config(None, env={}, grpc_listen="0.0.0.0:50051")
    with pytest.raises(ConfigError, match="not loopback"):
        load_config(None, env={}, grpc_listen="gateway.example.com:50051")
    with pytest.raises(ConfigError, match="set both"):
        load_config(None, env={}, grpc_tls_cert=str(cert))
    with pytest.raises(ConfigError, match="mutual TLS"):
        load_config(None, env={}, grpc_tls_client_ca=str(ca))
    for loopback in ("127.0.0.1:0", "[::1]:50051", "localhost:50051"):
        assert isinstance(load_config(None, env={}, grpc_listen=loopback), Config)
    tls = load_config(
        None, env={}, grpc_listen="0.0.0.0:50051", grpc_tls_cert=str(cert), grpc_tls_key=str(key)
    )
    assert tls.grpc_tls_cert == str(cert)


def test_cli_add_prints_the_token_once_and_list_shows_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert cli.main(["credentials", "add", "--id", "billing", "--scope", "entitlements:write",
                     "--data-dir", data]) == 0
    token = capsys.readouterr().out.strip()
    path = tmp_path / "data" / "credentials" / CREDENTIALS_FILE
    assert parse_file(path).verify(token) is not None
    assert cli.main(["credentials", "list", "--data-dir", data]) == 0
    listed = capsys.readouterr().out
    assert listed == "billing\tentitlements:write\n" and token.split(".")[1] not in listed
    assert cli.main(["credentials", "add", "--id", "billing", "--scope", "admin", "--data-dir", data]) == 2
