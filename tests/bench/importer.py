"""`make bench --only import`: orders/s of the history import into the facts, for the real
CDNOW file and a generated file of N orders, beside a naive peer (one INSERT for the order and
one UPDATE of its customer's totals per order, the way a straightforward importer writes) run
on the CDNOW file in the same run. The generated file goes through the command itself
(`python -m rebound import orders`) in a child process, whose peak memory is reported.
"""

from __future__ import annotations

import asyncio
import csv
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from services.ingest.domain.customer_facts import FactsSettings
from services.ingest.history_import import IMPORT_SESSIONS, import_orders
from shared.clock import SystemClock
from shared.db import make_engine

ROOT = Path(__file__).resolve().parents[2]
CDNOW = ROOT / "tests" / "fixtures" / "cdnow" / "CDNOW_master.txt"
CATEGORIES = ("tea", "coffee", "cups", "books", "kitchen", "garden", "toys", "music")


def cdnow_csv(path: Path) -> int:
    """CDNOW as the generic CSV, one order per purchase row; returns the number of orders."""
    rows = CDNOW.read_text().splitlines()[1:]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer_id", "order_id", "date", "total", "currency", "quantity"])
        for n, line in enumerate(rows, start=1):
            customer, day, cds, dollars = line.split()
            out.writerow([customer, f"{customer}-{n}", day, dollars, "USD", cds])
    return len(rows)


def generated_csv(path: Path, orders: int, seed: int = 11) -> int:
    """N orders of N/4 customers over three years, one line each with product and category,
    written as they are drawn (memory does not grow with N)."""
    rng = random.Random(seed)
    start = datetime(2022, 1, 1, tzinfo=UTC)
    customers = max(1, orders // 4)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(
            ["customer_id", "order_id", "date", "total", "currency", "product_id", "product",
             "category", "quantity", "price"]
        )  # fmt: skip
        for n in range(orders):
            at = start + timedelta(seconds=rng.randrange(3 * 365 * 86400))
            product = rng.randrange(2000)
            price = Decimal(rng.randrange(500, 20000)) / 100
            out.writerow(
                [rng.randrange(customers), f"g{n}", at.isoformat(), price, "EUR", f"p{product}",
                 f"Product {product}", CATEGORIES[product % len(CATEGORIES)], 1, price]
            )  # fmt: skip
    return orders


async def _rebound(database_url: str, path: Path, shop_id: str) -> float:
    engine = make_engine(database_url, pool_size=IMPORT_SESSIONS)
    try:
        started = time.perf_counter()
        report = await import_orders(
            engine, path, shop_id, lambda _s: FactsSettings(), SystemClock()
        )
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    if report.rejected or report.new_orders != report.orders:
        raise RuntimeError(f"import of {path.name} incomplete: {report}")
    return elapsed


_NAIVE_SCHEMA = """
    DROP SCHEMA IF EXISTS naive CASCADE; CREATE SCHEMA naive;
    CREATE TABLE naive.orders (order_id text PRIMARY KEY, customer_id text NOT NULL,
        placed_at timestamptz NOT NULL, total numeric NOT NULL);
    CREATE TABLE naive.customers (customer_id text PRIMARY KEY, orders int NOT NULL,
        spent numeric NOT NULL, first_order_at timestamptz, last_order_at timestamptz);
"""


