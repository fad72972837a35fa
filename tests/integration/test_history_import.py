"""The history import against real PostgreSQL: the CDNOW master file through the generic CSV,
checked against figures computed here from the file itself; twice adds nothing; bad rows are
reported with their line numbers and the rest is imported."""

from __future__ import annotations

import asyncio
import csv
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from rebound.__main__ import cli
from services.ingest.adapters.facts_repository import FactsRepository
from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain.customer_facts import FactsSettings
from services.ingest.domain.facts import CustomerRow, OrderRow
from services.ingest.domain.history_csv import HistoryOrder, OrderReader
from services.ingest.history_import import import_orders
from services.ingest.order_facts import apply_orders, with_categories
from services.ingest.profiles import grown_profiles
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import Topics
from tests.conftest import ROOT, Infra
from tests.integration.test_ingest_consumer import activities

pytestmark = pytest.mark.integration
CDNOW = ROOT / "tests" / "fixtures" / "cdnow" / "CDNOW_master.txt"
SHOP = "cdnow"
AS_OF = datetime(1998, 7, 1, tzinfo=UTC)


def defaults(shop_id: str) -> FactsSettings:
    return FactsSettings()


async def rows(db: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with db.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(text(sql), params)]


def cdnow_purchases() -> list[tuple[str, date, Decimal]]:
    out = []
    for line in CDNOW.read_text().splitlines()[1:]:  # after the header
        customer, day, _cds, dollars = line.split()
        out.append((customer, datetime.strptime(day, "%Y%m%d").date(), Decimal(dollars)))
    return out


