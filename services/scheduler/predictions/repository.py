"""All SQL of the predictions. The fit's side (FitRepository) runs in a worker process on its
own blocking psycopg connection, so a fit never holds the event loop or its pool; the
control plane and the facts read through PredictionRepository on the caller's connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.predictions.model import Floats

P_ALIVE_BUCKETS = 10


@dataclass(frozen=True)
class FactsColumns:
    """One shop's customers as aligned columns (times in epoch seconds)."""

    customers: list[str]
    first_order_s: Floats
    last_order_s: Floats
    purchase_days: Floats
    spent: Floats
    first_day_spent: Floats


@dataclass(frozen=True)
class FitRow:
    shop_id: str
    as_of: datetime
    fitted_at: datetime
    fit_seconds: float
    customers: int
    repeat_buyers: int
    repeat_purchases: int
    status: str
    note: str
    bgnbd: tuple[float, float, float, float] | None
    gamma_gamma: tuple[float, float, float] | None


@dataclass(frozen=True)
class PredictionRows:
    """Rounded as stored, so a refresh that moves a figure by noise changes nothing."""

    customers: Sequence[str]
    p_alive: Sequence[float]
    orders_30d: Sequence[float]
    orders_90d: Sequence[float]
    next_order_at: Sequence[datetime | None]
    order_value: Sequence[float | None]


def dsn(database_url: str) -> str:
    """The service's SQLAlchemy URL as a libpq connection string."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


class FitRepository:
    """On an autocommit psycopg connection: each write is its own explicit transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def shops(self) -> list[str]:
        return [r[0] for r in self._conn.execute(_SHOPS).fetchall()]

    def try_lock(self, shop_id: str) -> bool:
        """One fit per shop at a time across scheduler instances (a session lock)."""
        row = self._conn.execute(_TRY_LOCK, (shop_id,)).fetchone()
        return bool(row and row[0])

    def unlock(self, shop_id: str) -> None:
        self._conn.execute(_UNLOCK, (shop_id,))

    def fitted_at(self, shop_id: str) -> datetime | None:
        row = self._conn.execute(_FITTED_AT, (shop_id,)).fetchone()
        return None if row is None else row[0]

    def facts(self, shop_id: str) -> FactsColumns:
        rows = self._conn.execute(_FACTS, (shop_id,)).fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [()] * 6
        arrays = [np.asarray(c, dtype=np.float64) for c in columns[1:]]
        return FactsColumns([str(k) for k in columns[0]], *arrays)

    def save(self, fit: FitRow, rows: PredictionRows | None) -> int:
        """The fit and its predictions in one transaction; the shop's customers without a
        prediction now lose theirs. Returns how many customers' predictions changed."""
        with self._conn.transaction():
            self._conn.execute(_SAVE_FIT, _fit_params(fit))
            self._conn.execute(_NEW_TABLE)
            if rows is not None:
                self._copy(rows)
            changed = self._conn.execute(
                _UPSERT, {"shop": fit.shop_id, "as_of": fit.as_of, "now": fit.fitted_at}
            ).rowcount
            gone = self._conn.execute(_FORGET_OTHERS, (fit.shop_id,)).rowcount
            return max(changed, 0) + max(gone, 0)

    def _copy(self, rows: PredictionRows) -> None:
        with self._conn.cursor().copy(_COPY) as copy:
            for row in zip(
                rows.customers,
                rows.p_alive,
                rows.orders_30d,
                rows.orders_90d,
                rows.next_order_at,
                rows.order_value,
                strict=True,
            ):
                copy.write_row(row)


def _fit_params(fit: FitRow) -> dict[str, Any]:
    r, alpha, a, b = fit.bgnbd or (None, None, None, None)
    p, q, gamma = fit.gamma_gamma or (None, None, None)
    return {
        "shop": fit.shop_id, "as_of": fit.as_of, "fitted_at": fit.fitted_at,
        "fit_seconds": fit.fit_seconds, "customers": fit.customers,
        "repeat_buyers": fit.repeat_buyers, "repeat_purchases": fit.repeat_purchases,
        "status": fit.status, "note": fit.note, "r": r, "alpha": alpha, "a": a, "b": b,
        "p": p, "q": q, "gamma": gamma,
    }  # fmt: skip


