"""Roaming, privacy and explain, seen by a backend over real gRPC with cars on a real broker."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest
from ejabberd_support import BROKERS
from support import eventually, free_port, gateway_channel
from vehicle_client import CarLink, TestVehicle

from gateway._gen.telematics.v1 import (
    common_pb2,
    explain_pb2,
    explain_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway
from gateway.config import PROJECT_ROOT, load_config

pytestmark = pytest.mark.integration

VIN_911 = "WP0ZZZ99ZJS500001"
VIN_TAYCAN = "WP0ZZZY1ZNS500002"


async def explain(channel: grpc.aio.Channel, vin: str, lang: str = "en") -> explain_pb2.ExplainResponse:
    stub = explain_pb2_grpc.ExplainServiceStub(channel)
    request = explain_pb2.ExplainRequest(vin=vin, language=lang)
    answer: explain_pb2.ExplainResponse = await stub.Explain(request)  # grpc is untyped: say what it is
    return answer


async def seen(channel: grpc.aio.Channel, vin: str) -> bool:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    try:
        await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=vin))
        return True
    except grpc.aio.AioRpcError:
        return False


async def test_911_my2018_abroad_with_roaming_off_is_told_the_roaming_menu_and_taycan_is_not(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    def abroad(vin: str, model: str, model_year: int, bearer: int) -> TestVehicle:
        return TestVehicle(vin, gateway.config.mqtt_port, model=model, model_year=model_year, bearer=bearer,
                           home_country="DE", visited_country="AT", roaming=True, roaming_enabled=False)

    car = abroad(VIN_911, "911", 2018, common_pb2.BEARER_INSERTED_SIM)
    taycan = abroad(VIN_TAYCAN, "Taycan", 2022, common_pb2.BEARER_EMBEDDED_SIM)
    await car.connect()
    await taycan.connect()
    await eventually(lambda: seen(channel, VIN_TAYCAN), bool)
    await eventually(lambda: seen(channel, VIN_911), bool)

    r911 = await explain(channel, VIN_911)
    roaming = [d for d in r911.decisions if d.reason == "roaming_disabled"]
    assert roaming, r911
    assert all("PHONE > OPT > SET PHONE > Roaming" in d.next_step for d in roaming)
    assert roaming[0].rule == "R21" and roaming[0].outcome == explain_pb2.OUTCOME_DENY
    assert roaming[0].support_contact == "smartmobility@de.porsche.com"
    german = await explain(channel, VIN_911, "de")
    assert any("TELEFON" in d.next_step or "PHONE" in d.next_step for d in german.decisions)

    rtaycan = await explain(channel, VIN_TAYCAN)
    assert not [d for d in rtaycan.decisions if d.reason == "roaming_disabled"], rtaycan
    await car.close()
    await taycan.close()


async def test_explain_refuses_bad_arguments(gateway: Gateway, channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad_lang:
        await explain(channel, VIN_911, "fr")
    assert bad_lang.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await explain(channel, VIN_911)
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("broker_kind", BROKERS)
async def test_remote_command_is_refused_in_privacy_mode_and_delivered_otherwise(
    gateway: Gateway, channel: grpc.aio.Channel, car_link: CarLink
) -> None:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    car = car_link.vehicle(VIN_911)
    car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_ALL_SERVICES)
    await car.connect()
    await car.listen()
    await eventually(lambda: seen(channel, VIN_911), bool)
    request = vehicles_pb2.SendRemoteCommandRequest(vin=VIN_911, name="flash-lights")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SendRemoteCommand(request)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "R22" in (refused.value.details() or "")

    car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_OFF)
    await car.state(lock=common_pb2.LOCK_STATE_LOCKED)  # privacy travels on every envelope

    async def send() -> str:
        try:
            response: vehicles_pb2.SendRemoteCommandResponse = await stub.SendRemoteCommand(request)
            return response.command_id
        except grpc.aio.AioRpcError:
            return ""

    command_id = await eventually(send, bool)
    down = await asyncio.wait_for(car.downlinks.get(), 10)
    assert down.remote_command.command_id == command_id and down.remote_command.name == "flash-lights"
    await car.close()


async def test_reload_with_a_bad_file_keeps_the_old_data_and_names_the_file(tmp_path: Path) -> None:
    data = tmp_path / "reference"
    shutil.copytree(PROJECT_ROOT / "sim_profiles", data / "sim_profiles")
    shutil.copytree(PROJECT_ROOT / "roaming", data / "roaming")
    cfg = load_config(env={}, data_dir=str(tmp_path / "data"), mqtt_port=free_port(),
                      grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0", reference_dir=str(data),
                      mqtt_tls_port=free_port())
    gw = Gateway(cfg)
    await gw.start()
    try:
        async with gateway_channel(gw) as ch:
            stub = explain_pb2_grpc.ExplainServiceStub(ch)
            de = data / "roaming" / "countries" / "de.toml"
            good = de.read_text()
            de.write_text(good.replace("smartmobility@de.porsche.com", "not-an-address"))
            bad = await stub.ReloadReferenceData(explain_pb2.ReloadReferenceDataRequest())
            assert not bad.reloaded and "de.toml" in bad.message and "support_contact" in bad.message
            assert gw.reference is not None
            assert gw.reference.current.country("DE").support_contact == "smartmobility@de.porsche.com"
            de.write_text(good)
            ok = await stub.ReloadReferenceData(explain_pb2.ReloadReferenceDataRequest())
            assert ok.reloaded
    finally:
        await gw.stop()