def generic_csv(path: Path) -> Path:
    """CDNOW as the generic format: each purchase row is its own order."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer_id", "order_id", "date", "total", "currency"])
        for n, (customer, day, dollars) in enumerate(cdnow_purchases(), start=1):
            out.writerow([customer, f"{customer}-{n}", day.isoformat(), dollars, "USD"])
    return path


async def test_cdnow_history_gives_the_facts_the_file_implies(
    db: AsyncEngine, tmp_path: Path
) -> None:
    purchases = cdnow_purchases()
    orders: dict[str, int] = defaultdict(int)
    spent: dict[str, Decimal] = defaultdict(Decimal)
    last: dict[str, date] = {}
    for customer, day, dollars in purchases:
        orders[customer] += 1
        spent[customer] += dollars
        last[customer] = max(last.get(customer, day), day)
    quiet_since = (AS_OF - timedelta(days=90)).date()

    report = await import_orders(
        db, generic_csv(tmp_path / "cdnow.csv"), SHOP, defaults, ManualClock(AS_OF)
    )

    assert (report.rows, report.new_orders, report.rejected) == (len(purchases), len(purchases), [])
    stored = {
        r["customer_id"]: r
        for r in await rows(
            db, "SELECT customer_id, orders_count, total_spent, stage FROM ingest.customers"
        )
    }
    assert len(stored) == len(orders) == 23_570
    one_order = sum(1 for n in orders.values() if n == 1)
    assert sum(1 for r in stored.values() if r["orders_count"] == 1) == one_order
    for customer in ("00001", "00002", "00100", "01000", "23570"):
        assert stored[customer]["orders_count"] == orders[customer]
        assert stored[customer]["total_spent"] == spent[customer]
    quiet = sum(1 for day in last.values() if day <= quiet_since)
    assert sum(1 for r in stored.values() if r["stage"] == "inactive") == quiet


async def test_a_second_import_adds_nothing(db: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "customer_id,email,order_id,date,total,currency,product,category,quantity,price\n"
        "7,,A1,2024-01-10,30.00,EUR,Tea,drinks,2,10.00\n"
        ",,A1,,,,Cup,kitchen,1,10.00\n"  # a second line: order fields only on the first
        "7,,A2,2024-03-01,12.00,EUR,Tea,drinks,1,12.00\n"
    )
    clock = ManualClock(datetime(2024, 3, 2, tzinfo=UTC))

    first = await import_orders(db, path, "s1", defaults, clock)
    second = await import_orders(db, path, "s1", defaults, clock)

    assert (first.new_orders, second.new_orders, second.orders) == (2, 0, 2)
    assert first.rejected == second.rejected == []
    [customer] = await rows(
        db, "SELECT orders_count, total_spent, last_order_categories FROM ingest.customers"
    )
    assert customer == {
        "orders_count": 2,
        "total_spent": Decimal("42.00"),
        "last_order_categories": ["drinks"],
    }
    categories = await rows(
        db, "SELECT category, orders, spent FROM ingest.customer_categories ORDER BY category"
    )
    assert categories == [
        {"category": "drinks", "orders": 2, "spent": Decimal("32.00")},
        {"category": "kitchen", "orders": 1, "spent": Decimal("10.00")},
    ]


async def test_bad_rows_are_reported_with_their_line_and_the_rest_imported(
    db: AsyncEngine, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "customer_id,email,order_id,date,total,currency\n"
        "1,,B1,2024-01-10,10.00,EUR\n"
        ",,B2,2024-01-11,10.00,EUR\n"
        "3,,B3,yesterday,10.00,EUR\n"
        "4,,B4,2024-01-12,ten,EUR\n"
        "5,,B5,2024-01-13,5.00,EUR\n"
    )

    report = await import_orders(
        db, path, "s1", defaults, ManualClock(datetime(2024, 2, 1, tzinfo=UTC))
    )

    assert [(r.line, r.reason.split(" ")[0]) for r in report.rejected] == [
        (3, "neither"),
        (4, "date"),
        (5, "total"),
    ]
    assert report.new_orders == 2
    imported = await rows(db, "SELECT order_id FROM ingest.orders ORDER BY order_id")
    assert [r["order_id"] for r in imported] == ["B1", "B5"]


# --- the import's facts are the live consumer's -------------------------------------------

LIVE, IMPORTED = "live", "imp"
NOW = datetime(2024, 7, 1, tzinfo=UTC)
GENERIC = ["customer_id", "email", "order_id", "date", "total", "currency", "product_id",
           "product", "category", "quantity", "price"]  # fmt: skip
SHOPIFY = ["Name", "Email", "Created at", "Total", "Currency", "Cancelled at", "Lineitem name",
           "Lineitem quantity", "Lineitem price", "Lineitem sku"]  # fmt: skip


def random_history(layout: str, seed: int) -> list[list[str]]:
    """Orders of 50 customers over two years: several on one day or at one moment, lines
    with a category, without one (the catalog knows p5, not p6), orders without lines, and
    (Shopify) cancelled orders."""
    rng = random.Random(seed)
    start = datetime(2022, 7, 1, tzinfo=UTC)
    moments = [start + timedelta(hours=rng.randrange(2 * 365 * 24)) for _ in range(150)]
    out: list[list[str]] = []
    for n in range(400):
        who = rng.randrange(50)
        at = rng.choice(moments) + timedelta(minutes=rng.choice([0, 0, 30, 600]))
        lines = [(f"p{rng.randrange(1, 7)}", rng.randrange(1, 4)) for _ in range(rng.randrange(4))]
        total = sum((Decimal(5) * q for _, q in lines), Decimal("4.50"))
        for i, (product, quantity) in enumerate(lines or [("", 0)]):
            first = i == 0
            if layout == "generic":
                category = {"p5": "", "p6": ""}.get(product, f"cat{product[-1:]}")
                out.append([
                    str(who) if who % 5 else "", f"C{who}@Example.com", f"o{n}",
                    at.isoformat() if first else "", str(total) if first else "",
                    "EUR" if first else "", product, product, category if product else "",
                    str(quantity) if product else "", "5.00" if product else "",
                ])  # fmt: skip
            else:
                cancelled = first and rng.random() < 0.1
                out.append([
                    f"#{n}", f"c{who}@example.com",
                    at.strftime("%Y-%m-%d %H:%M:%S +0000") if first else "",
                    str(total) if first else "", "EUR" if first else "",
                    (at + timedelta(days=1)).isoformat() if cancelled else "",
                    product or "", str(quantity) if product else "", "5.00" if product else "",
                    product.upper(),
                ])  # fmt: skip
    return out


def write_csv(path: Path, header: list[str], body: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows(body)
    return path


async def apply_live(db: AsyncEngine, header: list[str], body: list[list[str]]) -> None:
    """The same rows through the live consumer's path, in batches as events would come."""
    reader = OrderReader(LIVE, header)
    orders = [*reader.feed((n, list(r)) for n, r in enumerate(body, 2))]
    orders += [o for o in [reader.close()] if o is not None]
    for start in range(0, len(orders), 37):
        batch = [as_order_row(o) for o in orders[start : start + 37]]
        async with db.begin() as conn:
            repo, order_repo = FactsRepository(conn), OrderFactsRepository(conn)
            batch = await with_categories(order_repo, batch)
            await repo.upsert_customers(
                {o.customer_key: customer_row(o) for o in batch}[k]
                for k in sorted({o.customer_key for o in batch})
            )
            new = await repo.add_orders(batch)
            await apply_orders(order_repo, new, (), no_cut, NOW)


