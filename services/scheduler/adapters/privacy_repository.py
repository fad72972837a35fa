"""The scheduler's side of erasure and export, and the record of every privacy request.

Erasure of a customer: the facts snapshot and held messages (contact queue, unpublished outbox
rows) are deleted, the customer's timers too, so nothing more is sent; active enrolments end
('exited', 'redacted'); enrolments and the contact log keep their rows for the reports under a
random pseudonym. Exports already assembled for that customer are deleted.
An export holds every row with the customer's key, and the timers, message requests and their
results and engagement of the customer's enrolments.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.clock import Clock
from shared.events import PrivacyRequest, customer_key, subject_hash
from shared.privacy import ExportData
from shared.subject_tables import (
    delete_customers,
    delete_shop,
    export_customers,
    pseudonym,
    pseudonymise,
    rows_as_json,
)

SCHEMA = "scheduler"
# A pending segment entry is a message in waiting, like a held one.
DELETED = ("customers", "contact_queue", "segment_timers")
PRIVACY_TABLES = ("privacy_requests", "privacy_parts")
REDACTED = "redacted"

_SUBJECT = sa.text("""
    SELECT customer_key, lower(profile->>'email') FROM scheduler.customers
    WHERE shop_id = :shop
      AND (customer_key = ANY(:keys) OR lower(profile->>'email') = ANY(:emails))
""")
# A guest merged into an account: both keys are the same person.
_ALIASES = sa.text("""
    SELECT alias_key, canonical_key FROM scheduler.customer_aliases
    WHERE alias_key = ANY(:keys) OR canonical_key = ANY(:keys)
""")
_FORGET_ALIASES = sa.text("""
    DELETE FROM scheduler.customer_aliases
    WHERE alias_key = ANY(:keys) OR canonical_key = ANY(:keys)
""")
_ENROLLMENTS = sa.text("SELECT id FROM scheduler.enrollments WHERE customer_key = ANY(:keys)")
_SHOP_ENROLLMENTS = sa.text(
    "SELECT id FROM scheduler.enrollments WHERE starts_with(customer_key, :prefix)"
)
_DELETE_TIMERS = sa.text("DELETE FROM scheduler.timers WHERE enrollment_id = ANY(:ids)")
_END_ENROLLMENTS = sa.text("""
    UPDATE scheduler.enrollments SET status = 'exited', exit_reason = :reason, updated_at = :now
    WHERE id = ANY(:ids) AND status = 'active'
""")
_DELETE_OUTBOX = sa.text("DELETE FROM scheduler.outbox WHERE key = ANY(:keys)")
# Customer-keyed rows only: a privacy request waiting there is keyed by the bare shop id.
_DELETE_SHOP_OUTBOX = sa.text("DELETE FROM scheduler.outbox WHERE starts_with(key, :prefix)")
_DELETE_SHOP_REQUESTS = sa.text("""
    DELETE FROM scheduler.message_engagement WHERE request_key IN (
        SELECT request_key FROM scheduler.message_requests WHERE enrollment_id = ANY(:ids))
""")
_DELETE_SHOP_MESSAGE_REQUESTS = sa.text(
    "DELETE FROM scheduler.message_requests WHERE enrollment_id = ANY(:ids)"
)
# Exports made for this subject (or shop): their data goes, the request says it was erased.
_ERASE_EXPORTS = sa.text("""
    WITH erased AS (
        UPDATE scheduler.privacy_requests SET erased_at = :now
        WHERE kind = 'export' AND shop_id = :shop
          AND (:whole_shop OR subject_hashes && CAST(:hashes AS text[]))
        RETURNING request_id)
    DELETE FROM scheduler.privacy_parts WHERE request_id IN (SELECT request_id FROM erased)
""")


# What the scheduler holds about the customer's enrolments, in tables without a customer key:
# their timers, the messages asked for and what became of them.
_REQUESTS_OF = """
    SELECT r.* FROM scheduler.message_requests r JOIN scheduler.enrollments e
    ON e.id = r.enrollment_id WHERE e.customer_key = ANY(:keys)
"""
_BY_ENROLMENT = {
    "timers": "SELECT to_jsonb(t)::text FROM scheduler.timers t JOIN scheduler.enrollments e"
    " ON e.id = t.enrollment_id WHERE e.customer_key = ANY(:keys) ORDER BY t.enrollment_id",
    "message_requests": f"SELECT to_jsonb(r)::text FROM ({_REQUESTS_OF}) r ORDER BY r.request_key",
    "message_engagement": "SELECT to_jsonb(m)::text FROM scheduler.message_engagement m"
    f" JOIN ({_REQUESTS_OF}) r USING (request_key) ORDER BY m.request_key",
    "message_results": "SELECT to_jsonb(x)::text FROM scheduler.message_results x"
    f" JOIN ({_REQUESTS_OF}) r USING (request_key) ORDER BY x.request_key",
}
_ALIASES_OF = """
    SELECT to_jsonb(a)::text FROM scheduler.customer_aliases a
    WHERE a.alias_key = ANY(:keys) OR a.canonical_key = ANY(:keys) ORDER BY a.alias_key
