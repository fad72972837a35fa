"""The SQL of the history import: the file's rows COPYed into a session's temporary table,
then, a range of customers per transaction, their orders and lines inserted (an order already
stored is skipped), its sales counted, and the customers' facts written, new customers by one
INSERT of their complete row. One session (the caller's connection) from start to end.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from services.ingest.adapters.order_facts_repository import FactsWrite
from services.ingest.domain.customer_facts import PlacedOrder
from shared.db import DriverWrites

# (customer_key, order_id, line, first_line, line_no, currency, total, status, placed_at,
#  product_id, sku, title, quantity, price, category): one per order line, or one with
#  line_no 0 for an order without lines. Order fields travel on every row of the order.
StagedRow = tuple[
    str, str, int, int, int, str | None, Decimal, str, datetime,
    str | None, str | None, str | None, int | None, Decimal | None, str | None,
]  # fmt: skip
STAGED_COLUMNS = (
    "customer_key", "order_id", "line", "first_line", "line_no", "currency", "total", "status",
    "placed_at", "product_id", "sku", "title", "quantity", "price", "category",
)  # fmt: skip


class NewOrder(NamedTuple):
    """An order of the file not stored before: whether it counts, and what the facts see."""

    cancelled: bool
    placed: PlacedOrder


@dataclass(frozen=True)
class NewCustomer:
    """A customer the import creates: who (from the key) and, if they have a counted order,
    their facts."""

    customer_key: str
    customer_id: str | None
    email: str | None
    updated_at: datetime
    facts: FactsWrite | None


class HistoryRepository(DriverWrites):
    _what = "the history import"

    async def stage(self, rows: AsyncIterable[StagedRow]) -> None:
        """The file into this session's temporary tables (COPY, streamed as it is read)."""
        driver = await self._driver()
        await driver.execute(_CREATE_TEMP)
        await driver.copy_records_to_table(
            "import_rows", schema_name="pg_temp", columns=STAGED_COLUMNS, records=rows
        )
        await driver.execute("CREATE INDEX ON pg_temp.import_rows (customer_key)")
        await driver.execute("ANALYZE pg_temp.import_rows")

    async def customer_ranges(self, orders_per_range: int) -> list[tuple[str, str, int]]:
        """The staged customers cut into ranges (first key, last key, orders) of about
        `orders_per_range` orders; a customer is never split."""
        ranges: list[tuple[str, str, int]] = []
        first: str | None = None
        orders = 0
        for key, count in await (await self._driver()).fetch(_CUSTOMER_ORDERS):
            first = key if first is None else first
            orders += count
            if orders >= orders_per_range:
                ranges.append((first, key, orders))
                first, orders = None, 0
        if first is not None:
            ranges.append((first, key, orders))  # the last key read
        return ranges

    async def insert_orders(self, shop_id: str, first: str, last: str) -> list[NewOrder]:
        """The range's orders and lines not stored before (lines without a category take
        their product's from the catalog); their product sales counted. Returns the new
        orders by customer, oldest first."""
        rows = await (await self._driver()).fetch(_INSERT_RANGE, shop_id, first, last)
        return [
            NewOrder(
                r[1] == "cancelled",
                PlacedOrder(r[0], r[2], r[3], dict(zip(r[4], r[5], strict=True)) if r[4] else {}),
            )
            for r in rows
        ]

    async def shop_cut(self, shop_id: str) -> Decimal | None:
        value: Decimal | None = await (await self._driver()).fetchval(_SHOP_CUT, shop_id)
        return value

    async def insert_customers(self, shop_id: str, customers: Sequence[NewCustomer]) -> set[str]:
        """Customers not stored yet, with their facts and categories; returns the keys
        inserted (one created meanwhile by the live consumer is left out: the caller applies
        its orders to the stored row instead)."""
        if not customers:
            return set()
        driver = await self._driver()
        await driver.copy_records_to_table(
            "import_customers",
            schema_name="pg_temp",
            columns=_CUSTOMER_COLUMNS,
            records=[_customer_record(shop_id, c) for c in customers],
        )
        inserted = {r[0] for r in await driver.fetch(_INSERT_CUSTOMERS)}
        categories = [
            (c.customer_key, shop_id, f.category, f.orders, f.spent, f.first_order_at,
             f.last_order_at)
            for c in customers
            if c.facts is not None and c.customer_key in inserted
            for f in c.facts.facts.categories.values()
        ]  # fmt: skip
        if categories:
            await driver.copy_records_to_table(
                "import_categories", schema_name="pg_temp", columns=_CATEGORY_COLUMNS,
                records=categories,
            )  # fmt: skip
            await driver.execute(_INSERT_CATEGORIES)
        return inserted

    async def drop(self) -> None:
        await (await self._driver()).execute(
            "DROP TABLE IF EXISTS pg_temp.import_rows, pg_temp.import_customers, "
            "pg_temp.import_categories"
        )


def _customer_record(shop_id: str, c: NewCustomer) -> tuple[Any, ...]:
    who = (c.customer_key, shop_id, c.customer_id, c.email, c.updated_at)
    if c.facts is None:  # only cancelled orders: a customer row as the consumer leaves it
        return (*who, 0, Decimal(0), None, None, [], [], [], None, None, 0, Decimal(0))
    w, f = c.facts, c.facts.facts
    return (
        *who, f.orders, f.spent, f.first_order_at, f.last_order_at,
        [at for at, _ in f.recent], [total for _, total in f.recent], list(f.last_categories),
        w.stage, w.stage_due_at, f.purchase_days, f.first_day_spent,
    )  # fmt: skip


