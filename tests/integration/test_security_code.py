"""R7 acceptance, over real gRPC with cars on a real broker and the real SQLite ledger, on the
gateway's ManualClock: a remote command to a Taycan needs the owner's security code; five wrong
codes lock the account; the right code during the lockout is RESOURCE_EXHAUSTED with the retry
time; after the lockout the right code works. A car without the code (911 MY2018) needs none."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from support import eventually, free_port, gateway_channel
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import (
    common_pb2,
    entitlements_pb2,
    entitlements_pb2_grpc,
    security_codes_pb2,
    security_codes_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway
from gateway.clock import ManualClock
from gateway.config import load_config

pytestmark = pytest.mark.integration

VIN_TAYCAN = "WP0ZZZY1ZNS500002"
VIN_911 = "WP0ZZZ99ZJS500001"
OWNER = "driver@example.com"
CODE = "4711"
WRONG = "8642"


async def online(channel: grpc.aio.Channel, vin: str) -> bool:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    try:
        vehicle: vehicles_pb2.Vehicle = await stub.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=vin))
    except grpc.aio.AioRpcError:
        return False
    return vehicle.presence == vehicles_pb2.PRESENCE_ONLINE


async def command(channel: grpc.aio.Channel, vin: str, code: str = "") -> str:
    stub = vehicles_pb2_grpc.VehicleServiceStub(channel)
    request = vehicles_pb2.SendRemoteCommandRequest(vin=vin, name="unlock", security_code=code)
    response: vehicles_pb2.SendRemoteCommandResponse = await stub.SendRemoteCommand(request)
    return response.command_id


async def refused(channel: grpc.aio.Channel, vin: str, code: str = "") -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await command(channel, vin, code)
    return error.value


def checks(gateway: Gateway, result: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "gateway_security_code_checks_total", {"result": result}
    )
    assert value is not None  # initialised for every result
    return value


async def set_code(channel: grpc.aio.Channel, new: str, old: str = "") -> bool:
    stub = security_codes_pb2_grpc.SecurityCodeServiceStub(channel)
    request = security_codes_pb2.SetSecurityCodeRequest(account=OWNER, new_code=new, old_code=old)
    response: security_codes_pb2.SetSecurityCodeResponse = await stub.SetSecurityCode(request)
    return response.changed


async def own(channel: grpc.aio.Channel, vin: str) -> None:
    stub = entitlements_pb2_grpc.EntitlementServiceStub(channel)
    await stub.SetVehicleOwner(entitlements_pb2.SetVehicleOwnerRequest(vin=vin, owner=OWNER))


async def test_five_wrong_codes_lock_the_taycan_owner_until_the_lockout_has_passed(
    clocked_gateway: tuple[Gateway, ManualClock],
) -> None:
    gateway, clock = clocked_gateway
    taycan = TestVehicle(VIN_TAYCAN, gateway.config.mqtt_port, model="Taycan", model_year=2022,
                         bearer=common_pb2.BEARER_EMBEDDED_SIM)
    # Hourly heartbeats: the 900 s the test moves the clock for the lockout stay within the
    # car's liveness window (the presence timer runs on the same clock and would time it out).
    taycan.heartbeat_interval_s = 3600
    await taycan.connect()
    await taycan.listen()
    async with gateway_channel(gateway) as channel:
        await eventually(lambda: online(channel, VIN_TAYCAN), bool)
        await own(channel, VIN_TAYCAN)

        # The owner has no code yet: a code cannot be checked.
        no_code = await refused(channel, VIN_TAYCAN, CODE)
        assert no_code.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "SetSecurityCode" in (no_code.details() or "")
        assert not await set_code(channel, CODE)

        missing = await refused(channel, VIN_TAYCAN)
        assert missing.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "R7: security code required" in (missing.details() or "")
        assert checks(gateway, "missing") == 1

        command_id = await command(channel, VIN_TAYCAN, CODE)
        down = await asyncio.wait_for(taycan.downlinks.get(), 10)
        assert down.remote_command.command_id == command_id and down.remote_command.name == "unlock"
        assert CODE not in down.SerializeToString().decode("latin-1")  # the code stays here

        for attempt in range(1, 6):
            wrong = await refused(channel, VIN_TAYCAN, WRONG)
            assert wrong.code() is grpc.StatusCode.PERMISSION_DENIED
            assert WRONG not in (wrong.details() or "") and CODE not in (wrong.details() or "")
            if attempt < 5:
                left = 5 - attempt
                said = f"{left} more wrong code locks" if left == 1 else f"{left} more wrong codes lock"
                assert f"; {said} the account" in (wrong.details() or "")
        assert "now locked until" in (wrong.details() or "")
        # The fifth wrong code starts the lockout: its answer says when to retry, as the locked
        # answers do.
        assert dict(wrong.trailing_metadata() or ())["retry-after-s"] == "900"
        assert checks(gateway, "wrong") == 5

        clock.advance(600)
        locked = await refused(channel, VIN_TAYCAN, CODE)
        assert locked.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry in 300 s" in (locked.details() or "")
        assert dict(locked.trailing_metadata() or ())["retry-after-s"] == "300"
        assert checks(gateway, "locked") == 1

        clock.advance(300)
        command_id = await command(channel, VIN_TAYCAN, CODE)
        down = await asyncio.wait_for(taycan.downlinks.get(), 10)
        assert down.remote_command.command_id == command_id
        assert checks(gateway, "ok") == 2
        assert taycan.downlinks.empty()  # no refused command reached the car
    await taycan.close()


async def test_a_car_without_the_security_code_needs_none(
    clocked_gateway: tuple[Gateway, ManualClock],
) -> None:
    gateway, _ = clocked_gateway
    car = TestVehicle(VIN_911, gateway.config.mqtt_port, model="911", model_year=2018)
    await car.connect()
    await car.listen()
    async with gateway_channel(gateway) as channel:
        await eventually(lambda: online(channel, VIN_911), bool)
        command_id = await command(channel, VIN_911)
        down = await asyncio.wait_for(car.downlinks.get(), 10)
        assert down.remote_command.command_id == command_id
    assert sum(checks(gateway, r) for r in ("ok", "wrong", "locked", "missing", "not_set")) == 0
    await car.close()


async def test_a_code_is_set_changed_with_the_old_one_and_reset(
    clocked_gateway: tuple[Gateway, ManualClock],
) -> None:
    gateway, _ = clocked_gateway
    stub_codes = security_codes_pb2_grpc.SecurityCodeServiceStub
    async with gateway_channel(gateway) as channel:
        codes = stub_codes(channel)
        with pytest.raises(grpc.aio.AioRpcError) as no_vehicle:
            await set_code(channel, CODE)
        assert no_vehicle.value.code() is grpc.StatusCode.NOT_FOUND
        assert OWNER not in (no_vehicle.value.details() or "")
        await own(channel, VIN_TAYCAN)
        for bad in ("123", "123456789", "12a4"):
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await set_code(channel, bad)
            assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert bad not in (invalid.value.details() or "")
        assert not await set_code(channel, CODE)
        with pytest.raises(grpc.aio.AioRpcError) as without_old:
            await set_code(channel, "2222")
        assert without_old.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as wrong_old:
            await set_code(channel, "2222", WRONG)
        assert wrong_old.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert await set_code(channel, "2222", CODE)

        reset = security_codes_pb2.ResetSecurityCodeRequest(account=OWNER)
        answer: security_codes_pb2.ResetSecurityCodeResponse = await codes.ResetSecurityCode(reset)
        assert answer.had_code
        assert not await set_code(channel, CODE)  # a first code again, no old one needed
    changes = {
        action: gateway.metrics.registry.get_sample_value(
            "gateway_security_code_changes_total", {"action": action}
        )
        for action in ("set", "changed", "reset")
    }
    assert changes == {"set": 2, "changed": 1, "reset": 1}


async def test_a_restart_does_not_end_a_lockout(tmp_path: Path) -> None:
    """An attacker must not get a fresh series of guesses by crashing or restarting the gateway:
    the count and the lockout are in the ledger's SQLite database."""
    clock = ManualClock(start=time.time())
    config = load_config(env={}, data_dir=str(tmp_path / "data"), mqtt_port=free_port(),
                         mqtt_tls_port=free_port(), grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0")
    first = Gateway(config, clock=clock)
    await first.start()
    try:
        async with gateway_channel(first) as channel:
            await own(channel, VIN_TAYCAN)
            await set_code(channel, CODE)
            for _ in range(5):
                with pytest.raises(grpc.aio.AioRpcError) as wrong:
                    await set_code(channel, "2222", WRONG)  # a wrong old code counts too
                assert wrong.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        await first.stop()
    second = Gateway(config, clock=clock)
    await second.start()
    try:
        async with gateway_channel(second) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as locked:
                await set_code(channel, "2222", CODE)
            assert locked.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert dict(locked.value.trailing_metadata() or ())["retry-after-s"] == "900"
            clock.advance(900)
            assert await set_code(channel, "2222", CODE)
    finally:
        await second.stop()
