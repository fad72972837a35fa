"""All SQL of the order facts (per customer, per category, daily product sales). Set-based:
one statement per table and batch, `unnest` of one array per column,
through the asyncpg connection of the caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from services.ingest.domain.customer_facts import CategoryFacts, OrderFacts, PlacedOrder
from services.ingest.domain.profile import EngagementSummary, Place
from shared.db import DriverWrites


@dataclass(frozen=True)
class StoredFacts:
    """A customer's order facts as stored, with the stage last published for them."""

    shop_id: str
    facts: OrderFacts
    stage: str | None
    place: Place = field(default_factory=lambda: Place(None, None))
    high_value_cut: Decimal | None = None
    engagement: EngagementSummary = field(default_factory=EngagementSummary)
    row: Any = None  # the customers row, for the profile


def _stored(r: Any) -> StoredFacts:
    categories = {
        name: CategoryFacts(name, orders, spent, first, last)
        for name, orders, spent, first, last in zip(
            r["cat_names"] or (), r["cat_orders"] or (), r["cat_spent"] or (),
            r["cat_first"] or (), r["cat_last"] or (), strict=True,
        )
    }  # fmt: skip
    return StoredFacts(
        r["shop_id"],
        _order_facts(r, categories),
        r["stage"],
        Place(r["country"], r["time_zone"]),
        r["high_value_from"],
        EngagementSummary(r["opens"] or 0, r["clicks"] or 0, tuple(r["open_times"] or ())),
        r,
    )


@dataclass(frozen=True)
class FactsWrite:
    customer_key: str
    facts: OrderFacts
    stage: str
    stage_due_at: datetime | None
    changed_categories: frozenset[str]  # only these category rows are written