def no_cut(shop_id: str) -> FactsSettings:
    # The import computes the shop's high-value cut at its end (the live path: the stage
    # sweep); without one, the stages compare.
    return FactsSettings(high_value_min_buyers=10_000)


def as_order_row(o: HistoryOrder) -> OrderRow:
    cancelled = o.status == "cancelled"
    return OrderRow(
        shop_id=LIVE,
        order_id=o.order_id,
        customer_key=o.customer_key,
        cart_id=None,
        currency=o.currency,
        total_price=o.total,
        status=o.status,
        placed_at=o.placed_at,
        paid_at=None if cancelled else o.placed_at,
        cancelled_at=o.placed_at if cancelled else None,
        lines=[ev.Line.model_construct(**line._asdict(), variant_id=None, variant_title=None,
                                       image_url=None) for line in o.lines],
        updated_at=o.placed_at,
    )  # fmt: skip


def customer_row(o: OrderRow) -> CustomerRow:
    kind, _, value = o.customer_key[len(LIVE) + 1 :].partition(":")
    customer_id, email = (value, None) if kind == "c" else (None, value)
    return CustomerRow(o.customer_key, LIVE, customer_id, email, None, None, None, None, None,
                       o.placed_at)  # fmt: skip


FACTS = {
    "customers": "SELECT substr(customer_key, length(shop_id) + 2) AS k, customer_id, email, "
    "orders_count, total_spent, first_order_at, last_order_at, recent_order_at, "
    "recent_order_total, last_order_categories, stage, stage_due_at, purchase_days, "
    "first_day_spent FROM ingest.customers WHERE shop_id = :shop ORDER BY k",
    "categories": "SELECT substr(customer_key, length(shop_id) + 2) AS k, category, orders, "
    "spent, first_order_at, last_order_at FROM ingest.customer_categories "
    "WHERE shop_id = :shop ORDER BY k, category",
    "orders": "SELECT order_id, substr(customer_key, length(shop_id) + 2) AS k, currency, "
    "total_price, status, placed_at, paid_at, cancelled_at FROM ingest.orders "
    "WHERE shop_id = :shop ORDER BY order_id",
    "lines": "SELECT order_id, line_no, product_id, sku, title, quantity, price, category "
    "FROM ingest.order_lines WHERE shop_id = :shop ORDER BY order_id, line_no",
    "sales": "SELECT product_id, day, units FROM ingest.product_sales WHERE shop_id = :shop "
    "ORDER BY product_id, day",
}


