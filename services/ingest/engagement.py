"""The e-mail events consumer: email.events -> engagement facts (and consent) -> customer.activity.

Idempotent like the shop events consumer: processed_events says which events are new, only
those change facts; activity is published for every event, duplicates included, after the
commit, so a crash between the two is repaired by the redelivery.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.engagement_repository import EngagementRepository
from services.ingest.adapters.facts_repository import FactsRepository
from services.ingest.adapters.identity_repository import IdentityRepository
from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain.customer_facts import FactsSettings
from services.ingest.domain.engagement import (
    EmailEventIn,
    activity,
    fold,
)
from services.ingest.identity import resolve_email_events
from services.ingest.order_facts import SettingsFor
from services.ingest.profiles import grown_profiles
from shared import events as ev
from shared.clock import Clock, SystemClock
from shared.kafka import Publisher, Record


def decode_email_event(raw: bytes | None) -> EmailEventIn:
    event = ev.decode(raw)
    model = ev.EMAIL_PAYLOADS.get(event.type)
    if model is None:
        raise ev.InvalidEvent(f"unknown e-mail event type {event.type!r}")
    return EmailEventIn(event.id, event.type, ev.payload(event, model))


class EmailEventsConsumer:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        activity_topic: str,
        clock: Clock | None = None,
        settings_for: SettingsFor | None = None,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._activity_topic = activity_topic
        self._clock = clock or SystemClock()
        self._settings_for = settings_for or (lambda _shop: FactsSettings())

    async def handle(self, batch: list[Record]) -> None:
        decoded: list[EmailEventIn] = []
        for record in batch:
            try:
                decoded.append(decode_email_event(record.value))
            except ev.InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
        await self.apply(decoded)

    async def apply(self, events: Sequence[EmailEventIn]) -> None:
        unique = list({e.event_id: e for e in events}.values())
        if not unique:
            return
        async with self._engine.begin() as conn:
            unique = await resolve_email_events(IdentityRepository(conn), unique)
            keys = {e.data.customer_key for e in unique}
            repo = EngagementRepository(conn)
            new_ids = await repo.claim_new([e.event_id for e in unique])
            changes = fold(e for e in unique if e.event_id in new_ids)
            await repo.upsert_messages([changes.messages[k] for k in sorted(changes.messages)])
            await repo.upsert_customers([changes.customers[k] for k in sorted(changes.customers)])
            await repo.unsubscribe(
                e.data.customer_key for e in unique if e.type == ev.EMAIL_UNSUBSCRIBED
            )
            # The whole profile (order facts, and the last open and click just stored), like
            # every activity: the scheduler keeps the latest activity's facts, so a thinner one
            # would erase the stage, rhythm, ...
            order_repo = OrderFactsRepository(conn)
            profiles = await grown_profiles(order_repo, keys, self._settings_for, self._clock.now())
            carts = await FactsRepository(conn).open_carts(keys)
            messages = await repo.messages(e.data.request_key for e in unique)
        out = [
            (
                self._activity_topic,
                e.data.customer_key,
                activity(
                    kind=e.type,
                    source_event_id=e.event_id,
                    occurred_at=e.at,
                    profile=profiles[e.data.customer_key],
                    cart=carts.get(e.data.customer_key),
                    message=messages.get(e.data.request_key),
                ),
            )
            for e in unique
            if e.data.customer_key in profiles
        ]
        await self._publisher.publish_many(out)
