"""BG/NBD and Gamma-Gamma reproduce the published CDNOW results (Fader, Hardie & Lee 2005);
the facts the scheduler receives summarise the same way; scores, verdicts and the facts hook."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from services.scheduler.domain.conditions import Leaf
from services.scheduler.domain.facts import build_facts
from services.scheduler.domain.journey import (
    SegmentTrigger,
    journey_reads_predictions,
    parse_journey,
)
from services.scheduler.domain.segment_time import next_entry
from services.scheduler.predictions import quality
from services.scheduler.predictions.model import (
    BgNbd,
    Summary,
    fit_bgnbd,
    fit_gamma_gamma,
    purchases_from_rows,
    score,
    summarise,
    summarise_facts,
)
from shared.events import Profile

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "cdnow" / "CDNOW_sample.txt"
CALIBRATION_END = date(1997, 9, 30)  # weeks 1-39 of 1997
HOLDOUT_WEEKS = 39.0  # 1997-10-01 .. 1998-06-30


@pytest.fixture(scope="module")
def purchases() -> dict[str, list[tuple[date, float]]]:
    rows = []
    for line in SAMPLE.read_text().splitlines():
        customer, _, day, _, value = line.split()
        rows.append((customer, datetime.strptime(day, "%Y%m%d").date(), float(value)))
    return purchases_from_rows(rows)


@pytest.fixture(scope="module")
def calibration(purchases: dict[str, list[tuple[date, float]]]) -> Summary:
    return summarise(purchases, CALIBRATION_END)


def test_the_calibration_period_is_the_papers(calibration: Summary) -> None:
    assert calibration.size == 2357
    assert int((calibration.x > 0).sum()) == 946
    assert int(calibration.x.sum()) == 2457


def test_bgnbd_reproduces_the_published_parameters_within_one_percent(
    calibration: Summary,
) -> None:
    fitted = fit_bgnbd(calibration)
    published = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(published, name), rel=0.01), name


def test_gamma_gamma_reproduces_the_published_spend_parameters(calibration: Summary) -> None:
    fitted = fit_gamma_gamma(calibration)
    # Fader, Hardie & Lee (2005), "RFM and CLV", on the same 39 weeks: p=6.25 q=3.74 g=15.44
    assert (fitted.p, fitted.q, fitted.gamma) == pytest.approx((6.25, 3.74, 15.44), rel=0.01)


def test_holdout_forecast_is_close_to_what_customers_really_bought(
    purchases: dict[str, list[tuple[date, float]]], calibration: Summary
) -> None:
    model = fit_bgnbd(calibration)
    predicted = model.expected_purchases(
        HOLDOUT_WEEKS, calibration.x, calibration.t_x, calibration.T
    )
    actual = np.array(
        [
            len({day for day, _ in purchases[c] if day > CALIBRATION_END})
            for c in calibration.customers
        ],
        dtype=float,
    )
    # 1,653 predicted vs 1,882 actual repeat purchase days: BG/NBD's known slight
    # under-forecast on CDNOW; per customer the mean absolute error is 0.79 purchases.
    assert predicted.sum() == pytest.approx(actual.sum(), rel=0.15)
    assert float(np.abs(predicted - actual).mean()) < 0.85


def test_p_alive_is_one_without_repeats_and_falls_with_silence() -> None:
    model = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
    x = np.array([0.0, 3.0, 3.0])
    recency = np.array([0.0, 30.0, 5.0])
    age = np.array([39.0, 39.0, 39.0])
    alive = model.p_alive(x, recency, age)
    assert alive[0] == 1.0
    assert alive[1] > alive[2]  # the same buyer, silent for 34 weeks instead of 9


def test_the_facts_ingest_keeps_summarise_like_the_purchase_list(
    purchases: dict[str, list[tuple[date, float]]], calibration: Summary
) -> None:
    # What the scheduler receives per customer: first and last order, purchase days, spend.
    names, first, last, days, spent, first_day = [], [], [], [], [], []
    for customer, rows in purchases.items():
        by_day: dict[date, float] = {}
        for day, value in rows:
            if day <= CALIBRATION_END:
                by_day[day] = by_day.get(day, 0.0) + value
        ordered = sorted(by_day)
        names.append(customer)
        first.append(_epoch(ordered[0]))
        last.append(_epoch(ordered[-1]))
        days.append(len(ordered))
        spent.append(sum(by_day.values()))
        first_day.append(by_day[ordered[0]])
    first_s, last_s, days_n, spent_v, first_day_v = (
        np.asarray(c, dtype=float) for c in (first, last, days, spent, first_day)
    )
    facts = summarise_facts(
        names, first_s, last_s, days_n, spent_v, first_day_v, _epoch(CALIBRATION_END)
    )
    assert facts.customers == calibration.customers
    for column in ("x", "t_x", "T", "monetary"):
        np.testing.assert_allclose(getattr(facts, column), getattr(calibration, column))


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def test_next_order_is_as_likely_as_not_by_the_median_time() -> None:
    model = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
    x, t_x, T = np.array([5.0, 5.0]), np.array([38.0, 10.0]), np.array([39.0, 39.0])
    alive = model.p_alive(x, t_x, T)
    t = model.median_time_to_next_purchase(alive, x, T)
    assert alive[0] > 0.5 and np.isfinite(t[0])
    # P(an order by T + t) = p_alive * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x)) = 1/2
    by_then = alive[0] * (1 - ((4.414 + 39) / (4.414 + 39 + t[0])) ** (0.243 + 5))
    assert by_then == pytest.approx(0.5)
    assert alive[1] < 0.5 and np.isnan(t[1])  # silent for 29 weeks: no even chance


def test_scores_for_a_shop_and_the_quality_verdicts(calibration: Summary) -> None:
    fitted = fit_bgnbd(calibration)
    scores = score(fitted, fit_gamma_gamma(calibration), calibration)
    assert (scores.orders_30d < scores.orders_90d).all()
    assert float(scores.order_value.min()) > 0
    verdict = quality.after_fit(calibration, fitted, None, "No spend model: test.")
    assert verdict.status == "ok" and "946 repeat buyers" in verdict.note
    assert quality.before_fit(calibration) is None

    few = Summary(
        calibration.customers[:150],
        calibration.x[:150],
        calibration.t_x[:150],
        calibration.T[:150],
        calibration.monetary[:150],
    )
    refused = quality.before_fit(few)
    assert refused is not None and refused.status == "too_little_data" and "100" in refused.note


def test_segment_conditions_see_the_predictions_on_the_profile() -> None:
    profile = Profile(key="s:c:1", shop_id="s", email=None)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    lapsing = Leaf(field="profile.p_alive", op="lt", value=0.3)
    predicted = {"p_alive": 0.2, "expected_orders_90d": 0.1}
    assert lapsing.holds(build_facts("timer", now, profile, None, now, predictions=predicted), now)
    # before any fit the figure is unknown, and a comparison with it does not hold
    assert not lapsing.holds(build_facts("timer", now, profile, None, now), now)


def test_a_segment_on_predictions_is_accepted_and_the_predicted_date_moves_with_time() -> None:
    soon = parse_journey(PREDICTED_SOON)
    assert journey_reads_predictions(soon)
    rhythm = PREDICTED_SOON.replace("days_until_predicted", "days_until_expected")
    assert not journey_reads_predictions(parse_journey(rhythm.replace("p_alive", "orders_count")))
    with pytest.raises(ValueError, match=r"profile\.p_alive\.x is not a fact"):
        parse_journey(PREDICTED_SOON.replace("days_until_predicted_order", "p_alive.x"))
    assert isinstance(soon.trigger, SegmentTrigger)
    profile = Profile(key="s:c:1", shop_id="s", email=None)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    predicted = {"p_alive": 0.9, "predicted_next_order_at": now + timedelta(days=20)}
    facts = build_facts("timer", now, profile, None, now, predictions=predicted)
    assert facts["profile"]["days_until_predicted_order"] == 20
    # 7 days before the predicted order: the entry time is computed, not polled for
    entry = next_entry(soon.trigger.segment, facts, now)
    assert entry.at == now + timedelta(days=13)
    assert (
        next_entry(soon.trigger.segment, build_facts("timer", now, profile, None, now), now).at
        is None
    )


PREDICTED_SOON = """
id: predicted-soon
version: 1
name: A week before the predicted order
trigger:
  segment: {all: [{field: profile.days_until_predicted_order, op: lte, value: 7},
                  {field: profile.p_alive, op: gte, value: 0.5}]}
steps:
  - {id: hello, send: {template: winback_reason, subject: "Hello"}}
"""
