"""The customers' profiles as published on customer.activity: the stored facts, grown by the
order facts and the engagement summary, derived as of `now` (one set of reads per batch)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from services.ingest.adapters.facts_repository import FactsRepository
from services.ingest.adapters.order_facts_repository import OrderFactsRepository
from services.ingest.domain.customer_facts import high_value_from
from services.ingest.domain.profile import (
    ENGAGEMENT_WINDOW,
    EngagementSummary,
    with_order_facts,
)
from services.ingest.order_facts import SettingsFor
from shared import events as ev


async def grown_profiles(
    repo: FactsRepository,
    order_repo: OrderFactsRepository,
    keys: Iterable[str],
    settings_for: SettingsFor,
    now: datetime,
) -> dict[str, ev.Profile]:
    wanted = set(keys)
    profiles = await repo.profiles(wanted)
    stored = await order_repo.load(profiles)
    engagement = await order_repo.engagement(profiles, now - ENGAGEMENT_WINDOW)
    cuts = await order_repo.high_value_from({s.shop_id for s in stored.values()})
    out: dict[str, ev.Profile] = {}
    for key, profile in profiles.items():
        facts = stored.get(key)
        if facts is None:
            out[key] = profile
            continue
        settings = settings_for(facts.shop_id)
        out[key] = with_order_facts(
            profile,
            facts.facts,
            facts.place,
            engagement.get(key, EngagementSummary()),
            settings,
            high_value_from(settings, cuts.get(facts.shop_id)),
            now,
        )
    return out
