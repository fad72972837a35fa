"""A shop's order history from a CSV file into the facts, by the live consumer's rules
(order_facts.grow_facts), in two steps on `sessions` database sessions, each owning the
customers whose key hashes to it:

1. read: the file is parsed once and each order's rows are COPYed, as the file is read, into
   its session's temporary table;
2. apply: a range of customers per transaction (about `range_orders` orders), their orders
   and lines are inserted in one statement that keeps those not stored before; new customers
   are inserted with their facts computed in SQL from those orders (the common case, one
   statement), and only customers stored before grow in Python by all of their new orders.
   The sessions run at once, so PostgreSQL writes on as many cores.

Idempotent: an order already stored (same shop and order id) changes nothing. An interrupted
import leaves whole ranges applied; running it again finishes the rest. No activity is
published: an imported order is history, not something a customer just did, so it starts no
event-triggered journey; segment-based journeys see the facts it leaves (docs/import.md).
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.ingest.adapters.history_repository import (
    FreshFacts,
    HistoryRepository,
    StagedRow,
)
from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain import customer_facts as cf
from services.ingest.domain.history_csv import HistoryOrder, OrderReader, Rejected, RowError
from services.ingest.order_facts import SettingsFor, grow_facts
from shared.clock import Clock

IMPORT_RANGE_ORDERS = 20_000
# Sessions that COPY and apply at once, each for its share of the customers: the apply is
# PostgreSQL's work, one core per session (two: the machine's cores).
IMPORT_SESSIONS = 2
COPY_CHUNK_ROWS = 5_000
QUEUED_CHUNKS = 4  # per session: what the parser may run ahead of a COPY
READ_PROGRESS_EVERY = 20_000  # orders


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
    applied: int = 0  # orders of the file applied so far


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
    sessions: int = IMPORT_SESSIONS,
) -> ImportReport:
    """Raises RowError when the header matches no known layout; bad rows are only reported."""
    report = ImportReport()
    job = _Job(shop_id, settings_for, clock, progress, range_orders)
    async with AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(engine.connect()) for _ in range(sessions)]
        for conn in conns:
            stack.push_async_callback(_drop, conn)
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            orders = OrderReader(shop_id, next(reader, []))
            await _read(conns, orders, reader, report, progress)
        report.rejected = orders.rejected
        ranges = [await _ranges(conn, range_orders) for conn in conns]
        report.orders = sum(n for session in ranges for _, _, n in session)
        async with asyncio.TaskGroup() as group:
            for conn, session in zip(conns, ranges, strict=True):
                group.create_task(_apply(conn, session, job, report))
        await _refresh_high_value(conns[0], job)
    return report


async def _drop(conn: AsyncConnection) -> None:
    """The session's temporary tables, before the connection goes back to the pool; a
    connection that cannot (the import failed mid-statement) is closed, which drops them."""
    try:
        await HistoryRepository(conn).drop()
        await conn.commit()
    except Exception:
        await conn.invalidate()


async def _read(
    conns: list[AsyncConnection],
    orders: OrderReader,
    reader: Any,
    report: ImportReport,
    progress: Progress | None,
) -> None:
    """The file parsed once; each customer's rows COPYed to one session (by the key's hash),
    all sessions at once, as the file is read."""
    queues: list[asyncio.Queue[list[StagedRow] | None]] = [
        asyncio.Queue(maxsize=QUEUED_CHUNKS) for _ in conns
    ]
    async with asyncio.TaskGroup() as group:
        for conn, queue in zip(conns, queues, strict=True):
            group.create_task(_copy(conn, queue))
        chunks: list[list[StagedRow]] = [[] for _ in conns]
        for read, order in enumerate(_all(orders, reader, report), start=1):
            session = hash(order.customer_key) % len(conns)
            chunk = chunks[session]
            chunk.extend(_rows_of(order))
            if len(chunk) >= COPY_CHUNK_ROWS:
                await queues[session].put(chunk)
                chunks[session] = []
                await asyncio.sleep(0)  # the COPYs send while the file is parsed
            if progress and read % READ_PROGRESS_EVERY == 0:
                progress.read(report.rows)
        for queue, chunk in zip(queues, chunks, strict=True):
            await queue.put(chunk)
            await queue.put(None)
    if progress:
        progress.read(report.rows)


async def _copy(conn: AsyncConnection, queue: asyncio.Queue[list[StagedRow] | None]) -> None:
    async def rows() -> AsyncIterator[StagedRow]:
        while (chunk := await queue.get()) is not None:
            for row in chunk:
                yield row

    async with conn.begin():
        await HistoryRepository(conn).stage(rows())


def _all(orders: OrderReader, reader: Any, report: ImportReport) -> Iterator[HistoryOrder]:
    yield from orders.feed(_numbered(reader, report))
    last = orders.close()
    if last is not None:
        yield last


def _numbered(reader: Any, report: ImportReport) -> Iterator[tuple[int, list[str]]]:
    for row in reader:
        if row:  # a blank line is no row
            report.rows += 1
            yield reader.line_num, row


def _rows_of(o: HistoryOrder) -> list[StagedRow]:
    head = (o.customer_key, o.order_id, o.first_line, o.first_line)
    money = (o.currency, o.total, o.status, o.placed_at)
    if not o.lines:
        return [(*head, 0, *money, None, None, None, None, None, None)]
    return [(*head, n, *money, *line) for n, line in enumerate(o.lines, start=1)]


@dataclass(frozen=True)
class _Job:
    shop_id: str
    settings_for: SettingsFor
    clock: Clock
    progress: Progress | None
    range_orders: int


async def _ranges(conn: AsyncConnection, range_orders: int) -> list[tuple[str, str, int]]:
    async with conn.begin():
        return await HistoryRepository(conn).customer_ranges(range_orders)


async def _apply(
    conn: AsyncConnection, ranges: list[tuple[str, str, int]], job: _Job, report: ImportReport
) -> None:
    """One session's ranges, a transaction each (the other sessions run meanwhile)."""
    for first, last, orders in ranges:
        async with conn.begin():
            # A repository per transaction: it begins the transaction on its first statement.
            history = HistoryRepository(conn)
            await history.tune()
            new = await history.insert_orders(job.shop_id, first, last)
            if new:
                await _grow(conn, history, job)
        report.new_orders += sum(new.values())
        report.applied += orders
        report.customers.update(new)
        if job.progress:
            job.progress.applied(report.applied, report.orders)


