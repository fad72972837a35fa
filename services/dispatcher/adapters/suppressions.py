"""dispatcher.suppressions: who must get no more marketing mail, and why.

A customer who unsubscribed (from email.events) and an address the relay refused for good
(a 5xx at RCPT or DATA). Checked before every marketing send, so a request queued before the
unsubscribe arrived is still refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

UNSUBSCRIBED = "unsubscribed"
HARD_BOUNCE = "hard_bounce"

_ADD = text("""
    INSERT INTO dispatcher.suppressions (shop_id, kind, value, reason, since)
    SELECT * FROM unnest(CAST(:shops AS text[]), CAST(:kinds AS text[]),
        CAST(:values AS text[]), CAST(:reasons AS text[]), CAST(:sinces AS timestamptz[]))
    ON CONFLICT DO NOTHING
""")
_REASON = text("""
    SELECT reason FROM dispatcher.suppressions
    WHERE shop_id = :shop AND ((kind = 'customer' AND value = :customer)
        OR (kind = 'address' AND value = :address))
    ORDER BY since LIMIT 1
""")


class SuppressionRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, rows: Sequence[tuple[str, str, str, str, datetime]]) -> None:
        """(shop_id, kind, value, reason, since) rows; the first reason recorded stays."""
        if not rows:
            return
        shops, kinds, values, reasons, sinces = (list(column) for column in zip(*rows, strict=True))
        async with self._engine.begin() as conn:
            await conn.execute(
                _ADD,
                {
                    "shops": shops,
                    "kinds": kinds,
                    "values": values,
                    "reasons": reasons,
                    "sinces": sinces,
                },
            )

    async def reason(self, shop_id: str, customer_key: str, email: str) -> str | None:
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                _REASON, {"shop": shop_id, "customer": customer_key, "address": email.lower()}
            )
        return None if found is None else str(found)