"""


@dataclass(frozen=True)
class Subject:
    keys: list[str]
    emails: list[str]

    def hashes(self, shop_id: str) -> list[str]:
        return [subject_hash(shop_id, v) for v in (*self.keys, *self.emails)]


async def find_subject(conn: AsyncConnection, request: PrivacyRequest) -> Subject:
    shop = request.shop_id
    keys, emails = request.subject_keys(), {e.lower() for e in request.emails}
    params = {"shop": shop, "keys": list(keys), "emails": list(emails)}
    for key, email in await conn.execute(_SUBJECT, params):
        keys.add(key)
        if email:
            emails.add(email)
    keys |= {customer_key(shop, None, email) for email in emails}
    for alias, canonical in await conn.execute(_ALIASES, {"keys": list(keys)}):
        keys |= {alias, canonical}
    return Subject(sorted(k for k in keys if k.startswith(shop + ":")), sorted(emails))


class SchedulerPrivacyRepository:
    """The PrivacyStore of the scheduler schema."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def redact(self, request: PrivacyRequest) -> dict[str, int]:
        now = self._clock.now()
        async with self._engine.begin() as conn:
            if request.scope == "shop":
                return await _erase_shop(conn, request.shop_id, now)
            subject = await find_subject(conn, request)
            erased = await _stop_everything_for(conn, subject.keys, now)
            erased |= await delete_customers(conn, SCHEMA, DELETED, subject.keys)
            renames = {key: pseudonym(request.shop_id) for key in subject.keys}
            erased |= await pseudonymise(conn, SCHEMA, renames, skip=DELETED)
            await _erase_exports(conn, request.shop_id, subject.hashes(request.shop_id), now)
        return erased

    async def export(self, request: PrivacyRequest) -> ExportData:
        async with self._engine.connect() as conn:
            subject = await find_subject(conn, request)
            data = await export_customers(conn, SCHEMA, subject.keys)
            for table, query in _BY_ENROLMENT.items():
                data[table] = await rows_as_json(conn, query, {"keys": subject.keys})
            data["customer_aliases"] = await rows_as_json(conn, _ALIASES_OF, {"keys": subject.keys})
        return data


async def _stop_everything_for(
    conn: AsyncConnection, keys: Collection[str], now: datetime
) -> dict[str, int]:
    """Nothing more is sent: timers and unpublished requests go, enrolments end."""
    ids = [row[0] for row in await conn.execute(_ENROLLMENTS, {"keys": list(keys)})]
    timers = await conn.execute(_DELETE_TIMERS, {"ids": ids})
    await conn.execute(_END_ENROLLMENTS, {"ids": ids, "reason": REDACTED, "now": now})
    outbox = await conn.execute(_DELETE_OUTBOX, {"keys": list(keys)})
    aliases = await conn.execute(_FORGET_ALIASES, {"keys": list(keys)})
    return {
        "timers": int(timers.rowcount),
        "outbox": int(outbox.rowcount),
        "customer_aliases": int(aliases.rowcount),
    }


async def _erase_shop(conn: AsyncConnection, shop_id: str, now: datetime) -> dict[str, int]:
    prefix = shop_id + ":"
    ids = [row[0] for row in await conn.execute(_SHOP_ENROLLMENTS, {"prefix": prefix})]
    await conn.execute(_DELETE_TIMERS, {"ids": ids})
    await conn.execute(_DELETE_SHOP_REQUESTS, {"ids": ids})
    await conn.execute(_DELETE_SHOP_MESSAGE_REQUESTS, {"ids": ids})
    outbox = await conn.execute(_DELETE_SHOP_OUTBOX, {"prefix": prefix})
    await _erase_exports(conn, shop_id, [], now, whole_shop=True)
    erased = await delete_shop(conn, SCHEMA, shop_id, skip=PRIVACY_TABLES)
    return erased | {"outbox": int(outbox.rowcount), "enrollments": len(ids)}


async def _erase_exports(
    conn: AsyncConnection,
    shop_id: str,
    hashes: list[str],
    now: datetime,
    *,
    whole_shop: bool = False,
) -> None:
    params = {"now": now, "shop": shop_id, "hashes": hashes, "whole_shop": whole_shop}
    await conn.execute(_ERASE_EXPORTS, params)


# --- the record of requests and answers ---------------------------------------------------

