"""Watch reads over a pruned log (gateway/api/errors.py `without_gaps`): OUT_OF_RANGE instead of
a silent gap, also when the pruning runs between the check and the read."""

from __future__ import annotations

import grpc
import pytest

from gateway.api.errors import ApiError, without_gaps
from gateway.store.base import StoredEvent

VIN = "WP0ZZZ99ZTS392124"


class Log:
    """A log of cursors 1..n; `prune_on_read` prunes to the newest `keep` as a read starts."""

    def __init__(self, n: int, prune_on_read: int | None = None) -> None:
        self.rows = [StoredEvent(c, VIN, b"") for c in range(1, n + 1)]
        self.prune_on_read = prune_on_read

    async def read(self, after: int) -> list[StoredEvent]:
        if self.prune_on_read is not None:
            self.rows = self.rows[-self.prune_on_read :]
        return [r for r in self.rows if r.cursor > after]

    async def first_cursor(self) -> int:
        return self.rows[0].cursor if self.rows else 0


async def test_a_read_that_pruning_overtook_is_out_of_range_not_a_gap() -> None:
    log = Log(10, prune_on_read=3)  # the check-then-read race: pruned right before the read
    read = without_gaps(log.read, log.first_cursor)
    with pytest.raises(ApiError) as err:
        await read(2)
    assert err.value.code is grpc.StatusCode.OUT_OF_RANGE
    assert "oldest retained event is 8" in err.value.message and "after_cursor 0" in err.value.message


@pytest.mark.parametrize("after", [0, 7, 8, 10, 2**64 - 1])
async def test_retained_new_and_future_cursors_read_normally(after: int) -> None:
    log = Log(10, prune_on_read=3)
    rows = await without_gaps(log.read, log.first_cursor)(after)
    assert [r.cursor for r in rows] == [c for c in (8, 9, 10) if c > after]
