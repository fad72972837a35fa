"""All SQL of one customer across guest and account: the alias table, the per-person lock, and
the merge that moves a guest's stored history to the account (docs/adr/0004-one-customer.md).

Set-based like the facts repository: one statement per table and batch, through the asyncpg
connection of the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.ingest.domain.identity import Alias, Link
from shared.db import DriverWrites

# Namespace of the advisory locks (the first key of the two-key form), so they can never
# collide with another user of advisory locks on the same database.
_LOCK_SPACE = 0x1D


class IdentityRepository(DriverWrites):
    _what = "identities"

    async def lock(self, guest_keys: Sequence[str]) -> None:
        """Hold each guest key until the transaction ends, in the order given (sorted).

        A guest's events and its account's events travel on different partitions and may be
        applied at the same moment by two consumers: this lock makes one of them wait, so the
        merge always sees the guest's rows and the guest's events always see the alias.
        """
        if guest_keys:
            await (await self._driver()).execute(_LOCK, _LOCK_SPACE, list(guest_keys))

    async def aliases(self, guest_keys: Sequence[str]) -> dict[str, Alias]:
        if not guest_keys:
            return {}
        rows = await (await self._driver()).fetch(_ALIASES, list(guest_keys))
        return {r[0]: Alias(r[1], r[2], r[3]) for r in rows}

    async def add(self, links: Sequence[Link], now: datetime) -> list[Link]:
        """Store the links as aliases; returns those new (an e-mail keeps its first account)."""
        if not links:
            return []
        rows = await (await self._driver()).fetch(
            _ADD_ALIASES,
            [link.guest_key for link in links],
            [link.shop_id for link in links],
            [link.email for link in links],
            [link.account_key for link in links],
            now,
        )
        added = {r[0] for r in rows}
        return [link for link in links if link.guest_key in added]

    async def merge(self, links: Sequence[Link], now: datetime) -> list[Link]:
        """Move each stored guest's history to its account, then forget the guest's own rows;
        returns the links whose guest was stored (the others had nothing to merge)."""
        if not links:
            return []
        driver = await self._driver()
        guests = [link.guest_key for link in links]
        accounts = [link.account_key for link in links]
        stored = {r[0] for r in await driver.fetch(_STORED_GUESTS, guests)}
        merging = [link for link in links if link.guest_key in stored]
        if not merging:
            return []
        guests = [link.guest_key for link in merging]
        accounts = [link.account_key for link in merging]
        for statement in _MERGE:
            await driver.execute(statement, guests, accounts)
        await driver.execute(_MARK_MERGED, guests, [link.event_id for link in merging], now)
        return merging


_LOCK = """
    SELECT count(pg_advisory_xact_lock($1::int, hashtext(k)))
    FROM unnest($2::text[]) AS k
"""

_ALIASES = """
    SELECT alias_key, canonical_key, merged_at, merged_by FROM ingest.customer_aliases
    WHERE alias_key = ANY($1::text[])
"""

_ADD_ALIASES = """
    INSERT INTO ingest.customer_aliases (alias_key, shop_id, email, canonical_key, created_at)
    SELECT g, s, e, a, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
        AS t(g, s, e, a)
    ON CONFLICT (alias_key) DO NOTHING
    RETURNING alias_key
"""

_STORED_GUESTS = """
    SELECT customer_key FROM ingest.customers WHERE customer_key = ANY($1::text[])
    ORDER BY customer_key FOR UPDATE
"""

_PAIRS = "unnest($1::text[], $2::text[]) AS m(guest, account)"

# In this order: the account's row (created from the guest's when the account has none yet),
# then everything keyed by the guest moves, then the guest's own rows go. The account's
# order facts are rebuilt from the orders afterwards (the caller), so orders count once.
_MERGE = (
    # Descriptive facts: the account's where it has them; an unsubscribe on either side stays.
    f"""
    INSERT INTO ingest.customers AS a (customer_key, shop_id, customer_id, email, first_name,
        last_name, locale, marketing_consent, registered_at, country, time_zone, updated_at)
    SELECT m.account, g.shop_id, NULL, g.email, g.first_name, g.last_name, g.locale,
        g.marketing_consent, g.registered_at, g.country, g.time_zone, g.updated_at
    FROM {_PAIRS} JOIN ingest.customers g ON g.customer_key = m.guest
    ON CONFLICT (customer_key) DO UPDATE SET
        email = coalesce(a.email, excluded.email),
        first_name = coalesce(a.first_name, excluded.first_name),
        last_name = coalesce(a.last_name, excluded.last_name),
        locale = coalesce(a.locale, excluded.locale),
        marketing_consent = CASE
            WHEN 'unsubscribed' IN (a.marketing_consent, excluded.marketing_consent)
                THEN 'unsubscribed'
            ELSE coalesce(a.marketing_consent, excluded.marketing_consent) END,
        registered_at = coalesce(a.registered_at, excluded.registered_at),
        country = coalesce(a.country, excluded.country),
        time_zone = coalesce(a.time_zone, excluded.time_zone),
        updated_at = greatest(a.updated_at, excluded.updated_at)
    """,
    f"UPDATE ingest.orders o SET customer_key = m.account FROM {_PAIRS} "
    "WHERE o.customer_key = m.guest",
    f"UPDATE ingest.carts c SET customer_key = m.account FROM {_PAIRS} "
    "WHERE c.customer_key = m.guest",
    f"UPDATE ingest.messages x SET customer_key = m.account FROM {_PAIRS} "
    "WHERE x.customer_key = m.guest",
    f"UPDATE ingest.conversions x SET customer_key = m.account FROM {_PAIRS} "
    "WHERE x.customer_key = m.guest",
    f"UPDATE ingest.coupons x SET customer_key = m.account FROM {_PAIRS} "
    "WHERE x.customer_key = m.guest",
    f"""
    INSERT INTO ingest.engagement AS a (customer_key, last_human_open_at, last_click_at,
        unsubscribed_at)
    SELECT m.account, g.last_human_open_at, g.last_click_at, g.unsubscribed_at
    FROM {_PAIRS} JOIN ingest.engagement g ON g.customer_key = m.guest
    ON CONFLICT (customer_key) DO UPDATE SET
        last_human_open_at = greatest(a.last_human_open_at, excluded.last_human_open_at),
        last_click_at = greatest(a.last_click_at, excluded.last_click_at),
        unsubscribed_at = least(a.unsubscribed_at, excluded.unsubscribed_at)
    """,
    f"DELETE FROM ingest.engagement x USING {_PAIRS} WHERE x.customer_key = m.guest",
    f"DELETE FROM ingest.customer_categories x USING {_PAIRS} WHERE x.customer_key = m.guest",
    f"DELETE FROM ingest.customers x USING {_PAIRS} WHERE x.customer_key = m.guest",
)

_MARK_MERGED = """
    UPDATE ingest.customer_aliases a SET merged_at = $3, merged_by = t.event_id
    FROM unnest($1::text[], $2::text[]) AS t(alias_key, event_id)
    WHERE a.alias_key = t.alias_key
"""