_CUSTOMER_COLUMNS = (
    "customer_key", "shop_id", "customer_id", "email", "updated_at", "orders_count",
    "total_spent", "first_order_at", "last_order_at", "recent_order_at", "recent_order_total",
    "last_order_categories", "stage", "stage_due_at", "purchase_days", "first_day_spent",
)  # fmt: skip
_CATEGORY_COLUMNS = (
    "customer_key", "shop_id", "category", "orders", "spent", "first_order_at", "last_order_at",
)  # fmt: skip

# Temporary tables of the session: dropped with it. The last two empty at each commit.
_CREATE_TEMP = """
    DROP TABLE IF EXISTS pg_temp.import_rows, pg_temp.import_customers,
        pg_temp.import_categories;
    CREATE TEMP TABLE import_rows (customer_key text NOT NULL, order_id text NOT NULL,
        line int NOT NULL, first_line int NOT NULL, line_no int NOT NULL, currency text,
        total numeric NOT NULL, status text NOT NULL, placed_at timestamptz NOT NULL,
        product_id text, sku text, title text, quantity bigint, price numeric, category text);
    CREATE TEMP TABLE import_customers (LIKE ingest.customers INCLUDING DEFAULTS)
        ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE import_categories (LIKE ingest.customer_categories) ON COMMIT DELETE ROWS;
"""

_CUSTOMER_ORDERS = """
    SELECT customer_key, count(*)::int FROM pg_temp.import_rows WHERE line_no <= 1
    GROUP BY customer_key ORDER BY customer_key
"""

# One statement per range: the orders not stored before (ON CONFLICT DO NOTHING RETURNING),
# their lines (a line without a category takes its product's), the units they sold per
# product and UTC day (non-cancelled orders), and per new order its spend per category: the
# same figures order_facts.with_categories / customer_facts.placed / daily_units compute for
# a live order.
_INSERT_RANGE = """
    WITH new AS (
        INSERT INTO ingest.orders (shop_id, order_id, customer_key, cart_id, currency,
            total_price, status, placed_at, paid_at, cancelled_at, updated_at)
        SELECT $1, r.order_id, r.customer_key, NULL, r.currency, r.total, r.status, r.placed_at,
            CASE WHEN r.status <> 'cancelled' THEN r.placed_at END,
            CASE WHEN r.status = 'cancelled' THEN r.placed_at END, r.placed_at
        FROM pg_temp.import_rows r
        WHERE r.customer_key BETWEEN $2 AND $3 AND r.line_no <= 1
        ON CONFLICT DO NOTHING
        RETURNING order_id, customer_key, status, placed_at, total_price
    ), lines AS (
        INSERT INTO ingest.order_lines (shop_id, order_id, line_no, product_id, variant_id, sku,
            title, variant_title, quantity, price, category)
        SELECT $1, r.order_id, r.line_no, r.product_id, NULL, r.sku, r.title, NULL, r.quantity,
            r.price, coalesce(r.category, p.category)
        FROM pg_temp.import_rows r
        JOIN new ON new.order_id = r.order_id
        LEFT JOIN ingest.products p
            ON r.category IS NULL AND p.shop_id = $1 AND p.product_id = r.product_id
        WHERE r.customer_key BETWEEN $2 AND $3 AND r.line_no >= 1
        ON CONFLICT DO NOTHING
        RETURNING order_id, product_id, quantity, price, category
    ), sales AS (
        INSERT INTO ingest.product_sales AS old (shop_id, product_id, day, units)
        SELECT $1, lines.product_id, (new.placed_at AT TIME ZONE 'UTC')::date, sum(lines.quantity)
        FROM lines JOIN new ON new.order_id = lines.order_id
        WHERE new.status <> 'cancelled' AND lines.product_id IS NOT NULL
        GROUP BY 2, 3
        ON CONFLICT (shop_id, product_id, day) DO UPDATE SET units = old.units + excluded.units
    ), spend AS (
        SELECT order_id, array_agg(category) AS names, array_agg(spent) AS spent
        FROM (
            SELECT order_id, category, sum(price * quantity) AS spent FROM lines
            WHERE category IS NOT NULL GROUP BY order_id, category
        ) per_category
        GROUP BY order_id
    )
    SELECT new.customer_key, new.status, new.placed_at, new.total_price, spend.names,
        spend.spent
    FROM new LEFT JOIN spend ON spend.order_id = new.order_id
    ORDER BY new.customer_key, new.placed_at, new.order_id
"""

_SHOP_CUT = "SELECT high_value_from FROM ingest.shop_stats WHERE shop_id = $1"

_INSERT_CUSTOMERS = """
    INSERT INTO ingest.customers SELECT * FROM pg_temp.import_customers
    ON CONFLICT (customer_key) DO NOTHING RETURNING customer_key
"""

# Rows of a category whose customer did not exist cannot be there, unless left behind: the
# import's figures replace them, as the consumer's save would.
_INSERT_CATEGORIES = """
    INSERT INTO ingest.customer_categories AS old SELECT * FROM pg_temp.import_categories
    ON CONFLICT (customer_key, category) DO UPDATE SET orders = excluded.orders,
        spent = excluded.spent, first_order_at = excluded.first_order_at,
        last_order_at = excluded.last_order_at
"""
