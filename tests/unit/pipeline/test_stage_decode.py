"""The decode stage alone (gateway/pipeline/decode.py): the gate and the Hello limit, with a
fake session lookup standing in for the tracker."""

from __future__ import annotations

from collections import Counter

from test_pipeline import VIN, Msg, hello, telemetry

from gateway._gen.telematics.v1 import common_pb2, uplink_pb2
from gateway.decode import Decoded
from gateway.pipeline.batches import LogBudget
from gateway.pipeline.decode import DecodeStage
from gateway.session.ratelimit import CarLimits

NOW = 1_767_225_600.0


def stage(limits: CarLimits | None = None, epochs: dict[str, int] | None = None) -> DecodeStage:
    known = epochs or {}
    return DecodeStage(max_payload_bytes=4096, limits=limits, epoch_of=known.get, log_budget=LogBudget())


def test_valid_messages_pass_and_each_rejection_is_counted_by_reason() -> None:
    rejected: Counter[str] = Counter()
    gated = stage().gate(
        [hello(1), Msg("v1/vehicles/not-a-vin/up", b""), Msg(f"v1/vehicles/{VIN}/up", b"\xff\xff"),
         Msg(f"v1/vehicles/{VIN}/up", b"x" * 5000), telemetry(2, common_pb2.PRIVACY_MODE_OFF)],
        NOW, rejected,
    )
    assert [(d.vin, type(d)) for d in gated.items] == [(VIN, Decoded), (VIN, Decoded)]
    assert gated.hellos and gated.limits is None
    assert sum(rejected.values()) == 3 and rejected["oversize"] == 1


def test_the_message_limit_drops_a_cars_excess_before_its_payload_is_decoded() -> None:
    limits = CarLimits(rate_per_s=1.0, burst=2, hello_rate_per_s=1.0, hello_burst=5)
    rejected: Counter[str] = Counter()
    bad = Msg(f"v1/vehicles/{VIN}/up", b"\xff\xff")
    gated = stage(limits).gate([bad, bad, bad, bad], NOW, rejected)
    assert gated.items == []
    # The burst's two are decoded (and rejected for their payload), the other two never are.
    assert rejected["rate_limited"] == 2 and sum(rejected.values()) == 4


def test_hellos_beyond_the_hello_burst_are_dropped_unless_they_open_a_new_epoch() -> None:
    limits = CarLimits(rate_per_s=100.0, burst=100, hello_rate_per_s=0.001, hello_burst=1)
    reset = uplink_pb2.Envelope.FromString(hello(9).payload)
    reset.sequence_epoch = 7  # a reset head unit: a new sequence epoch
    decode = stage(limits, epochs={VIN: 0})
    rejected: Counter[str] = Counter()
    gated = decode.gate([hello(1), hello(2), Msg(hello(9).topic, reset.SerializeToString())], NOW, rejected)
    items = decode.gate_hellos(gated, NOW, rejected)
    assert [d.envelope.sequence for d in items if isinstance(d, Decoded)] == [1, 9]
    assert rejected == Counter({"hello_rate_limited": 1})
