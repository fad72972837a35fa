"""Purchase predictions: BG/NBD for how many orders, Gamma-Gamma for how much each is worth.

Pure numpy/scipy, no I/O. The formulas are those of Fader, Hardie & Lee, "Counting Your
Customers the Easy Way" (Marketing Science 24(2), 2005) and "RFM and CLV: Using Iso-value
Curves for Customer Base Analysis" (JMR 42(4), 2005), with Hardie's note on the Gamma-Gamma
spend model. Each customer is summarised as (x, t_x, T): x repeat purchases (distinct purchase
days after the first), t_x the age of the last purchase and T the age of the customer at the
end of the calibration period, measured from the first purchase in a time unit of the caller's
choice (the literature uses weeks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

Floats = NDArray[np.float64]
DAYS_PER_WEEK = 7.0
SECONDS_PER_WEEK = 7 * 86_400.0


class FitFailed(RuntimeError):
    """The optimiser did not converge; the data cannot support a model (too few buyers)."""


@dataclass(frozen=True)
class Summary:
    """Per-customer frequency / recency / age (and mean repeat order value), aligned arrays."""

    customers: tuple[str, ...]
    x: Floats
    t_x: Floats
    T: Floats
    monetary: Floats  # mean value of the repeat purchases; 0 where x == 0

    @property
    def size(self) -> int:
        return len(self.customers)


def summarise(
    purchases: Mapping[str, Sequence[tuple[date, float]]],
    calibration_end: date,
    days_per_unit: float = DAYS_PER_WEEK,
) -> Summary:
    """Summarise each customer's (day, value) purchases up to `calibration_end` (inclusive).

    Purchases on the same day count once (their values add up); the first purchase is not a
    repeat; customers whose first purchase is after the end are left out.
    """
    names: list[str] = []
    xs: list[float] = []
    recency: list[float] = []
    ages: list[float] = []
    values: list[float] = []
    for customer, rows in purchases.items():
        by_day: dict[date, float] = {}
        for day, value in rows:
            if day <= calibration_end:
                by_day[day] = by_day.get(day, 0.0) + value
        if not by_day:
            continue
        days = sorted(by_day)
        first = days[0]
        names.append(customer)
        xs.append(len(days) - 1)
        recency.append((days[-1] - first).days / days_per_unit)
        ages.append((calibration_end - first).days / days_per_unit)
        repeats = [by_day[d] for d in days[1:]]
        values.append(sum(repeats) / len(repeats) if repeats else 0.0)
    return Summary(
        tuple(names),
        np.asarray(xs, dtype=np.float64),
        np.asarray(recency, dtype=np.float64),
        np.asarray(ages, dtype=np.float64),
        np.asarray(values, dtype=np.float64),
    )


# --- BG/NBD ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float

    def p_alive(self, x: Floats, t_x: Floats, T: Floats) -> Floats:
        """P(the customer has not dropped out by T), eq. (11) of the 2005 paper."""
        ratio = self.a / (self.b + np.maximum(x, 1.0) - 1.0)
        odds = ratio * np.exp((self.r + x) * np.log((self.alpha + T) / (self.alpha + t_x)))
        return np.where(x > 0, 1.0 / (1.0 + odds), 1.0)

    def expected_purchases(self, t: float, x: Floats, t_x: Floats, T: Floats) -> Floats:
        """E[purchases in (T, T + t] | x, t_x, T], eq. (10) of the 2005 paper."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyper = special.hyp2f1(r + x, b + x, a + b + x - 1.0, t / (alpha + T + t))
        growth = 1.0 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyper
        head = (a + b + x - 1.0) / (a - 1.0) * growth
        ratio = a / (b + np.maximum(x, 1.0) - 1.0)
        odds = ratio * ((alpha + T) / (alpha + t_x)) ** (r + x)
        result: Floats = head / (1.0 + np.where(x > 0, odds, 0.0))
        return result

    def median_time_to_next_purchase(self, p_alive: Floats, x: Floats, T: Floats) -> Floats:
        """The t by which another purchase is as likely as not: P(one by T + t) =
        p_alive * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x)), since an alive customer's
        purchase rate is Gamma(r + x, alpha + T) given the history, and BG dropout happens only
        right after a purchase. NaN when p_alive <= 1/2 (never more likely than not)."""
        alive = np.maximum(p_alive, 0.5 + 1e-12)
        t = (self.alpha + T) * ((1.0 - 0.5 / alive) ** (-1.0 / (self.r + x)) - 1.0)
        result: Floats = np.where(p_alive > 0.5, t, np.nan)
        return result

    def expected_purchases_new(self, t: float) -> float:
        """E[X(t)] for a customer just acquired: eq. (9)."""
        return float(self.expected_purchases_at(np.asarray([t], dtype=np.float64))[0])

    def expected_purchases_at(self, t: Floats) -> Floats:
        """E[X(t)] of eq. (9) for each age in `t`."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyper = special.hyp2f1(r, b, a + b - 1.0, t / (alpha + t))
        result: Floats = (a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)) ** r * hyper)
        return result


def bgnbd_log_likelihood(params: Floats, x: Floats, t_x: Floats, T: Floats) -> Floats:
    """Each customer's log-likelihood under BG/NBD, eq. (6) of the 2005 paper."""
    r, alpha, a, b = params
    common = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * np.log(alpha)
        + special.betaln(a, b + x)
        - special.betaln(a, b)
    )
    survived = -(r + x) * np.log(alpha + T)
    dropped = np.where(
        x > 0,
        np.log(a) - np.log(np.maximum(b + x - 1.0, 1e-300)) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    result: Floats = common + np.logaddexp(survived, dropped)
    return result


def fit_bgnbd(summary: Summary) -> BgNbd:
    """Maximum likelihood over log-parameters (all four must be positive)."""

    def loss(log_params: Floats) -> float:
        values = bgnbd_log_likelihood(np.exp(log_params), summary.x, summary.t_x, summary.T)
        return float(-values.sum())

    params = _minimise(loss, np.zeros(4))
    return BgNbd(*(float(v) for v in params))


# --- Gamma-Gamma ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float

    def expected_value(self, x: Floats, monetary: Floats) -> Floats:
        """E[value of one order | x repeat orders averaging `monetary`]; the population mean
        p * gamma / (q - 1) for customers without repeats."""
        p, q, g = self.p, self.q, self.gamma
        population = p * g / (q - 1.0)
        conditional = p * (g + x * monetary) / (p * x + q - 1.0)
        result: Floats = np.where(x > 0, conditional, population)
        return result


def gamma_gamma_log_likelihood(params: Floats, x: Floats, monetary: Floats) -> Floats:
    p, q, g = params
    px = p * x
    result: Floats = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(g)
        + (px - 1.0) * np.log(monetary)
        + px * np.log(x)
        - (px + q) * np.log(g + x * monetary)
    )
    return result