@pytest.mark.parametrize(("layout", "header"), [("generic", GENERIC), ("shopify", SHOPIFY)])
async def test_imported_facts_are_those_the_live_consumer_keeps(
    db: AsyncEngine, tmp_path: Path, layout: str, header: list[str]
) -> None:
    async with db.begin() as conn:
        for shop in (LIVE, IMPORTED):
            await conn.execute(
                text(
                    "INSERT INTO ingest.products (shop_id, product_id, title, category, tags, "
                    "available, updated_at) VALUES (:shop, 'p5', 'P5', 'garden', '{}', true, "
                    ":at)"
                ),
                {"shop": shop, "at": NOW},
            )
    body = random_history(layout, seed=5)
    cut = next(n for n in range(len(body) * 3 // 5, len(body)) if body[n][3 if layout ==
               "generic" else 2])  # fmt: skip

    await apply_live(db, header, body)
    clock = ManualClock(NOW)
    # Small ranges: many transactions per session, each customer's orders in one of them.
    part = await import_orders(
        db, write_csv(tmp_path / "part.csv", header, body[:cut]), IMPORTED, no_cut, clock,
        range_orders=40,
    )  # fmt: skip
    grown = await import_orders(
        db, write_csv(tmp_path / "all.csv", header, body), IMPORTED, no_cut, clock,
        range_orders=40,
    )  # fmt: skip

    assert part.rejected == grown.rejected == []
    assert 0 < part.new_orders < grown.orders == part.new_orders + grown.new_orders
    for what, sql in FACTS.items():
        live = await rows(db, sql, shop=LIVE)
        # Shopify's export names no product id or category: no categories, no sales.
        assert live or (layout == "shopify" and what in ("categories", "sales")), what
        imported = await rows(db, sql, shop=IMPORTED)
        differ = [
            {k: (a[k], b[k]) for k in a if a[k] != b[k]}
            for a, b in zip(imported, live, strict=False)
            if a != b
        ]
        assert (len(imported), differ[:1]) == (len(live), []), what


async def test_the_top_tenth_by_spend_needs_fifty_buyers_a_shop_threshold_does_not(
    db: AsyncEngine, tmp_path: Path
) -> None:
    def shop_file(name: str, spends: list[int]) -> Path:
        return write_csv(
            tmp_path / f"{name}.csv",
            ["customer_id", "order_id", "date", "total"],
            [[str(n), f"o{n}", "2024-06-20", str(spend)] for n, spend in enumerate(spends)],
        )

    settings = {"fixed": FactsSettings(high_value_spend=Decimal(500))}
    clock = ManualClock(NOW)
    for shop, spends in [
        ("few", [10, 20, 900]),
        ("fixed", [10, 20, 900]),
        ("many", [10 * n for n in range(1, 61)]),
    ]:
        await import_orders(
            db, shop_file(shop, spends), shop, lambda s: settings.get(s, FactsSettings()), clock
        )

    async with db.begin() as conn:
        keys = [r[0] for r in await conn.execute(text("SELECT customer_key FROM ingest.customers"))]
        profiles = await grown_profiles(
            OrderFactsRepository(conn), keys, lambda s: settings.get(s, FactsSettings()), NOW
        )
    high = sorted((p.shop_id, p.total_spent) for p in profiles.values() if p.high_value)
    assert high == [("fixed", 900), *(("many", Decimal(10 * n)) for n in range(55, 61))]


async def test_the_command_lists_rejected_rows_and_publishes_the_imported_facts(
    database_url: str, infra: Infra, topics: Topics, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "customer_id,email,order_id,date,total,currency\n"
        "1,,A1,2024-01-10,10.00,EUR\n"
        ",,A2,2024-01-11,10.00,EUR\n"
        "2,,A3,2024-01-12,30.00,EUR\n"
        "1,,A4,2024-02-12,5.00,EUR\n"
    )
    env = {
        "REBOUND_INGEST_DATABASE_URL": database_url,
        "REBOUND_INGEST_KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "REBOUND_INGEST_TOPIC_PREFIX": topics.prefix,
    }
    command = ["import", "orders", str(path), "--shop", "s1"]

    first = await asyncio.to_thread(CliRunner().invoke, cli, command, env=env)
    again = await asyncio.to_thread(CliRunner().invoke, cli, command, env=env)

    assert first.exit_code == 1, first.output  # a row was rejected
    assert "line 3: neither a customer id nor an e-mail address" in first.output
    assert "4 rows: 3 orders, 3 new, 0 already imported, 1 rows rejected" in first.output
    assert "3 orders, 0 new, 3 already imported" in again.output
    imported = [
        a.data["profile"]
        for a in await activities(infra, topics)
        if a.data["kind"] == ev.HISTORY_IMPORTED_KIND
    ]
    assert sorted((p["key"], p["orders_count"]) for p in imported) == [("s1:c:1", 2), ("s1:c:2", 1)]
