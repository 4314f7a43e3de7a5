"""Structured logs of a real `run`: with log_format = json every line is one JSON object with
ts, level, logger, event, message; the run's secrets never appear; no VIN at INFO outside the
audit log (who did what to which car); rejections are summed up without VINs; reference
reloads and admin calls are at INFO."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import SUITE_TOKEN, eventually, suite_channel
from test_cli_run import RunningGateway
from vehicle_client import TestVehicle

from gateway import topics
from gateway._gen.telematics.v1 import (
    common_pb2,
    entitlements_pb2,
    entitlements_pb2_grpc,
    explain_pb2,
    explain_pb2_grpc,
    security_codes_pb2,
    security_codes_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS611117"
OWNER = "logs-owner@example.com"
CODE = "73914826"  # 8 digits: no timestamp, port or pid in a log line holds them by chance
WRONG = "51862093"
EVENT = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


async def metric(running: RunningGateway, name: str) -> float:
    for line in running.http("/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def presence(vehicles: vehicles_pb2_grpc.VehicleServiceStub) -> int | None:
    """The car's presence; None until its Hello has been processed (NOT_FOUND before)."""
    try:
        found: vehicles_pb2.Vehicle = await vehicles.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=VIN))
    except grpc.aio.AioRpcError:
        return None
    return int(found.presence)


async def test_json_logs_of_a_run_hold_no_secret_and_no_vin_at_info(tmp_path: Path) -> None:
    running = RunningGateway(tmp_path, env={"GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "INFO"})
    try:
        running.wait_ready()
        # A Taycan: its remote commands need the owner's security code (R7).
        car = TestVehicle(VIN, running.mqtt_port, model="Taycan", model_year=2022,
                          bearer=common_pb2.BEARER_EMBEDDED_SIM)
        await car.connect()
        await car.publish(b"\xff\xff\xff", topic=topics.uplink(VIN))  # rejected: bad input
        await car.state(power=1)
        async with suite_channel(running.grpc_port) as channel:
            entitlements = entitlements_pb2_grpc.EntitlementServiceStub(channel)
            await entitlements.SetVehicleOwner(entitlements_pb2.SetVehicleOwnerRequest(vin=VIN, owner=OWNER))
            codes = security_codes_pb2_grpc.SecurityCodeServiceStub(channel)
            set_code = security_codes_pb2.SetSecurityCodeRequest(account=OWNER, new_code=CODE)
            await codes.SetSecurityCode(set_code)
            vehicles = vehicles_pb2_grpc.VehicleServiceStub(channel)
            online = vehicles_pb2.PRESENCE_ONLINE
            await eventually(lambda: presence(vehicles), lambda p: p == online, timeout=30)
            with pytest.raises(grpc.aio.AioRpcError):  # a wrong code: refused
                await vehicles.SendRemoteCommand(
                    vehicles_pb2.SendRemoteCommandRequest(vin=VIN, name="unlock", security_code=WRONG)
                )
            await vehicles.SendRemoteCommand(
                vehicles_pb2.SendRemoteCommandRequest(vin=VIN, name="unlock", security_code=CODE)
            )
            explain = explain_pb2_grpc.ExplainServiceStub(channel)
            await explain.ReloadReferenceData(explain_pb2.ReloadReferenceDataRequest())
        rejected = 'gateway_messages_rejected_total{reason="malformed_protobuf"}'
        await eventually(lambda: metric(running, rejected), lambda n: n >= 1, timeout=30)
        await car.close()
    finally:
        code, out = running.stop(signal.SIGTERM)
    assert code == 0, out

    records: list[dict[str, Any]] = []
    for line in out.splitlines():
        record = json.loads(line)  # every line: one JSON object
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "event", "message"} <= record.keys(), line
        assert EVENT.match(record["event"]), line
        records.append(record)

    token_secret = SUITE_TOKEN.split(".", 1)[1]
    admin_token = (tmp_path / "data" / "credentials" / "admin.token").read_text().strip()
    for secret in (SUITE_TOKEN, token_secret, admin_token, CODE, WRONG, OWNER):
        assert secret not in out, f"a secret is in the log: {secret[:3]}..."
    at_info = [r for r in records if r["level"] == "INFO" and r["logger"] != "gateway.audit"]
    assert at_info and not [r for r in at_info if VIN in json.dumps(r)]
    summary = [r for r in records if r["event"] == "uplink_rejections"]
    assert summary and VIN not in json.dumps(summary) and "malformed_protobuf=1" in summary[0]["message"]
    assert [r["level"] for r in records if r["event"] == "reference_reload"] == ["INFO"]
    audited = {r["method"] for r in records if r["event"] == "audit" and r["level"] == "INFO"}
    assert {"SetVehicleOwner", "SetSecurityCode", "SendRemoteCommand", "ReloadReferenceData"} <= audited
