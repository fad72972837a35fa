"""scheduler.contact_queue and contact_log: held messages and what went, in sets.

The caller owns the transaction: a message leaves the queue in the same transaction that
writes its request to the outbox, so a restart neither loses nor repeats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import MessageRequest


@dataclass(frozen=True)
class QueuedSend:
    request: MessageRequest
    priority: int
    due_at: datetime
    expires_at: datetime | None
    time_zone: str
    check_at: datetime

    @property
    def key(self) -> str:
        return self.request.request_key


# -- name: hold -- a redelivered decision for a held request changes nothing
_HOLD = text("""
    INSERT INTO scheduler.contact_queue (request_key, shop_id, customer_key, priority, due_at,
        expires_at, time_zone, request, check_at)
    SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:shops AS text[]),
        CAST(:customers AS text[]), CAST(:priorities AS int[]), CAST(:due AS timestamptz[]),
        CAST(:expires AS timestamptz[]), CAST(:zones AS text[]), CAST(:requests AS jsonb[]),
        CAST(:checks AS timestamptz[]))
    ON CONFLICT (request_key) DO NOTHING
""")

# -- name: due_customers -- customers with a held message to look at again; skip those another
# instance is deciding on right now
_DUE_CUSTOMERS = text("""
    SELECT customer_key FROM scheduler.contact_queue WHERE check_at <= :now
    ORDER BY check_at LIMIT :limit FOR UPDATE SKIP LOCKED
""")

_QUEUED = text("""
    SELECT * FROM scheduler.contact_queue WHERE customer_key = ANY(:customers)
    FOR UPDATE SKIP LOCKED
""")

_HISTORY = text("""
    SELECT customer_key, released_at FROM scheduler.contact_log
    WHERE customer_key = ANY(:customers) AND released_at > :since
""")

_DONE = text("DELETE FROM scheduler.contact_queue WHERE request_key = ANY(:keys)")

_LOG = text("""
    INSERT INTO scheduler.contact_log (request_key, shop_id, customer_key, released_at)
    SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:shops AS text[]),
        CAST(:customers AS text[]), CAST(:at AS timestamptz[]))
    ON CONFLICT (request_key) DO NOTHING
""")

_RECHECK = text("""
    UPDATE scheduler.contact_queue q SET check_at = t.at
    FROM unnest(CAST(:customers AS text[]), CAST(:at AS timestamptz[])) AS t(customer, at)
    WHERE q.customer_key = t.customer
""")


def _queued(row: Any) -> QueuedSend:
    return QueuedSend(
        request=MessageRequest.model_validate(row.request),
        priority=row.priority,
        due_at=row.due_at,
        expires_at=row.expires_at,
        time_zone=row.time_zone,
        check_at=row.check_at,
    )


class ContactRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def hold(self, sends: Sequence[QueuedSend]) -> None:
        if not sends:
            return
        await self._conn.execute(
            _HOLD,
            {
                "keys": [s.key for s in sends],
                "shops": [s.request.shop_id for s in sends],
                "customers": [s.request.customer_key for s in sends],
                "priorities": [s.priority for s in sends],
                "due": [s.due_at for s in sends],
                "expires": [s.expires_at for s in sends],
                "zones": [s.time_zone for s in sends],
                "requests": [
                    orjson.dumps(s.request.model_dump(mode="json")).decode() for s in sends
                ],
                "checks": [s.check_at for s in sends],
            },
        )

    async def due(self, now: datetime, limit: int) -> dict[str, list[QueuedSend]]:
        """The held messages of customers with something to look at, per customer."""
        found = await self._conn.execute(_DUE_CUSTOMERS, {"now": now, "limit": limit})
        customers = sorted({row.customer_key for row in found})
        if not customers:
            return {}
        rows = await self._conn.execute(_QUEUED, {"customers": customers})
        queued: dict[str, list[QueuedSend]] = {}
        for row in rows:
            queued.setdefault(row.customer_key, []).append(_queued(row))
        return queued

    async def history(self, customers: Sequence[str], since: datetime) -> dict[str, list[datetime]]:
        rows = await self._conn.execute(_HISTORY, {"customers": list(customers), "since": since})
        sent: dict[str, list[datetime]] = {}
        for row in rows:
            sent.setdefault(row.customer_key, []).append(row.released_at)
        return sent

    async def released(self, sends: Sequence[QueuedSend], at: datetime) -> None:
        """These went to the outbox: out of the queue, into the customer's contact log."""
        if not sends:
            return
        await self._conn.execute(_DONE, {"keys": [s.key for s in sends]})
        await self._conn.execute(
            _LOG,
            {
                "keys": [s.key for s in sends],
                "shops": [s.request.shop_id for s in sends],
                "customers": [s.request.customer_key for s in sends],
                "at": [at] * len(sends),
            },
        )

    async def dropped(self, keys: Sequence[str]) -> None:
        if keys:
            await self._conn.execute(_DONE, {"keys": list(keys)})

    async def recheck(self, wake: dict[str, datetime]) -> None:
        if wake:
            await self._conn.execute(_RECHECK, {"customers": list(wake), "at": list(wake.values())})
