"""The report statistics hold their promises on simulated shops with a known true effect."""

from __future__ import annotations

import numpy as np
import pytest

from services.scheduler.reports.statistics import (
    Moments,
    Variant,
    minimum_detectable_lift,
    newcombe_difference,
    pick_winner,
    relative_lift,
    welch_difference,
    wilson,
)

SHOPS = 400
CUSTOMERS_PER_SHOP = 1_000
BASE_RATE = 0.05
TRUE_LIFT = 0.03


def _simulated_shops(seed: int, lift: float) -> list[tuple[int, int, int, int]]:
    """(treated conversions, treated, holdout conversions, holdout) per shop, half held out."""
    rng = np.random.default_rng(seed)
    half = CUSTOMERS_PER_SHOP // 2
    treated = rng.binomial(half, BASE_RATE + lift, SHOPS)
    held = rng.binomial(half, BASE_RATE, SHOPS)
    return [(int(t), half, int(h), half) for t, h in zip(treated, held, strict=True)]


def test_the_lift_interval_covers_the_true_lift_in_about_95_percent_of_shops() -> None:
    shops = _simulated_shops(seed=20261126, lift=TRUE_LIFT)
    covered = sum(newcombe_difference(*shop).covers(TRUE_LIFT) for shop in shops)
    assert 0.93 <= covered / SHOPS <= 0.97


def test_without_a_true_effect_the_ab_test_rarely_declares_a_winner() -> None:
    shops = _simulated_shops(seed=7, lift=0.0)
    winners = sum(
        pick_winner([Variant("a", n_a, s_a), Variant("b", n_b, s_b)], "conversion").winner
        is not None
        for s_a, n_a, s_b, n_b in shops
    )
    assert winners / SHOPS <= 0.05


def test_peeking_every_day_does_not_manufacture_a_winner() -> None:
    """Looked at after every 50 recipients per variant, still at most 5% false winners."""
    rng = np.random.default_rng(11)
    false_winners = 0
    for _ in range(SHOPS):
        a = rng.random(2_000) < BASE_RATE
        b = rng.random(2_000) < BASE_RATE
        for n in range(100, 2_001, 50):
            verdict = pick_winner(
                [Variant("a", n, int(a[:n].sum())), Variant("b", n, int(b[:n].sum()))],
                "conversion",
            )
            if verdict.winner is not None:
                false_winners += 1
                break
    assert false_winners / SHOPS <= 0.05


def test_a_real_and_large_difference_is_declared() -> None:
    verdict = pick_winner([Variant("a", 5_000, 250), Variant("b", 5_000, 450)], "click")
    assert verdict.winner == "b"


def test_small_samples_say_so_instead_of_naming_a_winner() -> None:
    verdict = pick_winner([Variant("a", 40, 1), Variant("b", 40, 12)], "conversion")
    assert verdict.winner is None and "fewer than" in verdict.reason


def test_minimum_detectable_lift_shrinks_with_the_sample() -> None:
    small = minimum_detectable_lift(BASE_RATE, 100, 100)
    large = minimum_detectable_lift(BASE_RATE, 10_000, 10_000)
    assert small is not None and large is not None
    assert small > 0.08 > 0.01 > large  # 100 a side cannot see a 3-point lift; 10,000 can
    assert minimum_detectable_lift(BASE_RATE, 0, 100) is None


def test_wilson_and_relative_lift_on_known_values() -> None:
    interval = wilson(5, 100)
    assert (interval.low, interval.high) == pytest.approx((0.0215, 0.1118), abs=5e-4)
    lift = relative_lift(80, 1000, 50, 1000)
    assert lift is not None and lift.estimate == pytest.approx(0.6)
    assert lift.low < 0.6 < lift.high
    assert relative_lift(0, 10, 5, 10) is None


def test_welch_interval_for_revenue_per_customer() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(SHOPS):
        a = list(rng.exponential(12.0, 300))
        b = list(rng.exponential(10.0, 300))
        interval = welch_difference(Moments.of(a), Moments.of(b))
        assert interval is not None
        covered += interval.covers(2.0)
    assert 0.93 <= covered / SHOPS <= 0.97


def test_the_revenue_interval_covers_the_true_difference_in_about_95_percent_of_shops() -> None:
    """Revenue per customer: 5% buy, order values lognormal (mean about 60), and the journey
    adds 3 points of buyers: Welch's interval must still cover the true difference."""
    rng = np.random.default_rng(20261128)
    half = CUSTOMERS_PER_SHOP // 2
    mean_order = float(np.exp(4.0 + 0.5**2 / 2))
    true_difference = TRUE_LIFT * mean_order
    covered = 0
    for _ in range(SHOPS):
        groups = [
            rng.binomial(1, rate, half) * rng.lognormal(4.0, 0.5, half)
            for rate in (BASE_RATE + TRUE_LIFT, BASE_RATE)
        ]
        treated, held = (Moments.of([float(v) for v in g]) for g in groups)
        interval = welch_difference(treated, held)
        covered += interval is not None and interval.covers(true_difference)
    assert 0.93 <= covered / SHOPS <= 0.97
