"""The reports' SQL: the facts they need written in sets (orders placed, the dispatcher's
results), and the aggregate reads, each one statement over a date range of enrolments.

Callers own the transaction. The reads run on the control plane's own connection pool inside
a read-only transaction with a statement timeout, so a report over months never holds a
connection the timer loop or the consumer is waiting for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import Activity, MessageResult

REPORT_STATEMENT_TIMEOUT_MS = 60_000

_RECORD_ORDERS = text("""
    INSERT INTO scheduler.customer_orders (shop_id, order_id, customer_key, total, placed_at)
    SELECT * FROM unnest(CAST(:shops AS text[]), CAST(:orders AS text[]),
        CAST(:customers AS text[]), CAST(:totals AS numeric[]), CAST(:placed AS timestamptz[]))
    ON CONFLICT (shop_id, order_id) DO NOTHING
""")

# The latest word wins: a request first reported failed and later sent ends as sent.
_RECORD_RESULTS = text("""
    INSERT INTO scheduler.message_results AS old (request_key, status, reason, occurred_at)
    SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:statuses AS text[]),
        CAST(:reasons AS text[]), CAST(:occurred AS timestamptz[]))
    ON CONFLICT (request_key) DO UPDATE SET
        status = excluded.status, reason = excluded.reason, occurred_at = excluded.occurred_at
    WHERE excluded.occurred_at >= old.occurred_at
""")

_ENROLMENTS = text("""
    SELECT journey_id, count(*) AS entered, count(*) FILTER (WHERE holdout) AS holdout
    FROM scheduler.enrollments
    WHERE entered_at >= :start AND entered_at < :end
    GROUP BY journey_id
""")

# What happened to a set of message requests (r), one row per group.
_FIGURES = """
        count(*) AS requested,
        count(*) FILTER (WHERE x.status = 'sent') AS sent,
        count(*) FILTER (WHERE x.status = 'failed') AS failed,
        count(*) FILTER (WHERE x.status = 'uncertain') AS uncertain,
        count(m.human_opened_at) AS human_opens,
        count(m.machine_opened_at) AS machine_opens,
        count(m.clicked_at) AS clicks,
        count(m.unsubscribed_at) AS unsubscribes,
        count(m.bounced_at) AS bounces,
        count(m.converted_at) AS conversions,
        coalesce(sum(m.revenue), 0) AS revenue,
        coalesce(sum(m.revenue * m.revenue), 0) AS revenue_squares
    FROM scheduler.message_requests r
    JOIN scheduler.enrollments e ON e.id = r.enrollment_id
    LEFT JOIN scheduler.message_results x ON x.request_key = r.request_key
    LEFT JOIN scheduler.message_engagement m ON m.request_key = r.request_key
"""

# One row per journey, step and variant of the enrolments that entered in the range.
_STEPS = text(f"""
    SELECT e.journey_id, r.step_id, r.variant, {_FIGURES}
    WHERE e.entered_at >= :start AND e.entered_at < :end
    GROUP BY e.journey_id, r.step_id, r.variant
""")

# One row per step and variant of these journey versions, whenever their enrolments entered:
# what an A/B winner is declared on.
_VARIANTS_OF_VERSIONS = text(f"""
    SELECT e.journey_id, e.journey_version, r.step_id, r.variant, {_FIGURES}
    JOIN unnest(CAST(:ids AS text[]), CAST(:versions AS int[])) AS v(journey_id, version)
        ON v.journey_id = e.journey_id AND v.version = e.journey_version
    WHERE r.variant IS NOT NULL
    GROUP BY e.journey_id, e.journey_version, r.step_id, r.variant
""")

_SUPPRESSED = text("""
    SELECT e.journey_id, r.step_id, coalesce(x.reason, 'unknown') AS reason, count(*) AS n
    FROM scheduler.message_requests r
    JOIN scheduler.enrollments e ON e.id = r.enrollment_id
    JOIN scheduler.message_results x ON x.request_key = r.request_key
    WHERE e.entered_at >= :start AND e.entered_at < :end AND x.status = 'suppressed'
    GROUP BY 1, 2, 3
