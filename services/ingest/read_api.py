"""Ingest's read API for the other services: recommended products per customer.

Behind the admin token (REBOUND_INGEST_ADMIN_TOKEN): it reveals what customers bought.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.catalog_repository import CatalogRepository
from shared.admin_auth import admin_guard
from shared.clock import Clock
from shared.recommendations import Recommendations, RecommendationsAsked, RecommendedProduct


def read_router(
    engine: Callable[[], AsyncEngine], clock: Clock, token: SecretStr | None
) -> APIRouter:
    guard = admin_guard(token, "REBOUND_INGEST_ADMIN_TOKEN")
    router = APIRouter(tags=["read API"], dependencies=[Depends(guard)])

    @router.post(
        "/customers/recommendations",
        summary="Available products of each customer's last purchased categories they have "
        "not bought, best sellers (units in 30 days) first",
    )
    async def recommendations(asked: RecommendationsAsked) -> dict[str, Any]:
        async with engine().connect() as conn:
            found = await CatalogRepository(conn).recommendations_for(
                asked.customer_keys, clock.now(), asked.limit
            )
        products = {
            key: [
                RecommendedProduct(
                    product_id=r.product_id,
                    title=r.title,
                    category=r.category,
                    url=r.url,
                    image_url=r.image_url,
                    price=r.price,
                )
                for r in recs
            ]
            for key, recs in found.items()
        }
        return Recommendations(products=products).model_dump(mode="json")

    return router
