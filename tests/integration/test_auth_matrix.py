"""Acceptance: every RPC of every gateway service x {no credential, a credential without the
method's scope, the right scope}, over the real gRPC server; health and reflection open; gRPC
over TLS and mutual TLS with certificates made here (README: Backend authentication).

The RPC list comes from the service descriptors, so a new RPC is in the matrix the day it is
added (and refused for everyone until it has a row in gateway/api/auth.py METHOD_SCOPES)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import free_port, gateway_services

from gateway._gen.telematics.v1 import entitlements_pb2, vehicles_pb2
from gateway.api.auth import AUDITED, METHOD_SCOPES, method_name
from gateway.api.client import aio_channel, bearer_metadata
from gateway.app import Gateway
from gateway.config import load_config
from gateway.security.credentials import ADMIN, SCOPES, new_token

SERVICES = gateway_services()
METHODS = [m for s in SERVICES for m in s.methods]
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
OVER_LIMIT = "X" * 300  # longer than every string field's limit (gateway/api/limits.py)


def full_name(m: MethodDescriptor) -> str:
    return method_name(m.containing_service.full_name, m.name)


# One credential holding exactly the needed scope, and one holding every scope but it (and
# but admin): the second proves that the scope the table names is the one that matters.
NEEDED = sorted(set(METHOD_SCOPES.values()))
RIGHT = {scope: (f"only-{scope.replace(':', '-')}", frozenset({scope})) for scope in NEEDED}
WRONG = {
    scope: (f"all-but-{scope.replace(':', '-')}", frozenset(SCOPES) - {scope, ADMIN}) for scope in NEEDED
}
CREDENTIALS = dict([*RIGHT.values(), *WRONG.values()])
ISSUED = {cid: new_token(cid) for cid in CREDENTIALS}


def scope_of(m: MethodDescriptor) -> str:
    return METHOD_SCOPES[full_name(m)]


def token(credential: tuple[str, frozenset[str]]) -> str:
    return ISSUED[credential[0]][0]


def env_credentials() -> str:
    return ";".join(f"{cid}={','.join(sorted(s))}={ISSUED[cid][1]}" for cid, s in CREDENTIALS.items())


def over_limit_request(m: MethodDescriptor) -> bytes:
    """The method's request with every string field past its limit: a caller who gets through
    the edge is answered INVALID_ARGUMENT at once (streams too), never left waiting."""
    msg: Message = GetMessageClass(m.input_type)()
    for f in m.input_type.fields:
        if f.type != FieldDescriptor.TYPE_STRING:
            continue
        if f.is_repeated:
            getattr(msg, f.name).append(OVER_LIMIT)
        else:
            setattr(msg, f.name, OVER_LIMIT)
    return msg.SerializeToString()


async def status_of(channel: grpc.aio.Channel, m: MethodDescriptor, token: str | None) -> grpc.StatusCode:
    """The status of one call; OK for a stream that delivered a first message."""
    metadata = bearer_metadata(token) if token else None
    request = over_limit_request(m)
    try:
        if m.server_streaming:
            call = channel.unary_stream(full_name(m))(request, metadata=metadata, timeout=10)
            first = await call.read()
            if first is not grpc.aio.EOF:
                call.cancel()
                return grpc.StatusCode.OK
            code: grpc.StatusCode = await call.code()
            return code
        await channel.unary_unary(full_name(m))(request, metadata=metadata, timeout=10)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        status: grpc.StatusCode = exc.code()
        return status


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    config = load_config(
        None, env={"GATEWAY_GRPC_CREDENTIALS": env_credentials()},
        data_dir=str(tmp_path / "data"), mqtt_port=free_port(), mqtt_tls_port=free_port(),
        grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
    )
    gw = Gateway(config)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
async def plain(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as ch:
        yield ch


def test_every_rpc_of_every_service_is_in_the_matrix() -> None:
    assert len(SERVICES) >= 4 and len(METHODS) >= 15
    assert {full_name(m) for m in METHODS} == set(METHOD_SCOPES)


async def test_every_rpc_without_a_credential_is_unauthenticated(plain: grpc.aio.Channel) -> None:
    codes = {m.full_name: await status_of(plain, m, None) for m in METHODS}
    assert codes == {m.full_name: grpc.StatusCode.UNAUTHENTICATED for m in METHODS}


async def test_every_rpc_with_a_wrong_or_tampered_token_is_unauthenticated(plain: grpc.aio.Channel) -> None:
    good = token(RIGHT[NEEDED[0]])
    wrong_secret = good[:-1] + ("A" if good[-1] != "A" else "B")
    for bad in (wrong_secret, "not-a-token", new_token("never-issued")[0]):
        codes = {m.full_name: await status_of(plain, m, bad) for m in METHODS}
        assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes


async def test_every_rpc_with_a_credential_lacking_its_scope_is_permission_denied(
    plain: grpc.aio.Channel,
) -> None:
    codes = {m.full_name: await status_of(plain, m, token(WRONG[scope_of(m)])) for m in METHODS}
    assert codes == {m.full_name: grpc.StatusCode.PERMISSION_DENIED for m in METHODS}


async def test_every_rpc_with_its_scope_passes_the_edge(plain: grpc.aio.Channel) -> None:
    codes = {m.full_name: await status_of(plain, m, token(RIGHT[scope_of(m)])) for m in METHODS}
    passed = {name: code for name, code in codes.items() if code not in DENIED}
    assert passed == codes
    # Past the edge the handler answered: the over-limit fields were refused by the limits.
    assert codes["telematics.v1.VehicleService.GetVehicle"] == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_admin_credential_created_on_first_start_passes_every_rpc(
    gateway: Gateway, plain: grpc.aio.Channel
) -> None:
    assert gateway.admin_token_path is not None
    assert gateway.admin_token_path.stat().st_mode & 0o777 == 0o600
    admin = gateway.admin_token_path.read_text().strip()
    stored = (gateway.admin_token_path.parent / "credentials.toml").read_text()
    assert admin.split(".", 1)[1] not in stored  # only the hash is kept
    codes = {m.full_name: await status_of(plain, m, admin) for m in METHODS}
    assert not set(codes.values()) & DENIED, codes


async def test_health_and_reflection_answer_without_a_credential(plain: grpc.aio.Channel) -> None:
    health = await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stream = reflection_pb2_grpc.ServerReflectionStub(plain).ServerReflectionInfo()
    await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    answer = await stream.read()
    await stream.done_writing()
    listed = {s.name for s in answer.list_services_response.service}
    assert {s.full_name for s in SERVICES} <= listed


async def test_refusals_never_echo_the_token_and_audit_names_the_caller_not_the_secret(
    gateway: Gateway, plain: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.audit")
    lacking = token(WRONG["admin"])
    delete = entitlements_pb2.DeleteAccountRequest(account="someone@example.com")
    stub = plain.unary_unary("/telematics.v1.EntitlementService/DeleteAccount")
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub(delete.SerializeToString(), metadata=bearer_metadata(lacking))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    secret = lacking.split(".", 1)[1]
    assert secret not in (denied.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as tampered:
        await stub(delete.SerializeToString(), metadata=bearer_metadata(lacking + "x"))
    assert secret not in (tampered.value.details() or "")
    admin = gateway.admin_token_path.read_text().strip() if gateway.admin_token_path else ""
    await stub(delete.SerializeToString(), metadata=bearer_metadata(admin))
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.audit"]
    assert any("method=DeleteAccount" in line and "code=PERMISSION_DENIED" in line
               and WRONG["admin"][0] in line for line in lines), lines
    assert any('caller="admin"' in line and "code=OK" in line for line in lines), lines
    text = "\n".join(lines)
    assert secret not in text and admin.split(".", 1)[1] not in text
    assert "someone@example.com" not in text  # accounts are audited as a hash prefix
    metric = gateway.metrics.audit_events.labels("DeleteAccount", "PERMISSION_DENIED")._value.get()
    assert metric == 1
    assert set(AUDITED) <= set(METHOD_SCOPES)


# -- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: bytes
    server_cert: Path
    server_key: Path
    client_cert: bytes
    client_key: bytes
    ca_path: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
    *, ca: bool = False, san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = _issue("test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue("localhost", server_key, ca_name, ca_key,
                    san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("backend", client_key, ca_name, ca_key)
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "server.pem").write_bytes(server.public_bytes(pem))
    (d / "server.key").write_bytes(_key_pem(server_key))
    yield Pki(ca.public_bytes(pem), d / "server.pem", d / "server.key", client.public_bytes(pem),
              _key_pem(client_key), d / "ca.pem")


async def _tls_gateway(tmp_path: Path, pki: Pki, *, mutual: bool) -> Gateway:
    config = load_config(
        None, env={}, data_dir=str(tmp_path / "data"), mqtt_port=free_port(), mqtt_tls_port=free_port(),
        grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
        grpc_tls_cert=str(pki.server_cert), grpc_tls_key=str(pki.server_key),
        grpc_tls_client_ca=str(pki.ca_path) if mutual else None,
    )
    gw = Gateway(config)
    await gw.start()
    return gw


async def _get_vehicle_code(channel: grpc.aio.Channel) -> grpc.StatusCode:
    call = channel.unary_unary("/telematics.v1.VehicleService/GetVehicle")
    try:
        await call(vehicles_pb2.GetVehicleRequest(vin="WP0ZZZ99ZJS200001").SerializeToString(), timeout=5)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code


async def test_grpc_over_tls_works_with_the_ca_and_refuses_plaintext(tmp_path: Path, pki: Pki) -> None:
    gw = await _tls_gateway(tmp_path, pki, mutual=False)
    try:
        assert gw.admin_token_path is not None
        admin = gw.admin_token_path.read_text().strip()
        target = f"127.0.0.1:{gw.grpc_port}"
        async with aio_channel(target, admin, root_certificates=pki.ca) as tls:
            assert await _get_vehicle_code(tls) == grpc.StatusCode.NOT_FOUND  # through TLS and auth
        async with aio_channel(target, admin) as plaintext:
            assert await _get_vehicle_code(plaintext) == grpc.StatusCode.UNAVAILABLE
    finally:
        await gw.stop()


async def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path: Path, pki: Pki) -> None:
    gw = await _tls_gateway(tmp_path, pki, mutual=True)
    try:
        assert gw.admin_token_path is not None
        admin = gw.admin_token_path.read_text().strip()
        target = f"127.0.0.1:{gw.grpc_port}"
        async with aio_channel(target, admin, root_certificates=pki.ca) as no_cert:
            assert await _get_vehicle_code(no_cert) == grpc.StatusCode.UNAVAILABLE
        async with aio_channel(target, admin, root_certificates=pki.ca, client_key=pki.client_key,
                               client_cert=pki.client_cert) as with_cert:
            assert await _get_vehicle_code(with_cert) == grpc.StatusCode.NOT_FOUND
    finally:
        await gw.stop()
