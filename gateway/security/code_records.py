"""The seam under the R7 security codes: where the records live, one implementation per database
(`code_records_sqlite`, `code_records_postgres`). The rules (lockout, serialised attempts, the
slow hash) are in code_store.SecurityCodes, the same for every database."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from gateway.security.codes import CodeRecord


class CodeRecords(Protocol):
    async def read(self, account: str) -> CodeRecord | None: ...

    async def write(self, account: str, record: CodeRecord, now: float) -> bool:
        """Store `record`; False (nothing written) when the account owns no vehicle. The
        ownership test is in the same statement: a DeleteAccount (R4) between the caller's
        check and this write cannot leave a code behind for an erased account."""
        ...

    async def delete(self, account: str) -> bool:
        """Remove the account's record; True when it held a code."""
        ...

    def exclusive(self, account: str) -> AbstractAsyncContextManager[None]:
        """Held around each attempt on one account, beyond the process's own lock: with a
        database shared by several gateways, their attempts must not interleave either."""
        ...
