"""Conversions: each order placed is attributed to the message that last touched the customer
(a click within the click window, a human open within the open window, per shop), once. An
order that used a message's own discount code is that message's conversion, whatever the
window (the codes come from coupon.issued on engagement.results, see CouponsConsumer).

It reads ingest's own customer.activity (the order is in the facts by then), records the
conversion, and publishes message.converted.v1 to engagement.results and an activity of that
kind, so a journey can branch on last_message.converted. Republished on redelivery, like all
of ingest's output; the ids are stable, so consumers dedupe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.engagement_repository import EngagementRepository
from services.ingest.adapters.facts_repository import FactsRepository
from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain.customer_facts import FactsSettings
from services.ingest.domain.engagement import (
    Order,
    Touch,
    Windows,
    activity,
    last_touch,
    recovered_by_lines,
    recovered_cart,
    redemption,
)
from services.ingest.order_facts import SettingsFor
from services.ingest.profiles import grown_profiles
from shared import events as ev
from shared.clock import Clock, SystemClock
from shared.kafka import Publisher, Record
from shared.logging import get_logger

SOURCE_ATTRIBUTION = "rebound/ingest/attribution"
log = get_logger(__name__)


@dataclass(frozen=True)
class Topics:
    activity: str
    results: str


# Every activity of an order placed names its kind; the other nine in ten are not decoded.
_ORDER_PLACED_BYTES = ev.ORDER_PLACED.encode()


def placed_order(raw: bytes | None) -> ev.Activity | None:
    """The activity of an order placed; anything else on the topic is not ours to read (the
    scheduler, which reads all of it, dead-letters what is malformed)."""
    if raw is not None and _ORDER_PLACED_BYTES not in raw:
        return None
    event = ev.decode(raw)
    data = event.data
    if event.type != ev.CUSTOMER_ACTIVITY or data.get("kind") != ev.ORDER_PLACED:
        return None
    found = ev.payload(event, ev.Activity)
    return found if found.order_id and found.order_total is not None else None


class AttributionConsumer:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        topics: Topics,
        windows: Mapping[str, Windows],
        clock: Clock | None = None,
        settings_for: SettingsFor | None = None,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._topics = topics
        self._windows = windows
        self._clock = clock or SystemClock()
        self._settings_for = settings_for or (lambda _shop: FactsSettings())

    def windows(self, shop_id: str) -> Windows:
        return self._windows.get(shop_id, Windows())

    async def handle(self, batch: list[Record]) -> None:
        orders: list[ev.Activity] = []
        for record in batch:
            try:
                found = placed_order(record.value)
            except ev.InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
                continue
            if found is not None:
                orders.append(found)
        if orders:
            await self._publisher.publish_many(await self.attribute(orders))

    async def attribute(
        self, placed: Sequence[ev.Activity]
    ) -> list[tuple[str, str, ev.CloudEvent]]:
        ids = list({(a.profile.shop_id, str(a.order_id)): a for a in placed})
        by_id = {(a.profile.shop_id, str(a.order_id)): a for a in placed}
        async with self._engine.begin() as conn:
            repo = EngagementRepository(conn)
            stored = await repo.orders(ids)
            orders = [_order(by_id[key], stored.get(key)) for key in ids]
            since = min(o.placed_at for o in orders) - max(
                max(self.windows(o.shop_id).click, self.windows(o.shop_id).open) for o in orders
            )
            touched = await repo.touched_messages({o.customer_key for o in orders}, since)
            used = await repo.coupons_used(
                [
                    (o.shop_id, code)
                    for o in orders
                    for code in by_id[o.shop_id, o.order_id].discount_codes
                ]
            )
            touches: list[tuple[Order, Touch, datetime]] = []
            for order in orders:
                codes = by_id[order.shop_id, order.order_id].discount_codes
                messages = touched.get(order.customer_key, [])
                touch = redemption(codes, used.get(order.shop_id, []), order.placed_at)
                if touch is None:
                    touch = last_touch(messages, order.placed_at, self.windows(order.shop_id))
                if touch is None:
                    continue
                sent_at = next(
                    (m.sent_at for m in messages if m.request_key == touch.request_key), touch.at
                )
                touches.append((order, touch, sent_at))
                if touch.late:
                    log.warning("late_redemption", order_id=order.order_id, code=touch.code)
            await repo.record_conversions(await _with_carts(repo, touches, stored))
            conversions = await repo.conversions(ids)
            keys = {c["customer_key"] for c in conversions}
            # The whole profile, like every activity (the scheduler keeps the latest facts).
            profiles = await grown_profiles(
                OrderFactsRepository(conn), keys, self._settings_for, self._clock.now()
            )
            carts = await FactsRepository(conn).open_carts(keys)
            messages_now = await repo.messages(c["request_key"] for c in conversions)
        return [
            event
            for c in conversions
            for event in self._announce(c, profiles.get(c["customer_key"]), carts, messages_now)
        ]

    def _announce(
        self,
        row: Any,
        profile: ev.Profile | None,
        carts: Mapping[str, ev.CartSnapshot],
        messages: Mapping[str, ev.MessageEngagement],
    ) -> list[tuple[str, str, ev.CloudEvent]]:
        converted = ev.MessageConverted(
            request_key=row["request_key"],
            shop_id=row["shop_id"],
            customer_key=row["customer_key"],
            journey_id=row["journey_id"],
            step_id=row["step_id"],
            order_id=row["order_id"],
            revenue=row["revenue"],
            currency=row["currency"],
            touch=row["touch"],
            touched_at=row["touched_at"],
            ordered_at=row["ordered_at"],
            recovered_cart_id=row["recovered_cart_id"],
            code=row["code"],
            late_redemption=row["late"],
        )
        event_id = ev.stable_event_id("converted", row["shop_id"], row["order_id"])
        result = ev.make_event(
            type=ev.MESSAGE_CONVERTED,
            source=SOURCE_ATTRIBUTION,
            id=event_id,
            time=row["ordered_at"],
            subject=row["customer_key"],
            shop_id=row["shop_id"],
            data=converted,
        )
        out = [(self._topics.results, row["customer_key"], result)]
        if profile is not None:
            told = activity(
                kind=ev.MESSAGE_CONVERTED,
                source_event_id=event_id,
                occurred_at=row["ordered_at"],
                profile=profile,
                cart=carts.get(row["customer_key"]),
                message=messages.get(row["request_key"]),
            )
            out.append((self._topics.activity, row["customer_key"], told))
        return out


async def _with_carts(
    repo: EngagementRepository,
    touches: Sequence[tuple[Order, Touch, datetime]],
    stored: Mapping[tuple[str, str], Any],
) -> list[tuple[Order, Touch, str | None]]:
    """Each attributed order with the abandoned cart it recovered: by its cart id, or by its
    lines when it names none (one query for the batch)."""
    by_lines = await repo.carts_left_before([(o, at) for o, _, at in touches if o.cart_id is None])
    found: list[tuple[Order, Touch, str | None]] = []
    for order, touch, sent_at in touches:
        row = stored.get((order.shop_id, order.order_id))
        cart = recovered_cart(order, sent_at, row["cart_left_at"] if row is not None else None)
        candidate = by_lines.get((order.shop_id, order.order_id))
        if candidate is not None:
            cart = recovered_by_lines(order, candidate[0], sent_at, candidate[1])
        found.append((order, touch, cart))
    return found


def _order(placed: ev.Activity, stored: Any) -> Order:
    assert placed.order_id is not None and placed.order_total is not None
    return Order(
        shop_id=placed.profile.shop_id,
        order_id=placed.order_id,
        customer_key=placed.profile.key,
        placed_at=placed.occurred_at,
        revenue=placed.order_total,
        currency=stored["currency"] if stored is not None else None,
        cart_id=stored["cart_id"] if stored is not None else None,
    )


def issued_coupon(raw: bytes | None) -> ev.CouponIssued | None:
    """A coupon.issued on engagement.results; every other result is not ours to read."""
    event = ev.decode(raw)
    return ev.payload(event, ev.CouponIssued) if event.type == ev.COUPON_ISSUED else None


class CouponsConsumer:
    """engagement.results -> ingest.coupons: which message carried which discount code."""

    def __init__(self, engine: AsyncEngine, publisher: Publisher) -> None:
        self._engine = engine
        self._publisher = publisher

    async def handle(self, batch: list[Record]) -> None:
        coupons: list[ev.CouponIssued] = []
        for record in batch:
            try:
                found = issued_coupon(record.value)
            except ev.InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
                continue
            if found is not None:
                coupons.append(found)
        if coupons:
            async with self._engine.begin() as conn:
                await EngagementRepository(conn).record_coupons(coupons)
