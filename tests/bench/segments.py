"""`make bench BENCH_ARGS="--only segments"`: a segment over N customers in scheduler.customers
(default 1 M): the backfill preview and the backfill's timer rows, set-based in SQL, beside
the naive peer: a Python loop that reads every customer and evaluates the same condition code
(conditions.py over facts.build_facts), run on a capped share and reported per customer; and
the entry-time computation (what an activity or the safety-net sweep does per customer).
Then (f): the timer pass firing D due segment timers (default 20,000) with an empty
segment_timers table and with P timers not due beside them (default 1 M; --segment-due,
--segment-pending), beside the same naive peer's pass over all those customers.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import sqlalchemy as sa

from services.scheduler.__main__ import MIGRATIONS
from services.scheduler.domain.journey import parse_journey
from services.scheduler.domain.segment_time import next_entry
from services.scheduler.journeys.repository import JourneyRepository
from services.scheduler.runner import JourneyCatalog, Runner
from services.scheduler.segments.repository import customer_of
from services.scheduler.segments.service import (
    SegmentQueries,
    SegmentTimers,
    segment_facts,
    segment_of,
)
from shared.db import make_engine, upgrade
from shared.topics import Topics

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
    FROM generate_series(1, $2::bigint) g
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


# --- pending segment timers: does a full table slow the firing? ---------------------------------

PENDING_JOURNEY = """
id: bench-pending
version: 1
name: Bench pending segment timers
consent: none
trigger:
  segment: {field: profile.days_since_last_order, op: gte, value: 90}
limits: {reentry: after_exit}
steps:
  - {id: reason, send: {template: winback_reason, subject: "We miss you"}}
