"""All SQL of the engagement facts and conversions: one set-based statement per table and batch.

The upserts merge with what is stored by the rules of domain/engagement.py (`merge_*`). The
caller owns the transaction; statements go through the asyncpg connection underneath, one
array parameter per column (`unnest`), like the facts repository.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from services.ingest.domain.engagement import (
    CustomerEngagement,
    IssuedCoupon,
    LeftCart,
    LineId,
    MessageRow,
    Order,
    Touch,
)
from shared import events as ev
from shared.db import DriverWrites


class EngagementRepository(DriverWrites):
    _what = "engagement"

    async def claim_new(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = await (await self._driver()).fetch(_CLAIM_NEW, list(event_ids))
        return {row[0] for row in rows}

    async def upsert_messages(self, rows: Sequence[MessageRow]) -> None:
        if not rows:
            return
        columns: list[list[Any]] = [[getattr(r, name) for r in rows] for name in _MESSAGE_COLUMNS]
        columns.append([orjson.dumps(list(r.clicked_links)).decode() for r in rows])
        await (await self._driver()).execute(_UPSERT_MESSAGES, *columns)

    async def upsert_customers(self, rows: Sequence[CustomerEngagement]) -> None:
        if not rows:
            return
        columns = [[getattr(r, name) for r in rows] for name in _CUSTOMER_COLUMNS]
        await (await self._driver()).execute(_UPSERT_ENGAGEMENT, *columns)

    async def unsubscribe(self, customer_keys: Iterable[str]) -> None:
        keys = sorted(set(customer_keys))
        if keys:
            await (await self._driver()).execute(_UNSUBSCRIBE, keys)

    async def messages(self, request_keys: Iterable[str]) -> dict[str, ev.MessageEngagement]:
        keys = list(set(request_keys))
        if not keys:
            return {}
        rows = await (await self._driver()).fetch(_MESSAGES_BY_KEY, keys)
        return {row["request_key"]: _engagement(row) for row in rows}

    async def touched_messages(
        self, customer_keys: Iterable[str], since: datetime
    ) -> dict[str, list[MessageRow]]:
        """Each customer's messages clicked or opened by a person since `since`."""
        keys = list(set(customer_keys))
        if not keys:
            return {}
        rows = await (await self._driver()).fetch(_TOUCHED, keys, since)
        found: dict[str, list[MessageRow]] = {}
        for row in rows:
            found.setdefault(row["customer_key"], []).append(_message_row(row))
        return found

    async def orders(self, shop_order_ids: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """Currency, cart id and when that cart was last changed, per (shop, order)."""
        if not shop_order_ids:
            return {}
        shops = [s for s, _ in shop_order_ids]
        ids = [o for _, o in shop_order_ids]
        rows = await (await self._driver()).fetch(_ORDERS, shops, ids)
        return {(r["shop_id"], r["order_id"]): r for r in rows}

    async def carts_left_before(
        self, wanted: Sequence[tuple[Order, datetime]]
    ) -> dict[tuple[str, str], tuple[tuple[LineId, ...], LeftCart]]:
        """Per (shop, order): the order's lines and its customer's most recent cart left by the
        time given (when the reminder went out). Orders whose customer left none are absent."""
        if not wanted:
            return {}
        columns: list[list[Any]] = [
            [o.shop_id for o, _ in wanted],
            [o.order_id for o, _ in wanted],
            [o.customer_key for o, _ in wanted],
            [at for _, at in wanted],
        ]
        rows = await (await self._driver()).fetch(_CARTS_LEFT_BEFORE, *columns)
        return {
            (r["shop_id"], r["order_id"]): (
                _line_ids(r["order_lines"]),
                LeftCart(r["cart_id"], r["left_at"], _line_ids(r["cart_lines"])),
            )
            for r in rows
        }

    async def record_coupons(self, coupons: Sequence[ev.CouponIssued]) -> None:
        """Codes handed to messages; a redelivered coupon.issued changes nothing."""
        if not coupons:
            return
        columns: list[list[Any]] = [
            [c.shop_id for c in coupons],
            [c.code for c in coupons],
            [c.request_key for c in coupons],
            [c.customer_key for c in coupons],
            [c.journey_id for c in coupons],
            [c.step_id for c in coupons],
            [c.issued_at for c in coupons],
            [c.expires_at for c in coupons],
        ]
        await (await self._driver()).execute(_INSERT_COUPONS, *columns)

    async def coupons_used(
        self, shop_codes: Sequence[tuple[str, str]]
    ) -> dict[str, list[IssuedCoupon]]:
        """Per shop, the issued coupons among these (shop, code) pairs, case-insensitively."""
        if not shop_codes:
            return {}
        shops = [s for s, _ in shop_codes]
        codes = [c.strip().lower() for _, c in shop_codes]
        rows = await (await self._driver()).fetch(_COUPONS_USED, shops, codes)
        found: dict[str, list[IssuedCoupon]] = {}
        for r in rows:
            coupon = IssuedCoupon(
                r["shop_id"], r["code"], r["request_key"], r["issued_at"], r["expires_at"]
            )
            found.setdefault(r["shop_id"], []).append(coupon)
        return found

    async def record_conversions(self, found: Sequence[tuple[Order, Touch, str | None]]) -> None:
        """First attribution of an order wins; the message learns it converted, a code that
        was used is marked redeemed by that order."""
        if not found:
            return
        driver = await self._driver()
        columns: list[list[Any]] = [
            [o.shop_id for o, _, _ in found],
            [o.order_id for o, _, _ in found],
            [t.request_key for _, t, _ in found],
            [o.customer_key for o, _, _ in found],
            [t.kind for _, t, _ in found],
            [t.at for _, t, _ in found],
            [o.placed_at for o, _, _ in found],
            [o.revenue for o, _, _ in found],
            [o.currency for o, _, _ in found],
            [cart for _, _, cart in found],
            [t.code for _, t, _ in found],
            [t.late for _, t, _ in found],
        ]
        await driver.execute(_INSERT_CONVERSIONS, *columns)
        redeemed = [(o, t) for o, t, _ in found if t.code is not None]
        if redeemed:
            await driver.execute(
                _REDEEM,
                [o.shop_id for o, _ in redeemed],
                [str(t.code).lower() for _, t in redeemed],
                [o.placed_at for o, _ in redeemed],
                [o.order_id for o, _ in redeemed],
            )

    async def conversions(self, shop_order_ids: Sequence[tuple[str, str]]) -> list[Any]:
        if not shop_order_ids:
            return []
        shops = [s for s, _ in shop_order_ids]
        ids = [o for _, o in shop_order_ids]
        return list(await (await self._driver()).fetch(_CONVERSIONS, shops, ids))


_MESSAGE_COLUMNS = (
    "request_key",
    "shop_id",
    "customer_key",
    "journey_id",
    "step_id",
    "sent_at",
    "first_human_open_at",
    "last_human_open_at",
    "first_machine_open_at",
    "human_opens",
    "machine_opens",
    "first_click_at",
    "last_click_at",
    "unsubscribed_at",
    "bounced_at",
)
_CUSTOMER_COLUMNS = ("customer_key", "last_human_open_at", "last_click_at", "unsubscribed_at")

_CLAIM_NEW = """
    INSERT INTO ingest.processed_events (event_id) SELECT unnest($1::text[])
    ON CONFLICT DO NOTHING RETURNING event_id
"""

_UPSERT_MESSAGES = """
    INSERT INTO ingest.messages AS old (request_key, shop_id, customer_key, journey_id, step_id,
        sent_at, first_human_open_at, last_human_open_at, first_machine_open_at, human_opens,
        machine_opens, first_click_at, last_click_at, unsubscribed_at, bounced_at, clicked_links)
    SELECT rk, s, ck, j, st, sa, fho, lho, fmo, ho, mo, fc, lc, u, b,
        ARRAY(SELECT jsonb_array_elements_text(links::jsonb))
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
        $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::int[], $11::int[],
        $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::timestamptz[],
        $16::text[]) AS t(rk, s, ck, j, st, sa, fho, lho, fmo, ho, mo, fc, lc, u, b, links)
    ON CONFLICT (request_key) DO UPDATE SET
        first_human_open_at = least(old.first_human_open_at, excluded.first_human_open_at),
        last_human_open_at = greatest(old.last_human_open_at, excluded.last_human_open_at),
        first_machine_open_at = least(old.first_machine_open_at, excluded.first_machine_open_at),
        human_opens = old.human_opens + excluded.human_opens,
        machine_opens = old.machine_opens + excluded.machine_opens,
        first_click_at = least(old.first_click_at, excluded.first_click_at),
        last_click_at = greatest(old.last_click_at, excluded.last_click_at),
        clicked_links = ARRAY(SELECT DISTINCT unnest(old.clicked_links || excluded.clicked_links)),
        unsubscribed_at = least(old.unsubscribed_at, excluded.unsubscribed_at),
        bounced_at = least(old.bounced_at, excluded.bounced_at)
"""

_UPSERT_ENGAGEMENT = """
    INSERT INTO ingest.engagement AS old (customer_key, last_human_open_at, last_click_at,
        unsubscribed_at)
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[])
    ON CONFLICT (customer_key) DO UPDATE SET
        last_human_open_at = greatest(old.last_human_open_at, excluded.last_human_open_at),
        last_click_at = greatest(old.last_click_at, excluded.last_click_at),
        unsubscribed_at = least(old.unsubscribed_at, excluded.unsubscribed_at)
"""

_UNSUBSCRIBE = """
    UPDATE ingest.customers SET marketing_consent = 'unsubscribed'
    WHERE customer_key = ANY($1::text[])
"""

_MESSAGES_BY_KEY = "SELECT * FROM ingest.messages WHERE request_key = ANY($1::text[])"
_TOUCHED = """
    SELECT * FROM ingest.messages
    WHERE customer_key = ANY($1::text[])
      AND (last_click_at >= $2 OR last_human_open_at >= $2)
"""

_ORDERS = """
    SELECT o.shop_id, o.order_id, o.currency, o.cart_id, c.updated_at AS cart_left_at
    FROM unnest($1::text[], $2::text[]) AS w(shop_id, order_id)
    JOIN ingest.orders o ON o.shop_id = w.shop_id AND o.order_id = w.order_id
    LEFT JOIN ingest.carts c ON c.shop_id = o.shop_id AND c.cart_id = o.cart_id
"""

# The order closed its customer's carts already (status 'ordered'), so every status but
# 'emptied' is a candidate; carts_by_customer (0009) serves the newest-first walk.
_CARTS_LEFT_BEFORE = """
    SELECT w.shop_id, w.order_id, c.cart_id, c.updated_at AS left_at, c.lines::text AS cart_lines,
        (SELECT coalesce(jsonb_agg(jsonb_build_object('product_id', l.product_id,
                'variant_id', l.variant_id, 'quantity', l.quantity)), '[]'::jsonb)::text
         FROM ingest.order_lines l
         WHERE l.shop_id = w.shop_id AND l.order_id = w.order_id) AS order_lines
    FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
        AS w(shop_id, order_id, customer_key, left_by)
    CROSS JOIN LATERAL (
        SELECT k.cart_id, k.updated_at, k.lines FROM ingest.carts k
        WHERE k.customer_key = w.customer_key AND k.updated_at <= w.left_by
          AND k.shop_id = w.shop_id AND k.status <> 'emptied'
        ORDER BY k.updated_at DESC LIMIT 1
    ) c
"""

_INSERT_CONVERSIONS = """
    WITH new AS (
        INSERT INTO ingest.conversions (shop_id, order_id, request_key, customer_key, touch,
            touched_at, ordered_at, revenue, currency, recovered_cart_id, code, late)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
            $6::timestamptz[], $7::timestamptz[], $8::numeric[], $9::text[], $10::text[],
            $11::text[], $12::bool[])
        ON CONFLICT DO NOTHING
        RETURNING request_key, order_id, ordered_at, revenue
    )
    UPDATE ingest.messages m SET converted_at = new.ordered_at, order_id = new.order_id,
        revenue = new.revenue
    FROM new WHERE m.request_key = new.request_key
"""

# A message attributed by its code may have no engagement row (never opened by a person).
_CONVERSIONS = """
    SELECT c.*, coalesce(m.journey_id, k.journey_id) AS journey_id,
        coalesce(m.step_id, k.step_id) AS step_id
    FROM unnest($1::text[], $2::text[]) AS w(shop_id, order_id)
    JOIN ingest.conversions c ON c.shop_id = w.shop_id AND c.order_id = w.order_id
    LEFT JOIN ingest.messages m ON m.request_key = c.request_key
    LEFT JOIN ingest.coupons k ON k.shop_id = c.shop_id AND k.code_key = lower(c.code)
    WHERE coalesce(m.journey_id, k.journey_id) IS NOT NULL
"""

_INSERT_COUPONS = """
    INSERT INTO ingest.coupons (shop_id, code_key, code, request_key, customer_key, journey_id,
        step_id, issued_at, expires_at)
    SELECT s, lower(c), c, rk, ck, j, st, ia, ea
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::timestamptz[], $8::timestamptz[]) AS t(s, c, rk, ck, j, st, ia, ea)
    ON CONFLICT DO NOTHING
"""

_COUPONS_USED = """
    SELECT k.* FROM unnest($1::text[], $2::text[]) AS w(shop_id, code_key)
    JOIN ingest.coupons k ON k.shop_id = w.shop_id AND k.code_key = w.code_key
"""

# The first order that used a code redeems it; a later one does not move it.
_REDEEM = """
    UPDATE ingest.coupons k SET redeemed_at = t.at, redeemed_order_id = t.order_id
    FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS t(s, c, at, order_id)
    WHERE k.shop_id = t.s AND k.code_key = t.c AND k.redeemed_at IS NULL
"""


def _message_row(row: Any) -> MessageRow:
    return MessageRow(
        **{name: row[name] for name in _MESSAGE_COLUMNS},
        clicked_links=tuple(row["clicked_links"]),
    )


def _line_ids(lines_json: str) -> tuple[LineId, ...]:
    return tuple(
        LineId(line.get("product_id"), line.get("variant_id"), int(line["quantity"]))
        for line in orjson.loads(lines_json)
    )


def _engagement(row: Any) -> ev.MessageEngagement:
    return ev.MessageEngagement(
        request_key=row["request_key"],
        journey_id=row["journey_id"],
        step_id=row["step_id"],
        sent_at=row["sent_at"],
        first_human_open_at=row["first_human_open_at"],
        first_machine_open_at=row["first_machine_open_at"],
        human_opens=row["human_opens"],
        machine_opens=row["machine_opens"],
        first_click_at=row["first_click_at"],
        clicked_links=list(row["clicked_links"]),
        converted_at=row["converted_at"],
        order_id=row["order_id"],
        revenue=row["revenue"],
        unsubscribed_at=row["unsubscribed_at"],
        bounced_at=row["bounced_at"],
    )