async def _naive(dsn: str, path: Path) -> float:
    """Row by row: the order, then its customer's totals, one statement each."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_NAIVE_SCHEMA)
        started = time.perf_counter()
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        for chunk in range(0, len(rows), 10_000):
            async with conn.transaction():
                for row in rows[chunk : chunk + 10_000]:
                    await _naive_row(conn, row)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _naive_row(conn: Any, row: dict[str, str]) -> None:
    at = datetime.strptime(row["date"], "%Y%m%d").replace(tzinfo=UTC)
    total = Decimal(row["total"])
    inserted = await conn.fetchval(
        "INSERT INTO naive.orders VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
        row["order_id"], row["customer_id"], at, total,
    )  # fmt: skip
    if inserted:
        await conn.execute(
            "INSERT INTO naive.customers VALUES ($1, 1, $2, $3, $3) ON CONFLICT (customer_id) "
            "DO UPDATE SET orders = naive.customers.orders + 1, "
            "spent = naive.customers.spent + $2, "
            "first_order_at = least(naive.customers.first_order_at, $3), "
            "last_order_at = greatest(naive.customers.last_order_at, $3)",
            row["customer_id"], total, at,
        )  # fmt: skip


def bench_import(database_url: str, orders: int, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    cdnow = workdir / "cdnow.csv"
    cdnow_orders = cdnow_csv(cdnow)
    generated = workdir / f"generated-{orders}.csv"
    if not generated.exists():  # the same seed gives the same file: drawn once
        generated_csv(generated.with_suffix(".part"), orders)
        generated.with_suffix(".part").rename(generated)
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    naive_s = asyncio.run(_naive(dsn, cdnow))
    cdnow_s = asyncio.run(_rebound(database_url, cdnow, "bench-cdnow"))
    generated_s, peak_mb = _rebound_command(database_url, generated, "bench-generated")
    again_s = asyncio.run(_rebound_again(database_url, cdnow))
    return {
        "cdnow_orders": cdnow_orders,
        "cdnow_orders_per_s": round(cdnow_orders / cdnow_s),
        "naive_cdnow_orders_per_s": round(cdnow_orders / naive_s),
        "ratio_vs_naive": round(naive_s / cdnow_s, 2),
        "generated_orders": orders,
        "generated_orders_per_s": round(orders / generated_s),
        "generated_peak_mb": peak_mb,
        "cdnow_again_s": round(again_s, 2),
    }


def _rebound_command(database_url: str, path: Path, shop_id: str) -> tuple[float, int]:
    """`python -m rebound import orders FILE --shop S --no-publish` in a child process: its
    time (interpreter start included) and peak resident memory in MB."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REBOUND_INGEST_DATABASE_URL": database_url,
        "REBOUND_INGEST_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "rebound", "import", "orders", str(path), "--shop", shop_id,
               "--no-publish"]  # fmt: skip
    log = path.with_suffix(".log")
    with log.open("wb") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
    output = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0 or " 0 rows rejected" not in output:
        raise RuntimeError(f"import of {path.name} failed:\n{output[-2000:]}")
    return elapsed, usage.ru_maxrss // 1024


async def _rebound_again(database_url: str, path: Path) -> float:
    """The same file a second time: nothing new (idempotence), how long it takes to find out."""
    engine = make_engine(database_url, pool_size=IMPORT_SESSIONS)
    try:
        started = time.perf_counter()
        report = await import_orders(
            engine, path, "bench-cdnow", lambda _s: FactsSettings(), SystemClock()
        )
        if report.new_orders:
            raise RuntimeError(f"a second import added {report.new_orders} orders")
        return time.perf_counter() - started
    finally:
        await engine.dispose()


def table_lines(r: dict[str, Any]) -> list[str]:
    return [
        "(d) history import: CSV -> orders, lines, customer facts (one process, in-process)",
        f"  CDNOW ({r['cdnow_orders']} orders)      {r['cdnow_orders_per_s']:>9,} orders/s",
        f"  naive peer, same file         {r['naive_cdnow_orders_per_s']:>9,} orders/s"
        f"   (Rebound x{r['ratio_vs_naive']})",
        f"  generated ({r['generated_orders']:,} orders) "
        f"{r['generated_orders_per_s']:>9,} orders/s  (target 50,000: see BENCHMARKS.md)",
        f"    the command, peak memory    {r['generated_peak_mb']:>9,} MB",
        f"  CDNOW again (adds nothing)    {r['cdnow_again_s']} s",
        "",
    ]
