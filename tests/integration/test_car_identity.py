"""Cars are known by their certificate (README "Identity"): on the managed broker's TLS listener
the certificate's CN (the VIN) is the MQTT username and client id, and the ACL keyed on it
confines every car to its own topics. Real Mosquitto, real gateway (itself connected over TLS
with its own certificate), real gRPC."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiomqtt
import grpc
import pytest
from support import eventually, free_port, gateway_channel
from vehicle_client import TestVehicle

from gateway import topics
from gateway._gen.telematics.v1 import common_pb2, downlink_pb2, vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway, GatewayStartError
from gateway.broker.managed import ManagedBroker, TlsListener
from gateway.config import Config, load_config
from gateway.ingress.mqtt5 import Mqtt5Client, MqttConnectError
from gateway.security import pki

pytestmark = pytest.mark.integration

VIN_A = "WP0ZZZ99ZJS200001"
VIN_B = "WP0ZZZ99ZJS200002"


def car_tls(gw: Gateway, tmp_path: Path, vin: str) -> ssl.SSLContext:
    """A car's TLS context: its own certificate from the gateway's development CA."""
    return car_tls_from(gw.config.pki_dir, tmp_path, vin)


def car_tls_from(ca_dir: Path, tmp_path: Path, vin: str) -> ssl.SSLContext:
    cert, key = pki.issue_car(ca_dir, vin, tmp_path / "cars")
    context = ssl.create_default_context(cafile=str(tmp_path / "cars" / "ca.crt"))
    context.load_cert_chain(str(cert), str(key))
    return context


def tls_car(gw: Gateway, tmp_path: Path, vin: str, client_id: str | None = None) -> TestVehicle:
    return TestVehicle(vin, gw.config.mqtt_tls_port, tls=car_tls(gw, tmp_path, vin), client_id=client_id)


async def get_vehicle(stub: vehicles_pb2_grpc.VehicleServiceStub, vin: str) -> vehicles_pb2.Vehicle | None:
    try:
        vehicle: vehicles_pb2.Vehicle = await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=vin))
        return vehicle
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return None
        raise


def is_locked(v: vehicles_pb2.Vehicle | None) -> bool:
    return v is not None and v.state.lock == common_pb2.LOCK_STATE_LOCKED


async def test_a_car_with_its_own_certificate_is_served_end_to_end(
    gateway: Gateway, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    car = tls_car(gateway, tmp_path, VIN_A)
    await car.connect()
    v = await eventually(lambda: get_vehicle(stub, VIN_A), lambda v: v is not None)
    assert v is not None and v.presence == vehicles_pb2.PRESENCE_ONLINE
    await car.close()


async def test_the_gateway_talks_to_its_managed_broker_over_tls_with_its_own_certificate(
    gateway: Gateway,
) -> None:
    assert gateway.mqtt is not None and gateway.mqtt.client is not None
    client = gateway.mqtt.client
    assert client.address == f"mqtts://127.0.0.1:{gateway.config.mqtt_tls_port}"
    assert client.tls_version in ("TLSv1.2", "TLSv1.3")
    # The broker named the session after the certificate's CN (use_username_as_clientid).
    assert client.connected
    assert pki.certificate_identity(gateway.config.pki_dir / "gateway.crt") == gateway.config.mqtt_client_id


async def test_a_car_cannot_publish_on_another_cars_topics(
    gateway: Gateway, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    car_a = tls_car(gateway, tmp_path, VIN_A)
    await car_a.connect()
    await eventually(lambda: get_vehicle(stub, VIN_A), lambda v: v is not None)

    # A forges B's Hello on B's uplink topic, and B's will on B's will topic.
    forged = TestVehicle(VIN_B, 0)
    hello = forged.envelope()
    hello.hello.connection_id = 1
    hello.hello.boot = True
    hello.hello.model = "911"
    hello.hello.model_year = 2018
    hello.hello.home_country = "DE"
    await car_a.publish(hello, topic=topics.uplink(VIN_B))
    await car_a.publish(b"\x08\x01", topic=topics.will(VIN_B))
    # Sentinel: A's own next envelope, on A's topic, after the forbidden ones on one connection.
    await car_a.state(lock=common_pb2.LOCK_STATE_LOCKED)
    await eventually(lambda: get_vehicle(stub, VIN_A), is_locked)

    assert await get_vehicle(stub, VIN_B) is None  # the gateway never saw B's forged Hello
    await car_a.close()


async def test_a_car_cannot_read_another_cars_downlink(
    gateway: Gateway, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    car_b = tls_car(gateway, tmp_path, VIN_B)
    await car_b.connect()
    await car_b.listen()
    context_a = car_tls(gateway, tmp_path, VIN_A)
    async with aiomqtt.Client(
        "127.0.0.1", gateway.config.mqtt_tls_port, identifier=VIN_A,
        protocol=aiomqtt.ProtocolVersion.V5, tls_context=context_a,
    ) as spy:
        # Mosquitto 2.0's acl_file grants the SUBSCRIBE and checks read access per message on
        # delivery: what matters is that nothing of B's arrives.
        await spy.subscribe(topics.downlink(VIN_B), qos=1)
        await spy.subscribe("v1/vehicles/+/down", qos=1)
        await spy.subscribe(topics.downlink(VIN_A), qos=1)

        for_b = downlink_pb2.Downlink(
            vin=VIN_B, remote_command=downlink_pb2.RemoteCommand(command_id="for-b", name="flash")
        )
        await gateway.publish_downlink(topics.downlink(VIN_B), for_b.SerializeToString())
        assert (await asyncio.wait_for(car_b.downlinks.get(), 10)).remote_command.command_id == "for-b"
        # Sentinel: published after B's by the same gateway session, so delivered after it.
        for_a = downlink_pb2.Downlink(
            vin=VIN_A, remote_command=downlink_pb2.RemoteCommand(command_id="for-a", name="flash")
        )
        await gateway.publish_downlink(topics.downlink(VIN_A), for_a.SerializeToString())
        async with asyncio.timeout(10):
            first = await anext(aiter(spy.messages))
        assert str(first.topic) == topics.downlink(VIN_A)
    await car_b.close()


async def test_a_car_cannot_take_over_another_cars_session_by_asking_for_its_client_id(
    gateway: Gateway, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    car_b = tls_car(gateway, tmp_path, VIN_B)
    await car_b.connect()
    await eventually(lambda: get_vehicle(stub, VIN_B), lambda v: v is not None)

    impostor = tls_car(gateway, tmp_path, VIN_A, client_id=VIN_B)
    await impostor.connect()  # accepted: but as A (the client id is the certificate's CN)
    await eventually(lambda: get_vehicle(stub, VIN_A), lambda v: v is not None)

    # B's connection survived: a takeover would have ended it (and fired B's will). B's next
    # envelope on the same connection is applied, and B is still online.
    assert car_b.client is not None
    await car_b.state(lock=common_pb2.LOCK_STATE_LOCKED)
    b = await eventually(lambda: get_vehicle(stub, VIN_B), is_locked)
    assert b is not None and b.presence == vehicles_pb2.PRESENCE_ONLINE
    await impostor.close()
    await car_b.close()


async def refused(gw: Gateway, context: ssl.SSLContext) -> MqttConnectError:
    """Connect to the TLS listener as VIN_A with ``context``; the error that ends the attempt."""
    client = Mqtt5Client(
        host="127.0.0.1", port=gw.config.mqtt_tls_port, client_id=VIN_A, clean_start=True,
        on_batch=lambda _batch: None, tls=context,
    )
    with pytest.raises(MqttConnectError) as caught:
        await client.connect(timeout=10)
    return caught.value


async def test_a_client_without_a_certificate_cannot_connect_to_the_tls_listener(gateway: Gateway) -> None:
    context = ssl.create_default_context(cafile=str(gateway.config.pki_dir / "ca.crt"))
    error = await refused(gateway, context)
    assert "timed out" not in str(error)  # the broker ended it, we did not give up waiting


async def test_a_certificate_from_another_ca_cannot_connect_to_the_tls_listener(
    gateway: Gateway, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca"
    pki.init_ca(other_ca)
    cert, key = pki.issue_car(other_ca, VIN_A, tmp_path / "other-cars")
    context = ssl.create_default_context(cafile=str(gateway.config.pki_dir / "ca.crt"))
    context.load_cert_chain(str(cert), str(key))
    error = await refused(gateway, context)
    assert "timed out" not in str(error)


async def test_a_client_without_tls_is_refused_on_the_tls_listener(
    gateway: Gateway,
) -> None:
    client = Mqtt5Client(
        host="127.0.0.1", port=gateway.config.mqtt_tls_port, client_id=VIN_A, clean_start=True,
        on_batch=lambda _batch: None,
    )
    with pytest.raises(MqttConnectError):
        await client.connect(timeout=10)


def external_config(tmp_path: Path, **overrides: Any) -> Config:
    return load_config(
        env={}, data_dir=str(tmp_path / "data"), grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
        **overrides,
    )


async def test_the_gateway_connects_to_an_external_tls_broker_by_mqtts_url_with_its_certificate(
    tmp_path: Path,
) -> None:
    files, _ = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="gw-external")
    broker = ManagedBroker(
        directory=tmp_path / "broker", port=free_port(),
        tls=TlsListener("127.0.0.1", free_port(), files.ca_cert, files.broker_cert, files.broker_key,
                        "gw-external"),
    )
    broker.start_sync()
    assert broker.tls is not None
    config = external_config(
        tmp_path, mqtt_url=f"mqtts://localhost:{broker.tls.port}",
        mqtt_ca_file=str(files.ca_cert), mqtt_cert_file=str(files.gateway_cert),
        mqtt_key_file=str(files.gateway_key), mqtt_client_id="gw-external",
    )
    gw = Gateway(config)
    try:
        await gw.start()
        assert gw.mqtt is not None and gw.mqtt.client is not None
        assert gw.mqtt.client.tls_version in ("TLSv1.2", "TLSv1.3")
        async with gateway_channel(gw) as channel:
            stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
            car = TestVehicle(VIN_A, broker.tls.port, tls=car_tls_from(files.directory, tmp_path, VIN_A))
            await car.connect()
            await eventually(lambda: get_vehicle(stub, VIN_A), lambda v: v is not None)
            await car.close()
    finally:
        await gw.stop()
        broker.stop_sync()


async def test_the_gateway_refuses_a_tls_broker_whose_certificate_its_ca_did_not_sign(tmp_path: Path) -> None:
    files, _ = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity="gw-external")
    other, _ = pki.ensure_embedded_pki(tmp_path / "other", gateway_identity="gw-external")
    broker = ManagedBroker(
        directory=tmp_path / "broker", port=free_port(),
        tls=TlsListener("127.0.0.1", free_port(), files.ca_cert, files.broker_cert, files.broker_key,
                        "gw-external"),
    )
    broker.start_sync()
    assert broker.tls is not None
    config = external_config(
        tmp_path, mqtt_url=f"mqtts://127.0.0.1:{broker.tls.port}",
        mqtt_ca_file=str(other.ca_cert), mqtt_cert_file=str(files.gateway_cert),
        mqtt_key_file=str(files.gateway_key),
    )
    gw = Gateway(config)
    try:
        with pytest.raises(GatewayStartError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await gw.start()
    finally:
        await gw.stop()
        broker.stop_sync()