_RECORD_REQUEST = sa.text("""
    INSERT INTO scheduler.privacy_requests AS r (request_id, kind, scope, shop_id, origin,
        platform_request_id, subject_hashes, requested_at, expires_at)
    VALUES (:id, :kind, :scope, :shop, :origin, :platform_id, CAST(:hashes AS text[]),
        :requested_at, :expires_at)
    ON CONFLICT (request_id) DO UPDATE SET scope = excluded.scope, origin = excluded.origin,
        platform_request_id = excluded.platform_request_id,
        subject_hashes = excluded.subject_hashes, requested_at = excluded.requested_at
    WHERE r.origin = 'unknown'
""")
# An answer can overtake its request (two topics): it leaves a placeholder the request fills.
_PLACEHOLDER = sa.text("""
    INSERT INTO scheduler.privacy_requests (request_id, kind, scope, shop_id, origin,
        subject_hashes, requested_at, expires_at)
    VALUES (:id, :kind, 'unknown', :shop, 'unknown', '{}', :now, :expires_at)
    ON CONFLICT (request_id) DO NOTHING
""")
_RECORD_PART = sa.text("""
    INSERT INTO scheduler.privacy_parts (request_id, service, received_at, erased, data)
    SELECT :id, :service, :now, CAST(:erased AS jsonb),
        CASE WHEN r.erased_at IS NULL THEN CAST(:data AS jsonb) END
    FROM scheduler.privacy_requests r WHERE r.request_id = :id
    ON CONFLICT (request_id, service) DO NOTHING
""")
_REQUESTS = """
    SELECT r.request_id, r.kind, r.scope, r.shop_id, r.origin, r.platform_request_id,
        r.requested_at, r.erased_at,
        coalesce(jsonb_object_agg(p.service, p.received_at)
            FILTER (WHERE p.service IS NOT NULL), '{{}}')::text AS answered,
        coalesce(jsonb_object_agg(p.service, p.erased)
            FILTER (WHERE p.erased IS NOT NULL), '{{}}')::text AS erased
    FROM scheduler.privacy_requests r
    LEFT JOIN scheduler.privacy_parts p USING (request_id)
    WHERE {where}
    GROUP BY r.request_id
    ORDER BY r.requested_at DESC
    LIMIT 500
"""
_EXPORT_PARTS = sa.text("""
    SELECT service, data::text FROM scheduler.privacy_parts
    WHERE request_id = :id AND data IS NOT NULL
""")


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    kind: str
    scope: str
    shop_id: str
    origin: str
    platform_request_id: str | None
    requested_at: datetime
    erased_at: datetime | None
    answered: dict[str, str]  # service -> when its answer arrived
    erased: dict[str, dict[str, int]]  # service -> rows erased per table


class PrivacyRequests:
    """What was asked, and which service answered: bound to the caller's connection."""

    def __init__(self, conn: AsyncConnection, export_retention: timedelta) -> None:
        self._conn = conn
        self._retention = export_retention

    async def record_request(self, kind: str, request: PrivacyRequest, hashes: list[str]) -> None:
        expires = request.requested_at + self._retention if kind == "export" else None
        await self._conn.execute(
            _RECORD_REQUEST,
            {
                "id": request.request_id,
                "kind": kind,
                "scope": request.scope,
                "shop": request.shop_id,
                "origin": request.origin,
                "platform_id": request.platform_request_id,
                "hashes": hashes,
                "requested_at": request.requested_at,
                "expires_at": expires,
            },
        )

    async def record_answer(
        self,
        kind: str,
        request_id: str,
        shop_id: str,
        service: str,
        now: datetime,
        *,
        erased: dict[str, int] | None = None,
        data: ExportData | None = None,
    ) -> None:
        expires = now + self._retention if kind == "export" else None
        await self._conn.execute(
            _PLACEHOLDER,
            {"id": request_id, "kind": kind, "shop": shop_id, "now": now, "expires_at": expires},
        )
        await self._conn.execute(
            _RECORD_PART,
            {
                "id": request_id,
                "service": service,
                "now": now,
                "erased": None if erased is None else orjson.dumps(erased).decode(),
                "data": None if data is None else orjson.dumps(data).decode(),
            },
        )

    async def find(self, **filters: str | None) -> list[RequestRecord]:
        """Requests by any of request_id, shop_id, platform_request_id, kind (None: any)."""
        given = {k: v for k, v in filters.items() if v is not None}
        where = " AND ".join(f"r.{k} = :{k}" for k in given) or "true"
        rows = await self._conn.execute(sa.text(_REQUESTS.format(where=where)), given)
        return [_record(row) for row in rows]

    async def export_parts(self, request_id: str) -> dict[str, Any]:
        rows = await self._conn.execute(_EXPORT_PARTS, {"id": request_id})
        return {str(service): orjson.loads(data) for service, data in rows}


def _record(row: Any) -> RequestRecord:
    return RequestRecord(
        request_id=row.request_id,
        kind=row.kind,
        scope=row.scope,
        shop_id=row.shop_id,
        origin=row.origin,
        platform_request_id=row.platform_request_id,
        requested_at=row.requested_at,
        erased_at=row.erased_at,
        answered=orjson.loads(row.answered),
        erased=orjson.loads(row.erased),
    )
