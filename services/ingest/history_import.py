"""A shop's order history from a CSV file into the facts, by the live consumer's own path
(order_facts.apply_orders), a chunk of orders per transaction.

Idempotent: an order already stored (same shop and order id) changes nothing. No activity is
published: an imported order is history, not something a customer just did, so it starts no
event-triggered journey; segment-based journeys see the facts it leaves (docs/import.md).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain.facts import CustomerRow, OrderRow
from services.ingest.domain.history_csv import OrderReader, Rejected, RowError
from services.ingest.order_facts import SettingsFor, apply_orders, with_categories
from shared.clock import Clock

IMPORT_CHUNK_ORDERS = 10_000
Progress = Callable[[int], None]  # called with the number of rows read so far


@dataclass
class ImportReport:
    rows: int = 0
    orders: int = 0
    new_orders: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)  # whose facts new orders changed


def count_rows(path: Path) -> int:
    """Data rows (lines after the header), for the progress bar's total."""
    with path.open("rb") as f:
        return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1)


async def import_orders(
    engine: AsyncEngine,
    path: Path,
    shop_id: str,
    settings_for: SettingsFor,
    clock: Clock,
    progress: Progress | None = None,
    chunk_orders: int = IMPORT_CHUNK_ORDERS,
) -> ImportReport:
    """Raises RowError when the header matches no known layout; bad rows are only reported."""
    report = ImportReport()
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        orders = OrderReader(shop_id, next(reader, []))
        chunk: list[OrderRow] = []
        for order in orders.feed(_numbered(reader, report)):
            chunk.append(order)
            if len(chunk) >= chunk_orders:
                await _store(engine, chunk, settings_for, clock, report)
                chunk = []
                if progress:
                    progress(report.rows)
        last = orders.close()
        await _store(engine, [*chunk, *([last] if last else [])], settings_for, clock, report)
    if progress:
        progress(report.rows)
    report.rejected = orders.rejected
    return report


def _numbered(reader: Any, report: ImportReport) -> Iterator[tuple[int, list[str]]]:
    for row in reader:
        if row:  # a blank line is no row
            report.rows += 1
            yield reader.line_num, row


async def _store(
    engine: AsyncEngine,
    chunk: list[OrderRow],
    settings_for: SettingsFor,
    clock: Clock,
    report: ImportReport,
) -> None:
    if not chunk:
        return
    report.orders += len(chunk)
    async with engine.begin() as conn:
        repo = OrderFactsRepository(conn)
        await repo.add_customers(_customers(chunk))
        new = await repo.insert_orders(await with_categories(repo, chunk))
        await apply_orders(repo, new, (), settings_for, clock.now())
    report.new_orders += len(new)
    report.customers.update(o.customer_key for o in new)


def _customers(chunk: list[OrderRow]) -> list[CustomerRow]:
    first: dict[str, OrderRow] = {}
    for order in chunk:
        first.setdefault(order.customer_key, order)
    return [_customer(o) for _, o in sorted(first.items())]


def _customer(order: OrderRow) -> CustomerRow:
    # The key says which it is: `shop:c:<id>` or `shop:e:<normalised e-mail>`.
    kind, _, value = order.customer_key[len(order.shop_id) + 1 :].partition(":")
    return CustomerRow(
        customer_key=order.customer_key,
        shop_id=order.shop_id,
        customer_id=value if kind == "c" else None,
        email=value if kind == "e" else None,
        first_name=None,
        last_name=None,
        locale=None,
        marketing_consent=None,
        registered_at=None,
        updated_at=order.placed_at,
    )


__all__ = ["ImportReport", "RowError", "count_rows", "import_orders"]
