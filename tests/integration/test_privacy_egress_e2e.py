"""R22 over real gRPC: while a car's privacy mode covers all services, no backend output names
the country it is in (GetVehicle, ListVehicles, WatchVehicleEvents, Explain)."""

from __future__ import annotations

import grpc
import pytest
from support import eventually
from vehicle_client import TestVehicle

from gateway._gen.telematics.v1 import (
    common_pb2,
    explain_pb2,
    explain_pb2_grpc,
    vehicles_pb2,
    vehicles_pb2_grpc,
)
from gateway.app import Gateway

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS500011"


async def test_no_backend_output_names_the_visited_country_in_all_services_privacy(
    gateway: Gateway, channel: grpc.aio.Channel
) -> None:
    vehicles = vehicles_pb2_grpc.VehicleServiceStub(channel)
    car = TestVehicle(VIN, gateway.config.mqtt_port, model="911", model_year=2018,
                      bearer=common_pb2.BEARER_INSERTED_SIM, visited_country="AT", roaming=True)
    car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_ALL_SERVICES)
    await car.connect()

    async def vehicle() -> vehicles_pb2.Vehicle | None:
        try:
            v: vehicles_pb2.Vehicle = await vehicles.GetVehicle(vehicles_pb2.GetVehicleRequest(vin=VIN))
            return v
        except grpc.aio.AioRpcError:
            return None

    v = await eventually(vehicle, lambda v: v is not None and v.roaming)
    assert v is not None and v.visited_country == "" and v.visited_mcc == 0
    page = await vehicles.ListVehicles(vehicles_pb2.ListVehiclesRequest(page_size=1000))
    assert [x.visited_country for x in page.vehicles if x.vin == VIN] == [""]
    watch = vehicles.WatchVehicleEvents(vehicles_pb2.WatchVehicleEventsRequest(vin=VIN))
    online = await watch.read()
    assert isinstance(online, vehicles_pb2.VehicleEvent)
    assert online.HasField("online") and online.vehicle.visited_country == ""
    watch.cancel()
    for lang in ("en", "de"):
        resp = await explain_pb2_grpc.ExplainServiceStub(channel).Explain(
            explain_pb2.ExplainRequest(vin=VIN, language=lang)
        )
        assert resp.visited_country == "" and resp.decisions
        for d in resp.decisions:  # roaming_disabled abroad (R21) names no country
            for text in (d.detail, d.next_step):
                assert "AT" not in text and "Austria" not in text and "Österreich" not in text

    # Privacy off: the same outputs name the country again (the gateway always knew it).
    car.privacy = common_pb2.Privacy(mode=common_pb2.PRIVACY_MODE_OFF)
    await car.state(lock=common_pb2.LOCK_STATE_LOCKED)
    await eventually(vehicle, lambda v: v is not None and v.visited_country == "AT")
    await car.close()
