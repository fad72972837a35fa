"""The dispatcher's edge on email.events: unsubscribes and hard bounces become suppressions."""

from __future__ import annotations

from datetime import datetime

from services.dispatcher.adapters.suppressions import (
    HARD_BOUNCE,
    UNSUBSCRIBED,
    SuppressionRepository,
)
from shared import events as ev
from shared.kafka import Publisher, Record


def suppression(event: ev.CloudEvent) -> tuple[str, str, str, str, datetime] | None:
    if event.type == ev.EMAIL_UNSUBSCRIBED:
        unsub = ev.payload(event, ev.EmailUnsubscribed)
        return (unsub.shop_id, "customer", unsub.customer_key, UNSUBSCRIBED, unsub.unsubscribed_at)
    if event.type == ev.EMAIL_BOUNCED:
        bounce = ev.payload(event, ev.EmailBounced)
        if bounce.permanent:
            return (bounce.shop_id, "address", bounce.email.lower(), HARD_BOUNCE, bounce.bounced_at)
    return None


class SuppressionEvents:
    def __init__(self, repository: SuppressionRepository, publisher: Publisher) -> None:
        self._repository = repository
        self._publisher = publisher

    async def __call__(self, batch: list[Record]) -> None:
        rows = []
        unsubscribed: list[tuple[str, datetime]] = []
        for record in batch:
            try:
                event = ev.decode(record.value)
                found = suppression(event)
            except ev.InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
                continue
            if found is not None:
                rows.append(found)
            if found is not None and found[3] == UNSUBSCRIBED:
                unsubscribed.append((ev.payload(event, ev.EmailUnsubscribed).request_key, found[4]))
        await self._repository.add(rows)
        # The address too, so the unsubscribe follows the person whichever key they are known
        # by later (a guest merged into an account: docs/adr/0004-one-customer.md).
        await self._repository.add_unsubscribed_addresses(unsubscribed)
