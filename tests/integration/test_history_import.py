"""The history import against real PostgreSQL: the CDNOW master file through the generic CSV,
checked against figures computed here from the file itself; twice adds nothing; bad rows are
reported with their line numbers and the rest is imported."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.domain.customer_facts import FactsSettings
from services.ingest.history_import import import_orders
from shared.clock import ManualClock
from shared.db import make_engine
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
CDNOW = ROOT / "tests" / "fixtures" / "cdnow" / "CDNOW_master.txt"
SHOP = "cdnow"
AS_OF = datetime(1998, 7, 1, tzinfo=UTC)


def defaults(shop_id: str) -> FactsSettings:
    return FactsSettings()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


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
