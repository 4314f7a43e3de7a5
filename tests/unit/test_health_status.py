"""grpc.health.v1 follows readiness: every service name is set on each change, once."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from gateway.health_status import NOT_SERVING, SERVING, HealthPublisher


class RecordingServicer:
    """Satisfies HealthSetter: records each set instead of answering Health calls."""

    def __init__(self) -> None:
        self.sets: list[tuple[str, int]] = []
        self.changed = asyncio.Event()

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        self.sets.append((service, status))
        self.changed.set()

    async def next_set(self) -> tuple[str, int]:
        await self.changed.wait()
        self.changed.clear()
        return self.sets[-1]


async def test_status_is_set_for_every_service_on_each_change_only() -> None:
    parts = {"mqtt": True, "store": True}
    servicer = RecordingServicer()
    pub = HealthPublisher(readiness=lambda: dict(parts), servicer=servicer, services=("", "a.Svc"))
    assert await pub.publish() is True
    assert servicer.sets == [("", SERVING), ("a.Svc", SERVING)]
    await pub.publish()
    assert len(servicer.sets) == 2  # unchanged: not set again
    parts["store"] = False
    assert await pub.publish() is False
    assert servicer.sets[2:] == [("", NOT_SERVING), ("a.Svc", NOT_SERVING)]
    parts["store"] = True
    await pub.publish()
    assert servicer.sets[4:] == [("", SERVING), ("a.Svc", SERVING)]


async def test_a_poke_publishes_before_the_interval_runs_out() -> None:
    parts = {"mqtt": True}
    servicer = RecordingServicer()
    pub = HealthPublisher(readiness=lambda: dict(parts), servicer=servicer, services=("",), interval_s=3600)
    task = asyncio.create_task(pub.run())
    try:
        assert await servicer.next_set() == ("", SERVING)  # the first publication
        parts["mqtt"] = False
        pub.poke()
        async with asyncio.timeout(30):  # far below the hour-long interval
            assert await servicer.next_set() == ("", NOT_SERVING)
    finally:
        task.cancel()
