"""The dashboard's sections that other packages own, read on the control plane's pool: the
default segments' daily sizes (segments) and each shop's predictions (predictions)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.predictions.repository import PredictionRepository
from services.scheduler.reports.api import DashboardSources
from services.scheduler.reports.schemas import SegmentTrend, ShopForecast, SizeOnDay
from services.scheduler.segments.repository import SegmentRepository
from shared.clock import Clock

TREND_DAYS = 90


def dashboard_sources(engine: AsyncEngine, clock: Clock) -> DashboardSources:
    async def segment_sizes() -> list[SegmentTrend]:
        since = clock.now().date() - timedelta(days=TREND_DAYS - 1)
        async with engine.connect() as conn:
            rows = await SegmentRepository(conn).size_history(None, since)
        return trends(rows)

    async def predictions() -> list[ShopForecast]:
        async with engine.connect() as conn:
            repo = PredictionRepository(conn)
            return [await _forecast(repo, fit) for fit in await repo.fits()]

    return DashboardSources(segment_sizes=segment_sizes, predictions=predictions)


def trends(rows: list[tuple[date, str, str, int]]) -> list[SegmentTrend]:
    """Per segment its size per day, the shops' sizes added up."""
    by_segment: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for day, _shop, segment, size in rows:
        by_segment[segment][day] += size
    return [
        SegmentTrend(segment=name, days=[SizeOnDay(day=d, size=n) for d, n in sorted(days.items())])
        for name, days in sorted(by_segment.items())
    ]


async def _forecast(repo: PredictionRepository, fit: dict[str, Any]) -> ShopForecast:
    shop_id = str(fit["shop_id"])
    totals, buckets = await repo.summary(shop_id)
    return ShopForecast(
        shop_id=shop_id,
        status=str(fit["status"]),
        note=str(fit["note"]),
        fitted_at=fit["fitted_at"],
        customers=totals["customers"],
        expected_orders_30d=round(float(totals["orders_30d"]), 1),
        expected_orders_90d=round(float(totals["orders_90d"]), 1),
        expected_revenue_30d=_money(totals["revenue_30d"]),
        expected_revenue_90d=_money(totals["revenue_90d"]),
        p_alive=buckets,
    )


def _money(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)
