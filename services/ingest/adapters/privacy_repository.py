"""Erasure and export of one customer (or a whole shop) in the ingest schema.

The customer is found by the request's keys, addresses and order ids, widened by what the facts
link to them (an account's address, a guest's key from it, a guest merged into an account).
The profile, its per-category figures, engagement summary and guest aliases are deleted;
orders, their lines, carts, message engagement, conversions and coupons stay for the shop's
report totals, under a random pseudonym instead of the customer key (a guest's key contains
the address), and a cart loses its recovery link.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.events import PrivacyRequest, customer_key
from shared.privacy import ExportData
from shared.subject_tables import (
    delete_customers,
    delete_shop,
    export_customers,
    pseudonym,
    pseudonymise,
    rows_as_json,
)

SCHEMA = "ingest"
# A person's own records: nothing in them is a count a report needs.
DELETED = ("customers", "customer_categories", "engagement")

_BY_KEY_OR_ADDRESS = sa.text("""
    SELECT customer_key, lower(email) FROM ingest.customers
    WHERE shop_id = :shop AND (customer_key = ANY(:keys) OR lower(email) = ANY(:emails))
""")
_BY_ORDER = sa.text("""
    SELECT customer_key FROM ingest.orders WHERE shop_id = :shop AND order_id = ANY(:orders)
""")
# A guest merged into an account (docs/adr/0004): both keys are the same person.
_ALIASES = sa.text("""
    SELECT alias_key, canonical_key, email FROM ingest.customer_aliases
    WHERE shop_id = :shop AND (alias_key = ANY(:keys) OR canonical_key = ANY(:keys)
        OR email = ANY(:emails))
""")
_FORGET_ALIASES = sa.text("""
    DELETE FROM ingest.customer_aliases WHERE alias_key = ANY(:keys) OR canonical_key = ANY(:keys)
""")
_FORGET_CART_LINKS = sa.text("""
    UPDATE ingest.carts SET recovery_url = NULL WHERE customer_key = ANY(:keys)
""")


@dataclass(frozen=True)
class Subject:
    keys: frozenset[str]
    emails: frozenset[str]


async def find_subject(conn: AsyncConnection, request: PrivacyRequest) -> Subject:
    shop = request.shop_id
    keys, emails = request.subject_keys(), {e.lower() for e in request.emails}
    rows = await conn.execute(
        _BY_KEY_OR_ADDRESS, {"shop": shop, "keys": list(keys), "emails": list(emails)}
    )
    for key, email in rows:
        keys.add(key)
        if email:
            emails.add(email)
    if request.order_ids:
        found = await conn.execute(_BY_ORDER, {"shop": shop, "orders": request.order_ids})
        keys |= {row[0] for row in found}
    params = {"shop": shop, "keys": list(keys), "emails": list(emails)}
    for alias, canonical, email in await conn.execute(_ALIASES, params):
        keys |= {alias, canonical}
        emails.add(email)
    keys |= {customer_key(shop, None, email) for email in emails}
    return Subject(frozenset(k for k in keys if k.startswith(shop + ":")), frozenset(emails))


class IngestPrivacyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def redact(self, request: PrivacyRequest) -> dict[str, int]:
        async with self._engine.begin() as conn:
            if request.scope == "shop":
                return await delete_shop(conn, SCHEMA, request.shop_id)
            subject = await find_subject(conn, request)
            keys = sorted(subject.keys)  # rows locked in key order, as the consumer does
            await conn.execute(_FORGET_CART_LINKS, {"keys": keys})
            aliases = await conn.execute(_FORGET_ALIASES, {"keys": keys})
            erased = await delete_customers(conn, SCHEMA, DELETED, keys)
            renames = {key: pseudonym(request.shop_id) for key in keys}
            erased |= await pseudonymise(conn, SCHEMA, renames, skip=DELETED)
        return erased | {"customer_aliases": int(aliases.rowcount)}

    async def export(self, request: PrivacyRequest) -> ExportData:
        async with self._engine.connect() as conn:
            subject = await find_subject(conn, request)
            keys = sorted(subject.keys)
            data = await export_customers(conn, SCHEMA, keys)
            data["order_lines"] = await rows_as_json(
                conn,
                "SELECT to_jsonb(l)::text FROM ingest.order_lines l JOIN ingest.orders o "
                "USING (shop_id, order_id) WHERE o.customer_key = ANY(:keys) "
                "ORDER BY l.order_id, l.line_no",
                {"keys": keys},
            )
            data["customer_aliases"] = await rows_as_json(
                conn,
                "SELECT to_jsonb(a)::text FROM ingest.customer_aliases a"
                " WHERE a.alias_key = ANY(:keys) OR a.canonical_key = ANY(:keys)"
                " ORDER BY a.alias_key",
                {"keys": keys},
            )
        return data
