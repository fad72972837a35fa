"""dispatcher.suppressions: who must get no more marketing mail, and why.

A customer who unsubscribed (from email.events), an address the relay refused for good
(a 5xx at RCPT or DATA), and a customer a journey sunset (customer.sunset.v1) until their
next order or opt-in (dispatcher.reengagements). Checked before every marketing send, one
query per batch, so a request queued before the unsubscribe arrived is still refused
(suppression_barrier.py makes sure the table holds every unsubscribe already on email.events
by then).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

UNSUBSCRIBED = "unsubscribed"
HARD_BOUNCE = "hard_bounce"
SUNSET = "sunset"  # never reacted to the win-back: no marketing until an order or an opt-in

_REENGAGED = text("""
    INSERT INTO dispatcher.reengagements AS r (shop_id, customer_key, at)
    SELECT s, c, max(a) FROM unnest(CAST(:shops AS text[]), CAST(:customers AS text[]),
        CAST(:ats AS timestamptz[])) AS x(s, c, a)
    GROUP BY s, c
    ON CONFLICT (shop_id, customer_key) DO UPDATE SET at = greatest(r.at, excluded.at)
""")
# A sunset the customer has already answered (ordered or opted in at or after it) is not kept.
_LIFT = text("""
    DELETE FROM dispatcher.suppressions s USING dispatcher.reengagements r
    WHERE s.kind = 'customer' AND s.reason = 'sunset' AND r.shop_id = s.shop_id
        AND r.customer_key = s.value AND r.at >= s.since
        AND (s.shop_id, s.value) IN (SELECT * FROM unnest(CAST(:shops AS text[]),
            CAST(:customers AS text[])))
""")

_ADD = text("""
    INSERT INTO dispatcher.suppressions (shop_id, kind, value, reason, since)
    SELECT * FROM unnest(CAST(:shops AS text[]), CAST(:kinds AS text[]),
        CAST(:values AS text[]), CAST(:reasons AS text[]), CAST(:sinces AS timestamptz[]))
    ON CONFLICT DO NOTHING
""")
_ADD_ADDRESSES_OF = text("""
    INSERT INTO dispatcher.suppressions (shop_id, kind, value, reason, since)
    SELECT m.shop_id, 'address', lower(m.email), 'unsubscribed', t.since
    FROM unnest(CAST(:keys AS text[]), CAST(:sinces AS timestamptz[])) AS t(request_key, since)
    JOIN dispatcher.messages m ON m.request_key = t.request_key
    ON CONFLICT DO NOTHING
""")

# One row per (shop, customer, address, requested_at) asked, in order: the first suppression's
# reason or NULL. A sunset holds for mail requested after it: the goodbye of the win-back is
# requested in the pass that sunsets, and the dispatcher may read the sunset first.
_REASONS = text("""
    SELECT (SELECT s.reason FROM dispatcher.suppressions s
            WHERE s.shop_id = t.shop AND ((s.kind = 'customer' AND s.value = t.customer)
                OR (s.kind = 'address' AND s.value = t.address))
                AND NOT (s.reason = 'sunset' AND s.since >= t.requested)
            ORDER BY s.since LIMIT 1)
    FROM unnest(CAST(:shops AS text[]), CAST(:customers AS text[]), CAST(:addresses AS text[]),
        CAST(:requested AS timestamptz[]))
        WITH ORDINALITY AS t(shop, customer, address, requested, n)
    ORDER BY t.n
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

    async def add_unsubscribed_addresses(self, sent: Sequence[tuple[str, datetime]]) -> None:
        """(request_key, since) of unsubscribes: the address each message went to is
        suppressed for marketing as well, in its shop."""
        if not sent:
            return
        async with self._engine.begin() as conn:
            await conn.execute(
                _ADD_ADDRESSES_OF, {"keys": [k for k, _ in sent], "sinces": [s for _, s in sent]}
            )

    async def sunset_and_lift(
        self,
        sunsets: Sequence[tuple[str, str, datetime]],
        reengaged: Sequence[tuple[str, str, datetime]],
    ) -> None:
        """Sunsets (shop_id, customer_key, since) and re-engagements (shop_id, customer_key,
        at: an order or an opt-in), in one transaction; whichever arrived first, a sunset
        stands only while no re-engagement is as recent as it."""
        if not sunsets and not reengaged:
            return
        async with self._engine.begin() as conn:
            if reengaged:
                shops, customers, ats = (list(c) for c in zip(*reengaged, strict=True))
                await conn.execute(_REENGAGED, {"shops": shops, "customers": customers, "ats": ats})
            if sunsets:
                shops, customers, sinces = (list(c) for c in zip(*sunsets, strict=True))
                await conn.execute(
                    _ADD,
                    {
                        "shops": shops,
                        "kinds": ["customer"] * len(shops),
                        "values": customers,
                        "reasons": [SUNSET] * len(shops),
                        "sinces": sinces,
                    },
                )
            touched = {(s, c) for s, c, _ in (*sunsets, *reengaged)}
            await conn.execute(
                _LIFT,
                {"shops": [s for s, _ in touched], "customers": [c for _, c in touched]},
            )

    async def reasons(self, asked: Sequence[tuple[str, str, str, datetime]]) -> list[str | None]:
        """For (shop_id, customer_key, email, requested_at) each, its suppression reason or
        None: one query."""
        if not asked:
            return []
        shops, customers, addresses, requested = (
            list(column) for column in zip(*asked, strict=True)
        )
        params = {
            "shops": shops,
            "customers": customers,
            "addresses": [a.lower() for a in addresses],
            "requested": requested,
        }
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_REASONS, params)).all()
        return [None if row[0] is None else str(row[0]) for row in rows]
