"""A shop's order history from a CSV file into the facts, by the live consumer's rules
(order_facts.grow_facts), in two steps on one database session:

1. read: the file is parsed and COPYed, as it is read, into a temporary table;
2. apply: a range of customers per transaction (about `range_orders` orders), their orders
   and lines are inserted in one statement that returns those not stored before, and each
   customer's facts grow once by all of their new orders (new customers are inserted with
   their facts in one statement).

Idempotent: an order already stored (same shop and order id) changes nothing. An interrupted
import leaves whole ranges applied; running it again finishes the rest. No activity is
published: an imported order is history, not something a customer just did, so it starts no
event-triggered journey; segment-based journeys see the facts it leaves (docs/import.md).
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ingest.adapters.history_repository import (
    HistoryRepository,
    NewCustomer,
    NewOrder,
    StagedRow,
)
from services.ingest.adapters.order_facts_repository import (
    FactsWrite,
    OrderFactsRepository,
    StoredFacts,
)
from services.ingest.domain import customer_facts as cf
from services.ingest.domain.history_csv import HistoryOrder, OrderReader, Rejected, RowError
from services.ingest.order_facts import SettingsFor, grow_facts
from shared.clock import Clock

IMPORT_RANGE_ORDERS = 20_000
READ_PROGRESS_EVERY = 20_000  # rows


class Progress(Protocol):
    def read(self, rows: int) -> None:
        """Rows of the file read so far."""

    def applied(self, orders: int, total: int) -> None:
        """Orders of the file applied to the facts so far, of `total`."""


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
    range_orders: int = IMPORT_RANGE_ORDERS,
) -> ImportReport:
    """Raises RowError when the header matches no known layout; bad rows are only reported."""
    report = ImportReport()
    async with engine.connect() as conn:
        history = HistoryRepository(conn)
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.reader(f)
                orders = OrderReader(shop_id, next(reader, []))
                async with conn.begin():
                    await history.stage(_staged(orders, reader, report, progress))
            report.rejected = orders.rejected
            job = _Job(shop_id, settings_for, clock, progress, range_orders)
            await _apply(conn, history, job, report)
            await _refresh_high_value(conn, job)
        finally:
            await history.drop()
            await conn.commit()
    return report


def _numbered(reader: Any, report: ImportReport) -> Iterator[tuple[int, list[str]]]:
    for row in reader:
        if row:  # a blank line is no row
            report.rows += 1
            yield reader.line_num, row


async def _staged(
    orders: OrderReader, reader: Any, report: ImportReport, progress: Progress | None
) -> AsyncIterator[StagedRow]:
    """The file's orders as COPY rows; reports progress every READ_PROGRESS_EVERY orders."""
    for read, order in enumerate(orders.feed(_numbered(reader, report)), start=1):
        for row in _rows_of(order):
            yield row
        if progress and read % READ_PROGRESS_EVERY == 0:
            progress.read(report.rows)
    last = orders.close()
    if last is not None:
        for row in _rows_of(last):
            yield row
    if progress:
        progress.read(report.rows)


def _rows_of(o: HistoryOrder) -> Iterator[StagedRow]:
    head = (o.customer_key, o.order_id)
    money = (o.currency, o.total, o.status, o.placed_at)
    if not o.lines:
        yield (*head, o.first_line, o.first_line, 0, *money, None, None, None, None, None, None)
        return
    for n, line in enumerate(o.lines, start=1):
        yield (*head, o.first_line, o.first_line, n, *money, *line)


@dataclass(frozen=True)
class _Job:
    shop_id: str
    settings_for: SettingsFor
    clock: Clock
    progress: Progress | None
    range_orders: int


async def _apply(
    conn: AsyncConnection, history: HistoryRepository, job: _Job, report: ImportReport
) -> None:
    async with conn.begin():
        ranges = await history.customer_ranges(job.range_orders)
    report.orders = sum(n for _, _, n in ranges)
    done = 0
    for first, last, orders in ranges:
        async with conn.begin():
            new = await history.insert_orders(job.shop_id, first, last)
            await _grow(conn, history, job.shop_id, new, job.settings_for, job.clock.now())
        report.new_orders += len(new)
        report.customers.update(o.placed.customer_key for o in new)
        done += orders
        if job.progress:
            job.progress.applied(done, report.orders)


async def _refresh_high_value(conn: AsyncConnection, job: _Job) -> None:
    """The shop's top-share cut from the facts the import left, so the profiles published
    next (history_publish) say who is high value without waiting for the stage sweep."""
    settings = job.settings_for(job.shop_id)
    async with conn.begin():
        await OrderFactsRepository(conn).compute_high_value(
            job.shop_id, settings.high_value_share, settings.high_value_min_buyers, job.clock.now()
        )


async def _grow(
    conn: AsyncConnection,
    history: HistoryRepository,
    shop_id: str,
    new: list[NewOrder],
    settings_for: SettingsFor,
    now: datetime,
) -> None:
    """The range's customers' facts grown by their new orders: customers not stored yet are
    inserted with their facts, the others updated like the consumer does."""
    if not new:
        return
    repo = OrderFactsRepository(conn)
    by_key: dict[str, list[cf.PlacedOrder]] = {}
    first_at: dict[str, datetime] = {}
    for cancelled, o in new:  # oldest first per customer: new customers need no recount
        first_at.setdefault(o.customer_key, o.placed_at)
        if not cancelled:
            by_key.setdefault(o.customer_key, []).append(o)
    # A customer whose new orders are all cancelled gets a row, but no facts (as live).
    stored = await repo.load(by_key)
    fresh = [key for key in first_at if key not in stored]
    cut = await history.shop_cut(shop_id)
    blank = {
        key: StoredFacts(shop_id, cf.OrderFacts(), None, high_value_cut=cut)
        for key in fresh
        if key in by_key
    }
    writes, _ = await grow_facts(repo, blank, by_key, (), settings_for, now)
    facts = {w.customer_key: w for w in writes}
    inserted = await history.insert_customers(
        shop_id, [_new_customer(shop_id, key, first_at[key], facts.get(key)) for key in fresh]
    )
    # Stored before, or created meanwhile by the live consumer: grown from what is stored.
    meanwhile = await repo.load(k for k in fresh if k not in inserted and k in by_key)
    writes, _ = await grow_facts(repo, {**stored, **meanwhile}, by_key, (), settings_for, now)
    await repo.save(writes)


def _new_customer(
    shop_id: str, key: str, first_at: datetime, facts: FactsWrite | None
) -> NewCustomer:
    # The key says which it is: `shop:c:<id>` or `shop:e:<normalised e-mail>`.
    kind, _, value = key[len(shop_id) + 1 :].partition(":")
    return NewCustomer(
        customer_key=key,
        customer_id=value if kind == "c" else None,
        email=value if kind == "e" else None,
        updated_at=first_at,
        facts=facts,
    )


__all__ = ["ImportReport", "Progress", "RowError", "count_rows", "import_orders"]
