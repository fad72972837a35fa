"""The dispatcher's edge on suppressions: unsubscribes and hard bounces (email.events),
sunsets (customer.sunset.v1 on engagement.results), and what lifts a sunset: an order placed
or a marketing opt-in (customer.activity)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson

from services.dispatcher.adapters.suppressions import (
    HARD_BOUNCE,
    UNSUBSCRIBED,
    SuppressionRepository,
)
from shared import events as ev
from shared.kafka import Publisher, Record

Row = tuple[str, str, str, str, datetime]
CustomerAt = tuple[str, str, datetime]


@dataclass
class Changes:
    """What one batch changes: suppressions to add, sunsets, re-engagements that lift them."""

    rows: list[Row] = field(default_factory=list)
    sunsets: list[CustomerAt] = field(default_factory=list)
    reengaged: list[CustomerAt] = field(default_factory=list)
    unsubscribed: list[tuple[str, datetime]] = field(default_factory=list)  # request key, since


def suppression(event: ev.CloudEvent) -> Row | None:
    if event.type == ev.EMAIL_UNSUBSCRIBED:
        unsub = ev.payload(event, ev.EmailUnsubscribed)
        return (unsub.shop_id, "customer", unsub.customer_key, UNSUBSCRIBED, unsub.unsubscribed_at)
    if event.type == ev.EMAIL_BOUNCED:
        bounce = ev.payload(event, ev.EmailBounced)
        if bounce.permanent:
            return (bounce.shop_id, "address", bounce.email.lower(), HARD_BOUNCE, bounce.bounced_at)
    return None


def reengagement(event: ev.CloudEvent) -> CustomerAt | None:
    """An order placed, or a change of marketing consent to subscribed: the customer is back."""
    if event.type != ev.CUSTOMER_ACTIVITY:
        return None
    kind = event.data.get("kind")
    if kind not in (ev.ORDER_PLACED, ev.CONSENT_CHANGED):
        return None  # most activity: decoded no further
    activity = ev.payload(event, ev.Activity)
    if kind == ev.CONSENT_CHANGED and activity.profile.marketing_consent != "subscribed":
        return None
    return (activity.profile.shop_id, activity.profile.key, activity.occurred_at)


def note(changes: Changes, event: ev.CloudEvent) -> None:
    if event.type == ev.CUSTOMER_SUNSET:
        sunset = ev.payload(event, ev.CustomerSunset)
        changes.sunsets.append((sunset.shop_id, sunset.customer_key, sunset.sunset_at))
        return
    row = suppression(event)
    if row is not None:
        changes.rows.append(row)
    if row is not None and row[3] == UNSUBSCRIBED:
        unsubscribe = ev.payload(event, ev.EmailUnsubscribed)
        changes.unsubscribed.append((unsubscribe.request_key, row[4]))
    back = reengagement(event)
    if back is not None:
        changes.reengaged.append(back)


# Most of email.events, and of no concern here.
_IGNORED_TYPES = frozenset({ev.EMAIL_OPENED, ev.EMAIL_CLICKED})


def _ignorable(raw: bytes | None) -> bool:
    """An open or a click: skipped without validating the whole event (marketing sends wait
    for this consumer to catch up with email.events). Anything unreadable is not ignorable:
    the full decode dead-letters it with its reason."""
    try:
        event = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return False
    return isinstance(event, dict) and event.get("type") in _IGNORED_TYPES


class SuppressionEvents:
    def __init__(self, repository: SuppressionRepository, publisher: Publisher) -> None:
        self._repository = repository
        self._publisher = publisher

    async def __call__(self, batch: list[Record]) -> None:
        changes = Changes()
        for record in batch:
            if _ignorable(record.value):
                continue
            try:
                note(changes, ev.decode(record.value))
            except ev.InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
        await self._repository.add(changes.rows)
        # The address too, so the unsubscribe follows the person whichever key they are known
        # by later (a guest merged into an account: docs/adr/0004-one-customer.md).
        await self._repository.add_unsubscribed_addresses(changes.unsubscribed)
        await self._repository.sunset_and_lift(changes.sunsets, changes.reengaged)
