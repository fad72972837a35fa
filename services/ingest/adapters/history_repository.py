"""The SQL of the history import: the file's rows COPYed into a session's temporary table,
then, a range of customers per transaction, their orders and lines inserted (an order already
stored is skipped), its sales counted, and new customers inserted with their facts computed in
SQL from those orders (one statement); customers stored before are returned to grow in Python.
One session (the caller's connection) from start to end.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

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


class FreshFacts(NamedTuple):
    """What the SQL of a new customer's facts needs besides their orders: the shop's rules as
    of the import (customer_facts.FactsSettings, the high-value threshold, now)."""

    now: datetime
    keep: timedelta
    active_days: int
    falling_asleep_days: int
    inactive_days: int
    high_value_from: Decimal | None
    stage_days: Sequence[int]


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

    async def tune(self) -> None:
        """No JIT for this transaction: when the planner chose it for a range statement it
        spent about 50 ms compiling (of about 1.4 s) and saved nothing measurable."""
        await (await self._driver()).execute(_TUNE)

    async def insert_orders(self, shop_id: str, first: str, last: str) -> dict[str, int]:
        """The range's orders and lines not stored before (lines without a category take
        their product's from the catalog); their product sales counted; the new orders kept
        in `import_new` for the facts. Returns the new orders per customer."""
        rows = await (await self._driver()).fetch(_INSERT_RANGE, shop_id, first, last)
        return {r[0]: r[1] for r in rows}

    async def insert_customers(self, shop_id: str, rules: FreshFacts) -> list[PlacedOrder]:
        """Customers of the range's new orders not stored yet, inserted with their facts and
        categories computed here from those orders (customer_facts.from_orders in SQL: a new
        customer's orders are all they have). Returns the counted new orders of the others
        (stored before, or created meanwhile by the live consumer), by customer, oldest
        first: their facts grow from what is stored (order_facts.grow_facts)."""
        rows = await (await self._driver()).fetch(
            _INSERT_CUSTOMERS, shop_id, rules.now, rules.keep.total_seconds(),
            rules.active_days, rules.falling_asleep_days, rules.inactive_days,
            rules.high_value_from, list(rules.stage_days),
        )  # fmt: skip
        return [
            PlacedOrder(r[0], r[1], r[2], dict(zip(r[3], r[4], strict=True)) if r[3] else {})
            for r in rows
        ]

    async def shop_cut(self, shop_id: str) -> Decimal | None:
        value: Decimal | None = await (await self._driver()).fetchval(_SHOP_CUT, shop_id)
        return value

    async def drop(self) -> None:
        await (await self._driver()).execute(
            "DROP TABLE IF EXISTS pg_temp.import_rows, pg_temp.import_new"
        )


# Temporary tables of the session: dropped with it. import_new empties at each commit.
_CREATE_TEMP = """
    DROP TABLE IF EXISTS pg_temp.import_rows, pg_temp.import_new;
    CREATE TEMP TABLE import_rows (customer_key text NOT NULL, order_id text NOT NULL,
        line int NOT NULL, first_line int NOT NULL, line_no int NOT NULL, currency text,
        total numeric NOT NULL, status text NOT NULL, placed_at timestamptz NOT NULL,
        product_id text, sku text, title text, quantity bigint, price numeric, category text);
    CREATE TEMP TABLE import_new (customer_key text NOT NULL, order_id text NOT NULL,
        status text NOT NULL, placed_at timestamptz NOT NULL, total numeric NOT NULL,
        names text[], spent numeric[]) ON COMMIT DELETE ROWS;
"""

_TUNE = "SET LOCAL jit = off"

_CUSTOMER_ORDERS = """
    SELECT customer_key, count(*)::int FROM pg_temp.import_rows WHERE line_no <= 1
    GROUP BY customer_key ORDER BY customer_key
"""

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
    ), kept AS (
        INSERT INTO pg_temp.import_new
        SELECT new.customer_key, new.order_id, new.status, new.placed_at, new.total_price,
            spend.names, spend.spent
        FROM new LEFT JOIN spend ON spend.order_id = new.order_id
        RETURNING customer_key
    )
    SELECT customer_key, count(*)::int FROM kept GROUP BY customer_key
"""

_SHOP_CUT = "SELECT high_value_from FROM ingest.shop_stats WHERE shop_id = $1"

# A new customer's facts from their new orders (import_new), as customer_facts.from_orders
# and order_facts._staged compute them: counted orders are the non-cancelled ones; `recent`
# those after the last order minus `keep` (oldest first); purchase days are distinct UTC days;
# the categories of the last order sorted as Python sorts (code points: COLLATE "C"); the stage
# and its due time by customer_facts.stage / next_stage_change_at ($2 now, $4-$6 the stage
# days, $7 the high-value threshold, $8 the days at which time moves the stage; a day is
# 86,400 s, as timedelta has it). A customer whose new orders are all cancelled gets a row
# without facts (as live). Customers stored already are left alone: their counted orders are
# returned for the caller to grow their facts.
_INSERT_CUSTOMERS = """
    WITH everyone AS (
        SELECT customer_key, min(placed_at) AS since FROM pg_temp.import_new GROUP BY 1
    ), counted AS (
        SELECT n.*, (n.placed_at AT TIME ZONE 'UTC')::date AS day,
            min(n.placed_at) OVER w AS first_at, max(n.placed_at) OVER w AS last_at
        FROM pg_temp.import_new n WHERE n.status <> 'cancelled'
        WINDOW w AS (PARTITION BY n.customer_key)
    ), facts AS (
        SELECT customer_key, count(*)::int AS orders, sum(total) AS spent,
            min(first_at) AS first_at, max(last_at) AS last_at,
            count(DISTINCT day)::int AS days,
            sum(total) FILTER (WHERE day = (first_at AT TIME ZONE 'UTC')::date) AS first_day,
            array_agg(placed_at ORDER BY placed_at, order_id)
                FILTER (WHERE placed_at > last_at - make_interval(secs => $3)) AS recent_at,
            array_agg(total ORDER BY placed_at, order_id)
                FILTER (WHERE placed_at > last_at - make_interval(secs => $3)) AS recent_total
        FROM counted GROUP BY customer_key
    ), cats AS (
        SELECT c.customer_key, u.name, count(*)::int AS orders, sum(u.spent) AS spent,
            min(c.placed_at) AS first_at, max(c.placed_at) AS last_at,
            bool_or(c.placed_at = c.last_at) AS in_last
        FROM counted c, unnest(c.names, c.spent) AS u(name, spent)
        GROUP BY 1, 2
    ), last_cats AS (
        SELECT customer_key, array_agg(name ORDER BY name COLLATE "C") AS names
        FROM cats WHERE in_last GROUP BY 1
    ), staged AS (
        SELECT f.*, greatest(0, floor(extract(epoch FROM $2 - f.last_at) / 86400)) AS idle,
            ($7::numeric IS NOT NULL AND f.spent >= $7::numeric) AS high,
            (SELECT min(f.last_at + make_interval(secs => d * 86400))
             FROM unnest($8::int[]) AS d
             WHERE f.last_at + make_interval(secs => d * 86400) > $2) AS due
        FROM facts f
    ), ins AS (
        INSERT INTO ingest.customers (customer_key, shop_id, customer_id, email, updated_at,
            orders_count, total_spent, first_order_at, last_order_at, recent_order_at,
            recent_order_total, last_order_categories, stage, stage_due_at, purchase_days,
            first_day_spent)
        SELECT e.customer_key, $1,
            CASE WHEN split_part(w.who, ':', 1) = 'c' THEN substr(w.who, strpos(w.who, ':') + 1)
            END,
            CASE WHEN split_part(w.who, ':', 1) = 'e' THEN substr(w.who, strpos(w.who, ':') + 1)
            END,
            e.since, coalesce(s.orders, 0), coalesce(s.spent, 0), s.first_at, s.last_at,
            coalesce(s.recent_at, '{}'), coalesce(s.recent_total, '{}'),
            coalesce(l.names, '{}'),
            CASE
                WHEN s.customer_key IS NULL THEN NULL
                WHEN s.idle >= $6 THEN 'inactive'
                WHEN s.idle >= $5 THEN 'falling_asleep'
                WHEN s.high THEN 'high_value'
                WHEN s.idle < $4 THEN CASE WHEN s.orders = 1 THEN 'new' ELSE 'active' END
                WHEN s.orders = 1 THEN 'one_time_buyer'
                ELSE 'repeat_buyer'
            END,
            s.due, coalesce(s.days, 0), coalesce(s.first_day, 0)
        FROM everyone e
        CROSS JOIN LATERAL (SELECT substr(e.customer_key, length($1) + 2) AS who) w
        LEFT JOIN staged s ON s.customer_key = e.customer_key
        LEFT JOIN last_cats l ON l.customer_key = e.customer_key
        ORDER BY e.customer_key
        ON CONFLICT (customer_key) DO NOTHING
        RETURNING customer_key
    ), categories AS (
        -- Rows of a category whose customer did not exist cannot be there, unless left
        -- behind: the import's figures replace them, as the consumer's save would.
        INSERT INTO ingest.customer_categories AS old (customer_key, category, shop_id, orders,
            spent, first_order_at, last_order_at)
        SELECT c.customer_key, c.name, $1, c.orders, c.spent, c.first_at, c.last_at
        FROM cats c JOIN ins ON ins.customer_key = c.customer_key
        ORDER BY c.customer_key, c.name
        ON CONFLICT (customer_key, category) DO UPDATE SET orders = excluded.orders,
            spent = excluded.spent, first_order_at = excluded.first_order_at,
            last_order_at = excluded.last_order_at
    )
    SELECT n.customer_key, n.placed_at, n.total, n.names, n.spent
    FROM pg_temp.import_new n
    WHERE n.status <> 'cancelled'
        AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.customer_key = n.customer_key)
    ORDER BY n.customer_key, n.placed_at, n.order_id
"""
