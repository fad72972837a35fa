"""After a history import: each touched customer's profile on customer.activity, with the kind
customer.history.imported.v1, so the scheduler holds the facts the import left (segment
journeys see them; an event-triggered journey cannot start on this kind, and it is no segment
entry: only a backfill enrols those it finds already in a segment)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.facts_repository import FactsRepository
from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain.activity import OpenCart, activity_event
from services.ingest.order_facts import SettingsFor
from services.ingest.profiles import grown_profiles
from shared import events as ev
from shared.kafka import Publisher
from shared.runtime import cancel_and_wait

PUBLISH_CHUNK = 2_000


async def publish_imported(
    engine: AsyncEngine,
    publisher: Publisher,
    activity_topic: str,
    customer_keys: Iterable[str],
    settings_for: SettingsFor,
    now: datetime,
    chunk: int = PUBLISH_CHUNK,
) -> int:
    """Publishes in chunks (one read of the facts each; a chunk is sent while the next one is
    read); returns how many were published."""
    keys = sorted(set(customer_keys))
    sending: asyncio.Task[None] | None = None
    try:
        for start in range(0, len(keys), chunk):
            async with engine.begin() as conn:
                profiles = await grown_profiles(
                    OrderFactsRepository(conn), keys[start : start + chunk], settings_for, now
                )
                carts = await FactsRepository(conn).stored_open_carts(profiles)
            items = [
                (activity_topic, k, ev.encode(_event(p, carts.get(k), now)))
                for k, p in profiles.items()
            ]
            if sending is not None:
                await sending
            sending = asyncio.create_task(publisher.publish_raw(items))
        if sending is not None:
            await sending
    finally:
        if sending is not None:
            await cancel_and_wait([sending])
    return len(keys)


def _event(profile: ev.Profile, cart: OpenCart | None, now: datetime) -> ev.CloudEvent:
    # The id changes with the facts' moment: a later import publishes again, a replay does not.
    source_id = ev.stable_event_id("history", profile.key, now.isoformat())
    data = ev.Activity.model_construct(
        kind=ev.HISTORY_IMPORTED_KIND,
        source_event_id=source_id,
        occurred_at=now,
        profile=profile,
        cart=None if cart is None else cart.snapshot(),
    )
    return activity_event(data, profile.key, profile.shop_id, now)
