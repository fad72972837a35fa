"""The customers' profiles as published on customer.activity: the stored facts, grown by the
order facts and the engagement summary, derived as of `now`: one statement per batch."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from services.ingest.adapters.order_facts_repository import OrderFactsRepository, StoredFacts
from services.ingest.domain.customer_facts import high_value_from
from services.ingest.domain.profile import ENGAGEMENT_WINDOW, order_fact_fields
from services.ingest.order_facts import SettingsFor
from shared import events as ev


async def grown_profiles(
    order_repo: OrderFactsRepository,
    keys: Iterable[str],
    settings_for: SettingsFor,
    now: datetime,
) -> dict[str, ev.Profile]:
    stored = await order_repo.load(keys, now - ENGAGEMENT_WINDOW)
    return {key: _grown(s, settings_for, now) for key, s in stored.items()}


def _grown(stored: StoredFacts, settings_for: SettingsFor, now: datetime) -> ev.Profile:
    settings = settings_for(stored.shop_id)
    grown = order_fact_fields(
        stored.facts,
        stored.place,
        stored.engagement,
        settings,
        high_value_from(settings, stored.high_value_cut),
        now,
    )
    return ev.construct(ev.Profile, **_base(stored.row), **grown)  # built once


def _base(row: Any) -> dict[str, Any]:
    # Stored from validated events by this service; the column types are the field types.
    return dict(
        key=row["customer_key"],
        shop_id=row["shop_id"],
        email=row["email"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        locale=row["locale"],
        marketing_consent=row["marketing_consent"],
        registered_at=row["registered_at"],
        orders_count=row["orders_count"],
        total_spent=row["total_spent"],
        last_order_at=row["last_order_at"],
        last_human_open_at=row["last_human_open_at"],
        last_click_at=row["last_click_at"],
    )
