"""customer.activity: each applied shop event, with the customer's facts as they now stand."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Protocol

from services.ingest.domain.facts import ShopEventIn
from shared import events as ev

SOURCE_ACTIVITY = "rebound/ingest/facts"


def activity_id(source_event_id: str) -> str:
    """The same source event always yields the same activity id, so consumers can dedupe."""
    return ev.stable_event_id("activity", source_event_id)


def activity_events(
    events: Iterable[ShopEventIn],
    owners: Mapping[tuple[str, str], str],
    profiles: Mapping[str, ev.Profile],
    open_carts: Mapping[str, ev.CartSnapshot],
) -> list[tuple[str, ev.CloudEvent]]:
    """(key, event) per shop event whose customer is known; an unclaimed cart yields none.

    `owners` names the customer of carts that arrived anonymously but were claimed since.
    """
    out: list[tuple[str, ev.CloudEvent]] = []
    for event in events:
        key = event.customer_key or _owner(event, owners)
        profile = profiles.get(key) if key else None
        if key is None or profile is None:
            continue
        out.append((key, _activity(event, key, profile, open_carts.get(key))))
    return out


def _owner(event: ShopEventIn, owners: Mapping[tuple[str, str], str]) -> str | None:
    if isinstance(event.data, ev.CartUpdated):
        return owners.get((event.shop_id, event.data.cart_id))
    return None


def _activity(
    event: ShopEventIn, key: str, profile: ev.Profile, cart: ev.CartSnapshot | None
) -> ev.CloudEvent:
    order = event.data if isinstance(event.data, ev.OrderEvent) else None
    # Every part is already a validated value (the event, the stored facts), so the models are
    # constructed, not validated again: that was a third of the consumer's CPU per event.
    data = ev.Activity.model_construct(
        kind=event.type,
        source_event_id=event.event_id,
        occurred_at=event.occurred_at,
        profile=profile,
        cart=cart,
        order_id=order.order_id if order else None,
        order_total=order.total_price if order else None,
        discount_codes=order.discount_codes if order else [],
    )
    return ev.CloudEvent.model_construct(
        id=activity_id(event.event_id),
        source=SOURCE_ACTIVITY,
        type=ev.CUSTOMER_ACTIVITY,
        subject=key,
        time=event.time,
        shopid=event.shop_id,
        data=data.model_dump(mode="json"),
    )


def stage_events(
    changes: Iterable[StageChangeLike],
    profiles: Mapping[str, ev.Profile],
    cause_ids: Mapping[str, str],
    now: datetime,
) -> list[tuple[str, ev.CloudEvent]]:
    """customer.stage.changed.v1 activity for each stage an order or time moved. The id is
    derived from what caused it, so a republished change is recognisably the same."""
    out: list[tuple[str, ev.CloudEvent]] = []
    for change in changes:
        profile = profiles.get(change.customer_key)
        if profile is None:
            continue
        cause = cause_ids.get(change.customer_key) or now.isoformat()
        source_id = ev.stable_event_id("stage", change.customer_key, change.stage, cause)
        data = ev.Activity.model_construct(
            kind=ev.STAGE_CHANGED_KIND,
            source_event_id=source_id,
            occurred_at=now,
            profile=profile,
            previous_stage=change.previous,
        )
        event = ev.CloudEvent.model_construct(
            id=activity_id(source_id),
            source=SOURCE_ACTIVITY,
            type=ev.CUSTOMER_ACTIVITY,
            subject=change.customer_key,
            time=now,
            shopid=change.shop_id,
            data=data.model_dump(mode="json"),
        )
        out.append((change.customer_key, event))
    return out


class StageChangeLike(Protocol):
    @property
    def customer_key(self) -> str: ...
    @property
    def shop_id(self) -> str: ...
    @property
    def previous(self) -> str | None: ...
    @property
    def stage(self) -> str: ...
