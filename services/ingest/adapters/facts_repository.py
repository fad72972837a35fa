"""All SQL of the customer facts. Set-based: one statement per table and batch, never per event.

The upserts merge with what is stored by the same rules as domain/facts.py's `merge_*`.
The caller owns the transaction. Every statement goes through the asyncpg connection
underneath, one column per array parameter (`unnest`, `= ANY`), because SQLAlchemy's per-row
parameter and result processing cost more than the database did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest.domain.activity import OpenCart
from services.ingest.domain.facts import CartRow, CustomerRow, OrderRow, OrderTotals
from shared import events as ev

_LINES_JSON = TypeAdapter(list[ev.Line])
_CUSTOMER_FACTS = (
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "locale",
    "marketing_consent",
    "registered_at",
    "country",
    "time_zone",
)


class FactsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._driver_conn: Any = None

    async def _driver(self) -> Any:
        """The asyncpg connection of this transaction (same connection, same transaction)."""
        if self._driver_conn is None:
            # SQLAlchemy begins the database transaction lazily, at its first statement;
            # without one the raw statements would autocommit, outside the batch's transaction.
            await self._conn.exec_driver_sql("SELECT 1")
            driver: Any = (await self._conn.get_raw_connection()).driver_connection
            if not driver.is_in_transaction():
                raise RuntimeError("the facts must be written inside the caller's transaction")
            self._driver_conn = driver
        return self._driver_conn

    async def claim_new(self, event_ids: Sequence[str]) -> set[str]:
        """Record the ids as processed; returns those that were not processed before."""
        if not event_ids:
            return set()
        driver = await self._driver()
        rows = await driver.fetch(_CLAIM_NEW, list(event_ids))
        return {row[0] for row in rows}

    async def upsert_customers(self, rows: Iterable[CustomerRow]) -> None:
        rows = list(rows)
        if rows:
            await (await self._driver()).execute(
                _UPSERT_CUSTOMERS, *_columns(rows, _CUSTOMER_COLUMNS)
            )

    async def add_orders(self, rows: Sequence[OrderRow]) -> list[OrderRow]:
        """Insert or advance the orders; returns the ones seen for the first time."""
        if not rows:
            return []
        driver = await self._driver()
        inserted = await driver.fetch(_INSERT_ORDERS, *order_columns(rows))
        new_keys = {(r[0], r[1]) for r in inserted}
        known = [row for row in rows if (row.shop_id, row.order_id) not in new_keys]
        if known:
            await driver.execute(_ADVANCE_ORDERS, *_columns(known, _ADVANCE_COLUMNS))
        new_orders = [row for row in rows if (row.shop_id, row.order_id) in new_keys]
        await self._insert_lines(new_orders)
        return new_orders

    async def _insert_lines(self, new_orders: Iterable[OrderRow]) -> None:
        lines = [
            (order.shop_id, order.order_id, n, line)
            for order in new_orders
            for n, line in enumerate(order.lines, start=1)
        ]
        if not lines:
            return
        columns: list[list[Any]] = [[s for s, _, _, _ in lines], [o for _, o, _, _ in lines]]
        columns.append([n for _, _, n, _ in lines])
        columns.extend([getattr(line, name) for *_, line in lines] for name in _LINE_COLUMNS)
        await (await self._driver()).execute(_INSERT_LINES, *columns)

    async def add_order_totals(self, totals: Sequence[OrderTotals]) -> None:
        if totals:
            await (await self._driver()).execute(
                _ADD_ORDER_TOTALS, *_columns(totals, _TOTALS_COLUMNS)
            )

    async def upsert_carts(self, rows: Iterable[CartRow]) -> None:
        rows = list(rows)
        if not rows:
            return
        columns = _columns(rows, _CART_COLUMNS)
        # jsonb travels as text: asyncpg has no array codec for it without a round trip.
        columns[3] = [_LINES_JSON.dump_json(row.lines).decode() for row in rows]
        await (await self._driver()).execute(_UPSERT_CARTS, *columns)

    async def close_ordered_carts(self, placed: Sequence[OrderRow]) -> None:
        """An order closes the cart it came from and its customer's carts left before it."""
        if not placed:
            return
        driver = await self._driver()
        by_cart = list({(o.shop_id, o.cart_id): o for o in placed if o.cart_id}.values())
        if by_cart:
            await driver.execute(_CLOSE_ORDER_CARTS, *_columns(by_cart, _CLOSE_CART_COLUMNS))
        await driver.execute(
            _CLOSE_LEFT_CARTS, [o.customer_key for o in placed], [o.placed_at for o in placed]
        )

    async def cart_owners(self, cart_ids: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        wanted = list(set(cart_ids))
        if not wanted:
            return {}
        rows = await (await self._driver()).fetch(
            _CART_OWNERS, [s for s, _ in wanted], [c for _, c in wanted]
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def open_carts(self, keys: Iterable[str]) -> dict[str, ev.CartSnapshot]:
        """Each customer's most recently updated open cart."""
        stored = await self.stored_open_carts(keys)
        return {key: cart.snapshot() for key, cart in stored.items()}

    async def stored_open_carts(self, keys: Iterable[str]) -> dict[str, OpenCart]:
        """As open_carts, with the lines as the stored JSON, for encoding them as they are."""
        wanted = list(set(keys))
        if not wanted:
            return {}
        rows = await (await self._driver()).fetch(_OPEN_CARTS, wanted)
        return {r["customer_key"]: _open_cart(r) for r in rows}


_CUSTOMER_COLUMNS = ("customer_key", "shop_id", *_CUSTOMER_FACTS, "updated_at")
_CART_COLUMNS = (
    "shop_id",
    "cart_id",
    "customer_key",
    "lines",
    "currency",
    "total_price",
    "recovery_url",
    "updated_at",
    "status",
)

_CLAIM_NEW = """
    INSERT INTO ingest.processed_events (event_id) SELECT unnest($1::text[])
    ON CONFLICT DO NOTHING RETURNING event_id
"""

_UPSERT_CUSTOMERS = """
    INSERT INTO ingest.customers AS old (customer_key, shop_id, customer_id, email, first_name,
        last_name, locale, marketing_consent, registered_at, country, time_zone, updated_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[], $12::timestamptz[])
    ON CONFLICT (customer_key) DO UPDATE SET
        customer_id = coalesce(excluded.customer_id, old.customer_id),
        email = coalesce(excluded.email, old.email),
        first_name = coalesce(excluded.first_name, old.first_name),
        last_name = coalesce(excluded.last_name, old.last_name),
        locale = coalesce(excluded.locale, old.locale),
        marketing_consent = coalesce(excluded.marketing_consent, old.marketing_consent),
        registered_at = coalesce(excluded.registered_at, old.registered_at),
        country = coalesce(excluded.country, old.country),
        time_zone = coalesce(excluded.time_zone, old.time_zone),
        updated_at = greatest(excluded.updated_at, old.updated_at)
"""

# `newer`: the incoming update is at least as recent as the stored one (merge_cart's rule).
_UPSERT_CARTS = """
    INSERT INTO ingest.carts AS old (shop_id, cart_id, customer_key, lines, currency,
        total_price, recovery_url, updated_at, status)
    SELECT s, c, k, l::jsonb, cur, tp, r, u, st
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::numeric[],
        $7::text[], $8::timestamptz[], $9::text[]) AS t(s, c, k, l, cur, tp, r, u, st)
    ON CONFLICT (shop_id, cart_id) DO UPDATE SET
        lines = CASE WHEN excluded.updated_at >= old.updated_at
            THEN excluded.lines ELSE old.lines END,
        currency = CASE WHEN excluded.updated_at >= old.updated_at
            THEN excluded.currency ELSE old.currency END,
        total_price = CASE WHEN excluded.updated_at >= old.updated_at
            THEN excluded.total_price ELSE old.total_price END,
        recovery_url = CASE WHEN excluded.updated_at >= old.updated_at
            THEN excluded.recovery_url ELSE old.recovery_url END,
        customer_key = CASE WHEN excluded.updated_at >= old.updated_at
            THEN coalesce(excluded.customer_key, old.customer_key)
            ELSE coalesce(old.customer_key, excluded.customer_key) END,
        status = CASE WHEN old.status = 'ordered' OR excluded.status = 'ordered' THEN 'ordered'
            WHEN excluded.updated_at >= old.updated_at THEN excluded.status
            ELSE old.status END,
        updated_at = greatest(excluded.updated_at, old.updated_at)
"""


_ORDER_COLUMNS = (
    "shop_id",
    "order_id",
    "customer_key",
    "cart_id",
    "currency",
    "total_price",
    "status",
    "placed_at",
    "paid_at",
    "cancelled_at",
    "updated_at",
)
_ADVANCE_COLUMNS = (
    "shop_id",
    "order_id",
    "status",
    "paid_at",
    "cancelled_at",
    "cart_id",
    "updated_at",
)
_LINE_COLUMNS = (
    "product_id",
    "variant_id",
    "sku",
    "title",
    "variant_title",
    "quantity",
    "price",
    "category",
)
_TOTALS_COLUMNS = ("customer_key", "orders", "spent", "first_order_at", "last_order_at")
_CLOSE_CART_COLUMNS = ("shop_id", "cart_id", "customer_key", "placed_at")

_INSERT_ORDERS = """
    INSERT INTO ingest.orders (shop_id, order_id, customer_key, cart_id, currency, total_price,
        status, placed_at, paid_at, cancelled_at, updated_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
        $6::numeric[], $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
        $11::timestamptz[])
    ON CONFLICT DO NOTHING
    RETURNING shop_id, order_id
"""

# merge_order's rule: the furthest status wins, a known time or cart is never dropped.
_ADVANCE_ORDERS = """
    UPDATE ingest.orders AS old SET
        status = CASE WHEN 'cancelled' IN (old.status, new.status) THEN 'cancelled'
            WHEN 'paid' IN (old.status, new.status) THEN 'paid' ELSE 'placed' END,
        paid_at = coalesce(old.paid_at, new.paid_at),
        cancelled_at = coalesce(old.cancelled_at, new.cancelled_at),
        cart_id = coalesce(old.cart_id, new.cart_id),
        updated_at = greatest(old.updated_at, new.updated_at)
    FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
        $6::text[], $7::timestamptz[])
        AS new(shop_id, order_id, status, paid_at, cancelled_at, cart_id, updated_at)
    WHERE old.shop_id = new.shop_id AND old.order_id = new.order_id
"""

_INSERT_LINES = """
    INSERT INTO ingest.order_lines (shop_id, order_id, line_no, product_id, variant_id, sku,
        title, variant_title, quantity, price, category)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::bigint[], $10::numeric[], $11::text[])
    ON CONFLICT DO NOTHING
"""

_ADD_ORDER_TOTALS = """
    UPDATE ingest.customers AS c SET
        orders_count = c.orders_count + t.orders,
        total_spent = c.total_spent + t.spent,
        first_order_at = least(c.first_order_at, t.first_order_at),
        last_order_at = greatest(c.last_order_at, t.last_order_at)
    FROM unnest($1::text[], $2::int[], $3::numeric[], $4::timestamptz[], $5::timestamptz[])
        AS t(customer_key, orders, spent, first_order_at, last_order_at)
    WHERE c.customer_key = t.customer_key
"""

_CLOSE_ORDER_CARTS = """
    INSERT INTO ingest.carts AS old (shop_id, cart_id, customer_key, lines, updated_at, status)
    SELECT s, c, k, '[]'::jsonb, u, 'ordered'
    FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS t(s, c, k, u)
    ON CONFLICT (shop_id, cart_id) DO UPDATE SET
        status = 'ordered', customer_key = coalesce(old.customer_key, excluded.customer_key)
"""

_CLOSE_LEFT_CARTS = """
    UPDATE ingest.carts AS c SET status = 'ordered'
    FROM unnest($1::text[], $2::timestamptz[]) AS o(customer_key, placed_at)
    WHERE c.customer_key = o.customer_key AND c.status = 'open' AND c.updated_at <= o.placed_at
"""

_CART_OWNERS = """
    SELECT c.shop_id, c.cart_id, c.customer_key
    FROM ingest.carts AS c
    JOIN unnest($1::text[], $2::text[]) AS w(shop_id, cart_id) USING (shop_id, cart_id)
    WHERE c.customer_key IS NOT NULL
"""

_OPEN_CARTS = """
    SELECT DISTINCT ON (customer_key) customer_key, cart_id, lines::text AS lines, currency,
        total_price, recovery_url, updated_at
    FROM ingest.carts
    WHERE customer_key = ANY($1::text[]) AND status = 'open'
    ORDER BY customer_key, updated_at DESC
"""


def _columns(rows: Sequence[Any], names: Sequence[str]) -> list[list[Any]]:
    """Rows turned into one list per column, the shape `unnest` takes."""
    return [[getattr(row, name) for row in rows] for name in names]


def order_columns(rows: Sequence[Any]) -> list[list[Any]]:
    """Orders as the column arrays `_INSERT_ORDERS` takes."""
    return _columns(rows, _ORDER_COLUMNS)


def _open_cart(row: Any) -> OpenCart:
    return OpenCart(
        cart_id=row["cart_id"],
        lines_json=row["lines"],
        currency=row["currency"],
        total_price=row["total_price"],
        recovery_url=row["recovery_url"],
        updated_at=row["updated_at"],
    )
