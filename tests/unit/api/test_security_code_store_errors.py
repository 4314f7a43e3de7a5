"""R7 paths answer UNAVAILABLE (retry) when the ledger's database fails, never INTERNAL."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from gateway.api.errors import ApiError
from gateway.api.security_codes import SecurityCodeGate
from gateway.clock import ManualClock
from gateway.entitlements.ledger.sqlite import SqliteLedger
from gateway.metrics import Metrics
from gateway.rules.decision import Decision, Outcome, Reason
from gateway.security.code_records_sqlite import SqliteCodeRecords
from gateway.security.code_store import SecurityCodes
from gateway.security.codes import LockoutPolicy

REQUIRED = Decision("R7", Outcome.DENY, Reason.SECURITY_CODE_REQUIRED, "Taycan in DE", "remote-services")


async def test_a_remote_command_check_on_a_failed_store_is_unavailable(tmp_path: Path) -> None:
    ledger = SqliteLedger(path=tmp_path / "entitlements.db")
    await ledger.open()
    clock = ManualClock()
    policy = LockoutPolicy(max_failures=5, lockout_s=900.0)
    gate = SecurityCodeGate(
        codes=SecurityCodes(records=SqliteCodeRecords(ledger.thread), clock=clock, policy=policy),
        owner_of=ledger.get_owner,
        metrics=Metrics(), clock=clock, policy=policy,
    )
    await ledger.close()  # the database is gone (disk failure, shutdown in progress)
    with pytest.raises(ApiError) as caught:
        await gate.require(REQUIRED, "WP0ZZZ99ZPS100001", "1234")
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
