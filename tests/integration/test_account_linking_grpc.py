"""R5, R7 over real gRPC with cars on a real broker: GetVehicle / ListVehicles carry the linking
facts of the car's profile, and Explain tells them in English and German."""

from __future__ import annotations

import grpc
import pytest
from support import eventually
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import explain_pb2, explain_pb2_grpc, vehicles_pb2, vehicles_pb2_grpc
from gateway.app import Gateway

pytestmark = pytest.mark.integration

VIN_MACAN = "WP1ZZZ95ZJLB00001"
VIN_911 = "WP0ZZZ99ZNS500002"
VIN_UNKNOWN = "WP0ZZZ98ZFS500003"


async def vehicle(channel: grpc.aio.Channel, vin: str) -> vehicles_pb2.Vehicle | None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    try:
        got: vehicles_pb2.Vehicle = await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=vin))
    except grpc.aio.AioRpcError:
        return None
    return got


async def connected(
    gateway: Gateway, channel: grpc.aio.Channel, vin: str, model: str, year: int
) -> TestVehicle:
    car = TestVehicle(vin, gateway.config.mqtt_port, model=model, model_year=year)
    await car.connect()
    await eventually(lambda: vehicle(channel, vin), lambda v: v is not None)
    return car


async def test_get_and_list_vehicles_carry_the_linking_method_menu_and_security_code(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    macan = await connected(gateway, channel, VIN_MACAN, "Macan", 2018)
    p911 = await connected(gateway, channel, VIN_911, "911", 2022)
    unknown = await connected(gateway, channel, VIN_UNKNOWN, "Carrera GT", 2015)

    got = await vehicle(channel, VIN_MACAN)
    assert got is not None
    link = got.account_linking
    assert link.method == vehicles_pb2.LINKING_METHOD_PAIRING_CODE  # R5
    assert link.menu.en == "APPS > OPT > Log in Porsche Connect"
    assert link.menu.de == "APPS > OPT > Anmelden Porsche Connect"
    assert "8-digit pairing code" in link.menu.note_en
    assert link.HasField("security_code_required") and not link.security_code_required  # R7

    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    listed = {v.vin: v for v in (await stub.ListVehicles(vehicles_pb2.ListVehiclesRequest())).vehicles}
    link911 = listed[VIN_911].account_linking
    assert link911.method == vehicles_pb2.LINKING_METHOD_ACCOUNT_ID
    assert link911.menu.de == "Einstellung > Accounts > Account einrichten"
    assert link911.security_code_required
    none = listed[VIN_UNKNOWN].account_linking
    assert none.method == vehicles_pb2.LINKING_METHOD_UNSPECIFIED  # not a guess
    assert not none.HasField("security_code_required") and none.menu.en == ""
    for car in (macan, p911, unknown):
        await car.close()


async def test_explain_tells_how_to_link_the_account_in_english_and_german(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    p911 = await connected(gateway, channel, VIN_911, "911", 2022)
    stub = explain_pb2_grpc.ExplainServiceStub(channel)

    en = await stub.Explain(explain_pb2.ExplainRequest(vin=VIN_911, language="en"))
    [advice] = [a for a in en.advice if a.topic == "account_linking"]
    assert list(advice.rules) == ["R5", "R7"]
    assert "Porsche ID" in advice.text and "Settings > Accounts > Set up account" in advice.text
    assert "security code is required" in advice.text

    de = await stub.Explain(explain_pb2.ExplainRequest(vin=VIN_911, language="de"))
    [beratung] = [a for a in de.advice if a.topic == "account_linking"]
    assert list(beratung.rules) == ["R5", "R7"]
    assert "Einstellung > Accounts > Account einrichten" in beratung.text
    assert "Sicherheitscode erforderlich" in beratung.text
    await p911.close()