def fit_gamma_gamma(summary: Summary) -> GammaGamma:
    """Fitted on the customers with at least one repeat purchase of positive value."""
    keep = (summary.x > 0) & (summary.monetary > 0)
    x, monetary = summary.x[keep], summary.monetary[keep]
    if keep.sum() < 2:
        raise FitFailed("Gamma-Gamma needs at least two customers with repeat purchases")

    def loss(log_params: Floats) -> float:
        return float(-gamma_gamma_log_likelihood(np.exp(log_params), x, monetary).sum())

    params = _minimise(loss, np.zeros(3))
    return GammaGamma(*(float(v) for v in params))


def _minimise(loss: object, start: Floats) -> Floats:
    result = optimize.minimize(loss, start, method="Nelder-Mead", options=_NELDER_MEAD)
    if not result.success:
        raise FitFailed(str(result.message))
    refined = optimize.minimize(loss, result.x, method="BFGS")
    best = refined.x if refined.fun <= result.fun else result.x
    values: Floats = np.exp(best)
    return values


_NELDER_MEAD = {"maxiter": 20_000, "maxfev": 20_000, "xatol": 1e-8, "fatol": 1e-10}


def summarise_facts(
    customers: Sequence[str],
    first_order_s: Floats,
    last_order_s: Floats,
    purchase_days: Floats,
    spent: Floats,
    first_day_spent: Floats,
    as_of_s: float,
    seconds_per_unit: float = SECONDS_PER_WEEK,
) -> Summary:
    """The same summary from the per-customer facts ingest keeps (times in epoch seconds):
    x = purchase days - 1, t_x = last - first order, T = as_of - first order, and the mean
    repeat value = (spend - the first day's spend) / x. Customers without an order, or whose
    first order is after `as_of`, are left out."""
    keep = (purchase_days >= 1) & (first_order_s <= as_of_s)
    first, last = first_order_s[keep], last_order_s[keep]
    x = purchase_days[keep] - 1.0
    age = (as_of_s - first) / seconds_per_unit
    recency = np.clip((last - first) / seconds_per_unit, 0.0, age)
    repeat_spend = spent[keep] - first_day_spent[keep]
    monetary = np.where(x > 0, repeat_spend / np.maximum(x, 1.0), 0.0)
    names = tuple(c for c, k in zip(customers, keep, strict=True) if k)
    return Summary(names, x, recency, age, monetary)


@dataclass(frozen=True)
class Scores:
    """Per customer of a Summary, aligned; NaN where a figure does not exist."""

    p_alive: Floats
    orders_30d: Floats
    orders_90d: Floats
    next_order_units: Floats  # from as_of; NaN: less than an even chance of another order
    order_value: Floats  # Gamma-Gamma's expected order value; NaN without a spend model


def score(
    model: BgNbd, spend: GammaGamma | None, summary: Summary, days_per_unit: float = DAYS_PER_WEEK
) -> Scores:
    x, t_x, T = summary.x, summary.t_x, summary.T
    alive = model.p_alive(x, t_x, T)
    value = (
        spend.expected_value(x, summary.monetary)
        if spend is not None
        else np.full(summary.size, np.nan)
    )
    return Scores(
        p_alive=alive,
        orders_30d=model.expected_purchases(30.0 / days_per_unit, x, t_x, T),
        orders_90d=model.expected_purchases(90.0 / days_per_unit, x, t_x, T),
        next_order_units=model.median_time_to_next_purchase(alive, x, T),
        order_value=value,
    )


def purchases_from_rows(
    rows: Iterable[tuple[str, date, float]],
) -> dict[str, list[tuple[date, float]]]:
    grouped: dict[str, list[tuple[date, float]]] = {}
    for customer, day, value in rows:
        grouped.setdefault(customer, []).append((day, value))
    return grouped