class OrderFactsRepository(DriverWrites):
    _what = "order facts"

    # --- the catalog's categories and sales -------------------------------------------

    async def product_categories(
        self, products: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        wanted = sorted(set(products))
        if not wanted:
            return {}
        rows = await (await self._driver()).fetch(
            _PRODUCT_CATEGORIES, [s for s, _ in wanted], [p for _, p in wanted]
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def add_sales(self, units: Mapping[tuple[str, str, date], int]) -> None:
        if not units:
            return
        keys = sorted(units)
        await (await self._driver()).execute(
            _ADD_SALES,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [units[k] for k in keys],
        )

    # --- per-customer facts ------------------------------------------------------------

    async def load(
        self, keys: Iterable[str], engagement_since: datetime | None = None
    ) -> dict[str, StoredFacts]:
        """Each customer's row, categories, the shop's high-value cut and (with
        `engagement_since`) the engagement summary: one statement."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        rows = await (await self._driver()).fetch(
            _LOAD_FACTS, wanted, engagement_since, engagement_since is not None
        )
        return {r["customer_key"]: _stored(r) for r in rows}

    async def save(self, writes: Sequence[FactsWrite]) -> None:
        if not writes:
            return
        writes = sorted(writes, key=lambda w: w.customer_key)  # lock order
        driver = await self._driver()
        await driver.execute(_SAVE_FACTS, *_facts_columns(writes))
        cats = [
            (w.customer_key, c)
            for w in writes
            for name, c in sorted(w.facts.categories.items())
            if name in w.changed_categories
        ]
        if cats:
            await driver.execute(_SAVE_CATEGORIES, *_category_columns(cats))

    async def forget_categories(self, keys: Iterable[str]) -> None:
        """Before a rebuild: the categories come back from the orders that still count."""
        wanted = sorted(set(keys))
        if wanted:
            await (await self._driver()).execute(_FORGET_CATEGORIES, wanted)

    async def counted_orders(self, keys: Iterable[str]) -> dict[str, list[PlacedOrder]]:
        """Every non-cancelled order of these customers, with its spend per category."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        out: dict[str, list[PlacedOrder]] = defaultdict(list)
        for r in await (await self._driver()).fetch(_COUNTED_ORDERS, wanted):
            spend = {c: Decimal(s) for c, s in zip(r[3] or (), r[4] or (), strict=True)}
            out[r[0]].append(PlacedOrder(r[0], r[1], r[2], spend))
        return out

    async def due_for_stage(self, now: datetime, limit: int) -> list[str]:
        """Customers whose stage time alone has moved, claimed for this transaction."""
        rows = await (await self._driver()).fetch(_CLAIM_DUE, now, limit)
        return [r[0] for r in rows]

    async def compute_high_value(
        self, shop_id: str, share: float, min_buyers: int, now: datetime
    ) -> None:
        """The shop's top-share cut (customer_facts.high_value_cut: the spend of the
        round(buyers x share)-th biggest buyer); none below `min_buyers` buyers."""
        await (await self._driver()).execute(_COMPUTE_HIGH_VALUE, shop_id, share, now, min_buyers)


def _order_facts(row: Any, categories: dict[str, CategoryFacts]) -> OrderFacts:
    return OrderFacts(
        orders=row["orders_count"],
        spent=row["total_spent"],
        first_order_at=row["first_order_at"],
        last_order_at=row["last_order_at"],
        recent=tuple(zip(row["recent_order_at"], row["recent_order_total"], strict=True)),
        last_categories=tuple(row["last_order_categories"]),
        categories=categories,
        purchase_days=row["purchase_days"],
        first_day_spent=row["first_day_spent"],
    )


def _facts_columns(writes: Sequence[FactsWrite]) -> list[list[Any]]:
    return [
        [w.customer_key for w in writes],
        [w.facts.orders for w in writes],
        [w.facts.spent for w in writes],
        [w.facts.first_order_at for w in writes],
        [w.facts.last_order_at for w in writes],
        # unnest flattens a 2-D array, so each row's array travels as its text literal.
        [_array(at.isoformat() for at, _ in w.facts.recent) for w in writes],
        [_array(str(total) for _, total in w.facts.recent) for w in writes],
        [_array(w.facts.last_categories) for w in writes],
        [w.stage for w in writes],
        [w.stage_due_at for w in writes],
        [w.facts.purchase_days for w in writes],
        [w.facts.first_day_spent for w in writes],
    ]


def _category_columns(cats: Sequence[tuple[str, CategoryFacts]]) -> list[list[Any]]:
    return [
        [k for k, _ in cats],
        [c.category for _, c in cats],
        [c.orders for _, c in cats],
        [c.spent for _, c in cats],
        [c.first_order_at for _, c in cats],
        [c.last_order_at for _, c in cats],
    ]


def _array(items: Iterable[str]) -> str:
    quoted = ('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
    return "{" + ",".join(quoted) + "}"


_PRODUCT_CATEGORIES = """
    SELECT p.shop_id, p.product_id, p.category
    FROM unnest($1::text[], $2::text[]) AS w(shop_id, product_id)
    JOIN ingest.products p USING (shop_id, product_id)
    WHERE p.category IS NOT NULL
"""

_ADD_SALES = """
    INSERT INTO ingest.product_sales AS old (shop_id, product_id, day, units)
    SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::bigint[])
    ON CONFLICT (shop_id, product_id, day) DO UPDATE SET units = old.units + excluded.units
"""

# One row per customer with everything the facts and the profile need: arrays of the
# category rows, the shop's cut, and (when $3) the engagement summary of ingest.messages.
_LOAD_FACTS = """
    SELECT c.*, cat.names AS cat_names, cat.orders AS cat_orders, cat.spent AS cat_spent,
        cat.firsts AS cat_first, cat.lasts AS cat_last,
        (SELECT high_value_from FROM ingest.shop_stats s WHERE s.shop_id = c.shop_id)
            AS high_value_from,
        eng.opens, eng.clicks, eng.open_times, e.last_human_open_at, e.last_click_at
    FROM ingest.customers c
    LEFT JOIN ingest.engagement e ON e.customer_key = c.customer_key
    LEFT JOIN LATERAL (
        SELECT array_agg(category) AS names, array_agg(orders) AS orders,
            array_agg(spent) AS spent, array_agg(first_order_at) AS firsts,
            array_agg(last_order_at) AS lasts
        FROM ingest.customer_categories cc WHERE cc.customer_key = c.customer_key
    ) cat ON true
    LEFT JOIN LATERAL (
        SELECT coalesce(sum(human_opens) FILTER (WHERE last_human_open_at > $2), 0)::int AS opens,
            coalesce(sum(cardinality(clicked_links)) FILTER (WHERE last_click_at > $2), 0)::int
                AS clicks,
            array_agg(first_human_open_at) FILTER (WHERE first_human_open_at IS NOT NULL)
                AS open_times
        FROM ingest.messages m WHERE $3 AND m.customer_key = c.customer_key
    ) eng ON true
    WHERE c.customer_key = ANY($1::text[])
"""

_SAVE_FACTS = """
    UPDATE ingest.customers c SET orders_count = t.orders, total_spent = t.spent,
        first_order_at = t.first_at, last_order_at = t.last_at,
        recent_order_at = t.recent_at::timestamptz[],
        recent_order_total = t.recent_total::numeric[],
        last_order_categories = t.last_cats::text[], stage = t.stage, stage_due_at = t.due,
        purchase_days = t.days, first_day_spent = t.first_day_spent
    FROM unnest($1::text[], $2::int[], $3::numeric[], $4::timestamptz[], $5::timestamptz[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::int[],
        $12::numeric[])
        AS t(key, orders, spent, first_at, last_at, recent_at, recent_total, last_cats, stage, due,
            days, first_day_spent)
    WHERE c.customer_key = t.key
"""

_SAVE_CATEGORIES = """
    INSERT INTO ingest.customer_categories AS old (customer_key, category, shop_id, orders, spent,
        first_order_at, last_order_at)
    SELECT t.k, t.cat, c.shop_id, t.o, t.s, t.f, t.l
    FROM unnest($1::text[], $2::text[], $3::int[], $4::numeric[], $5::timestamptz[],
        $6::timestamptz[]) AS t(k, cat, o, s, f, l)
    JOIN ingest.customers c ON c.customer_key = t.k
    ON CONFLICT (customer_key, category) DO UPDATE SET orders = excluded.orders,
        spent = excluded.spent, first_order_at = excluded.first_order_at,
        last_order_at = excluded.last_order_at
"""

_FORGET_CATEGORIES = "DELETE FROM ingest.customer_categories WHERE customer_key = ANY($1::text[])"

_COUNTED_ORDERS = """
    SELECT o.customer_key, o.placed_at, o.total_price,
        array_agg(l.category) FILTER (WHERE l.category IS NOT NULL),
        array_agg(l.spend) FILTER (WHERE l.category IS NOT NULL)
    FROM ingest.orders o
    LEFT JOIN LATERAL (
        SELECT category, sum(price * quantity) AS spend FROM ingest.order_lines ol
        WHERE ol.shop_id = o.shop_id AND ol.order_id = o.order_id GROUP BY category
    ) l ON true
    WHERE o.customer_key = ANY($1::text[]) AND o.status <> 'cancelled'
    GROUP BY o.customer_key, o.shop_id, o.order_id, o.placed_at, o.total_price
"""

_CLAIM_DUE = """
    SELECT customer_key FROM ingest.customers
    WHERE stage_due_at <= $1 ORDER BY stage_due_at LIMIT $2 FOR UPDATE SKIP LOCKED
"""

_COMPUTE_HIGH_VALUE = """
    WITH buyers AS (
        SELECT total_spent, row_number() OVER (ORDER BY total_spent DESC) AS n,
            count(*) OVER () AS buyers
        FROM ingest.customers WHERE shop_id = $1 AND orders_count > 0
    )
    INSERT INTO ingest.shop_stats AS old (shop_id, high_value_from, computed_at)
    SELECT $1, (
        SELECT total_spent FROM buyers
        WHERE buyers >= $4 AND n = greatest(1, floor(buyers * $2::float8 + 0.5))
    ), $3
    ON CONFLICT (shop_id) DO UPDATE SET high_value_from = excluded.high_value_from,
        computed_at = excluded.computed_at
"""
