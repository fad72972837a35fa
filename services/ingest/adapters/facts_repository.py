"""All SQL of the customer facts. Set-based: one statement per table and batch, never per event.

The upserts merge with what is stored by the same rules as domain/facts.py's `merge_*`.
The caller owns the transaction. The hot tables (processed_events, customers, carts) are
written through the asyncpg connection underneath, one column per array parameter
(`unnest`), because SQLAlchemy's per-row parameter processing cost more than the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, bindparam, case, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest.adapters.tables import carts, customers, order_lines, orders
from services.ingest.domain.facts import CartRow, CustomerRow, OrderRow, OrderTotals
from shared import events as ev

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
        columns = _columns(list(rows), _CUSTOMER_COLUMNS)
        if columns:
            await (await self._driver()).execute(_UPSERT_CUSTOMERS, *columns)

    async def add_orders(self, rows: Sequence[OrderRow]) -> list[OrderRow]:
        """Insert or advance the orders; returns the ones seen for the first time."""
        if not rows:
            return []
        params = [_order_params(row) for row in rows]
        inserted = await self._conn.execute(
            insert(orders).on_conflict_do_nothing().returning(orders.c.shop_id, orders.c.order_id),
            params,
        )
        new_keys = {(r.shop_id, r.order_id) for r in inserted}
        known = [p for p in params if (p["shop_id"], p["order_id"]) not in new_keys]
        if known:
            await self._conn.execute(_advance_orders(), known)
        new_orders = [row for row in rows if (row.shop_id, row.order_id) in new_keys]
        await self._insert_lines(new_orders)
        return new_orders

    async def _insert_lines(self, new_orders: Iterable[OrderRow]) -> None:
        params = [
            {
                "shop_id": order.shop_id,
                "order_id": order.order_id,
                "line_no": n,
                **line.model_dump(include=_LINE_COLUMNS),
            }
            for order in new_orders
            for n, line in enumerate(order.lines, start=1)
        ]
        if params:
            await self._conn.execute(insert(order_lines).on_conflict_do_nothing(), params)

    async def add_order_totals(self, totals: Iterable[OrderTotals]) -> None:
        params = [
            {
                "b_key": t.customer_key,
                "b_orders": t.orders,
                "b_spent": t.spent,
                "b_first": t.first_order_at,
                "b_last": t.last_order_at,
            }
            for t in totals
        ]
        if not params:
            return
        c = customers.c
        stmt = (
            update(customers)
            .where(c.customer_key == bindparam("b_key"))
            .values(
                orders_count=c.orders_count + bindparam("b_orders"),
                total_spent=c.total_spent + bindparam("b_spent"),
                first_order_at=func.least(c.first_order_at, bindparam("b_first")),
                last_order_at=func.greatest(c.last_order_at, bindparam("b_last")),
            )
        )
        await self._conn.execute(stmt, params)

    async def upsert_carts(self, rows: Iterable[CartRow]) -> None:
        rows = list(rows)
        if not rows:
            return
        columns = _columns(rows, _CART_COLUMNS)
        # jsonb travels as text: asyncpg has no array codec for it without a round trip.
        columns[3] = [orjson.dumps(row.lines).decode() for row in rows]
        await (await self._driver()).execute(_UPSERT_CARTS, *columns)

    async def close_ordered_carts(self, placed: Iterable[OrderRow]) -> None:
        """An order closes the cart it came from and its customer's carts left before it."""
        placed = list(placed)
        by_cart = {(o.shop_id, o.cart_id): o for o in placed if o.cart_id}
        if by_cart:
            stmt = insert(carts)
            await self._conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[carts.c.shop_id, carts.c.cart_id],
                    set_={
                        "status": "ordered",
                        "customer_key": func.coalesce(
                            carts.c.customer_key, stmt.excluded.customer_key
                        ),
                    },
                ),
                [
                    {
                        "shop_id": o.shop_id,
                        "cart_id": o.cart_id,
                        "customer_key": o.customer_key,
                        "lines": [],
                        "updated_at": o.placed_at,
                        "status": "ordered",
                    }
                    for o in by_cart.values()
                ],
            )
        if placed:
            c = carts.c
            stmt_close = (
                update(carts)
                .where(
                    c.customer_key == bindparam("b_key"),
                    c.status == "open",
                    c.updated_at <= bindparam("b_placed_at"),
                )
                .values(status="ordered")
            )
            await self._conn.execute(
                stmt_close, [{"b_key": o.customer_key, "b_placed_at": o.placed_at} for o in placed]
            )

    async def cart_owners(self, cart_ids: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        wanted = list(set(cart_ids))
        if not wanted:
            return {}
        c = carts.c
        result = await self._conn.execute(
            select(c.shop_id, c.cart_id, c.customer_key).where(
                tuple_(c.shop_id, c.cart_id).in_(wanted), c.customer_key.is_not(None)
            )
        )
        return {(r.shop_id, r.cart_id): r.customer_key for r in result}

    async def profiles(self, keys: Iterable[str]) -> dict[str, ev.Profile]:
        wanted = list(set(keys))
        if not wanted:
            return {}
        c = customers.c
        result = await self._conn.execute(select(customers).where(c.customer_key.in_(wanted)))
        return {r.customer_key: _profile(r._mapping) for r in result}

    async def open_carts(self, keys: Iterable[str]) -> dict[str, ev.CartSnapshot]:
        """Each customer's most recently updated open cart."""
        wanted = list(set(keys))
        if not wanted:
            return {}
        c = carts.c
        result = await self._conn.execute(
            select(carts)
            .where(c.customer_key.in_(wanted), c.status == "open")
            .order_by(c.customer_key, c.updated_at.desc())
            .ext(distinct_on(c.customer_key))
        )
        return {r.customer_key: _cart_snapshot(r._mapping) for r in result}


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


def _columns(rows: Sequence[CustomerRow | CartRow], names: Sequence[str]) -> list[list[Any]]:
    """Rows turned into one list per column, the shape `unnest` takes."""
    if not rows:
        return []
    return [[getattr(row, name) for row in rows] for name in names]


_LINE_COLUMNS = {
    "product_id",
    "variant_id",
    "sku",
    "title",
    "variant_title",
    "quantity",
    "price",
    "category",
}


def _order_params(row: OrderRow) -> dict[str, Any]:
    return {f.name: getattr(row, f.name) for f in fields(row) if f.name != "lines"}


def _advance_orders() -> Any:
    stmt = insert(orders)
    new, old = stmt.excluded, orders.c

    def either(status: str) -> ColumnElement[bool]:
        return or_(old.status == status, new.status == status)

    return stmt.on_conflict_do_update(
        index_elements=[old.shop_id, old.order_id],
        set_={
            "status": case(
                (either("cancelled"), "cancelled"), (either("paid"), "paid"), else_="placed"
            ),
            "paid_at": func.coalesce(old.paid_at, new.paid_at),
            "cancelled_at": func.coalesce(old.cancelled_at, new.cancelled_at),
            "cart_id": func.coalesce(old.cart_id, new.cart_id),
            "updated_at": func.greatest(old.updated_at, new.updated_at),
        },
    )


def _profile(row: Any) -> ev.Profile:
    last_order_at: datetime | None = row["last_order_at"]
    # Stored from validated events by this service; the column types are the field types.
    return ev.Profile.model_construct(
        key=row["customer_key"],
        shop_id=row["shop_id"],
        email=row["email"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        locale=row["locale"],
        marketing_consent=row["marketing_consent"],
        registered_at=row["registered_at"],
        orders_count=row["orders_count"],
        total_spent=row["total_spent"],
        last_order_at=last_order_at,
    )


def _cart_snapshot(row: Any) -> ev.CartSnapshot:
    return ev.CartSnapshot(
        cart_id=row["cart_id"],
        lines=row["lines"],
        currency=row["currency"],
        total_price=row["total_price"],
        recovery_url=row["recovery_url"],
        updated_at=row["updated_at"],
    )
