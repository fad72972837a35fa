"""Control plane of the purchase predictions: per shop the last fit (parameters, when, on how
many customers, how far to trust it) with a summary, per customer what it predicts, and a
refresh on demand."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scheduler.predictions import schemas
from services.scheduler.predictions.repository import P_ALIVE_BUCKETS, PredictionRepository
from services.scheduler.predictions.service import PredictionRefresher


def predictions_router(engine: AsyncEngine, refresher: PredictionRefresher) -> APIRouter:
    router = APIRouter(prefix="/predictions", tags=["predictions"])

    @router.get("/{shop_id}", summary="The shop's last fit and what it predicts in total")
    async def shop(shop_id: str) -> schemas.ShopPredictions:
        async with engine.connect() as conn:
            repo = PredictionRepository(conn)
            fit = await repo.fit(shop_id)
            if fit is None:
                raise HTTPException(404, f"no fit for shop {shop_id!r} yet (POST .../refresh)")
            totals, buckets = await repo.summary(shop_id)
        return schemas.ShopPredictions(fit=_fit(fit), summary=_summary(totals, buckets))

    @router.post("/{shop_id}/refresh", summary="Fit the shop now (in a worker process)")
    async def refresh(shop_id: str) -> schemas.Refreshed:
        done = await refresher.refresh(shop_id)
        if done is None:
            raise HTTPException(409, f"shop {shop_id!r} is being fitted by another instance")
        async with engine.connect() as conn:
            fit = await PredictionRepository(conn).fit(shop_id)
        assert fit is not None
        return schemas.Refreshed(fit=_fit(fit), changed=done.changed)

    @router.get("/{shop_id}/customers", summary="Customers' predictions, by P(alive)")
    async def customers(
        shop_id: str,
        order: Literal["p_alive_asc", "p_alive_desc"] = "p_alive_asc",
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> list[schemas.CustomerPrediction]:
        async with engine.connect() as conn:
            rows = await PredictionRepository(conn).customers(
                shop_id, limit, offset, order == "p_alive_asc"
            )
        return [_customer(r) for r in rows]

    @router.get("/{shop_id}/customers/{customer_key}", summary="One customer's predictions")
    async def customer(shop_id: str, customer_key: str) -> schemas.CustomerPrediction:
        async with engine.connect() as conn:
            row = await PredictionRepository(conn).customer(shop_id, customer_key)
        if row is None:
            raise HTTPException(404, f"no predictions for {customer_key!r} in shop {shop_id!r}")
        return _customer(row)

    return router


def _fit(row: dict[str, Any]) -> schemas.Fit:
    bgnbd = (
        None
        if row["r"] is None
        else schemas.BgNbdParams(r=row["r"], alpha=row["alpha"], a=row["a"], b=row["b"])
    )
    spend = (
        None
        if row["p"] is None
        else schemas.GammaGammaParams(p=row["p"], q=row["q"], gamma=row["gamma"])
    )
    fields = {k: row[k] for k in schemas.Fit.model_fields if k in row}
    return schemas.Fit(**fields, bgnbd=bgnbd, gamma_gamma=spend)


def _summary(totals: dict[str, Any], buckets: list[int]) -> schemas.Summary:
    width = 1.0 / P_ALIVE_BUCKETS
    return schemas.Summary(
        customers=totals["customers"],
        expected_orders_30d=round(float(totals["orders_30d"]), 1),
        expected_orders_90d=round(float(totals["orders_90d"]), 1),
        expected_revenue_30d=_money(totals["revenue_30d"]),
        expected_revenue_90d=_money(totals["revenue_90d"]),
        p_alive=[
            schemas.Bucket(
                p_alive_from=round(i * width, 2), p_alive_to=round((i + 1) * width, 2), customers=n
            )
            for i, n in enumerate(buckets)
        ],
    )


def _money(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)


def _customer(row: dict[str, Any]) -> schemas.CustomerPrediction:
    return schemas.CustomerPrediction(
        customer_key=row["customer_key"],
        as_of=row["as_of"],
        p_alive=row["p_alive"],
        expected_orders_30d=row["orders_30d"],
        expected_orders_90d=row["orders_90d"],
        next_order_at=row["next_order_at"],
        expected_order_value=row["order_value"],
        changed_at=row["changed_at"],
    )
