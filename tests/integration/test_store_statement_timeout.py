"""A PostgreSQL statement that does not answer (store_command_timeout_s, gateway/store/pg.py): the
batch commit is cut off and takes the outage path (the pipeline retries with backoff), counted
in gateway_store_statement_timeouts_total, instead of blocking the pipeline until the database
answers. Real PostgreSQL, a lock held by the test; the managed Mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from support import eventually, free_port
from vehicle_client import TestVehicle

from gateway.app import Gateway
from gateway.config import load_config

pytestmark = pytest.mark.integration

VIN = "WP0ZZZ99ZJS100012"


async def test_a_commit_that_hangs_is_cut_off_counted_and_retried_until_the_database_answers(
    tmp_path: Path, pg_url: str
) -> None:
    config = load_config(
        None, env={}, data_dir=str(tmp_path / "data"), store_url=pg_url, mqtt_port=free_port(),
        mqtt_tls_port=free_port(), grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
        store_command_timeout_s=0.5,
    )
    gw = Gateway(config)
    await gw.start()
    blocker = await asyncpg.connect(pg_url)
    car = TestVehicle(VIN, config.mqtt_port)
    sample = gw.metrics.registry.get_sample_value
    try:
        transaction = blocker.transaction()
        await transaction.start()
        # Every statement on the vehicles waits for this lock: the database "hangs" for them.
        await blocker.execute("LOCK TABLE vehicles IN ACCESS EXCLUSIVE MODE")
        await car.connect(with_will=False)
        # While the lock is still held: the commit was cut off (not waiting), and retried.
        await eventually(
            lambda: asyncio.sleep(0, (sample("gateway_store_statement_timeouts_total", {"database": "store"}),
                                      sample("gateway_store_commit_retries_total", {"step": "store"}))),
            lambda counts: all(c is not None and c >= 1 for c in counts), timeout=30,
        )
        await transaction.rollback()
        # The database answers again: the retried commit lands.
        await eventually(
            lambda: blocker.fetchval("SELECT count(*) FROM vehicles WHERE vin = $1", VIN),
            lambda n: n == 1, timeout=30,
        )
    finally:
        await car.close()
        await blocker.close()
        await gw.stop()

