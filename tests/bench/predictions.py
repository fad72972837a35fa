"""`make bench --only predictions`: fitting BG/NBD + Gamma-Gamma and scoring every customer,
for the CDNOW cohort (the 2,357-customer sample and all 23,570 customers) and a synthetic shop
of N customers (simulated from BG/NBD itself), beside a naive peer: the same formulas in a
pure-Python per-customer loop (math.lgamma; scipy's scalar hyp2f1), with the same optimiser.
The naive fit runs to the end on the sample only; on the larger cohorts one likelihood
evaluation and the scoring are timed, since a fit is hundreds of evaluations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special

from services.scheduler.predictions import model

ROOT = Path(__file__).resolve().parents[2]
CDNOW = ROOT / "tests" / "fixtures" / "cdnow"
CALIBRATION_END = date(1997, 9, 30)
TRUE = model.BgNbd(r=0.25, alpha=4.0, a=0.8, b=2.5)


def cdnow(name: str, columns: int) -> model.Summary:
    rows = []
    lines = (CDNOW / name).read_text().splitlines()
    for line in lines[1:] if columns == 4 else lines:  # the master file has a header
        parts = line.split()
        customer, day, value = parts[0], parts[-3], parts[-1]
        rows.append((customer, datetime.strptime(day, "%Y%m%d").date(), float(value)))
    return model.summarise(model.purchases_from_rows(rows), CALIBRATION_END)


def synthetic(customers: int, seed: int = 7) -> model.Summary:
    """Customers acquired over 12 weeks, observed to week 52, buying as BG/NBD says."""
    rng = np.random.default_rng(seed)
    T = 52.0 - rng.uniform(0, 12, customers)
    rate = rng.gamma(TRUE.r, 1 / TRUE.alpha, customers)
    dropout = rng.beta(TRUE.a, TRUE.b, customers)
    allowed = rng.geometric(dropout)  # repeat purchases before the one after which they leave
    arrivals = rng.poisson(rate * T)
    x = np.minimum(arrivals, allowed).astype(float)
    # the x-th of `arrivals` uniform arrival times on [0, T]
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    monetary = np.where(x > 0, rng.gamma(6.0, 1 / rng.gamma(3.7, 1 / 15.0, customers)), 0.0)
    names = tuple(str(i) for i in range(customers))
    return model.Summary(names, x, t_x, T, monetary)


# --- the naive peer: per customer, in Python --------------------------------------------------


def naive_log_likelihood(params: Any, x: list[float], t_x: list[float], T: list[float]) -> float:
    r, alpha, a, b = (math.exp(v) for v in params)
    total = 0.0
    for xi, ti, Ti in zip(x, t_x, T, strict=True):
        common = (
            math.lgamma(r + xi) - math.lgamma(r) + r * math.log(alpha)
            + _lbeta(a, b + xi) - _lbeta(a, b)
        )  # fmt: skip
        survived = -(r + xi) * math.log(alpha + Ti)
        if xi > 0:
            dropped = math.log(a) - math.log(b + xi - 1) - (r + xi) * math.log(alpha + ti)
            top = max(survived, dropped)
            total += common + top + math.log(math.exp(survived - top) + math.exp(dropped - top))
        else:
            total += common + survived
    return -total


def _lbeta(p: float, q: float) -> float:
    return math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q)


def naive_score(m: model.BgNbd, x: list[float], t_x: list[float], T: list[float]) -> list[float]:
    out = []
    for xi, ti, Ti in zip(x, t_x, T, strict=True):
        for t in (30 / 7, 90 / 7):
            z = t / (m.alpha + Ti + t)
            hyper = float(special.hyp2f1(m.r + xi, m.b + xi, m.a + m.b + xi - 1, z))
            growth = 1 - ((m.alpha + Ti) / (m.alpha + Ti + t)) ** (m.r + xi) * hyper
            odds = m.a / (m.b + max(xi, 1) - 1) * ((m.alpha + Ti) / (m.alpha + ti)) ** (m.r + xi)
            out.append((m.a + m.b + xi - 1) / (m.a - 1) * growth / (1 + (odds if xi > 0 else 0)))
    return out


# --- measuring -----------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def cohort(name: str, s: model.Summary, naive_fit: bool) -> dict[str, Any]:
    fitted, fit_s = timed(lambda: model.fit_bgnbd(s))
    _, spend_s = timed(lambda: model.fit_gamma_gamma(s))
    _, score_s = timed(lambda: model.score(fitted, None, s))
    params = np.log([fitted.r, fitted.alpha, fitted.a, fitted.b])
    _, eval_s = timed(lambda: model.bgnbd_log_likelihood(np.exp(params), s.x, s.t_x, s.T).sum())
    x, t_x, T = s.x.tolist(), s.t_x.tolist(), s.T.tolist()
    _, naive_eval_s = timed(lambda: naive_log_likelihood(params, x, t_x, T))
    _, naive_score_s = timed(lambda: naive_score(fitted, x, t_x, T))
    out = {
        "cohort": name, "customers": s.size, "repeat_buyers": int((s.x > 0).sum()),
        "r_alpha_a_b": [round(v, 4) for v in (fitted.r, fitted.alpha, fitted.a, fitted.b)],
        "fit_s": fit_s, "gamma_gamma_fit_s": spend_s, "score_s": score_s,
        "likelihood_eval_s": eval_s, "naive_likelihood_eval_s": naive_eval_s,
        "naive_score_s": naive_score_s,
    }  # fmt: skip
    if naive_fit:
        result, naive_fit_s = timed(
            lambda: optimize.minimize(
                naive_log_likelihood, np.zeros(4), args=(x, t_x, T), method="Nelder-Mead",
                options={"maxiter": 20_000, "maxfev": 20_000, "xatol": 1e-8, "fatol": 1e-10},
            )
        )  # fmt: skip
        out["naive_fit_s"] = naive_fit_s
        out["naive_r_alpha_a_b"] = [round(float(v), 4) for v in np.exp(result.x)]
    return out


def bench_predictions(customers: int) -> dict[str, Any]:
    return {
        "cohorts": [
            cohort("CDNOW sample", cdnow("CDNOW_sample.txt", 5), naive_fit=True),
            cohort("CDNOW all", cdnow("CDNOW_master.txt", 4), naive_fit=False),
            cohort(f"synthetic {customers:,}", synthetic(customers), naive_fit=False),
        ]
    }


def table_lines(p: dict[str, Any]) -> list[str]:
    lines = [
        "(f) purchase predictions: BG/NBD + Gamma-Gamma fit and scoring, one process",
        "    naive: the same formulas per customer in Python (math.lgamma, scalar hyp2f1)",
        f"{'cohort':>20} {'customers':>10} | {'fit s':>7} {'GG s':>6} {'score s':>8} | "
        f"{'LL eval ms':>10} {'naive':>9} {'ratio':>7} | {'score naive s':>13} {'ratio':>7}",
    ]
    for c in p["cohorts"]:
        lines.append(
            f"{c['cohort']:>20} {c['customers']:>10,} | {c['fit_s']:>7.2f} "
            f"{c['gamma_gamma_fit_s']:>6.2f} {c['score_s']:>8.3f} | "
            f"{c['likelihood_eval_s'] * 1e3:>10.2f} {c['naive_likelihood_eval_s'] * 1e3:>9.1f} "
            f"{c['naive_likelihood_eval_s'] / c['likelihood_eval_s']:>6.0f}x | "
            f"{c['naive_score_s']:>13.2f} {c['naive_score_s'] / c['score_s']:>6.0f}x"
        )
        if "naive_fit_s" in c:
            lines.append(
                f"{'':>20} naive fit to the end: {c['naive_fit_s']:.1f} s "
                f"({c['naive_fit_s'] / c['fit_s']:.0f}x), params {c['naive_r_alpha_a_b']} "
                f"vs {c['r_alpha_a_b']}"
            )
    lines.append(
        f"{'':>20} synthetic shop simulated with r, alpha, a, b = {TRUE.r}, {TRUE.alpha}, "
        f"{TRUE.a}, {TRUE.b}; fitted {p['cohorts'][-1]['r_alpha_a_b']}"
    )
    return [*lines, ""]
