"""The reports: what each journey earns, built from the repository's aggregates and the
statistics. Enrolments are counted by when they entered (the date range), and every figure of
a report is about those same enrolments, so the funnel, the lift and the A/B test agree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.adapters.winner_repository import DeclaredWinner, WinnerRepository
from services.scheduler.domain.journey import EventTrigger, Journey
from services.scheduler.journeys.repository import JourneyRepository
from services.scheduler.reports import statistics as st
from services.scheduler.reports.repository import (
    CohortCell,
    DateRange,
    OutcomeRow,
    ReportsRepository,
    StepRow,
)
from services.scheduler.reports.schemas import (
    ABTest,
    CartRecovery,
    CohortMatrix,
    CohortRow,
    DeclaredWinnerOut,
    Funnel,
    GroupOutcome,
    HoldoutLift,
    IntervalOut,
    JourneyReport,
    JourneysReport,
    SegmentSize,
    StepReport,
    VariantReport,
)
from shared.events import CART_UPDATED

NEWCOMBE = "Newcombe's hybrid score interval for a difference of proportions (method 10), 95%"
KATZ = "log risk-ratio (Katz) interval, 95%"
WELCH = "Welch's t interval for a difference of means (unequal variances), 95%"
MSPRT = (
    "mixture sequential probability ratio test (mSPRT, Johari, Pekelis & Walsh 2017): "
    "always-valid p-values, alpha 5% split over the comparisons (Bonferroni), "
    f"at least {st.MIN_SAMPLE_PER_VARIANT} recipients per variant"
)
NOT_ENOUGH = "not enough customers yet to tell"
# Below this the sample could see any lift that matters: "no lift" is then an answer.
SMALL_ENOUGH_MDE = 0.01


class ReportsService:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine  # the control plane's own pool, never the timer loop's

    async def journeys(self, span: DateRange, window: timedelta) -> JourneysReport:
        async with self.engine.begin() as conn:
            repo = ReportsRepository(conn)
            await repo.read_only()
            definitions = _latest(await JourneyRepository().all_versions(conn))
            enrolled = await repo.enrolments(span)
            steps = await repo.steps(span)
            suppressed = await repo.suppressed(span)
            outcomes = await repo.outcomes(span, window)
            declared = await WinnerRepository(conn).all()
        ids = sorted(set(definitions) | set(enrolled))
        reports = [
            journey_report(
                journey_id,
                definitions.get(journey_id),
                enrolled.get(journey_id, (0, 0)),
                [s for s in steps if s.journey_id == journey_id],
                {k[1]: v for k, v in suppressed.items() if k[0] == journey_id},
                [o for o in outcomes if o.journey_id == journey_id],
                window,
                _declared_for(definitions.get(journey_id), declared),
            )
            for journey_id in ids
        ]
        return JourneysReport(
            start=span.start, end=span.end, window_days=_days(window), journeys=reports
        )

    async def cohorts(self, months: int, now: datetime, shop_id: str | None) -> CohortMatrix:
        since = _month_start(now, back=months)
        async with self.engine.begin() as conn:
            repo = ReportsRepository(conn)
            await repo.read_only()
            cells = await repo.cohorts(since, shop_id)
        return cohort_matrix(cells, months, now)

    async def stages(self) -> list[SegmentSize]:
        """Customers by lifecycle stage (ingest's thresholds), until segments report sizes."""
        async with self.engine.begin() as conn:
            repo = ReportsRepository(conn)
            await repo.read_only()
            return [SegmentSize(name=n, customers=c) for n, c in await repo.stages()]


def journey_report(
    journey_id: str,
    journey: Journey | None,
    enrolled: tuple[int, int],
    steps: Sequence[StepRow],
    suppressed: dict[str, dict[str, int]],
    outcomes: Sequence[OutcomeRow],
    window: timedelta,
    declared: Mapping[str, DeclaredWinner] | None = None,
) -> JourneyReport:
    step_ids = _step_order(journey, steps)
    by_step = {
        step_id: _funnel([s for s in steps if s.step_id == step_id], suppressed.get(step_id, {}))
        for step_id in step_ids
    }
    return JourneyReport(
        journey_id=journey_id,
        name=journey.name if journey else journey_id,
        entered=enrolled[0],
        holdout=enrolled[1],
        funnel=_total(by_step.values()),
        steps=[StepReport(step_id=i, funnel=f) for i, f in by_step.items()],
        holdout_lift=holdout_lift(outcomes, window) if _has_holdout(journey, enrolled) else None,
        cart_recovery=cart_recovery(outcomes) if _is_cart_journey(journey) else None,
        ab_tests=ab_tests(journey, steps, declared or {}),
    )


def holdout_lift(outcomes: Sequence[OutcomeRow], window: timedelta) -> HoldoutLift:
    treated = _group([o for o in outcomes if not o.holdout])
    held = _group([o for o in outcomes if o.holdout])
    (n_t, c_t, m_t), (n_h, c_h, m_h) = treated, held
    absolute = st.newcombe_difference(c_t, n_t, c_h, n_h) if n_t and n_h else None
    revenue = st.welch_difference(m_t, m_h)
    mde = st.minimum_detectable_lift(c_h / n_h if n_h else 0.0, n_t, n_h)
    return HoldoutLift(
        window_days=_days(window),
        treatment=_outcome(treated),
        holdout=_outcome(held),
        absolute_lift=_out(absolute),
        absolute_lift_method=NEWCOMBE,
        relative_lift=_out(st.relative_lift(c_t, n_t, c_h, n_h)),
        relative_lift_method=KATZ,
        revenue_per_customer_lift=_out(revenue),
        revenue_method=WELCH,
        incremental_revenue=_out(_scaled(revenue, n_t)),
        minimum_detectable_lift=mde,
        verdict=lift_verdict(absolute, mde),
    )


def lift_verdict(difference: st.Interval | None, mde: float | None) -> str:
    if difference is None or mde is None:
        return f"{NOT_ENOUGH}: the treatment or the holdout group is still empty"
    points = f"{difference.estimate * 100:+.1f} points (95% CI {difference.low * 100:+.1f} to "
    points += f"{difference.high * 100:+.1f})"
    if difference.low > 0:
        return f"the journey raises conversion: {points}"
    if difference.high < 0:
        return f"the journey lowers conversion: {points}"
    if mde > SMALL_ENOUGH_MDE:
        return (
            f"{NOT_ENOUGH}: this sample could only detect a lift of {mde * 100:.1f} points or more"
        )
    return f"no lift of {mde * 100:.1f} points or more: {points}"


def cart_recovery(outcomes: Sequence[OutcomeRow]) -> CartRecovery:
    carts = sum(o.n for o in outcomes)
    recovered = sum(o.converted for o in outcomes)
    return CartRecovery(
        carts_abandoned=carts,
        recovered=recovered,
        recovery_rate=recovered / carts if carts else 0.0,
        recovered_revenue=sum((o.revenue for o in outcomes), Decimal(0)),
        recovered_after_a_message=sum(o.attributed for o in outcomes),
    )


def ab_tests(
    journey: Journey | None,
    steps: Sequence[StepRow],
    declared: Mapping[str, DeclaredWinner] | None = None,
) -> list[ABTest]:
    declared = declared or {}
    by_step = _by_step(s for s in steps if s.variant is not None)
    tests = []
    for step_id in [*by_step, *sorted(set(declared) - set(by_step))]:
        rows = by_step.get(step_id, [])
        metric = _winner_by(journey, step_id)
        variants = [
            VariantReport(variant=str(r.variant), funnel=_funnel([r], {}))
            for r in sorted(rows, key=lambda r: str(r.variant))
        ]
        if metric is None:
            tests.append(_untested(step_id, variants))
            continue
        verdict = ab_verdict(rows, metric)
        tests.append(
            ABTest(
                step_id=step_id,
                winner_by=metric,
                variants=variants,
                leader=verdict.leader,
                winner=verdict.winner,
                p_values=verdict.p_values,
                method=MSPRT,
                verdict=verdict.reason if verdict.winner is None else f"{verdict.winner} wins",
                declared=_declared_out(declared.get(step_id)),
            )
        )
    return tests


def ab_verdict(rows: Sequence[StepRow], metric: str) -> st.Verdict:
    """The A/B test over one step's variant rows: the report's verdict, and what the
    scheduler declares a `send_winner` step's winner on (reports/winners.py)."""
    return st.pick_winner([judged_variant(r, metric) for r in rows], metric)


def cohort_matrix(cells: Sequence[CohortCell], months: int, now: datetime) -> CohortMatrix:
    sizes = {c.cohort: c.customers for c in cells if c.month_offset is None}
    returned = {(c.cohort, c.month_offset): c.customers for c in cells if c.month_offset}
    current = _month_start(now, back=0).date()
    rows = []
    for cohort in sorted(sizes):
        elapsed = min(months, _months_between(cohort, current))
        shares = [returned.get((cohort, k), 0) / sizes[cohort] for k in range(1, elapsed + 1)]
        rows.append(CohortRow(cohort=cohort, customers=sizes[cohort], returned=shares))
    return CohortMatrix(months=months, rows=rows)


# --- helpers ---------------------------------------------------------------------------


def _latest(stored: Iterable[tuple[Journey, bool]]) -> dict[str, Journey]:
    latest: dict[str, Journey] = {}
    for journey, _ in stored:
        if journey.id not in latest or journey.version > latest[journey.id].version:
            latest[journey.id] = journey
    return latest


def _step_order(journey: Journey | None, steps: Sequence[StepRow]) -> list[str]:
    defined = [s.id for s in journey.steps if s.send is not None] if journey else []
    seen = [s.step_id for s in steps if s.step_id not in defined]
    return defined + sorted(set(seen))


def _funnel(rows: Sequence[StepRow], suppressed: dict[str, int]) -> Funnel:
    return Funnel(
        requested=sum(r.requested for r in rows),
        sent=sum(r.sent for r in rows),
        suppressed=dict(sorted(suppressed.items())),
        failed=sum(r.failed for r in rows),
        uncertain=sum(r.uncertain for r in rows),
        human_opens=sum(r.human_opens for r in rows),
        machine_opens=sum(r.machine_opens for r in rows),
        clicks=sum(r.clicks for r in rows),
        unsubscribes=sum(r.unsubscribes for r in rows),
        bounces=sum(r.bounces for r in rows),
        conversions=sum(r.conversions for r in rows),
        revenue=sum((r.revenue for r in rows), Decimal(0)),
    )


def _total(funnels: Iterable[Funnel]) -> Funnel:
    funnels = list(funnels)
    suppressed: dict[str, int] = defaultdict(int)
    for f in funnels:
        for reason, n in f.suppressed.items():
            suppressed[reason] += n
    counts = {
        name: sum(getattr(f, name) for f in funnels)
        for name in Funnel.model_fields
        if name not in ("suppressed", "revenue")
    }
    revenue = sum((f.revenue for f in funnels), Decimal(0))
    return Funnel(**counts, suppressed=dict(sorted(suppressed.items())), revenue=revenue)


def _has_holdout(journey: Journey | None, enrolled: tuple[int, int]) -> bool:
    return enrolled[1] > 0 or (journey is not None and journey.limits.holdout_percent > 0)


def _is_cart_journey(journey: Journey | None) -> bool:
    return (
        journey is not None
        and isinstance(journey.trigger, EventTrigger)
        and journey.trigger.event == CART_UPDATED
    )


def _group(rows: Sequence[OutcomeRow]) -> tuple[int, int, st.Moments]:
    n = sum(r.n for r in rows)
    total = float(sum((r.revenue for r in rows), Decimal(0)))
    squares = float(sum((r.revenue_squares for r in rows), Decimal(0)))
    return n, sum(r.converted for r in rows), _moments(n, total, squares)


def _moments(n: int, total: float, squares: float) -> st.Moments:
    if n == 0:
        return st.Moments(0, 0.0, 0.0)
    mean = total / n
    variance = max(0.0, (squares - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return st.Moments(n, mean, variance)


def _outcome(group: tuple[int, int, st.Moments]) -> GroupOutcome:
    n, converted, revenue = group
    return GroupOutcome(
        customers=n,
        converted=converted,
        conversion_rate=converted / n if n else 0.0,
        revenue=Decimal(str(round(revenue.mean * n, 2))),
        revenue_per_customer=revenue.mean,
    )


def _scaled(interval: st.Interval | None, factor: int) -> st.Interval | None:
    if interval is None:
        return None
    return st.Interval(interval.estimate * factor, interval.low * factor, interval.high * factor)


def _out(interval: st.Interval | None) -> IntervalOut | None:
    if interval is None:
        return None
    return IntervalOut(estimate=interval.estimate, low=interval.low, high=interval.high)


def _by_step(rows: Iterable[StepRow]) -> dict[str, list[StepRow]]:
    out: dict[str, list[StepRow]] = defaultdict(list)
    for row in rows:
        out[row.step_id].append(row)
    return out


def _winner_by(journey: Journey | None, step_id: str) -> str | None:
    step = next((s for s in journey.steps if s.id == step_id), None) if journey else None
    return step.send.winner_by if step is not None and step.send is not None else None


def _declared_for(
    journey: Journey | None, declared: Sequence[DeclaredWinner]
) -> dict[str, DeclaredWinner]:
    """The winners of the journey's latest version (the one later entrants enrol on)."""
    if journey is None:
        return {}
    return {
        w.step_id: w
        for w in declared
        if w.journey_id == journey.id and w.journey_version == journey.version
    }


def _declared_out(winner: DeclaredWinner | None) -> DeclaredWinnerOut | None:
    if winner is None:
        return None
    since = winner.declared_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return DeclaredWinnerOut(
        variant=winner.variant,
        journey_version=winner.journey_version,
        winner_by=winner.metric,
        declared_at=winner.declared_at,
        p_values=winner.p_values,
        figures=winner.figures,
        note=(
            f"{winner.variant} declared the winner by {winner.metric} on {since}: everyone "
            "who reaches this step since gets it"
        ),
    )


def _untested(step_id: str, variants: list[VariantReport]) -> ABTest:
    return ABTest(
        step_id=step_id,
        winner_by=None,
        variants=variants,
        leader=None,
        winner=None,
        p_values={},
        method=MSPRT,
        verdict="no metric named: set winner_by (click, conversion or revenue) on the step",
    )


def judged_variant(row: StepRow, metric: str) -> st.Variant:
    """Judged on the messages sent: one never sent could not be clicked."""
    revenue = _moments(row.sent, float(row.revenue), float(row.revenue_squares))
    successes = row.clicks if metric == "click" else row.conversions
    return st.Variant(str(row.variant), row.sent, successes=successes, value=revenue)


def _days(window: timedelta) -> float:
    return window.total_seconds() / 86_400


def _month_start(now: datetime, back: int) -> datetime:
    months = now.year * 12 + now.month - 1 - back
    return datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)


def _months_between(earlier: date, later: date) -> int:
    return (later.year - earlier.year) * 12 + later.month - earlier.month
