"""Fitting a shop's purchase models and storing what they predict, on a schedule that never
holds the timer loop: the whole refresh (read the facts, fit, score, write) runs in a worker
process on its own database connection; the event loop only awaits it.

The scheduler fits on the customer facts it keeps itself (scheduler.customers, from
customer.activity), never on ingest's tables.
"""

from __future__ import annotations

import asyncio
import functools
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import numpy as np
import psycopg

from services.scheduler.predictions import model, quality
from services.scheduler.predictions.repository import (
    FactsColumns,
    FitRepository,
    FitRow,
    PredictionRows,
    dsn,
)
from shared.clock import Clock
from shared.logging import get_logger

log = get_logger(__name__)
_T = TypeVar("_T")
NEXT_ORDER_HORIZON_DAYS = 3 * 365  # further out than this is "not expected", not a date


@dataclass(frozen=True)
class Refreshed:
    """What one refresh did; the customers it changed: PredictionRepository.changed_since
    (shop_id, fitted_at)."""

    shop_id: str
    status: str
    fitted_at: datetime
    customers: int
    changed: int


@dataclass(frozen=True)
class Fitted:
    fit: FitRow
    rows: PredictionRows | None


# --- pure: facts -> models -> rows ----------------------------------------------------------


def fit_shop(shop_id: str, facts: FactsColumns, as_of: datetime, fitted_at: datetime) -> Fitted:
    started = time.perf_counter()
    summary = model.summarise_facts(
        facts.customers,
        facts.first_order_s,
        facts.last_order_s,
        facts.purchase_days,
        facts.spent,
        facts.first_day_spent,
        as_of.timestamp(),
    )
    refused = quality.before_fit(summary)
    bgnbd: model.BgNbd | None = None
    spend: model.GammaGamma | None = None
    if refused is None:
        try:
            bgnbd = model.fit_bgnbd(summary)
        except model.FitFailed as exc:
            refused = quality.Verdict("fit_failed", f"BG/NBD did not converge: {exc}")
    rows = None
    if bgnbd is not None and refused is None:
        spend, spend_note = _fit_spend(summary)
        verdict = quality.after_fit(summary, bgnbd, spend, spend_note)
        rows = prediction_rows(summary, model.score(bgnbd, spend, summary), as_of)
    else:
        assert refused is not None
        verdict = refused
    fit = FitRow(
        shop_id=shop_id,
        as_of=as_of,
        fitted_at=fitted_at,
        fit_seconds=time.perf_counter() - started,
        customers=summary.size,
        repeat_buyers=int((summary.x > 0).sum()),
        repeat_purchases=int(summary.x.sum()),
        status=verdict.status,
        note=verdict.note,
        bgnbd=None if bgnbd is None else (bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b),
        gamma_gamma=None if spend is None else (spend.p, spend.q, spend.gamma),
    )
    return Fitted(fit, rows)


def _fit_spend(summary: model.Summary) -> tuple[model.GammaGamma | None, str]:
    try:
        spend = model.fit_gamma_gamma(summary)
    except model.FitFailed as exc:
        return None, f"No spend model: {exc}."
    if spend.q <= 1.0:  # the population's mean order value would be infinite
        return None, "No spend model: the fitted order values have no finite mean (q <= 1)."
    return spend, ""


def prediction_rows(
    summary: model.Summary, scores: model.Scores, as_of: datetime
) -> PredictionRows:
    """Rounded (3 decimals, cents, whole days) so noise between refreshes changes nothing."""
    with np.errstate(invalid="ignore", over="ignore"):
        days = scores.next_order_units * model.DAYS_PER_WEEK
    return PredictionRows(
        customers=summary.customers,
        p_alive=np.round(scores.p_alive, 3).tolist(),
        orders_30d=np.round(scores.orders_30d, 3).tolist(),
        orders_90d=np.round(scores.orders_90d, 3).tolist(),
        next_order_at=[_next_order_at(as_of, d) for d in days.tolist()],
        order_value=[None if math.isnan(v) else round(v, 2) for v in scores.order_value.tolist()],
    )


def _next_order_at(as_of: datetime, days: float) -> datetime | None:
    if not math.isfinite(days) or days > NEXT_ORDER_HORIZON_DAYS:
        return None
    return as_of + timedelta(days=math.ceil(days))


# --- in the worker: one shop, its own connection --------------------------------------------


def refresh_shop(
    database_url: str,
    shop_id: str,
    as_of: datetime,
    fitted_at: datetime,
    not_before: datetime | None = None,
) -> Refreshed | None:
    """Fit one shop and store the result; None when another instance is fitting it, or it
    was fitted after `not_before` (a refresh another instance already did)."""
    with psycopg.connect(dsn(database_url), autocommit=True) as conn:
        repo = FitRepository(conn)
        if not repo.try_lock(shop_id):
            return None
        try:
            last = repo.fitted_at(shop_id)
            if not_before is not None and last is not None and last > not_before:
                return None
            fitted = fit_shop(shop_id, repo.facts(shop_id), as_of, fitted_at)
            changed = repo.save(fitted.fit, fitted.rows)
        finally:
            repo.unlock(shop_id)
    fit = fitted.fit
    return Refreshed(shop_id, fit.status, fitted_at, fit.customers, changed)


def known_shops(database_url: str) -> list[str]:
    with psycopg.connect(dsn(database_url), autocommit=True) as conn:
        return FitRepository(conn).shops()


# --- on the event loop: the schedule --------------------------------------------------------

OnRefreshed = Callable[[Refreshed], Awaitable[None]]


@dataclass
class PredictionRefresher:
    """Every `interval_s`, each shop the scheduler knows is fitted again (unless another
    instance did so within the interval). `on_refreshed` hears of each refresh that changed
    someone's predictions (segment entry is re-evaluated from changed_since)."""

    database_url: str
    clock: Clock
    interval_s: float
    on_refreshed: OnRefreshed | None = None
    executor: Executor | None = None

    async def run(self) -> None:
        """Runs forever under the service's Loops (restarted after an error)."""
        while True:
            await self.refresh_all()
            await self.clock.sleep(self.interval_s)

    async def refresh_all(self) -> list[Refreshed]:
        done: list[Refreshed] = []
        not_before = self.clock.now() - timedelta(seconds=self.interval_s)
        for shop_id in await self._in_worker(known_shops, self.database_url):
            result = await self.refresh(shop_id, not_before=not_before)
            if result is not None:
                done.append(result)
        return done

    async def refresh(
        self, shop_id: str, as_of: datetime | None = None, not_before: datetime | None = None
    ) -> Refreshed | None:
        now = self.clock.now()
        result = await self._in_worker(
            refresh_shop, self.database_url, shop_id, as_of or now, now, not_before
        )
        if result is not None:
            log.info("predictions_refreshed", shop=shop_id, status=result.status,
                     customers=result.customers, changed=result.changed)  # fmt: skip
            if result.changed and self.on_refreshed is not None:
                await self.on_refreshed(result)
        return result

    async def _in_worker(self, fn: Callable[..., _T], *args: object) -> _T:
        if self.executor is None:
            # A process: the fit's Python (optimiser steps, rows) would otherwise contend for
            # the GIL with the timer loop. Spawned, not forked, from a threaded event loop.
            context = multiprocessing.get_context("spawn")
            self.executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


PARENT_CHECK_S = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """In the worker: leave when the scheduler that started it is gone. A worker waits on
    its job queue, whose writing end it holds itself, so a scheduler that was killed (or
    stopped in the middle of a fit) would otherwise leave it running for good."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
