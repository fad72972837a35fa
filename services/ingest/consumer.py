"""Edge of the facts consumer: bytes off shop.events -> typed events, or the dead-letter topic."""

from __future__ import annotations

from services.ingest.domain.canonical import subject_and_key
from services.ingest.domain.facts import ShopEventIn, as_utc
from services.ingest.handler import FactsHandler
from shared import events as ev
from shared.kafka import Publisher, Record
from shared.logging import get_logger

log = get_logger(__name__)

# PostgreSQL cannot store U+0000 in text or jsonb; such an event would fail its batch forever.
_JSON_NUL = b"\\u0000"


def decode_shop_event(raw: bytes | None) -> ShopEventIn:
    """A canonical shop event, or InvalidEvent with the reason it goes to the DLQ."""
    if raw is not None and _JSON_NUL in raw:
        raise ev.InvalidEvent("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    event = ev.decode(raw)
    model = ev.SHOP_PAYLOADS.get(event.type)
    if model is None:
        raise ev.InvalidEvent(f"unknown shop event type {event.type!r}")
    if not event.shopid:
        raise ev.InvalidEvent("shopid (the shop extension attribute) is missing")
    data = ev.payload(event, model)
    subject, _ = subject_and_key(event.shopid, data)
    return ShopEventIn(
        event_id=event.id,
        type=event.type,
        shop_id=event.shopid,
        time=as_utc(event.time),
        customer_key=subject,
        data=data,
    )


class ShopEventsConsumer:
    """The ConsumerLoop handler: dead-letters what it cannot read, applies the rest (what the
    database refuses, the loop's one error policy finds and dead-letters)."""

    def __init__(self, facts: FactsHandler, publisher: Publisher) -> None:
        self._facts = facts
        self._publisher = publisher

    async def handle(self, batch: list[Record]) -> None:
        decoded: list[tuple[Record, ShopEventIn]] = []
        for record in batch:
            try:
                decoded.append((record, decode_shop_event(record.value)))
            except ev.InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
        await self._facts.apply([event for _, event in decoded])
