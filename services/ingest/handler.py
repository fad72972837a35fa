"""Applies a batch of shop events to the customer facts in one transaction, then tells the world.

Idempotent: processed_events says which events are new; only those change facts. Activity is
published for every event, duplicates included (same id, current facts), so a crash between the
database commit and the publish is repaired by the redelivery.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.facts_repository import FactsRepository
from services.ingest.domain.activity import activity_events
from services.ingest.domain.facts import FactChanges, ShopEventIn, fold, order_totals
from shared import events as ev
from shared.kafka import Publisher

# SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation).
_CONTENT_SQLSTATE_CLASSES = ("22", "23")


class UnstorableEvents(Exception):
    """The database refused the batch's content (not its availability): retrying cannot help."""


class FactsHandler:
    def __init__(self, engine: AsyncEngine, publisher: Publisher, activity_topic: str) -> None:
        self._engine = engine
        self._publisher = publisher
        self._activity_topic = activity_topic

    async def apply(self, events: Sequence[ShopEventIn]) -> None:
        unique = list({e.event_id: e for e in reversed(events)}.values())[::-1]
        if not unique:
            return
        try:
            async with self._engine.begin() as conn:
                repo = FactsRepository(conn)
                new_ids = await repo.claim_new([e.event_id for e in unique])
                await _store(repo, fold(e for e in unique if e.event_id in new_ids))
                owners = await repo.cart_owners(_unclaimed_carts(unique))
                keys = {e.customer_key for e in unique if e.customer_key} | set(owners.values())
                profiles = await repo.profiles(keys)
                open_carts = await repo.open_carts(keys)
        except (DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if refused_content(exc):
                raise UnstorableEvents(str(getattr(exc, "orig", exc))) from exc
            raise
        activity = activity_events(unique, owners, profiles, open_carts)
        await self._publisher.publish_many(
            [(self._activity_topic, key, event) for key, event in activity]
        )


def refused_content(exc: Exception) -> bool:
    """Did the database refuse what it was given (bad value, broken constraint), rather than
    fail to be there? Only then does retrying not help, and the culprit goes to the DLQ."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    # SQLAlchemy wraps the driver's error; the hot upserts call asyncpg directly.
    cause: BaseException | None = exc.orig if isinstance(exc, DBAPIError) else exc
    while cause is not None:
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in _CONTENT_SQLSTATE_CLASSES:
            return True
        if isinstance(cause, ValueError):  # the driver could not encode an argument
            return True
        cause = cause.__cause__
    return False


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