async def _refresh_high_value(conn: AsyncConnection, job: _Job) -> None:
    """The shop's top-share cut from the facts the import left, so the profiles published
    next (history_publish) say who is high value without waiting for the stage sweep."""
    settings = job.settings_for(job.shop_id)
    async with conn.begin():
        await OrderFactsRepository(conn).compute_high_value(
            job.shop_id, settings.high_value_share, settings.high_value_min_buyers, job.clock.now()
        )


async def _grow(conn: AsyncConnection, history: HistoryRepository, job: _Job) -> None:
    """The range's customers' facts grown by their new orders: customers not stored yet are
    inserted with their facts (computed in SQL from their orders, the common case), the
    others' facts grow from what is stored, like the consumer's."""
    settings = job.settings_for(job.shop_id)
    now = job.clock.now()
    rules = FreshFacts(
        now,
        settings.keep,
        settings.active_days,
        settings.falling_asleep_days,
        settings.inactive_days,
        cf.high_value_from(settings, await history.shop_cut(job.shop_id)),
        settings.stage_days,
    )
    by_key: dict[str, list[cf.PlacedOrder]] = {}
    for o in await history.insert_customers(job.shop_id, rules):
        by_key.setdefault(o.customer_key, []).append(o)
    if by_key:
        repo = OrderFactsRepository(conn)
        stored = await repo.load(by_key)
        writes, _ = await grow_facts(repo, stored, by_key, (), job.settings_for, now)
        await repo.save(writes)


__all__ = [
    "IMPORT_SESSIONS",
    "ImportReport",
    "Progress",
    "RowError",
    "count_rows",
    "import_orders",
]
