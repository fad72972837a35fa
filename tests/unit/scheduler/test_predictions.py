"""BG/NBD and Gamma-Gamma reproduce the published CDNOW results (Fader, Hardie & Lee 2005)."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest

from services.scheduler.predictions.model import (
    BgNbd,
    Summary,
    fit_bgnbd,
    fit_gamma_gamma,
    purchases_from_rows,
    summarise,
)

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
