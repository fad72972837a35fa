"""`make bench BENCH_ARGS="--only segments"`: a segment over N customers in scheduler.customers
(default 1 M): the backfill preview and the backfill's timer rows, set-based in SQL, beside
the naive peer: a Python loop that reads every customer and evaluates the same condition code
(conditions.py over facts.build_facts), run on a capped share and reported per customer; and
the entry-time computation (what an activity or the safety-net sweep does per customer).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.scheduler.__main__ import MIGRATIONS
from services.scheduler.domain.journey import parse_journey
from services.scheduler.domain.segment_time import next_entry
from services.scheduler.segments.repository import customer_of
from services.scheduler.segments.service import SegmentQueries, segment_facts, segment_of
from shared.db import make_engine, upgrade

NOW = datetime(2026, 6, 1, tzinfo=UTC)
WIN_BACK = """
id: bench-win-back
version: 1
name: Bench win-back
trigger:
  segment:
    all:
      - {field: profile.days_since_last_order, op: gte, value: 90}
      - {field: profile.orders_count, op: gte, value: 1}
  backfill:
    if: {field: profile.last_order_at, op: within, value: 300d}
limits: {holdout_percent: 10}
steps:
  - {id: reason, send: {template: winback_reason, subject: "We miss you"}}
"""
# Customers spread over 500 days of last orders, 1-5 orders, spend up to 500.
FILL = """
    INSERT INTO scheduler.customers (customer_key, shop_id, partition, profile, cart, updated_at)
    SELECT 'bench:c:' || g, 'bench', g % 8,
        jsonb_build_object(
            'key', 'bench:c:' || g, 'shop_id', 'bench', 'email', 'c' || g || '@example.com',
            'orders_count', 1 + g % 5, 'total_spent', ((g * 37) % 50000 / 100.0)::text,
            'last_order_at', to_char(($1::timestamptz - ((g * 7919) % 500) * interval '1 day'
                - (g % 86400) * interval '1 second') AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
        NULL, $1
    FROM generate_series(1, $2) g
    ON CONFLICT DO NOTHING
"""


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _fill(url: str, customers: int) -> None:
    conn = await asyncpg.connect(_plain(url))
    try:
        await conn.execute("DELETE FROM scheduler.customers WHERE shop_id = 'bench'")
        await conn.execute(FILL, NOW, customers)
        await conn.execute("ANALYZE scheduler.customers")
    finally:
        await conn.close()


async def _rebound(url: str) -> dict[str, Any]:
    journey = parse_journey(WIN_BACK)
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            started = time.perf_counter()
            preview = await SegmentQueries(conn).preview(journey, NOW)
            preview_s = time.perf_counter() - started
            started = time.perf_counter()
            scheduled = await SegmentQueries(conn).backfill(journey, NOW)
            backfill_s = time.perf_counter() - started
            await conn.rollback()  # measured, not kept
    finally:
        await engine.dispose()
    return {
        "would_enter": preview.would_enter,
        "preview_s": round(preview_s, 2),
        "backfill_scheduled": scheduled,
        "backfill_s": round(backfill_s, 2),
    }


async def _python(url: str, limit: int) -> dict[str, Any]:
    """The naive peer (every customer read and evaluated in Python), and the entry times."""
    journey = parse_journey(WIN_BACK)
    segment = segment_of(journey)
    conn = await asyncpg.connect(_plain(url))
    try:
        started = time.perf_counter()
        rows = await conn.fetch(
            "SELECT customer_key, partition, profile::text AS profile, cart::text AS cart "
            "FROM scheduler.customers WHERE shop_id = 'bench' LIMIT $1",
            limit,
        )
        holding = sum(1 for r in rows if segment.holds(segment_facts(customer_of(r), NOW), NOW))
        naive_s = time.perf_counter() - started
    finally:
        await conn.close()
    started = time.perf_counter()
    timed = sum(1 for r in rows if next_entry(segment, segment_facts(customer_of(r), NOW), NOW).at)
    entry_s = time.perf_counter() - started
    return {
        "naive_customers": len(rows),
        "naive_holding": holding,
        "naive_s": round(naive_s, 2),
        "entry_times_s": round(entry_s, 2),
        "with_entry_time": timed,
    }


def bench_segments(database_url: str, customers: int, naive_cap: int) -> dict[str, Any]:
    upgrade(MIGRATIONS, database_url, "scheduler")
    asyncio.run(_fill(database_url, customers))
    rebound = asyncio.run(_rebound(database_url))
    naive = asyncio.run(_python(database_url, min(customers, naive_cap)))
    rebound_rate = customers / max(rebound["preview_s"], 1e-6)
    naive_rate = naive["naive_customers"] / max(naive["naive_s"], 1e-6)
    return {
        "customers": customers,
        **rebound,
        **naive,
        "preview_customers_per_s": round(rebound_rate),
        "naive_customers_per_s": round(naive_rate),
        "naive_projected_s": round(customers / naive_rate, 1),
        "entry_times_per_s": round(naive["naive_customers"] / max(naive["entry_times_s"], 1e-6)),
        "ratio_vs_naive": round(rebound_rate / naive_rate, 1),
    }


def table_lines(r: dict[str, Any]) -> list[str]:
    return [
        f"(e) segments: a win-back segment over {r['customers']:,} customers (scheduler.customers)",
        f"  backfill preview (SQL, set-based)  {r['preview_s']:>8} s  "
        f"{r['preview_customers_per_s']:>10,} customers/s  ({r['would_enter']:,} would enter;"
        " target 1 M in < 60 s)",
        f"  backfill timer rows (SQL)          {r['backfill_s']:>8} s",
        f"  naive peer: Python loop, same condition code, {r['naive_customers']:,} customers: "
        f"{r['naive_s']} s, {r['naive_customers_per_s']:,} customers/s "
        f"(all {r['customers']:,}: ~{r['naive_projected_s']} s)"
        f"   (Rebound x{r['ratio_vs_naive']})",
        f"  entry-time computation (Python)  {r['entry_times_per_s']:>10,} customers/s",
        "",
    ]
