"""The statistics behind the reports: holdout lift with its uncertainty, and A/B winners.

Pure functions, no I/O. The methods, named so a shop's analyst can check them:
- conversion lift (treatment minus holdout): Newcombe's hybrid score interval (Newcombe 1998,
  method 10), built from the two Wilson score intervals; good coverage for small samples and
  rates near 0, where the Wald interval fails;
- relative lift: the log risk-ratio (Katz) interval, minus one;
- revenue per customer: Welch's t interval for a difference of means (unequal variances);
- the smallest effect the sample could detect: a two-sided 5% test with 80% power;
- A/B winners: a mixture sequential probability ratio test (mSPRT; Johari, Pekelis & Walsh,
  "Always Valid Inference", 2017) on the difference between the leading variant and each other
  one, with a Bonferroni split of alpha over the comparisons. Its p-values stay valid however
  often the report is looked at, so a daily glance at the dashboard cannot manufacture a winner.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95
POWER = 0.80
# mSPRT mixing scale: the size of effect (in the metric's own unit) the test is tuned to find.
MSPRT_TAU_CONVERSION = 0.02
MIN_SAMPLE_PER_VARIANT = 100


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def _z(confidence: float = CONFIDENCE) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson's score interval for one proportion."""
    if n == 0:
        return Interval(0.0, 0.0, 1.0)
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe_difference(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = CONFIDENCE
) -> Interval:
    """Interval for p_a - p_b (Newcombe's method 10)."""
    a = wilson(successes_a, n_a, confidence)
    b = wilson(successes_b, n_b, confidence)
    difference = a.estimate - b.estimate
    low = difference - math.hypot(a.estimate - a.low, b.high - b.estimate)
    high = difference + math.hypot(a.high - a.estimate, b.estimate - b.low)
    return Interval(difference, low, high)


def relative_lift(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = CONFIDENCE
) -> Interval | None:
    """p_a / p_b - 1 with the log risk-ratio interval; None while either group has no success."""
    if min(successes_a, successes_b, n_a, n_b) == 0:
        return None
    ratio = (successes_a / n_a) / (successes_b / n_b)
    se = math.sqrt(1 / successes_a - 1 / n_a + 1 / successes_b - 1 / n_b)
    z = _z(confidence)
    return Interval(ratio - 1, ratio * math.exp(-z * se) - 1, ratio * math.exp(z * se) - 1)


@dataclass(frozen=True)
class Moments:
    """n, mean and sample variance of a per-customer figure (e.g. revenue)."""

    n: int
    mean: float
    variance: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Moments:
        n = len(values)
        if n == 0:
            return cls(0, 0.0, 0.0)
        mean = sum(values) / n
        variance = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(n, mean, variance)


def welch_difference(a: Moments, b: Moments, confidence: float = CONFIDENCE) -> Interval | None:
    """Interval for mean_a - mean_b by Welch's t; None with fewer than two in a group."""
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.variance / a.n, b.variance / b.n
    difference = a.mean - b.mean
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(difference, difference, difference)
    df = (va + vb) ** 2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    t = float(stats.t.ppf(0.5 + confidence / 2, df))
    return Interval(difference, difference - t * se, difference + t * se)


def minimum_detectable_lift(
    base_rate: float, n_a: int, n_b: int, confidence: float = CONFIDENCE, power: float = POWER
) -> float | None:
    """The smallest absolute difference in conversion a two-sided test would find with `power`.

    None when a group is empty: nothing can be told yet.
    """
    if n_a == 0 or n_b == 0:
        return None
    rate = min(max(base_rate, 1e-6), 1 - 1e-6)
    z_power = float(stats.norm.ppf(power))
    return (_z(confidence) + z_power) * math.sqrt(rate * (1 - rate) * (1 / n_a + 1 / n_b))


def msprt_p_value(difference: float, variance: float, tau: float) -> float:
    """Always-valid p-value of H0: difference == 0 (normal mixture, Johari et al. 2017)."""
    if variance <= 0:
        return 1.0
    tau2 = tau * tau
    log_likelihood_ratio = 0.5 * math.log(variance / (variance + tau2)) + (
        tau2 * difference * difference / (2 * variance * (variance + tau2))
    )
    return min(1.0, math.exp(-log_likelihood_ratio))


@dataclass(frozen=True)
class Variant:
    name: str
    n: int
    successes: int = 0  # for conversion or click winners
    value: Moments | None = None  # for revenue winners


@dataclass(frozen=True)
class Verdict:
    winner: str | None
    leader: str | None
    p_values: dict[str, float]  # leader against each other variant
    reason: str


def pick_winner(
    variants: Sequence[Variant],
    metric: str,
    alpha: float = 1 - CONFIDENCE,
    min_sample: int = MIN_SAMPLE_PER_VARIANT,
    tau: float | None = None,
) -> Verdict:
    """The leading variant is the winner only when it beats every other one (mSPRT, alpha
    split over the comparisons) and every variant has at least `min_sample` recipients."""
    if len(variants) < 2:
        return Verdict(None, None, {}, "an A/B test needs at least two variants")
    score = _scorer(metric)
    leader = max(variants, key=score)
    small = [v.name for v in variants if v.n < min_sample]
    if small:
        return Verdict(None, leader.name, {}, f"fewer than {min_sample} recipients: {small}")
    scale = tau if tau is not None else _default_tau(metric, variants)
    p_values = {
        other.name: msprt_p_value(*_difference(leader, other, metric), scale)
        for other in variants
        if other is not leader
    }
    threshold = alpha / len(p_values)
    if all(p < threshold for p in p_values.values()):
        return Verdict(leader.name, leader.name, p_values, "significant against every variant")
    return Verdict(None, leader.name, p_values, "no variant is better than the others yet")


def _scorer(metric: str) -> Callable[[Variant], float]:
    if metric in ("click", "conversion"):
        return lambda v: v.successes / v.n if v.n else 0.0
    if metric == "revenue":
        return lambda v: v.value.mean if v.value else 0.0
    raise ValueError(f"unknown winner metric {metric!r} (click, conversion, revenue)")


def _difference(a: Variant, b: Variant, metric: str) -> tuple[float, float]:
    if metric == "revenue":
        ma = a.value or Moments(0, 0.0, 0.0)
        mb = b.value or Moments(0, 0.0, 0.0)
        return ma.mean - mb.mean, ma.variance / max(ma.n, 1) + mb.variance / max(mb.n, 1)
    pa, pb = a.successes / a.n, b.successes / b.n
    pooled = (a.successes + b.successes) / (a.n + b.n)
    return pa - pb, pooled * (1 - pooled) * (1 / a.n + 1 / b.n)


def _default_tau(metric: str, variants: Sequence[Variant]) -> float:
    if metric != "revenue":
        return MSPRT_TAU_CONVERSION
    spreads = [math.sqrt(v.value.variance) for v in variants if v.value and v.value.n > 1]
    return 0.1 * (sum(spreads) / len(spreads)) if spreads else 1.0
