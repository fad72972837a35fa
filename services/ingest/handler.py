"""Applies a batch of shop events to the customer facts in one transaction; returns the
customer.activity to publish once it committed.

Idempotent: processed_events says which events are new; only those change facts. Activity is
returned for every event, duplicates included (same id, current facts), so a crash between the
database commit and the publish is repaired by the redelivery. A lifecycle stage an order moved
is returned as one more activity (customer.stage.changed.v1).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.catalog_repository import CatalogRepository
from services.ingest.adapters.facts_repository import FactsRepository
from services.ingest.adapters.identity_repository import IdentityRepository
from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain.activity import activity_events, encoded_stage_events
from services.ingest.domain.catalog import fold_products
from services.ingest.domain.customer_facts import FactsSettings
from services.ingest.domain.facts import FactChanges, ShopEventIn, fold
from services.ingest.domain.identity import merged_activities
from services.ingest.identity import join_identities, lock_identities
from services.ingest.order_facts import SettingsFor, StageChange, apply_orders, with_categories
from services.ingest.profiles import grown_profiles
from shared import events as ev
from shared.clock import Clock, SystemClock
from shared.pipeline import Outgoing


class FactsHandler:
    def __init__(
        self,
        engine: AsyncEngine,
        activity_topic: str,
        clock: Clock | None = None,
        settings_for: SettingsFor | None = None,
    ) -> None:
        self._engine = engine
        self._activity_topic = activity_topic
        self._clock = clock or SystemClock()
        self._settings_for = settings_for or (lambda _shop: FactsSettings())

    async def apply(self, events: Sequence[ShopEventIn]) -> list[Outgoing]:
        """Driver errors rise: the consumer loop translates them (shared.driver_errors) and
        finds the event the database refuses by handing the batch's records one at a time."""
        unique = list({e.event_id: e for e in reversed(events)}.values())[::-1]
        if not unique:
            return []
        now = self._clock.now()
        async with self._engine.begin() as conn:
            repo = FactsRepository(conn)
            order_repo = OrderFactsRepository(conn)
            identities = IdentityRepository(conn)
            found = await lock_identities(identities, unique)
            new_ids = await repo.claim_new([e.event_id for e in unique])
            joined = await join_identities(identities, unique, now, found)
            unique = joined.events  # one key per person (docs/adr/0004-one-customer.md)
            fresh = [e for e in unique if e.event_id in new_ids]
            await _store_catalog(CatalogRepository(conn), fresh)
            changes = await _store(
                repo, order_repo, fold(fresh), self._settings_for, now, joined.merged_accounts
            )
            owners = await repo.cart_owners(_unclaimed_carts(unique))
            keys = {e.customer_key for e in unique if e.customer_key} | set(owners.values())
            profiles = await grown_profiles(order_repo, keys, self._settings_for, now)
            open_carts = await repo.stored_open_carts(keys)
        topic = self._activity_topic
        merged = merged_activities(joined.announce, joined.aliases, profiles, open_carts, now)
        out = [(topic, key, ev.encode(event)) for key, event in merged]
        facts: dict[str, bytes] = {}  # each customer's profile and cart, encoded once
        activity = activity_events(unique, owners, profiles, open_carts, facts)
        causes = _last_event_ids(unique)
        stages = encoded_stage_events(changes, profiles, open_carts, causes, now, facts)
        return out + [(topic, key, value) for key, value in activity + stages]


async def _store(
    repo: FactsRepository,
    order_repo: OrderFactsRepository,
    changes: FactChanges,
    settings_for: SettingsFor,
    now: datetime,
    merged_accounts: set[str],
) -> list[StageChange]:
    # Rows go in key order, so two consumers touching the same rows lock them in the same order.
    orders = await with_categories(order_repo, [changes.orders[k] for k in sorted(changes.orders)])
    await repo.upsert_customers(changes.customers[k] for k in sorted(changes.customers))
    new_orders = await repo.add_orders(orders)
    new_keys = {(o.shop_id, o.order_id) for o in new_orders}
    # A known order cancelled now: its customer's facts are recomputed from the orders that
    # still count (rare, one indexed read of that customer's orders). So are the facts of an
    # account a guest was merged into: its orders are now both people's.
    rebuild = merged_accounts | {
        o.customer_key
        for o in orders
        if o.status == "cancelled" and (o.shop_id, o.order_id) not in new_keys
    }
    stage_changes = await apply_orders(order_repo, new_orders, rebuild, settings_for, now)
    await repo.upsert_carts(changes.carts[k] for k in sorted(changes.carts))
    await repo.close_ordered_carts(orders)
    return stage_changes


async def _store_catalog(repo: CatalogRepository, events: Sequence[ShopEventIn]) -> None:
    catalog = fold_products(events)
    await repo.upsert([catalog.upserts[k] for k in sorted(catalog.upserts)])
    await repo.delete(catalog.deletes)


def _last_event_ids(events: Sequence[ShopEventIn]) -> dict[str, str]:
    return {e.customer_key: e.event_id for e in events if e.customer_key}


def _unclaimed_carts(events: Sequence[ShopEventIn]) -> list[tuple[str, str]]:
    return [
        (e.shop_id, e.data.cart_id)
        for e in events
        if e.customer_key is None and isinstance(e.data, ev.CartUpdated)
    ]