class PredictionRepository:
    """Reads for the control plane and the facts, on the caller's connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def fit(self, shop_id: str) -> dict[str, Any] | None:
        row = (await self._conn.execute(text(_FIT), {"shop": shop_id})).mappings().first()
        return None if row is None else dict(row)

    async def fits(self) -> list[dict[str, Any]]:
        """Every shop's last fit, by shop."""
        return [dict(r) for r in (await self._conn.execute(text(_FITS))).mappings()]

    async def summary(self, shop_id: str) -> tuple[dict[str, Any], list[int]]:
        totals = (await self._conn.execute(text(_SUMMARY), {"shop": shop_id})).mappings().one()
        counts = [0] * P_ALIVE_BUCKETS
        for bucket, n in await self._conn.execute(
            text(_BUCKETS), {"shop": shop_id, "n": P_ALIVE_BUCKETS}
        ):
            counts[min(int(bucket), P_ALIVE_BUCKETS) - 1] += int(n)
        return dict(totals), counts

    async def customers(
        self, shop_id: str, limit: int, offset: int, lowest_p_alive_first: bool
    ) -> list[dict[str, Any]]:
        sql = _PAGE_ASC if lowest_p_alive_first else _PAGE_DESC
        params = {"shop": shop_id, "limit": limit, "offset": offset}
        return [dict(r) for r in (await self._conn.execute(text(sql), params)).mappings()]

    async def customer(self, shop_id: str, key: str) -> dict[str, Any] | None:
        params = {"shop": shop_id, "keys": [key]}
        row = (await self._conn.execute(text(_ONE), params)).mappings().first()
        return None if row is None else dict(row)

    async def facts_for(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Per customer the figures segment and journey conditions see on `profile`
        (domain/facts.py build_facts(predictions=...)): one statement per batch."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        result = await self._conn.execute(text(_FACTS_FOR), {"keys": wanted})
        return {r["customer_key"]: prediction_facts(r) for r in result.mappings()}

    async def changed_since(self, shop_id: str, since: datetime) -> list[str]:
        """Customers whose predictions a refresh changed at or after `since` (a refresh's
        fitted_at): whose segment membership may have moved."""
        params = {"shop": shop_id, "since": since}
        return [r[0] for r in await self._conn.execute(text(_CHANGED), params)]

    async def changes_since(
        self, shop_id: str, since: datetime
    ) -> list[tuple[str, dict[str, Any] | None]]:
        """changed_since with each customer's predictions before that change, as facts
        (None: the change gave them their first)."""
        params = {"shop": shop_id, "since": since}
        rows = await self._conn.execute(text(_CHANGES), params)
        return [(key, _previous_facts(previous)) for key, previous in rows]


def _previous_facts(previous: dict[str, Any] | None) -> dict[str, Any] | None:
    if previous is None:
        return None
    at = {k: None if previous[k] is None else datetime.fromisoformat(previous[k])
          for k in ("as_of", "next_order_at")}  # fmt: skip
    return prediction_facts({**previous, **at})


def prediction_facts(row: Any) -> dict[str, Any]:
    return {
        "p_alive": row["p_alive"],
        "expected_orders_30d": row["orders_30d"],
        "expected_orders_90d": row["orders_90d"],
        "predicted_next_order_at": row["next_order_at"],
        "expected_order_value": row["order_value"],
        "predictions_as_of": row["as_of"],
    }


_SHOPS = "SELECT DISTINCT shop_id FROM scheduler.customers ORDER BY shop_id"
_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended('predictions:' || %s, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended('predictions:' || %s, 0))"
_FITTED_AT = "SELECT fitted_at FROM scheduler.prediction_fits WHERE shop_id = %s"

# Profiles stored before purchase days were published count each order as a purchase day and
# their average order as the first day's spend, until their next activity brings the facts.
_FACTS = """
    SELECT customer_key,
        extract(epoch FROM (profile->>'first_order_at')::timestamptz),
        extract(epoch FROM coalesce((profile->>'last_order_at')::timestamptz,
            (profile->>'first_order_at')::timestamptz)),
        coalesce((profile->>'purchase_days')::int, (profile->>'orders_count')::int, 0),
        coalesce((profile->>'total_spent')::float8, 0),
        coalesce((profile->>'first_day_spent')::float8,
            (profile->>'total_spent')::float8 / nullif((profile->>'orders_count')::int, 0), 0)
    FROM scheduler.customers
    WHERE shop_id = %s AND profile->>'first_order_at' IS NOT NULL
    ORDER BY customer_key
"""

_SAVE_FIT = """
    INSERT INTO scheduler.prediction_fits (shop_id, as_of, fitted_at, fit_seconds, customers,
        repeat_buyers, repeat_purchases, status, note, r, alpha, a, b, p, q, gamma)
    VALUES (%(shop)s, %(as_of)s, %(fitted_at)s, %(fit_seconds)s, %(customers)s,
        %(repeat_buyers)s, %(repeat_purchases)s, %(status)s, %(note)s, %(r)s, %(alpha)s, %(a)s,
        %(b)s, %(p)s, %(q)s, %(gamma)s)
    ON CONFLICT (shop_id) DO UPDATE SET as_of = excluded.as_of, fitted_at = excluded.fitted_at,
        fit_seconds = excluded.fit_seconds, customers = excluded.customers,
        repeat_buyers = excluded.repeat_buyers, repeat_purchases = excluded.repeat_purchases,
        status = excluded.status, note = excluded.note, r = excluded.r, alpha = excluded.alpha,
        a = excluded.a, b = excluded.b, p = excluded.p, q = excluded.q, gamma = excluded.gamma
"""

_NEW_TABLE = """
    CREATE TEMP TABLE new_predictions (customer_key text PRIMARY KEY, p_alive float8,
        orders_30d float8, orders_90d float8, next_order_at timestamptz, order_value float8)
    ON COMMIT DROP
"""
_COPY = """COPY new_predictions (customer_key, p_alive, orders_30d, orders_90d, next_order_at,
    order_value) FROM STDIN"""

# Only the rows whose figures moved are written (and counted): `changed_at` says when, and
# `previous` what they were (a first prediction has none).
_UPSERT = """
    INSERT INTO scheduler.predictions AS old (customer_key, shop_id, as_of, p_alive, orders_30d,
        orders_90d, next_order_at, order_value, changed_at)
    SELECT customer_key, %(shop)s, %(as_of)s, p_alive, orders_30d, orders_90d, next_order_at,
        order_value, %(now)s
    FROM new_predictions
    ON CONFLICT (customer_key) DO UPDATE SET shop_id = excluded.shop_id, as_of = excluded.as_of,
        p_alive = excluded.p_alive, orders_30d = excluded.orders_30d,
        orders_90d = excluded.orders_90d, next_order_at = excluded.next_order_at,
        order_value = excluded.order_value, changed_at = excluded.changed_at,
        previous = jsonb_build_object('as_of', old.as_of, 'p_alive', old.p_alive,
            'orders_30d', old.orders_30d, 'orders_90d', old.orders_90d,
            'next_order_at', old.next_order_at, 'order_value', old.order_value)
    WHERE (old.shop_id, old.p_alive, old.orders_30d, old.orders_90d, old.next_order_at,
        old.order_value) IS DISTINCT FROM (excluded.shop_id, excluded.p_alive,
        excluded.orders_30d, excluded.orders_90d, excluded.next_order_at, excluded.order_value)
"""

_FORGET_OTHERS = """
    DELETE FROM scheduler.predictions p WHERE p.shop_id = %s
        AND NOT EXISTS (SELECT 1 FROM new_predictions n WHERE n.customer_key = p.customer_key)
"""

_FIT = "SELECT * FROM scheduler.prediction_fits WHERE shop_id = :shop"
_FITS = "SELECT * FROM scheduler.prediction_fits ORDER BY shop_id"

_SUMMARY = """
    SELECT count(*) AS customers, coalesce(sum(orders_30d), 0) AS orders_30d,
        coalesce(sum(orders_90d), 0) AS orders_90d,
        sum(orders_30d * order_value) AS revenue_30d, sum(orders_90d * order_value) AS revenue_90d
    FROM scheduler.predictions WHERE shop_id = :shop
"""
_BUCKETS = """
    SELECT width_bucket(p_alive, 0, 1, :n), count(*)
    FROM scheduler.predictions WHERE shop_id = :shop GROUP BY 1
"""
_COLUMNS = """customer_key, as_of, p_alive, orders_30d, orders_90d, next_order_at, order_value,
    changed_at"""
_PAGE_ASC = f"""SELECT {_COLUMNS} FROM scheduler.predictions WHERE shop_id = :shop
    ORDER BY p_alive, customer_key LIMIT :limit OFFSET :offset"""
_PAGE_DESC = f"""SELECT {_COLUMNS} FROM scheduler.predictions WHERE shop_id = :shop
    ORDER BY p_alive DESC, customer_key LIMIT :limit OFFSET :offset"""
_ONE = f"""SELECT {_COLUMNS} FROM scheduler.predictions
    WHERE shop_id = :shop AND customer_key = ANY(:keys)"""
_FACTS_FOR = f"SELECT {_COLUMNS} FROM scheduler.predictions WHERE customer_key = ANY(:keys)"
_CHANGED = """SELECT customer_key FROM scheduler.predictions
    WHERE shop_id = :shop AND changed_at >= :since ORDER BY customer_key"""
_CHANGES = """SELECT customer_key, previous FROM scheduler.predictions
    WHERE shop_id = :shop AND changed_at >= :since ORDER BY customer_key"""