""")

# Per journey and group (treatment or holdout): enrolments, those whose customer ordered within
# the window from entry, the revenue of those orders (and its squares, for the variance), and
# those whose order was attributed to one of the enrolment's own messages.
_OUTCOMES = text("""
    SELECT e.journey_id, e.holdout, count(*) AS n,
        count(*) FILTER (WHERE o.orders > 0) AS converted,
        coalesce(sum(o.revenue), 0) AS revenue,
        coalesce(sum(o.revenue * o.revenue), 0) AS revenue_squares,
        count(*) FILTER (WHERE a.attributed) AS attributed
    FROM scheduler.enrollments e
    CROSS JOIN LATERAL (
        SELECT count(*) AS orders, coalesce(sum(c.total), 0) AS revenue
        FROM scheduler.customer_orders c
        WHERE c.customer_key = e.customer_key
          AND c.placed_at >= e.entered_at AND c.placed_at < e.entered_at + :window
    ) o
    CROSS JOIN LATERAL (
        SELECT EXISTS (
            SELECT 1 FROM scheduler.message_requests r
            JOIN scheduler.message_engagement m ON m.request_key = r.request_key
            WHERE r.enrollment_id = e.id AND m.converted_at IS NOT NULL
        ) AS attributed
    ) a
    WHERE e.entered_at >= :start AND e.entered_at < :end
    GROUP BY e.journey_id, e.holdout
""")

# Customers by the month of their first order (the profile knows orders from before the
# scheduler saw any, e.g. an imported history), and in which later months they ordered.
_COHORTS = text("""
    WITH firsts AS (
        SELECT customer_key, date_trunc('month', min(at), 'UTC') AS cohort
        FROM (
            SELECT customer_key, CAST(profile->>'first_order_at' AS timestamptz) AS at
            FROM scheduler.customers
            WHERE profile->>'first_order_at' IS NOT NULL
              AND (CAST(:shop AS text) IS NULL OR shop_id = :shop)
            UNION ALL
            SELECT customer_key, placed_at FROM scheduler.customer_orders
            WHERE CAST(:shop AS text) IS NULL OR shop_id = :shop
        ) known
        GROUP BY customer_key
    ),
    months AS (
        SELECT DISTINCT customer_key, date_trunc('month', placed_at, 'UTC') AS month
        FROM scheduler.customer_orders
        WHERE CAST(:shop AS text) IS NULL OR shop_id = :shop
    )
    SELECT f.cohort, NULL::int AS month_offset, count(*) AS customers
    FROM firsts f WHERE f.cohort >= :since GROUP BY f.cohort
    UNION ALL
    SELECT f.cohort,
        CAST((extract(year FROM age(m.month, f.cohort)) * 12
              + extract(month FROM age(m.month, f.cohort))) AS int),
        count(*)
    FROM firsts f JOIN months m ON m.customer_key = f.customer_key AND m.month > f.cohort
    WHERE f.cohort >= :since
    GROUP BY 1, 2
""")

_STAGES = text("""
    SELECT coalesce(profile->>'stage', 'unknown') AS stage, count(*) AS customers
    FROM scheduler.customers
    GROUP BY 1
    ORDER BY 2 DESC
