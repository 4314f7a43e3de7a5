"""The gateway's MQTT 5 client over TLS against the project's broker configuration: the hot
path still hands several PUBLISHes to on_batch per read (the SSL transport passes the
decrypted stream to data_received in chunks, as TCP does)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port

from gateway import topics
from gateway.broker.managed import ManagedBroker, TlsListener
from gateway.ingress.mqtt5 import InboundMessage, Mqtt5Client
from gateway.security import pki

pytestmark = pytest.mark.integration

GATEWAY = "telematics-gateway"
VIN = "WP0ZZZ99ZJS300001"


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[ManagedBroker, pki.EmbeddedPki]]:
    files, _ = pki.ensure_embedded_pki(tmp_path / "pki", gateway_identity=GATEWAY)
    broker = ManagedBroker(
        directory=tmp_path / "broker", port=free_port(),
        tls=TlsListener(
            "127.0.0.1", free_port(), files.ca_cert, files.broker_cert, files.broker_key, GATEWAY
        ),
    )
    broker.start_sync()
    try:
        yield broker, files
    finally:
        broker.stop_sync()


def context(files: pki.EmbeddedPki, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def test_qos1_messages_arrive_batched_and_acked_over_tls(
    tls_broker: tuple[ManagedBroker, pki.EmbeddedPki],
) -> None:
    broker, files = tls_broker
    assert broker.tls is not None
    batches: list[list[InboundMessage]] = []
    done = asyncio.Event()
    total = 5_000

    def on_batch(batch: list[InboundMessage]) -> None:
        batches.append(batch)
        gateway.ack(batch)
        if sum(len(b) for b in batches) >= total:
            done.set()

    gateway = Mqtt5Client(
        host="127.0.0.1", port=broker.tls.port, client_id="asked-for-anything", clean_start=True,
        on_batch=on_batch, tls=context(files, files.gateway_cert, files.gateway_key),
    )
    await gateway.connect()
    assert gateway.tls_version in ("TLSv1.2", "TLSv1.3")
    await gateway.subscribe([(topics.uplink("+"), 1)])
    car_cert, car_key = pki.issue_car(files.directory, VIN, files.cars)
    car = Mqtt5Client(
        host="127.0.0.1", port=broker.tls.port, client_id=VIN, clean_start=True,
        on_batch=lambda _batch: None, tls=context(files, car_cert, car_key),
    )
    await car.connect()
    codes = await asyncio.gather(
        *(car.publish(topics.uplink(VIN), b"%06d" % i, qos=1) for i in range(total))
    )
    assert set(codes) == {0}
    await asyncio.wait_for(done.wait(), 30)
    received = [m.payload for b in batches for m in b]
    assert sorted(received) == [b"%06d" % i for i in range(total)]
    assert max(len(b) for b in batches) > 1, "expected several messages per data_received over TLS"
    assert len(batches) < total
    await car.disconnect()
    await gateway.disconnect()
    assert await gateway.wait_closed() is None  # a clean DISCONNECT over TLS
