"""All SQL of the segments: segment timers (claimed like the enrolment timers), the safety-net
sweep's reads, and the set-based statements over scheduler.customers (count, members,
backfill, preview, daily sizes). Callers own the transaction; nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.adapters.repository import CustomerFacts
from services.scheduler.domain.conditions import Condition
from services.scheduler.predictions.repository import prediction_facts
from services.scheduler.segments.condition_sql import WITH_PREDICTIONS, Params, predicate, source
from shared.events import CartSnapshot, Profile

# name: claim_due_segment_timers
# Due segment timers of the given partitions, oldest first, locked and deleted: the
# transaction that acts on a timer is the one that deletes it.
CLAIM_DUE = """
    WITH due AS (
        SELECT journey_id, customer_key FROM scheduler.segment_timers
        WHERE partition = ANY($1::int[]) AND due_at <= $2
        ORDER BY due_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM scheduler.segment_timers t USING due
    WHERE t.journey_id = due.journey_id AND t.customer_key = due.customer_key
    RETURNING t.journey_id, t.customer_key, t.partition, t.due_at
"""
NEXT_DUE = """
    SELECT min(due_at) FROM scheduler.segment_timers
    WHERE partition = ANY($1::int[]) AND due_at <= $2
"""
# name: lock_segment_timers
# The pending timers of a batch's customers, locked before their enrolments are: a timer
# pass firing one of them and the batch never both enrol the customer.
LOCK_TIMERS = """
    SELECT journey_id, customer_key, due_at FROM scheduler.segment_timers
    WHERE customer_key = ANY($1::text[]) AND journey_id = ANY($2::text[])
    ORDER BY journey_id, customer_key
    FOR UPDATE
"""
# The latest entry of each (journey, customer) asked: a timer due at or before it belongs to a
# stay already entered (placed again by a sweep or batch that read the clock before the firing).
LATEST_ENTRIES = """
    SELECT journey_id, customer_key, max(entered_at) FROM scheduler.enrollments
    WHERE customer_key = ANY($1::text[]) AND journey_id = ANY($2::text[])
    GROUP BY journey_id, customer_key
"""
UPSERT_TIMERS = """
    INSERT INTO scheduler.segment_timers (journey_id, customer_key, partition, due_at, leaves_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[],
        $5::timestamptz[])
    ON CONFLICT (journey_id, customer_key) DO UPDATE SET
        partition = excluded.partition, due_at = excluded.due_at, leaves_at = excluded.leaves_at
"""
# The sweep restores timers; one already due (a backfill, a missed entry) is left to fire.
SWEEP_TIMERS = (
    UPSERT_TIMERS + " WHERE scheduler.segment_timers.due_at > $6 OR excluded.due_at <= $6"
)
DELETE_TIMERS = """
    DELETE FROM scheduler.segment_timers t
    USING unnest($1::text[], $2::text[]) AS d(j, k)
    WHERE t.journey_id = d.j AND t.customer_key = d.k AND ($3::timestamptz IS NULL OR t.due_at > $3)
"""
# A customer's facts as conditions see them: with the purchase predictions, if fitted.
_FACTS_COLUMNS = """c.customer_key, c.partition, c.profile::text AS profile,
    c.cart::text AS cart, pr.as_of, pr.p_alive, pr.orders_30d, pr.orders_90d, pr.next_order_at,
    pr.order_value"""
CUSTOMERS = f"""
    SELECT {_FACTS_COLUMNS} FROM {WITH_PREDICTIONS} WHERE c.customer_key = ANY($1::text[])
"""
# name: lock_segment_customers
# Every path that writes a segment timer from a customer's facts (an activity batch, the
# sweep, a refresh of the predictions) locks the customer rows first, in key order, and reads
# the facts under that lock; only then the timers. So a sweep never writes a timer computed
# from facts an activity batch has replaced meanwhile (it waits for the batch and reads the
# new facts), and the two never wait on each other's locks in opposite orders.
CUSTOMERS_FOR_UPDATE = CUSTOMERS + " ORDER BY c.customer_key FOR UPDATE OF c"
PARTITION_CHUNK = f"""
    SELECT {_FACTS_COLUMNS} FROM {WITH_PREDICTIONS}
    WHERE c.partition = $1 AND c.customer_key > $2
    ORDER BY c.customer_key
    LIMIT $3
    FOR UPDATE OF c
"""
SWEPT = """
    SELECT journey_id, version, partition, swept_at FROM scheduler.segment_sweeps
    WHERE partition = ANY($1::int[])
"""
MARK_SWEPT = """
    INSERT INTO scheduler.segment_sweeps (journey_id, version, partition, swept_at)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (journey_id, version, partition) DO UPDATE SET swept_at = excluded.swept_at
"""


@dataclass(frozen=True)
class DueSegmentTimer:
    journey_id: str
    customer_key: str
    partition: int
    due_at: datetime


@dataclass(frozen=True)
class SegmentTimerRow:
    journey_id: str
    customer_key: str
    partition: int
    due_at: datetime
    leaves_at: datetime | None


@dataclass(frozen=True)
class Candidates:
    """Whom a segment (and a backfill's bound) admits, as one predicate over customers."""

    where: str
    params: Params


class SegmentRepository:
    """Bound to the caller's connection and transaction (the asyncpg connection under it)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._raw: Any = None

    async def _driver(self) -> Any:
        if self._raw is None:
            raw: Any = (await self._conn.get_raw_connection()).driver_connection
            if not raw.is_in_transaction():
                await self._conn.exec_driver_sql("SELECT 1")  # begins the transaction
            self._raw = raw
        return self._raw

    # --- timers ------------------------------------------------------------------------------

    async def claim_due(
        self, partitions: Sequence[int], now: datetime, limit: int
    ) -> list[DueSegmentTimer]:
        rows = await (await self._driver()).fetch(CLAIM_DUE, list(partitions), now, limit)
        return [DueSegmentTimer(r[0], r[1], r[2], r[3]) for r in rows]

    async def next_due_at(self, partitions: Sequence[int], until: datetime) -> datetime | None:
        found: datetime | None = await (await self._driver()).fetchval(
            NEXT_DUE, list(partitions), until
        )
        return found

    async def lock_timers(
        self, customer_keys: Sequence[str], journey_ids: Sequence[str]
    ) -> dict[tuple[str, str], datetime]:
        rows = await (await self._driver()).fetch(
            LOCK_TIMERS, list(customer_keys), list(journey_ids)
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def latest_entries(
        self, customer_keys: Sequence[str], journey_ids: Sequence[str]
    ) -> dict[tuple[str, str], datetime]:
        rows = await (await self._driver()).fetch(
            LATEST_ENTRIES, list(customer_keys), list(journey_ids)
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def set_timers(
        self,
        rows: Sequence[SegmentTimerRow],
        gone: Sequence[tuple[str, str]],
        sweep_at: datetime | None = None,
    ) -> None:
        """Timers to (re)place and (journey, customer) pairs whose timer goes; a sweep
        (`sweep_at`) leaves timers already due alone."""
        driver = await self._driver()
        if gone:
            await driver.execute(
                DELETE_TIMERS, [g[0] for g in gone], [g[1] for g in gone], sweep_at
            )
        if not rows:
            return
        columns = [
            [r.journey_id for r in rows],
            [r.customer_key for r in rows],
            [r.partition for r in rows],
            [r.due_at for r in rows],
            [r.leaves_at for r in rows],
        ]
        if sweep_at is None:
            await driver.execute(UPSERT_TIMERS, *columns)
        else:
            await driver.execute(SWEEP_TIMERS, *columns, sweep_at)

    async def customers(self, keys: Sequence[str], lock: bool = False) -> dict[str, CustomerFacts]:
        """The customers' facts; `lock`: their rows locked in key order (see
        CUSTOMERS_FOR_UPDATE), before any segment timer of theirs is locked or written."""
        rows = await (await self._driver()).fetch(
            CUSTOMERS_FOR_UPDATE if lock else CUSTOMERS, list(sorted(keys))
        )
        return {r["customer_key"]: customer_of(r) for r in rows}

    async def partition_chunk(self, partition: int, after: str, limit: int) -> list[CustomerFacts]:
        rows = await (await self._driver()).fetch(PARTITION_CHUNK, partition, after, limit)
        return [customer_of(r) for r in rows]

    async def swept(self, partitions: Sequence[int]) -> dict[tuple[str, int, int], datetime]:
        rows = await (await self._driver()).fetch(SWEPT, list(partitions))
        return {(r[0], r[1], r[2]): r[3] for r in rows}

    async def mark_swept(self, journey_id: str, version: int, partition: int, at: datetime) -> None:
        await (await self._driver()).execute(MARK_SWEPT, journey_id, version, partition, at)

    # --- sets over scheduler.customers ---------------------------------------------------------

    def candidates(
        self, segment: Condition, now: datetime, shop_id: str | None = None
    ) -> Candidates:
        params = Params([now])
        # `now` typed even when no leaf reads the clock (PostgreSQL must know $1's type).
        where = f"$1::timestamptz IS NOT NULL AND {predicate(segment, params)}"
        if shop_id is not None:
            where = f"c.shop_id = {params.add(shop_id, 'text')} AND {where}"
        return Candidates(where, params)

    async def count(self, candidates: Candidates) -> int:
        sql = f"SELECT count(*) FROM {source(candidates.params)} WHERE {candidates.where}"
        return int(await (await self._driver()).fetchval(sql, *candidates.params.values))

    async def members(self, candidates: Candidates, after: str, limit: int) -> list[CustomerFacts]:
        params = Params(list(candidates.params.values))
        sql = (
            f"SELECT {_FACTS_COLUMNS} FROM {WITH_PREDICTIONS} WHERE {candidates.where} "
            f"AND c.customer_key > {params.add(after, 'text')} "
            f"ORDER BY c.customer_key LIMIT {params.add(limit, 'int')}"
        )
        rows = await (await self._driver()).fetch(sql, *params.values)
        return [customer_of(r) for r in rows]

    def _entrants(
        self, candidates: Candidates, journey_id: str, never_again: bool, limit: int | None
    ) -> tuple[str, list[Any]]:
        """Who a backfill enrols: in the segment and its bound, not enrolled now (nor ever,
        for `reentry: never`), most recent last order first, at most `limit`."""
        params = Params(list(candidates.params.values))
        journey = params.add(journey_id, "text")
        status = "" if never_again else "AND e.status = 'active'"
        sql = (
            f"SELECT c.customer_key, c.partition FROM {source(candidates.params)} "
            f"WHERE {candidates.where} AND NOT EXISTS (SELECT 1 FROM scheduler.enrollments e "
            f"WHERE e.journey_id = {journey} AND e.customer_key = c.customer_key {status}) "
            "ORDER BY (c.profile->>'last_order_at')::timestamptz DESC NULLS LAST, c.customer_key"
        )
        if limit is not None:
            sql += f" LIMIT {params.add(limit, 'bigint')}"
        return sql, params.values

    async def count_entrants(
        self, candidates: Candidates, journey_id: str, never_again: bool, limit: int | None
    ) -> int:
        sql, values = self._entrants(candidates, journey_id, never_again, limit)
        return int(
            await (await self._driver()).fetchval(f"SELECT count(*) FROM ({sql}) x", *values)
        )

    async def sample_entrants(
        self, candidates: Candidates, journey_id: str, never_again: bool, limit: int | None, n: int
    ) -> list[str]:
        sql, values = self._entrants(candidates, journey_id, never_again, limit)
        rows = await (await self._driver()).fetch(
            f"SELECT customer_key FROM ({sql}) x LIMIT {int(n)}", *values
        )
        return [r[0] for r in rows]

    async def schedule_backfill(
        self,
        candidates: Candidates,
        journey_id: str,
        version: int,
        never_again: bool,
        limit: int | None,
        now: datetime,
    ) -> int | None:
        """Entry timers due now for everyone the backfill admits, once per journey version;
        the partitions' owners fire them (and enrol) like any other. None: done before."""
        driver = await self._driver()
        first = await driver.fetchval(
            "INSERT INTO scheduler.segment_backfills (journey_id, version, requested_at, "
            "customers) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING RETURNING 1",
            journey_id,
            version,
            now,
        )
        if first is None:
            return None
        sql, values = self._entrants(candidates, journey_id, never_again, limit)
        params = Params(values)
        j, at = params.add(journey_id, "text"), params.add(now, "timestamptz")
        scheduled = await driver.fetchval(
            f"WITH picked AS ({sql}), placed AS ("
            "INSERT INTO scheduler.segment_timers (journey_id, customer_key, partition, due_at) "
            f"SELECT {j}, customer_key, partition, {at} FROM picked "
            "ON CONFLICT (journey_id, customer_key) DO UPDATE SET "
            "due_at = LEAST(scheduler.segment_timers.due_at, excluded.due_at) RETURNING 1) "
            "SELECT count(*) FROM placed",
            *params.values,
        )
        await driver.execute(
            "UPDATE scheduler.segment_backfills SET customers = $3 "
            "WHERE journey_id = $1 AND version = $2",
            journey_id,
            version,
            int(scheduled),
        )
        return int(scheduled)

    async def sizes_by_shop(
        self, segments: dict[str, Condition], now: datetime
    ) -> list[tuple[str, str, int]]:
        """(shop, segment, size) for every shop, all segments in one pass over customers."""
        params = Params([now])
        names = sorted(segments)
        counts = ", ".join(
            f"count(*) FILTER (WHERE {predicate(segments[n], params)})" for n in names
        )
        rows = await (await self._driver()).fetch(
            f"SELECT c.shop_id, {counts} FROM {source(params)} "
            "WHERE $1::timestamptz IS NOT NULL GROUP BY c.shop_id",
            *params.values,
        )
        return [(r[0], name, int(r[i + 1])) for r in rows for i, name in enumerate(names)]

    async def save_sizes(
        self, day: date, sizes: Sequence[tuple[str, str, int]], now: datetime
    ) -> None:
        if not sizes:
            return
        await (await self._driver()).execute(
            "INSERT INTO scheduler.segment_sizes (day, shop_id, segment, size, counted_at) "
            "SELECT $1, * , $5 FROM unnest($2::text[], $3::text[], $4::bigint[]) "
            "ON CONFLICT (day, shop_id, segment) DO UPDATE SET size = excluded.size, "
            "counted_at = excluded.counted_at",
            day,
            [s[0] for s in sizes],
            [s[1] for s in sizes],
            [s[2] for s in sizes],
            now,
        )

    async def size_history(
        self, shop_id: str | None, since: date
    ) -> list[tuple[date, str, str, int]]:
        rows = await (await self._driver()).fetch(
            "SELECT day, shop_id, segment, size FROM scheduler.segment_sizes "
            "WHERE day >= $1 AND ($2::text IS NULL OR shop_id = $2) ORDER BY day, shop_id, segment",
            since,
            shop_id,
        )
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]

    async def enrolled(self, journey_id: str) -> int:
        """Enrolments a journey made so far, as `limits.max_enrolments` counts them."""
        used = await (await self._driver()).fetchval(
            "SELECT greatest((SELECT count(*) FROM scheduler.enrollments WHERE journey_id = $1),"
            " coalesce((SELECT enrolled FROM scheduler.journey_enrolment_counts"
            " WHERE journey_id = $1), 0))",
            journey_id,
        )
        return int(used)

    async def test_sends(self, journey_id: str, limit: int) -> list[dict[str, Any]]:
        """What a test-mode journey asked for: whom it would have reached, which step, when."""
        rows = await (await self._driver()).fetch(
            "SELECT r.request_key, r.step_id, r.variant, r.requested_at, e.customer_key, "
            "e.journey_version, c.profile->>'email' AS email FROM scheduler.message_requests r "
            "JOIN scheduler.enrollments e ON e.id = r.enrollment_id "
            "LEFT JOIN scheduler.customers c ON c.customer_key = e.customer_key "
            "WHERE e.journey_id = $1 ORDER BY r.requested_at DESC, r.request_key LIMIT $2",
            journey_id,
            limit,
        )
        return [dict(r) for r in rows]


def customer_of(row: Any) -> CustomerFacts:
    cart = None if row["cart"] is None else CartSnapshot.model_validate_json(row["cart"])
    profile = Profile.model_validate_json(row["profile"])
    # A row read without the predictions' columns (or without a fit) has none.
    predictions = None if row.get("as_of") is None else prediction_facts(row)
    return CustomerFacts(row["customer_key"], row["partition"], profile, cart, predictions)
