"""Duplicate-detection tables kept bounded: rows older than a retention window are deleted.

A processed-event id only has to be remembered as long as the broker can still redeliver the
event, so the window is set longer than the broker's retention (default 14 days against
Kafka's 7). The delete runs in batches (an index on the time column finds them), so it never
holds a long lock on a table the consumer writes to, and it reads time from the `Clock`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import Clock
from shared.logging import get_logger

log = get_logger(__name__)
PRUNE_BATCH_ROWS = 5_000


@dataclass
class Pruner:
    """Every `interval_s` (of the clock), delete rows of `table` whose `column` is older than
    now - `retention`, `batch_rows` at a time."""

    engine: AsyncEngine
    table: sa.Table
    column: str
    clock: Clock
    retention: timedelta
    interval_s: float
    batch_rows: int = PRUNE_BATCH_ROWS

    async def run(self) -> None:
        """Runs forever under the service's Loops, which restarts it after a database error."""
        while True:
            await self.prune()
            await self.clock.sleep(self.interval_s)

    async def prune(self) -> int:
        cutoff = self.clock.now() - self.retention
        total = 0
        while True:
            deleted = await self._delete_batch(cutoff)
            total += deleted
            if deleted < self.batch_rows:
                break
        if total:
            log.info("pruned", table=self.table.fullname, rows=total, before=cutoff.isoformat())
        return total

    async def _delete_batch(self, cutoff: datetime) -> int:
        [key] = self.table.primary_key.columns
        older = sa.select(key).where(self.table.c[self.column] < cutoff).limit(self.batch_rows)
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.delete(self.table).where(key.in_(older)))
        return int(result.rowcount)
