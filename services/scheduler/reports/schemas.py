"""The reports as the control plane answers them (JSON, and the same figures on /dashboard)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class Schema(BaseModel):
    model_config = ConfigDict(frozen=True)


class IntervalOut(Schema):
    estimate: float
    low: float
    high: float


class Funnel(Schema):
    """What happened to the messages of one step (or variant, or the whole journey).

    Opens, clicks, unsubscribes and conversions count messages (the first of each per message);
    machine opens are fetches by a privacy proxy or a scanner, never taken for a reader.
    """

    requested: int = 0
    sent: int = 0
    suppressed: dict[str, int] = Field(default_factory=dict, description="reason -> messages")
    failed: int = 0
    uncertain: int = 0
    human_opens: int = 0
    machine_opens: int = 0
    clicks: int = 0
    unsubscribes: int = 0
    bounces: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal(0)


class StepReport(Schema):
    step_id: str
    funnel: Funnel


class GroupOutcome(Schema):
    customers: int = Field(description="enrolments (a customer who entered twice counts twice)")
    converted: int = Field(description="those who ordered within the window from their entry")
    conversion_rate: float
    revenue: Decimal
    revenue_per_customer: float


class HoldoutLift(Schema):
    window_days: float
    treatment: GroupOutcome
    holdout: GroupOutcome
    absolute_lift: IntervalOut | None = Field(
        description="treatment minus holdout conversion rate, with its 95% interval"
    )
    absolute_lift_method: str
    relative_lift: IntervalOut | None = Field(
        description="treatment rate / holdout rate - 1; null while a group has no conversion"
    )
    relative_lift_method: str
    revenue_per_customer_lift: IntervalOut | None
    revenue_method: str
    incremental_revenue: IntervalOut | None = Field(
        description="the revenue-per-customer lift times the treated customers"
    )
    minimum_detectable_lift: float | None = Field(
        description="the smallest absolute lift in conversion this sample would find "
        "(two-sided 5% test, 80% power)"
    )
    verdict: str


class CartRecovery(Schema):
    """For journeys triggered by a cart: carts left, and those ordered within the window."""

    carts_abandoned: int
    recovered: int
    recovery_rate: float
    recovered_revenue: Decimal
    recovered_after_a_message: int = Field(
        description="orders attributed to one of the enrolment's own messages (last touch)"
    )


class VariantReport(Schema):
    variant: str
    funnel: Funnel


class DeclaredWinnerOut(Schema):
    """The winner the scheduler recorded for a `send_winner` step of the journey's latest
    version: from then on every enrolment that reaches the step gets it. It never changes."""

    variant: str
    journey_version: int
    winner_by: str
    declared_at: datetime
    p_values: dict[str, float] = Field(
        description="the winner against each other variant, at declaration"
    )
    figures: dict[str, dict[str, float]] = Field(
        description="per variant at declaration: sent, successes (clicks or conversions), "
        "mean (successes or revenue per message sent)"
    )
    note: str


class ABTest(Schema):
    step_id: str
    winner_by: str | None
    variants: list[VariantReport]
    leader: str | None
    winner: str | None = Field(description="the test's verdict over the report's date range")
    p_values: dict[str, float] = Field(description="the leader against each other variant")
    method: str
    verdict: str
    declared: DeclaredWinnerOut | None = Field(
        default=None, description="the winner recorded for `send_winner`, sent to later entrants"
    )


class JourneyReport(Schema):
    journey_id: str
    name: str
    entered: int
    holdout: int
    funnel: Funnel
    steps: list[StepReport]
    holdout_lift: HoldoutLift | None
    cart_recovery: CartRecovery | None
    ab_tests: list[ABTest]


class JourneysReport(Schema):
    start: datetime
    end: datetime
    window_days: float
    journeys: list[JourneyReport]


class CohortRow(Schema):
    cohort: date = Field(description="the month of the customers' first order")
    customers: int
    returned: list[float] = Field(
        description="share of the cohort that ordered in month 1, 2, ... after the first"
    )


class CohortMatrix(Schema):
    months: int
    rows: list[CohortRow]


class SegmentSize(Schema):
    name: str
    customers: int


class SizeOnDay(Schema):
    day: date
    size: int


class SegmentTrend(Schema):
    """A default segment's daily sizes (all shops together), oldest first."""

    segment: str
    days: list[SizeOnDay]

    @property
    def latest(self) -> int:
        return self.days[-1].size if self.days else 0


class ShopForecast(Schema):
    """A shop's last fit and what it predicts, as the dashboard shows it."""

    shop_id: str
    status: str
    note: str
    fitted_at: datetime
    customers: int = Field(description="Customers with predictions")
    expected_orders_30d: float
    expected_orders_90d: float
    expected_revenue_30d: float | None
    expected_revenue_90d: float | None
    p_alive: list[int] = Field(description="Customers per P(alive) bucket of 0.1, lowest first")