"""
PARTITIONS = 8
# Round `$3`'s customers 1..$1 are in the segment now (their timers due in the last hour);
# customers $1+1..$2 enter later (timers due on their last order + 90 days, up to 80 days on).
FILL_TIMED = """
    WITH c AS (
        SELECT g, 'bp' || $3::int || ':c:' || g AS key, g <= $1 AS due,
            CASE WHEN g <= $1 THEN $4::timestamptz - interval '91 days'
                 ELSE $4::timestamptz - (g % 80) * interval '1 day' - interval '1 hour' END AS last
        FROM generate_series(1, $2::bigint) g
    ), facts AS (
        INSERT INTO scheduler.customers (customer_key, shop_id, partition, profile, cart,
            updated_at)
        SELECT key, 'bench-p', g % 8,
            jsonb_build_object('key', key, 'shop_id', 'bench-p',
                'email', 'p' || g || '@example.com', 'orders_count', 1, 'last_order_at',
                to_char(last AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
            NULL, $4
        FROM c
    )
    INSERT INTO scheduler.segment_timers (journey_id, customer_key, partition, due_at)
    SELECT 'bench-pending', key, g % 8,
        CASE WHEN due THEN $4::timestamptz - (g % 3600) * interval '1 second'
             ELSE last + interval '90 days' END
    FROM c
"""
CLEAN_TIMED = """
    DELETE FROM scheduler.segment_timers WHERE journey_id = 'bench-pending';
    DELETE FROM scheduler.customers WHERE shop_id = 'bench-p';
    DELETE FROM scheduler.enrollments WHERE journey_id = 'bench-pending';
    DELETE FROM scheduler.message_requests WHERE request_key LIKE 'bench-pending%';
    DELETE FROM scheduler.outbox WHERE key LIKE 'bp%';
"""


async def _timed_round(url: str, round_: int, due: int, pending: int, batch: int) -> float:
    """Seconds the segment timer pass takes to fire `due` timers beside `pending` ones."""
    conn = await asyncpg.connect(_plain(url))
    try:
        await conn.execute(CLEAN_TIMED)
        await conn.execute(FILL_TIMED, due, due + pending, round_, NOW)
        await conn.execute("ANALYZE scheduler.segment_timers")
        await conn.execute("ANALYZE scheduler.customers")
    finally:
        await conn.close()
    engine = make_engine(url, pool_size=2)
    runner = Runner(JourneyCatalog(), Topics(prefix="bench."))
    timers = SegmentTimers(engine, runner)
    try:
        started, fired = time.perf_counter(), 0
        while True:
            n, _ = await timers.fire_due(list(range(PARTITIONS)), NOW, batch)
            if n == 0:
                break
            fired += n
        elapsed = time.perf_counter() - started
        async with engine.connect() as c:
            left = await c.scalar(
                sa.text("SELECT count(*) FROM scheduler.segment_timers WHERE due_at > :now"),
                {"now": NOW},
            )
            enrolled = await c.scalar(
                sa.text("SELECT count(*) FROM scheduler.enrollments WHERE journey_id = :j"),
                {"j": "bench-pending"},
            )
    finally:
        await engine.dispose()
    assert fired == due and enrolled == due and left == pending, (fired, enrolled, left)
    return elapsed


async def _naive_pass(url: str, customers: int, cap: int) -> float:
    """The naive peer of the segments bench: a pass reading every customer and evaluating the
    condition in Python to find who is in the segment now; seconds per customer."""
    segment = segment_of(parse_journey(PENDING_JOURNEY))
    conn = await asyncpg.connect(_plain(url))
    try:
        started = time.perf_counter()
        rows = await conn.fetch(
            "SELECT customer_key, partition, profile::text AS profile, cart::text AS cart "
            "FROM scheduler.customers WHERE shop_id = 'bench-p' LIMIT $1",
            min(customers, cap),
        )
        sum(1 for r in rows if segment.holds(segment_facts(customer_of(r), NOW), NOW))
        return (time.perf_counter() - started) / max(len(rows), 1)
    finally:
        await conn.close()


async def _store_pending_journey(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            journey = parse_journey(PENDING_JOURNEY)
            if await JourneyRepository().stored(conn, journey.id, journey.version) is None:
                await JourneyRepository().add(conn, journey, NOW)
    finally:
        await engine.dispose()


async def _pending(url: str, due: int, pending: int, naive_cap: int, batch: int) -> dict[str, Any]:
    await _store_pending_journey(url)
    await _timed_round(url, 9, min(due, 200), 0, batch)  # warm-up: connections, caches
    empty_s = await _timed_round(url, 0, due, 0, batch)
    naive_empty = await _naive_pass(url, due, naive_cap) * due
    full_s = await _timed_round(url, 1, due, pending, batch)
    naive_full = await _naive_pass(url, due + pending, naive_cap) * (due + pending)
    conn = await asyncpg.connect(_plain(url))
    try:
        await conn.execute(CLEAN_TIMED)
    finally:
        await conn.close()
    return {
        "due": due,
        "pending": pending,
        "batch": batch,
        "fire_empty_s": round(empty_s, 2),
        "fire_full_s": round(full_s, 2),
        "fire_empty_per_s": round(due / max(empty_s, 1e-6)),
        "fire_full_per_s": round(due / max(full_s, 1e-6)),
        "slowdown": round(full_s / max(empty_s, 1e-6), 2),
        "naive_empty_s": round(naive_empty, 2),
        "naive_full_s": round(naive_full, 2),
        "naive_full_per_s": round(due / max(naive_full, 1e-6)),
        "ratio_vs_naive": round(naive_full / max(full_s, 1e-6), 1),
    }


def bench_pending_timers(
    database_url: str, due: int, pending: int, naive_cap: int, batch: int = 1000
) -> dict[str, Any]:
    """`due` segment timers fired by the timer pass's segment step (claim, facts, enrolment,
    request rows) with an empty table and with `pending` timers not due beside them."""
    upgrade(MIGRATIONS, database_url, "scheduler")
    return asyncio.run(_pending(database_url, due, pending, naive_cap, batch))


def pending_lines(r: dict[str, Any]) -> list[str]:
    return [
        f"(f) pending segment timers: {r['due']:,} due timers fired (claim {r['batch']:,} per pass,"
        " enrol, request rows)",
        f"  with 0 pending                 {r['fire_empty_s']:>8} s  "
        f"{r['fire_empty_per_s']:>10,} entries/s",
        f"  with {r['pending']:,} pending (not due)  {r['fire_full_s']:>8} s  "
        f"{r['fire_full_per_s']:>10,} entries/s   (x{r['slowdown']} the time of the empty table)",
        f"  naive peer: a pass evaluating every customer in Python to find the entrants: "
        f"{r['naive_empty_s']} s with 0, {r['naive_full_s']} s with {r['pending']:,} pending "
        f"({r['naive_full_per_s']:,} entries/s)   (Rebound x{r['ratio_vs_naive']})",
        "",
    ]
