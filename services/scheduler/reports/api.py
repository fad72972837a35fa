"""Control plane: the reports as JSON (/reports/...) and the same figures as a page (/dashboard).

Both run on the control plane's own connection pool (see app.py), so a report over months never
takes a connection from the timer loop or the consumer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.scheduler.reports import charts
from services.scheduler.reports.repository import DateRange
from services.scheduler.reports.schemas import (
    CohortMatrix,
    JourneyReport,
    JourneysReport,
    SegmentSize,
    SegmentTrend,
    ShopForecast,
)
from services.scheduler.reports.service import ReportsService
from shared.clock import Clock

DEFAULT_RANGE_DAYS = 30
DEFAULT_WINDOW_DAYS = 7
DEFAULT_COHORT_MONTHS = 12
TEMPLATES = Path(__file__).parent / "templates"

# The default segments' daily sizes (segments package: scheduler.segment_sizes).
SegmentSource = Callable[[], Awaitable[list[SegmentTrend]]]
# Per shop its last fit and what it predicts (predictions package).
PredictionSource = Callable[[], Awaitable[list[ShopForecast]]]


@dataclass(frozen=True)
class DashboardSources:
    """Sections other packages feed (app.py wires dashboard_feeds.py): segments (sizes of the
    default segments over time) and predictions. None: the section says what will appear."""

    segment_sizes: SegmentSource | None = None
    predictions: PredictionSource | None = None


From = Annotated[
    date | None, Query(alias="from", description=f"first day (default: {DEFAULT_RANGE_DAYS} ago)")
]
To = Annotated[date | None, Query(alias="to", description="last day, included (default: today)")]
Window = Annotated[
    float,
    Query(
        gt=0,
        le=365,
        description="days after each entry in which an order counts as a conversion, "
        "for treatment and holdout alike",
    ),
]
Months = Annotated[int, Query(ge=1, le=36, description="later months shown per cohort")]


def reports_router(
    service: ReportsService, clock: Clock, sources: DashboardSources | None = None
) -> APIRouter:
    router = APIRouter(tags=["reports"])
    pages = _environment()
    feeds = sources or DashboardSources()

    def span(start: date | None, end: date | None) -> DateRange:
        return date_range(start, end, clock.now())

    @router.get("/reports/journeys", summary="Every journey's funnel, holdout lift and A/B tests")
    async def journeys(
        start: From = None, end: To = None, window_days: Window = DEFAULT_WINDOW_DAYS
    ) -> JourneysReport:
        return await service.journeys(span(start, end), timedelta(days=window_days))

    @router.get("/reports/journeys/{journey_id}", summary="One journey's report")
    async def journey(
        journey_id: str,
        start: From = None,
        end: To = None,
        window_days: Window = DEFAULT_WINDOW_DAYS,
    ) -> JourneyReport:
        report = await service.journeys(span(start, end), timedelta(days=window_days))
        for found in report.journeys:
            if found.journey_id == journey_id:
                return found
        raise HTTPException(404, f"no journey {journey_id!r}")

    @router.get("/reports/cohorts", summary="Retention: share of each first-order month back")
    async def cohorts(
        months: Months = DEFAULT_COHORT_MONTHS, shop: str | None = None
    ) -> CohortMatrix:
        return await service.cohorts(months, clock.now(), shop)

    @router.get("/reports/stages", summary="Customers by lifecycle stage")
    async def stages() -> list[SegmentSize]:
        return await service.stages()

    @router.get("/dashboard", response_class=HTMLResponse, summary="The reports as a web page")
    async def dashboard(
        start: From = None, end: To = None, window_days: Window = DEFAULT_WINDOW_DAYS
    ) -> HTMLResponse:
        report = await service.journeys(span(start, end), timedelta(days=window_days))
        page = pages.get_template("dashboard.html").render(
            report=report,
            cohorts=await service.cohorts(DEFAULT_COHORT_MONTHS, clock.now(), None),
            stages=await service.stages(),
            segments=await feeds.segment_sizes() if feeds.segment_sizes else None,
            predictions=await feeds.predictions() if feeds.predictions else None,
            charts=charts,
            last_day=(report.end - timedelta(days=1)).date(),
        )
        return HTMLResponse(page)

    return router


def date_range(start: date | None, end: date | None, now: datetime) -> DateRange:
    """Whole UTC days, `end` included; 422 when the range runs backwards."""
    last = end or now.date()
    first = start or last - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if first > last:
        raise HTTPException(422, f"from ({first}) is after to ({last})")
    return DateRange(
        datetime.combine(first, time.min, UTC),
        datetime.combine(last + timedelta(days=1), time.min, UTC),
    )


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["pct"] = lambda v, digits=1: f"{v * 100:.{digits}f}%"
    env.filters["points"] = lambda v: f"{v * 100:+.1f}"
    env.filters["money"] = lambda v: f"{float(v):,.2f}"
    return env
