"""Lifecycle stages that time alone moves (30, 50, 90 days after the last order): a sweep on
the Clock finds the customers whose stage is due (an index on stage_due_at), stores the new
stage and publishes it as customer.stage.changed.v1 activity. It also refreshes each shop's
high-value cut (the spend of its top share of buyers)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.facts_repository import FactsRepository
from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain.activity import encoded_stage_events
from services.ingest.order_facts import SettingsFor, sweep_stages
from services.ingest.profiles import grown_profiles
from shared.clock import Clock
from shared.kafka import Publisher
from shared.logging import get_logger

log = get_logger(__name__)
STAGE_SWEEP_BATCH = 2_000


@dataclass
class StageSweeper:
    engine: AsyncEngine
    publisher: Publisher
    activity_topic: str
    clock: Clock
    settings_for: SettingsFor
    shop_ids: tuple[str, ...]
    interval_s: float
    batch: int = STAGE_SWEEP_BATCH

    async def run(self) -> None:
        """Runs forever under the service's Loops, which restarts it after a database error."""
        while True:
            await self.refresh_high_value()
            while await self.sweep() >= self.batch:
                pass
            await self.clock.sleep(self.interval_s)

    async def refresh_high_value(self) -> None:
        now = self.clock.now()
        async with self.engine.begin() as conn:
            repo = OrderFactsRepository(conn)
            for shop_id in self.shop_ids:
                settings = self.settings_for(shop_id)
                await repo.compute_high_value(
                    shop_id, settings.high_value_share, settings.high_value_min_buyers, now
                )

    async def sweep(self) -> int:
        """One batch of due customers; returns how many were due."""
        now = self.clock.now()
        async with self.engine.begin() as conn:
            order_repo = OrderFactsRepository(conn)
            due = await order_repo.due_for_stage(now, self.batch)
            changes = await sweep_stages(order_repo, due, self.settings_for, now)
            profiles = await grown_profiles(
                order_repo,
                {c.customer_key for c in changes},
                self.settings_for,
                now,
            )
            carts = await FactsRepository(conn).stored_open_carts(profiles)
        events = encoded_stage_events(changes, profiles, carts, {}, now)
        await self.publisher.publish_raw([(self.activity_topic, k, e) for k, e in events])
        if changes:
            log.info("stages_changed", customers=len(changes))
        return len(due)
