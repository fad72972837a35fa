"""The dispatcher's control endpoint for discount code pools: a shop uploads its own codes.

POST /shops/{shop_id}/coupons with a CSV body (`text/csv`: one code per line, first column;
a `code` header line is skipped), `Authorization: Bearer <admin token>`. Each code is handed
out once; the answer says how many were new and how many remain free.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, SecretStr

from services.dispatcher.adapters.coupons import CouponRepository
from services.dispatcher.coupons import CouponDesk
from services.dispatcher.domain.offers import pool_code_problem
from services.dispatcher.shops import ShopCoupons
from shared.admin_auth import admin_guard
from shared.clock import Clock

MAX_UPLOAD_BYTES = 10_000_000  # ~500,000 codes
MAX_PROBLEMS_SHOWN = 5


class PoolState(BaseModel):
    shop_id: str
    added: int
    already_known: int
    remaining: int


def parse_codes(body: bytes) -> list[str]:
    """The codes of a CSV upload, in order, without duplicates; 422 for anything unusable."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HTTPException(422, "the CSV must be UTF-8") from exc
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
    codes = [row[0].strip() for row in rows]
    if codes and codes[0].lower() == "code":
        codes = codes[1:]
    if not codes:
        raise HTTPException(422, "the CSV holds no codes (one code per line, first column)")
    problems = [p for p in map(pool_code_problem, codes) if p is not None]
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        raise HTTPException(422, f"{len(problems)} unusable code(s), nothing stored: {shown}")
    return list(dict.fromkeys(codes))


def coupon_router(
    repository: CouponRepository,
    desk: CouponDesk,
    shops: Mapping[str, ShopCoupons],
    admin_token: SecretStr | None,
    clock: Clock,
) -> APIRouter:
    router = APIRouter(tags=["coupons"])
    guard = admin_guard(admin_token, "REBOUND_DISPATCHER_ADMIN_TOKEN")

    @router.post(
        "/shops/{shop_id}/coupons", response_model=PoolState, dependencies=[Depends(guard)]
    )
    async def upload_pool(shop_id: str, request: Request) -> PoolState:
        """Add uploaded discount codes to the shop's pool (CSV body, one code per line)."""
        config = shops.get(shop_id)
        if config is None or config.source != "pool":
            raise HTTPException(
                409, f"shop {shop_id} does not use a code pool (set source: pool in coupons)"
            )
        body = await request.body()
        if len(body) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"at most {MAX_UPLOAD_BYTES} bytes per upload")
        codes = parse_codes(body)
        added = await repository.add_to_pool(shop_id, codes, clock.now())
        remaining = (await desk.report_pools([shop_id]))[shop_id]
        return PoolState(
            shop_id=shop_id, added=added, already_known=len(codes) - added, remaining=remaining
        )

    return router
