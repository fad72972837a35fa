"""dispatcher.messages: one row per request key; a handful of set statements per batch.

Every statement covers a whole batch (`= ANY`, `unnest` arrays) and runs on the asyncpg
connection underneath the engine as its own implicit transaction: one round trip, one durable
commit. `claim_id` names the batch that owns a row; a later statement of that batch only
touches rows it still owns, so two dispatchers racing for a request during a partition move
never both send it. Driver errors leave here as `Transient` (the database is away).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatcher.domain.records import MessageRecord
from shared.errors import Transient

SCHEMA = "dispatcher"
# What a database outage looks like from here (refused, reset, shut down, timed out).
_DATABASE_AWAY: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    SQLAlchemyError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
)

metadata = MetaData(schema=SCHEMA)
messages = Table(
    "messages",
    metadata,
    Column("request_key", Text, primary_key=True),
    Column("shop_id", Text, nullable=False),
    Column("customer_key", Text, nullable=False),
    Column("journey_id", Text, nullable=False),
    Column("step_id", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("smtp_message_id", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("claim_id", Text),
    CheckConstraint(
        "status IN ('claimed', 'data', 'sent', 'failed', 'suppressed', 'uncertain')",
        name="messages_status_known",
    ),
)

_RECORD_COLUMNS = (
    "request_key, shop_id, customer_key, journey_id, step_id, email, subject, status, "
    "reason, smtp_message_id, attempts, created_at, updated_at"
)

# -- name: known -- the recorded state of these request keys
_KNOWN = f"SELECT {_RECORD_COLUMNS} FROM dispatcher.messages WHERE request_key = ANY($1::text[])"

# -- name: claim -- new rows (claimed, suppressed or failed), or take over a row a crash left
# 'claimed'; a 'claimed' row counts one more SMTP attempt. Returns the rows this batch owns.
_CLAIM = """
INSERT INTO dispatcher.messages AS m (request_key, shop_id, customer_key, journey_id, step_id,
    email, subject, status, reason, attempts, claim_id, created_at, updated_at)
SELECT t.k, t.shop, t.customer, t.journey, t.step, t.email, t.subject, t.status, t.reason,
    CASE WHEN t.status = 'claimed' THEN 1 ELSE 0 END, $10, $11, $11
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::text[])
    AS t(k, shop, customer, journey, step, email, subject, status, reason)
ON CONFLICT (request_key) DO UPDATE SET
    status = excluded.status, reason = excluded.reason, subject = excluded.subject,
    claim_id = excluded.claim_id, updated_at = excluded.updated_at,
    attempts = m.attempts + CASE WHEN excluded.status = 'claimed' THEN 1 ELSE 0 END
WHERE m.status = 'claimed'
RETURNING m.request_key, m.attempts
"""

# -- name: mark_data -- just before their DATA commands go out; only rows this batch owns
_MARK_DATA = """
UPDATE dispatcher.messages SET status = 'data', updated_at = $3
WHERE request_key = ANY($1::text[]) AND claim_id = $2 AND status IN ('claimed', 'data')
RETURNING request_key
"""

# -- name: finish -- what SMTP said, per row; status 'claimed' releases the row (not sent)
_FINISH = """
UPDATE dispatcher.messages AS m SET status = t.status, reason = t.reason,
    smtp_message_id = t.mid, attempts = t.attempts, updated_at = $7,
    claim_id = CASE WHEN t.status = 'claimed' THEN NULL ELSE m.claim_id END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[])
    AS t(k, status, reason, mid, attempts)
WHERE m.request_key = t.k AND m.claim_id = $6
RETURNING m.request_key
"""

# -- name: mark_uncertain -- rows a crash left between DATA and the relay's answer
_MARK_UNCERTAIN = f"""
UPDATE dispatcher.messages SET status = 'uncertain', reason = $2, updated_at = $3
WHERE request_key = ANY($1::text[]) AND status = 'data'
RETURNING {_RECORD_COLUMNS}
"""


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """The asyncpg connection of a pooled engine connection; outside any transaction, so
    each statement commits by itself. Driver errors leave as `Transient`."""
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            try:
                yield raw.driver_connection
            except _DATABASE_AWAY:
                await conn.invalidate()  # never hand a broken connection out again
                raise
    except _DATABASE_AWAY as exc:
        raise Transient(f"database unavailable: {exc!r}") from exc


def _record(row: Any) -> MessageRecord:
    return MessageRecord(**dict(row.items()))


class MessageRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def _driver(self) -> AbstractAsyncContextManager[Any]:
        return driver_connection(self._engine)

    async def known(self, request_keys: Sequence[str]) -> dict[str, MessageRecord]:
        async with self._driver() as driver:
            rows = await driver.fetch(_KNOWN, list(request_keys))
        return {row["request_key"]: _record(row) for row in rows}

    async def claim(
        self, records: Sequence[MessageRecord], claim_id: str, now: datetime
    ) -> dict[str, int]:
        """Insert or take over the rows; returns key -> attempts for the rows now owned."""
        if not records:
            return {}
        columns = [
            [r.request_key for r in records],
            [r.shop_id for r in records],
            [r.customer_key for r in records],
            [r.journey_id for r in records],
            [r.step_id for r in records],
            [r.email for r in records],
            [r.subject for r in records],
            [r.status for r in records],
            [r.reason for r in records],
        ]
        async with self._driver() as driver:
            rows = await driver.fetch(_CLAIM, *columns, claim_id, now)
        return {row[0]: row[1] for row in rows}

    async def mark_data(
        self, request_keys: Sequence[str], claim_id: str, now: datetime
    ) -> set[str]:
        """Record that DATA is about to be issued; returns the keys this batch still owns."""
        async with self._driver() as driver:
            rows = await driver.fetch(_MARK_DATA, list(request_keys), claim_id, now)
        return {row[0] for row in rows}

    async def finish(
        self, records: Sequence[MessageRecord], claim_id: str, now: datetime
    ) -> set[str]:
        """Write each record's status, reason, Message-ID and attempts; returns the keys
        written (a row another dispatcher took over is left alone)."""
        if not records:
            return set()
        columns = [
            [r.request_key for r in records],
            [r.status for r in records],
            [r.reason for r in records],
            [r.smtp_message_id for r in records],
            [r.attempts for r in records],
        ]
        async with self._driver() as driver:
            rows = await driver.fetch(_FINISH, *columns, claim_id, now)
        return {row[0] for row in rows}

    async def mark_uncertain(
        self, request_keys: Sequence[str], reason: str, now: datetime
    ) -> list[MessageRecord]:
        if not request_keys:
            return []
        async with self._driver() as driver:
            rows = await driver.fetch(_MARK_UNCERTAIN, list(request_keys), reason, now)
        return [_record(row) for row in rows]