""")


@dataclass(frozen=True)
class DateRange:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class StepRow:
    journey_id: str
    step_id: str
    variant: str | None
    requested: int
    sent: int
    failed: int
    uncertain: int
    human_opens: int
    machine_opens: int
    clicks: int
    unsubscribes: int
    bounces: int
    conversions: int
    revenue: Decimal
    revenue_squares: Decimal


@dataclass(frozen=True)
class OutcomeRow:
    journey_id: str
    holdout: bool
    n: int
    converted: int
    revenue: Decimal
    revenue_squares: Decimal
    attributed: int


@dataclass(frozen=True)
class CohortCell:
    cohort: date
    month_offset: int | None  # None: the cohort's size
    customers: int


class ReportFactsRepository:
    """Writes the facts the reports read, in one statement per batch."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def record_orders(self, activities: Sequence[Activity]) -> None:
        placed = [a for a in activities if a.order_id is not None and a.order_total is not None]
        if not placed:
            return
        await self.conn.execute(
            _RECORD_ORDERS,
            {
                "shops": [a.profile.shop_id for a in placed],
                "orders": [a.order_id for a in placed],
                "customers": [a.profile.key for a in placed],
                "totals": [a.order_total for a in placed],
                "placed": [a.occurred_at for a in placed],
            },
        )

    async def record_results(self, results: Sequence[MessageResult]) -> None:
        latest: dict[str, MessageResult] = {}
        for result in results:  # one row per key per statement (ON CONFLICT needs it)
            known = latest.get(result.request_key)
            if known is None or result.occurred_at >= known.occurred_at:
                latest[result.request_key] = result
        if not latest:
            return
        rows = list(latest.values())
        await self.conn.execute(
            _RECORD_RESULTS,
            {
                "keys": [r.request_key for r in rows],
                "statuses": [r.status for r in rows],
                "reasons": [r.reason for r in rows],
                "occurred": [r.occurred_at for r in rows],
            },
        )


class ReportsRepository:
    """The aggregate reads; call inside `read_only` on the control plane's own pool."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def read_only(self, timeout_ms: int = REPORT_STATEMENT_TIMEOUT_MS) -> None:
        await self.conn.execute(text("SET TRANSACTION READ ONLY"))
        await self.conn.execute(text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))

    async def enrolments(self, span: DateRange) -> dict[str, tuple[int, int]]:
        rows = await self.conn.execute(_ENROLMENTS, _span(span))
        return {r.journey_id: (int(r.entered), int(r.holdout)) for r in rows}

    async def steps(self, span: DateRange) -> list[StepRow]:
        rows = await self.conn.execute(_STEPS, _span(span))
        return [StepRow(**_plain(r._mapping)) for r in rows]

    async def variants_of(
        self, versions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], list[StepRow]]:
        """Per journey version, its A/B variants' rows over all its enrolments."""
        if not versions:
            return {}
        rows = await self.conn.execute(
            _VARIANTS_OF_VERSIONS,
            {"ids": [v[0] for v in versions], "versions": [v[1] for v in versions]},
        )
        out: dict[tuple[str, int], list[StepRow]] = {}
        for r in rows:
            figures = _plain(r._mapping)
            version = figures.pop("journey_version")
            out.setdefault((r.journey_id, version), []).append(StepRow(**figures))
        return out

    async def suppressed(self, span: DateRange) -> dict[tuple[str, str], dict[str, int]]:
        out: dict[tuple[str, str], dict[str, int]] = {}
        for r in await self.conn.execute(_SUPPRESSED, _span(span)):
            out.setdefault((r.journey_id, r.step_id), {})[r.reason] = int(r.n)
        return out

    async def outcomes(self, span: DateRange, window: timedelta) -> list[OutcomeRow]:
        rows = await self.conn.execute(_OUTCOMES, {**_span(span), "window": window})
        return [OutcomeRow(**_plain(r._mapping)) for r in rows]

    async def cohorts(self, since: datetime, shop_id: str | None) -> list[CohortCell]:
        rows = await self.conn.execute(_COHORTS, {"since": since, "shop": shop_id})
        return [
            CohortCell(r.cohort.date(), r.month_offset, int(r.customers))
            for r in rows
            if r.month_offset is None or r.month_offset > 0
        ]

    async def stages(self) -> list[tuple[str, int]]:
        return [(r.stage, int(r.customers)) for r in await self.conn.execute(_STAGES)]


def _span(span: DateRange) -> dict[str, Any]:
    return {"start": span.start, "end": span.end}


def _plain(mapping: Any) -> dict[str, Any]:
    return {k: (int(v) if isinstance(v, int) else v) for k, v in mapping.items()}
