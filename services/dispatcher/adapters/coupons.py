"""dispatcher.coupons: discount codes issued per request key, and the shops' uploaded pools.

Every statement covers a batch: codes issued for many requests at once (`unnest`), a shop's
pool handed out in one `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`, so two
dispatchers never hand out one code twice and never wait for each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatcher.adapters.repository import driver_connection
from services.dispatcher.domain.offers import Coupon
from shared.errors import Transient

_COUPON_COLUMNS = "request_key, shop_id, code, source, expires_at, issued_at"


@dataclass(frozen=True)
class Wanted:
    """A request that needs a code: who gets it, from which step, until when."""

    request_key: str
    shop_id: str
    customer_key: str
    journey_id: str
    step_id: str
    expires_at: datetime
    code: str = ""  # generated codes only


# -- name: issued -- the codes these request keys already have
_ISSUED = f"""
SELECT {_COUPON_COLUMNS}, platform_confirmed_at FROM dispatcher.coupons
WHERE request_key = ANY($1::text[])
"""

# -- name: insert_generated -- new codes; a request key that has one, or a code another
# request took, is skipped (the caller reads the first back and draws again for the second)
_INSERT_GENERATED = """
INSERT INTO dispatcher.coupons (shop_id, code, source, request_key, customer_key, journey_id,
    step_id, issued_at, expires_at)
SELECT t.shop, t.code, 'generated', t.k, t.customer, t.journey, t.step, $8, t.expires
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::timestamptz[]) AS t(k, shop, code, customer, journey, step, expires)
ON CONFLICT DO NOTHING
RETURNING request_key
"""

# -- name: take_from_pool -- one free code of the shop per request, oldest upload first;
# codes another dispatcher is handing out right now are skipped, not waited for
_TAKE_FROM_POOL = f"""
WITH free AS (
    SELECT f.code, row_number() OVER (ORDER BY f.uploaded_at, f.code) AS n
    FROM (SELECT code, uploaded_at FROM dispatcher.coupons
          WHERE shop_id = $1 AND request_key IS NULL
          ORDER BY uploaded_at, code LIMIT cardinality($2::text[])
          FOR UPDATE SKIP LOCKED) f
), wanted AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
        WITH ORDINALITY AS w(k, customer, journey, step, expires, n)
    WHERE NOT EXISTS (SELECT 1 FROM dispatcher.coupons c WHERE c.request_key = w.k)
)
UPDATE dispatcher.coupons c SET request_key = wanted.k, customer_key = wanted.customer,
    journey_id = wanted.journey, step_id = wanted.step, issued_at = $7,
    expires_at = wanted.expires
FROM free JOIN wanted USING (n)
WHERE c.shop_id = $1 AND c.code = free.code
RETURNING {", ".join("c." + c.strip() for c in _COUPON_COLUMNS.split(","))}
"""

# -- name: remaining -- free pool codes per shop
_REMAINING = """
SELECT shop_id, count(*) FROM dispatcher.coupons
WHERE shop_id = ANY($1::text[]) AND request_key IS NULL GROUP BY shop_id
"""

# -- name: add_to_pool -- uploaded codes; one already known (uploaded or issued) is skipped
_ADD_TO_POOL = """
INSERT INTO dispatcher.coupons (shop_id, code, source, uploaded_at)
SELECT $1, code, 'pool', $3 FROM unnest($2::text[]) AS code
ON CONFLICT DO NOTHING
RETURNING code
"""

# -- name: confirm -- the shop platform created these codes
_CONFIRM = """
UPDATE dispatcher.coupons SET platform_confirmed_at = $2 WHERE request_key = ANY($1::text[])
"""


def _coupon(row: Any) -> Coupon:
    return Coupon(
        request_key=row["request_key"],
        shop_id=row["shop_id"],
        code=row["code"],
        source=row["source"],
        expires_at=row["expires_at"],
        issued_at=row["issued_at"],
    )


class CouponRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def issued(self, request_keys: Sequence[str]) -> dict[str, tuple[Coupon, bool]]:
        """key -> (its coupon, whether the shop platform confirmed it)."""
        if not request_keys:
            return {}
        async with driver_connection(self._engine) as driver:
            rows = await driver.fetch(_ISSUED, list(request_keys))
        return {
            r["request_key"]: (_coupon(r), r["platform_confirmed_at"] is not None) for r in rows
        }

    async def insert_generated(self, wanted: Sequence[Wanted], now: datetime) -> set[str]:
        """Returns the request keys whose code was inserted."""
        if not wanted:
            return set()
        columns = [
            [w.request_key for w in wanted],
            [w.shop_id for w in wanted],
            [w.code for w in wanted],
            [w.customer_key for w in wanted],
            [w.journey_id for w in wanted],
            [w.step_id for w in wanted],
            [w.expires_at for w in wanted],
        ]
        async with driver_connection(self._engine) as driver:
            rows = await driver.fetch(_INSERT_GENERATED, *columns, now)
        return {row[0] for row in rows}

    async def take_from_pool(
        self, shop_id: str, wanted: Sequence[Wanted], now: datetime
    ) -> list[Coupon]:
        """As many of `wanted` as the pool has codes for, in order; the rest get none."""
        if not wanted:
            return []
        columns = [
            [w.request_key for w in wanted],
            [w.customer_key for w in wanted],
            [w.journey_id for w in wanted],
            [w.step_id for w in wanted],
            [w.expires_at for w in wanted],
        ]
        async with driver_connection(self._engine) as driver:
            try:
                rows = await driver.fetch(_TAKE_FROM_POOL, shop_id, *columns, now)
            except asyncpg.UniqueViolationError as exc:
                # Two dispatchers issuing for one request key at once (a partition move): the
                # unique key refuses the second; the batch is retried and reads the first.
                raise Transient(f"coupon issued concurrently: {exc}") from exc
        return [_coupon(r) for r in rows]

    async def remaining(self, shop_ids: Sequence[str]) -> dict[str, int]:
        async with driver_connection(self._engine) as driver:
            rows = await driver.fetch(_REMAINING, list(shop_ids))
        found = {row[0]: int(row[1]) for row in rows}
        return {shop: found.get(shop, 0) for shop in shop_ids}

    async def add_to_pool(self, shop_id: str, codes: Sequence[str], now: datetime) -> int:
        """How many of the codes were new."""
        async with driver_connection(self._engine) as driver:
            rows = await driver.fetch(_ADD_TO_POOL, shop_id, list(codes), now)
        return len(rows)

    async def confirm(self, request_keys: Sequence[str], now: datetime) -> None:
        if request_keys:
            async with driver_connection(self._engine) as driver:
                await driver.execute(_CONFIRM, list(request_keys), now)
