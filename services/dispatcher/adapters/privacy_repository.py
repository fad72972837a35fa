"""The dispatcher's side of erasure and export, and the check that keeps queued mail unsent.

Erasure of a customer: every message row keeps its journey, step, status and times (the
reports count them) but loses the address and the subject (which may carry the name) and gets a
random pseudonym for the customer key; a message still waiting for the relay ('claimed') is
closed as suppressed / redacted, so it is never sent. The customer's suppressions go with the
rest of the data. What stays is a hash of each erased key and address with the time
(dispatcher.redactions), for as long as a request asked before the erasure could still arrive
(`redaction_memory_days`): such a request is dropped unsent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.dispatcher.adapters.repository import metadata
from shared.clock import Clock
from shared.events import MessageRequest, PrivacyRequest, customer_key, subject_hash
from shared.privacy import ExportData
from shared.subject_tables import (
    delete_shop,
    export_customers,
    pseudonym,
    pseudonymise,
    rows_as_json,
)

SCHEMA = "dispatcher"
REDACTED = "redacted"
WHOLE_SHOP = ""  # the value hashed for a shop's erasure

redactions = sa.Table(
    "redactions",
    metadata,
    sa.Column("subject_hash", sa.Text, primary_key=True),
    sa.Column("redacted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("redactions_by_time", "redacted_at"),
)

_SUBJECT = sa.text("""
    SELECT DISTINCT customer_key, lower(email) FROM dispatcher.messages
    WHERE shop_id = :shop AND (customer_key = ANY(:keys) OR lower(email) = ANY(:emails))
""")
_FORGET_MESSAGES = sa.text("""
    UPDATE dispatcher.messages SET email = :redacted, subject = :redacted, updated_at = :now,
        status = CASE WHEN status = 'claimed' THEN 'suppressed' ELSE status END,
        reason = CASE WHEN status = 'claimed' THEN :redacted ELSE reason END
    WHERE customer_key = ANY(:keys)
""")
_FORGET_SUPPRESSIONS = sa.text("""
    DELETE FROM dispatcher.suppressions WHERE shop_id = :shop
      AND ((kind = 'customer' AND value = ANY(:keys))
        OR (kind = 'address' AND value = ANY(:emails)))
""")
_REMEMBER = sa.text("""
    INSERT INTO dispatcher.redactions (subject_hash, redacted_at)
    SELECT h, :now FROM unnest(CAST(:hashes AS text[])) AS h
    ON CONFLICT (subject_hash) DO UPDATE SET redacted_at = excluded.redacted_at
""")
_REDACTED_SINCE = sa.text("""
    SELECT subject_hash, redacted_at FROM dispatcher.redactions
    WHERE subject_hash = ANY(CAST(:hashes AS text[]))
""")
_SUPPRESSIONS_OF = """
    SELECT to_jsonb(s)::text FROM dispatcher.suppressions s WHERE s.shop_id = :shop
      AND ((s.kind = 'customer' AND s.value = ANY(:keys))
        OR (s.kind = 'address' AND s.value = ANY(:emails)))
"""


async def _subject(conn: AsyncConnection, request: PrivacyRequest) -> tuple[list[str], list[str]]:
    shop = request.shop_id
    keys, emails = request.subject_keys(), {e.lower() for e in request.emails}
    params = {"shop": shop, "keys": list(keys), "emails": list(emails)}
    for key, email in await conn.execute(_SUBJECT, params):
        keys.add(key)
        emails.add(email)
    keys |= {customer_key(shop, None, email) for email in emails}
    return sorted(k for k in keys if k.startswith(shop + ":")), sorted(emails)


class DispatcherPrivacyRepository:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def redact(self, request: PrivacyRequest) -> dict[str, int]:
        now, shop = self._clock.now(), request.shop_id
        async with self._engine.begin() as conn:
            if request.scope == "shop":
                await self._remember(conn, [subject_hash(shop, WHOLE_SHOP)], now)
                return await delete_shop(conn, SCHEMA, shop, skip=("redactions",))
            keys, emails = await _subject(conn, request)
            await self._remember(conn, [subject_hash(shop, v) for v in keys + emails], now)
            params = {"keys": keys, "redacted": REDACTED, "now": now}
            forgotten = await conn.execute(_FORGET_MESSAGES, params)
            suppressions = await conn.execute(
                _FORGET_SUPPRESSIONS, {"shop": shop, "keys": keys, "emails": emails}
            )
            renames = {key: pseudonym(shop) for key in keys}
            erased = await pseudonymise(conn, SCHEMA, renames)
        return erased | {
            "messages": int(forgotten.rowcount),
            "suppressions": int(suppressions.rowcount),
        }

    async def export(self, request: PrivacyRequest) -> ExportData:
        async with self._engine.connect() as conn:
            keys, emails = await _subject(conn, request)
            data = await export_customers(conn, SCHEMA, keys)
            params = {"shop": request.shop_id, "keys": keys, "emails": emails}
            data["suppressions"] = await rows_as_json(conn, _SUPPRESSIONS_OF, params)
        return data

    @staticmethod
    async def _remember(conn: AsyncConnection, hashes: list[str], now: datetime) -> None:
        await conn.execute(_REMEMBER, {"hashes": hashes, "now": now})

    async def withheld(self, requests: Sequence[MessageRequest]) -> set[str]:
        """Request keys of requests asked before their customer (or shop) was erased."""
        asked = {r.request_key: _hashes(r) for r in requests}
        wanted = sorted({h for hashes in asked.values() for h in hashes})
        if not wanted:
            return set()
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_REDACTED_SINCE, {"hashes": wanted})).all()
        since: dict[str, datetime] = {str(h): at for h, at in rows}
        if not since:
            return set()
        by_key = {r.request_key: r for r in requests}
        return {
            key
            for key, hashes in asked.items()
            if any(h in since and by_key[key].requested_at <= since[h] for h in hashes)
        }


def _hashes(request: MessageRequest) -> list[str]:
    shop = request.shop_id
    values = [request.customer_key, request.recipient.email.lower(), WHOLE_SHOP]
    return [subject_hash(shop, value) for value in values]
