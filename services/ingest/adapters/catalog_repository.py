"""All SQL of the product catalog, and the per-customer recommendation query."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest.domain.catalog import ProductRow

BEST_SELLER_WINDOW_DAYS = 30


@dataclass(frozen=True)
class Recommendation:
    product_id: str
    title: str
    category: str | None
    url: str | None
    image_url: str | None
    price: Decimal | None
    units_30d: int


class CatalogRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _driver(self) -> Any:
        await self._conn.exec_driver_sql("SELECT 1")  # begins the caller's transaction
        return (await self._conn.get_raw_connection()).driver_connection

    async def upsert(self, rows: Sequence[ProductRow]) -> None:
        if not rows:
            return
        rows = sorted(rows, key=lambda r: (r.shop_id, r.product_id))
        columns: list[list[Any]] = [[getattr(r, name) for r in rows] for name in _PRODUCT_COLUMNS]
        columns[3] = [_array(r.tags) for r in rows]  # unnest flattens 2-D arrays
        await (await self._driver()).execute(_UPSERT, *columns)

    async def delete(self, keys: Iterable[tuple[str, str]]) -> None:
        wanted = sorted(set(keys))
        if wanted:
            await (await self._driver()).execute(
                _DELETE, [s for s, _ in wanted], [p for _, p in wanted]
            )

    async def recommendations(
        self, customer_key: str, now: datetime, limit: int = 4
    ) -> list[Recommendation]:
        """Available products of the customer's last purchased categories they have not
        bought, best sellers (units in the last 30 days) first: one indexed statement."""
        rows = await (await self._driver()).fetch(
            _RECOMMENDATIONS, customer_key, now.date(), BEST_SELLER_WINDOW_DAYS, limit
        )
        return [Recommendation(*r) for r in rows]

    async def recommendations_for(
        self, customer_keys: Sequence[str], now: datetime, limit: int = 4
    ) -> dict[str, list[Recommendation]]:
        """`recommendations` for many customers in one statement (a render batch)."""
        found: dict[str, list[Recommendation]] = {key: [] for key in customer_keys}
        rows = await (await self._driver()).fetch(
            _RECOMMENDATIONS_FOR, list(found), now.date(), BEST_SELLER_WINDOW_DAYS, limit
        )
        for row in rows:
            found[row[0]].append(Recommendation(*row[1:]))
        return found


def _array(items: Iterable[str]) -> str:
    quoted = ('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
    return "{" + ",".join(quoted) + "}"


_PRODUCT_COLUMNS = (
    "shop_id",
    "product_id",
    "title",
    "tags",
    "category",
    "url",
    "image_url",
    "price",
    "available",
    "updated_at",
)

# An older update (a redelivery, a reordered retry) never overwrites a newer one.
_UPSERT = """
    INSERT INTO ingest.products AS old (shop_id, product_id, title, tags, category, url,
        image_url, price, available, updated_at)
    SELECT s, p, t, tg::text[], c, u, i, pr, a, up
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::numeric[], $9::bool[], $10::timestamptz[])
        AS x(s, p, t, tg, c, u, i, pr, a, up)
    ON CONFLICT (shop_id, product_id) DO UPDATE SET title = excluded.title,
        tags = excluded.tags, category = excluded.category, url = excluded.url,
        image_url = excluded.image_url, price = excluded.price,
        available = excluded.available, updated_at = excluded.updated_at
    WHERE excluded.updated_at >= old.updated_at
"""

_DELETE = """
    DELETE FROM ingest.products p USING unnest($1::text[], $2::text[]) AS d(s, id)
    WHERE p.shop_id = d.s AND p.product_id = d.id
"""

# Indexes: products_available_by_category, product_sales' key, orders_by_customer and
# order_lines' key. Days are UTC days, like product_sales.
_RECOMMENDATIONS = """
    SELECT p.product_id, p.title, p.category, p.url, p.image_url, p.price,
        coalesce((SELECT sum(s.units) FROM ingest.product_sales s
                  WHERE s.shop_id = p.shop_id AND s.product_id = p.product_id
                    AND s.day > $2::date - $3::int AND s.day <= $2::date), 0)::bigint AS units
    FROM ingest.customers c
    JOIN ingest.products p ON p.shop_id = c.shop_id AND p.available
        AND p.category = ANY(c.last_order_categories)
    WHERE c.customer_key = $1
      AND NOT EXISTS (
        SELECT 1 FROM ingest.orders o
        JOIN ingest.order_lines l ON l.shop_id = o.shop_id AND l.order_id = o.order_id
        WHERE o.customer_key = c.customer_key AND o.status <> 'cancelled'
          AND l.product_id = p.product_id)
    ORDER BY units DESC, p.title, p.product_id
    LIMIT $4
"""

# The same statement per customer key, laterally joined; rows come ordered per customer.
_RECOMMENDATIONS_FOR = (
    """
    SELECT k.key, r.* FROM unnest($1::text[]) WITH ORDINALITY AS k(key, n)
    CROSS JOIN LATERAL ("""
    + _RECOMMENDATIONS.replace("c.customer_key = $1", "c.customer_key = k.key")
    + """) AS r
    ORDER BY k.n
"""
)
