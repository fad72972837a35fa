"""Discount codes for a batch of requests: issued once per request key, set-based.

Per batch: one statement reads the codes already issued (a redelivery or a re-render shows the
same code), one inserts the new generated codes (drawn again on the rare collision), one per
shop hands out pool codes. Generated codes of a Shopify shop with a token are created there
before any mail shows them. What cannot be issued (empty pool, Shopify refused, bad terms)
comes back as the reason the message fails; an empty code is never mailed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.dispatcher.adapters.coupons import CouponRepository, Wanted
from services.dispatcher.adapters.shopify_discounts import ShopifyDiscounts, discount_input
from services.dispatcher.domain.offers import (
    Coupon,
    OfferTerms,
    OfferView,
    discount_terms,
    new_code,
    offer_view,
)
from services.dispatcher.shops import ShopCoupons
from shared import metrics
from shared.events import (
    COUPON_ISSUED,
    CloudEvent,
    CouponIssued,
    InvalidEvent,
    MessageRequest,
    make_event,
    stable_event_id,
)
from shared.kafka import Publisher
from shared.logging import get_logger

SERVICE = "dispatcher"
SOURCE = "rebound/dispatcher"
MAX_DRAWS = 5  # a collision of two fresh 59-bit codes is already a one-in-a-quintillion event
SHOPIFY_CONCURRENCY = 4  # Shopify's Admin API throttles per app and shop
log = get_logger(__name__)

Issued = OfferView | str  # the offer to show, or why the message must fail


@dataclass(frozen=True)
class _Ask:
    request: MessageRequest
    terms: OfferTerms

    def wanted(self, now: datetime, code: str = "") -> Wanted:
        r = self.request
        expires = self.terms.expires_at(now)
        return Wanted(
            r.request_key, r.shop_id, r.customer_key, r.journey_id, r.step_id, expires, code
        )


def empty_pool_reason(shop_id: str) -> str:
    return (
        f"no discount code left in the pool of shop {shop_id}: upload more codes "
        f"(POST /shops/{shop_id}/coupons); the mail was not sent without a code"
    )


class CouponDesk:
    def __init__(
        self,
        repository: CouponRepository,
        shops: Mapping[str, ShopCoupons],
        connectors: Mapping[str, ShopifyDiscounts],
        publisher: Publisher | None,
        topic: str,
    ) -> None:
        self._repo = repository
        self._shops = shops
        self._connectors = connectors
        self._publisher = publisher
        self._topic = topic

    def _config(self, shop_id: str) -> ShopCoupons:
        return self._shops.get(shop_id) or ShopCoupons(shop_id=shop_id)

    async def issue(self, requests: Sequence[MessageRequest], now: datetime) -> dict[str, Issued]:
        """For each request with a discount offer: the offer to render, or why it fails."""
        asks, found = self._asks(requests)
        if not asks:
            return found
        known = await self._repo.issued([a.request.request_key for a in asks])
        missing = [a for a in asks if a.request.request_key not in known]
        fresh = await self._generate([a for a in missing if not self._is_pool(a)], now)
        fresh.update(await self._from_pools([a for a in missing if self._is_pool(a)], now))
        coupons = {key: coupon for key, (coupon, _) in known.items()} | fresh
        unconfirmed = [a for a in asks if self._needs_platform(a, coupons, known)]
        refused = await self._create_on_platform(unconfirmed, coupons, now)
        issued: list[tuple[_Ask, Coupon]] = []
        for ask in asks:
            key = ask.request.request_key
            coupon = coupons.get(key)
            if key in refused or coupon is None:
                found[key] = refused.get(key) or empty_pool_reason(ask.request.shop_id)
                continue
            found[key] = offer_view(ask.terms, coupon.code, coupon.expires_at)
            issued.append((ask, coupon))
        await self._announce(issued)
        return found

    def _asks(self, requests: Sequence[MessageRequest]) -> tuple[list[_Ask], dict[str, Issued]]:
        asks: list[_Ask] = []
        found: dict[str, Issued] = {}
        for request in requests:
            cart = request.context.get("cart")
            currency = cart.get("currency") if isinstance(cart, dict) else None
            try:
                terms = discount_terms(request.context.get("offer"), currency)
            except InvalidEvent as exc:
                found[request.request_key] = str(exc)
                continue
            if terms is None:
                continue
            if terms.code is not None:  # a fixed code the journey names: not issued
                found[request.request_key] = offer_view(
                    terms, terms.code, terms.expires_at(request.requested_at)
                )
                continue
            asks.append(_Ask(request, terms))
        return asks, found

    def _prefix(self, ask: _Ask) -> str:
        return self._config(ask.request.shop_id).code_prefix

    def _is_pool(self, ask: _Ask) -> bool:
        return self._config(ask.request.shop_id).source == "pool"

    async def _generate(self, asks: list[_Ask], now: datetime) -> dict[str, Coupon]:
        """Draw codes until each request has one (a collision only redraws that request)."""
        issued: dict[str, Coupon] = {}
        for _ in range(MAX_DRAWS):
            if not asks:
                break
            wanted = [a.wanted(now, new_code(self._prefix(a))) for a in asks]
            inserted = await self._repo.insert_generated(wanted, now)
            for w in wanted:
                if w.request_key in inserted:
                    issued[w.request_key] = Coupon(
                        w.request_key, w.shop_id, w.code, "generated", w.expires_at, now
                    )
            metrics.COUPONS_ISSUED.labels(SERVICE, "generated").inc(len(inserted))
            asks = await self._still_without(
                [a for a in asks if a.request.request_key not in inserted], issued
            )
        return issued

    async def _still_without(self, asks: list[_Ask], issued: dict[str, Coupon]) -> list[_Ask]:
        """Of requests not inserted: another dispatcher may have issued theirs meanwhile."""
        if not asks:
            return []
        known = await self._repo.issued([a.request.request_key for a in asks])
        issued.update({key: coupon for key, (coupon, _) in known.items()})
        return [a for a in asks if a.request.request_key not in known]

    async def _from_pools(self, asks: list[_Ask], now: datetime) -> dict[str, Coupon]:
        by_shop: dict[str, list[_Ask]] = {}
        for ask in asks:
            by_shop.setdefault(ask.request.shop_id, []).append(ask)
        issued: dict[str, Coupon] = {}
        for shop_id, shop_asks in by_shop.items():
            taken = await self._repo.take_from_pool(
                shop_id, [a.wanted(now) for a in shop_asks], now
            )
            issued.update({c.request_key: c for c in taken})
            metrics.COUPONS_ISSUED.labels(SERVICE, "pool").inc(len(taken))
            if len(taken) < len(shop_asks):
                log.error("coupon_pool_empty", shop_id=shop_id, short=len(shop_asks) - len(taken))
        if by_shop:
            await self.report_pools(list(by_shop))
        return issued

    async def report_pools(self, shop_ids: list[str]) -> dict[str, int]:
        """Set the remaining-codes gauge and warn about pools running low."""
        remaining = await self._repo.remaining(shop_ids)
        for shop_id, left in remaining.items():
            metrics.COUPON_POOL_REMAINING.labels(shop_id).set(left)
            if left < self._config(shop_id).warn_below:
                log.warning("coupon_pool_low", shop_id=shop_id, remaining=left)
        return remaining

    def _needs_platform(
        self, ask: _Ask, coupons: Mapping[str, Coupon], known: Mapping[str, tuple[Coupon, bool]]
    ) -> bool:
        key = ask.request.request_key
        coupon = coupons.get(key)
        confirmed = key in known and known[key][1]
        return (
            coupon is not None
            and coupon.source == "generated"
            and not confirmed
            and ask.request.shop_id in self._connectors
        )

    async def _create_on_platform(
        self, asks: list[_Ask], coupons: Mapping[str, Coupon], now: datetime
    ) -> dict[str, str]:
        """Create the codes in Shopify, a few at a time; returns key -> why it was refused."""
        if not asks:
            return {}
        gate = asyncio.Semaphore(SHOPIFY_CONCURRENCY)

        async def create(ask: _Ask) -> str | None:
            r = ask.request
            coupon = coupons[r.request_key]
            title = f"Rebound {r.journey_id}/{r.step_id} {coupon.code}"
            async with gate:
                return await self._connectors[r.shop_id].create(
                    discount_input(coupon, ask.terms, r.customer_key, title)
                )

        answers = await asyncio.gather(*(create(a) for a in asks))
        refused = {a.request.request_key: why for a, why in zip(asks, answers, strict=True) if why}
        for key, why in refused.items():
            log.warning("coupon_refused_by_platform", request_key=key, reason=why)
        confirmed = [a.request.request_key for a in asks if a.request.request_key not in refused]
        await self._repo.confirm(confirmed, now)
        return refused

    async def _announce(self, issued: list[tuple[_Ask, Coupon]]) -> None:
        """coupon.issued, once per batch; the id is stable, so a redelivery dedupes."""
        if self._publisher is None or not issued:
            return
        await self._publisher.publish_many(
            [(self._topic, a.request.customer_key, coupon_event(a, c)) for a, c in issued]
        )


def coupon_event(ask: _Ask, coupon: Coupon) -> CloudEvent:
    r, terms = ask.request, ask.terms
    applies = terms.applies_to
    data = CouponIssued(
        request_key=r.request_key,
        shop_id=r.shop_id,
        customer_key=r.customer_key,
        journey_id=r.journey_id,
        step_id=r.step_id,
        code=coupon.code,
        source=coupon.source,
        value=terms.value,
        currency=terms.currency,
        applies_to="order" if applies == "order" else applies.collections,
        minimum_order=terms.minimum_order,
        issued_at=coupon.issued_at,
        expires_at=coupon.expires_at,
    )
    return make_event(
        type=COUPON_ISSUED,
        source=SOURCE,
        id=stable_event_id("coupon", r.request_key),
        time=coupon.issued_at,
        subject=r.customer_key,
        shop_id=r.shop_id,
        data=data,
    )
