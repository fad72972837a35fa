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
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import MessageRequest
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class QueuedSend:
    request: MessageRequest
    priority: int
    due_at: datetime
    expires_at: datetime | None
    time_zone: str
    check_at: datetime
    # As read back at release time: why the enrolment ended (it exited or failed meanwhile),
    # and the customer's latest marketing consent as the facts know it.
    ended: str | None = None
    consent: str | None = None

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

# The partitions this instance owns: a customer's held messages are decided by the instance
# that fires their timers (a customer the scheduler has no facts of yet is anyone's).
_OWNED = "(c.partition = ANY(CAST(:partitions AS int[])) OR c.partition IS NULL)"

# -- name: due_customers -- customers with a held message to look at again; skip those another
# pass is deciding on right now
_DUE_CUSTOMERS = text(f"""
    SELECT q.customer_key FROM scheduler.contact_queue q
    LEFT JOIN scheduler.customers c ON c.customer_key = q.customer_key
    WHERE q.check_at <= :now AND {_OWNED}
    ORDER BY q.check_at LIMIT :limit FOR UPDATE OF q SKIP LOCKED
""")

# -- name: queued -- every held message of these customers, with the state of its enrolment and
# the customer's latest consent (both may have changed while it waited)
_QUEUED = text("""
    SELECT q.*,
        CASE WHEN e.status IN ('exited', 'failed') THEN coalesce(e.exit_reason, e.status) END
            AS ended,
        c.profile ->> 'marketing_consent' AS consent
    FROM scheduler.contact_queue q
    LEFT JOIN scheduler.message_requests r ON r.request_key = q.request_key
    LEFT JOIN scheduler.enrollments e ON e.id = r.enrollment_id
    LEFT JOIN scheduler.customers c ON c.customer_key = q.customer_key
    WHERE q.customer_key = ANY(:customers)
    FOR UPDATE OF q SKIP LOCKED
""")

# -- name: next_check -- when this instance has to look at the queue next
_NEXT_CHECK = text(f"""
    SELECT min(q.check_at) FROM scheduler.contact_queue q
    LEFT JOIN scheduler.customers c ON c.customer_key = q.customer_key
    WHERE q.check_at <= :until AND {_OWNED}
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
    FROM unnest(CAST(:keys AS text[]), CAST(:at AS timestamptz[])) AS t(key, at)
    WHERE q.request_key = t.key
""")

# -- name: complete_waiting -- an enrolment whose last step was a held message stays active
# while it waits (so an exit rule, an order say, still stops it); once none of its messages
# waits any more, it is completed
_COMPLETE_WAITING = text("""
    UPDATE scheduler.enrollments e SET status = 'completed', updated_at = :now
    FROM scheduler.message_requests r, scheduler.journeys j
    WHERE r.request_key = ANY(:keys) AND e.id = r.enrollment_id AND e.status = 'active'
        AND j.id = e.journey_id AND j.version = e.journey_version
        AND e.step_index >= jsonb_array_length(j.definition -> 'steps')
        AND NOT EXISTS (
            SELECT 1 FROM scheduler.message_requests other
            JOIN scheduler.contact_queue q ON q.request_key = other.request_key
            WHERE other.enrollment_id = e.id)
""")

# -- name: shop_best_hours -- the local hour most of a shop's human opens happen at: each
# customer's usual opening hour, weighted by their opens of the last 90 days
_SHOP_BEST_HOURS = text("""
    SELECT DISTINCT ON (shop_id) shop_id, hour FROM (
        SELECT shop_id, (profile ->> 'usual_open_hour')::int AS hour,
            sum(greatest(coalesce((profile ->> 'opens_90d')::int, 0), 1)) AS opens
        FROM scheduler.customers
        WHERE shop_id = ANY(:shops) AND profile ->> 'usual_open_hour' IS NOT NULL
        GROUP BY shop_id, hour
    ) per_hour
    ORDER BY shop_id, opens DESC, hour
""")


def _queued(row: Any) -> QueuedSend:
    # The row's customer key, not the one in the stored body: a guest merged into an account
    # while the message waited is the account now (docs/adr/0004-one-customer.md).
    return QueuedSend(
        request=MessageRequest.model_validate(row.request | {"customer_key": row.customer_key}),
        priority=row.priority,
        due_at=row.due_at,
        expires_at=row.expires_at,
        time_zone=row.time_zone,
        check_at=row.check_at,
        ended=row.ended,
        consent=row.consent,
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

    async def due(
        self, partitions: Sequence[int], now: datetime, limit: int
    ) -> dict[str, list[QueuedSend]]:
        """The held messages of customers with something to look at, per customer."""
        found = await self._conn.execute(
            _DUE_CUSTOMERS, {"now": now, "limit": limit, "partitions": list(partitions)}
        )
        customers = sorted({row.customer_key for row in found})
        if not customers:
            return {}
        rows = await self._conn.execute(_QUEUED, {"customers": customers})
        queued: dict[str, list[QueuedSend]] = {}
        broken: list[str] = []
        for row in rows:
            try:
                queued.setdefault(row.customer_key, []).append(_queued(row))
            except ValidationError as exc:  # cannot ever be sent: out, so the rest goes on
                log.error("held_message_unreadable", request_key=row.request_key, error=str(exc))
                broken.append(row.request_key)
        await self.dropped(broken)
        return {customer: sends for customer, sends in queued.items() if sends}

    async def next_check(self, partitions: Sequence[int], until: datetime) -> datetime | None:
        found: datetime | None = await self._conn.scalar(
            _NEXT_CHECK, {"until": until, "partitions": list(partitions)}
        )
        return found

    async def history(self, customers: Sequence[str], since: datetime) -> dict[str, list[datetime]]:
        rows = await self._conn.execute(_HISTORY, {"customers": list(customers), "since": since})
        sent: dict[str, list[datetime]] = {}
        for row in rows:
            sent.setdefault(row.customer_key, []).append(row.released_at)
        return sent

    async def released(
        self, sends: Sequence[QueuedSend], counted: Sequence[QueuedSend], at: datetime
    ) -> None:
        """These went to the outbox: out of the queue; the counted ones into the contact log."""
        await self.dropped([s.key for s in sends])
        if not counted:
            return
        await self._conn.execute(
            _LOG,
            {
                "keys": [s.key for s in counted],
                "shops": [s.request.shop_id for s in counted],
                "customers": [s.request.customer_key for s in counted],
                "at": [at] * len(counted),
            },
        )

    async def dropped(self, keys: Sequence[str]) -> None:
        if keys:
            await self._conn.execute(_DONE, {"keys": list(keys)})

    async def recheck(self, wake: dict[str, datetime]) -> None:
        """Request key -> when to look at it again."""
        if wake:
            await self._conn.execute(_RECHECK, {"keys": list(wake), "at": list(wake.values())})

    async def complete_waiting(self, keys: Sequence[str], now: datetime) -> None:
        """After these left the queue: enrolments that only waited for them are completed."""
        if keys:
            await self._conn.execute(_COMPLETE_WAITING, {"keys": list(keys), "now": now})

    async def shop_best_hours(self, shops: Sequence[str]) -> dict[str, int]:
        rows = await self._conn.execute(_SHOP_BEST_HOURS, {"shops": list(shops)})
        return {row.shop_id: int(row.hour) for row in rows}
