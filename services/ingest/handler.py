"""Applies a batch of shop events to the customer facts in one transaction, then tells the world.

Idempotent: processed_events says which events are new; only those change facts. Activity is
published for every event, duplicates included (same id, current facts), so a crash between the
database commit and the publish is repaired by the redelivery.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.facts_repository import FactsRepository
from services.ingest.domain.activity import activity_events
from services.ingest.domain.facts import FactChanges, ShopEventIn, fold, order_totals
from shared import events as ev
from shared.kafka import Publisher


class FactsHandler:
    def __init__(self, engine: AsyncEngine, publisher: Publisher, activity_topic: str) -> None:
        self._engine = engine
        self._publisher = publisher
        self._activity_topic = activity_topic

    async def apply(self, events: Sequence[ShopEventIn]) -> None:
        """Driver errors rise: ConsumerLoop translates them (shared.driver_errors) and finds
        the event the database refuses by handing the batch's records one at a time."""
        unique = list({e.event_id: e for e in reversed(events)}.values())[::-1]
        if not unique:
            return
        async with self._engine.begin() as conn:
            repo = FactsRepository(conn)
            new_ids = await repo.claim_new([e.event_id for e in unique])
            await _store(repo, fold(e for e in unique if e.event_id in new_ids))
            owners = await repo.cart_owners(_unclaimed_carts(unique))
            keys = {e.customer_key for e in unique if e.customer_key} | set(owners.values())
            profiles = await repo.profiles(keys)
            open_carts = await repo.open_carts(keys)
        activity = activity_events(unique, owners, profiles, open_carts)
        await self._publisher.publish_many(
            [(self._activity_topic, key, event) for key, event in activity]
        )


async def _store(repo: FactsRepository, changes: FactChanges) -> None:
    # Rows go in key order, so two consumers touching the same rows lock them in the same order.
    orders = [changes.orders[k] for k in sorted(changes.orders)]
    await repo.upsert_customers(changes.customers[k] for k in sorted(changes.customers))
    new_orders = await repo.add_orders(orders)
    await repo.add_order_totals(order_totals(new_orders))
    await repo.upsert_carts(changes.carts[k] for k in sorted(changes.carts))
    await repo.close_ordered_carts(orders)


def _unclaimed_carts(events: Sequence[ShopEventIn]) -> list[tuple[str, str]]:
    return [
        (e.shop_id, e.data.cart_id)
        for e in events
        if e.customer_key is None and isinstance(e.data, ev.CartUpdated)
    ]
