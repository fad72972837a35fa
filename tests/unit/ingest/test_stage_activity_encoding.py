"""The consumer's stage-change activity, encoded straight to bytes, is what the contract gives."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from services.ingest.domain.activity import (
    OpenCart,
    StageChangeLike,
    _stage_source_id,
    activity_event,
    encoded_stage_events,
)
from services.ingest.order_facts import StageChange
from shared import events as ev

NOW = datetime(2024, 10, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _profile(key: str) -> ev.Profile:
    return ev.Profile(
        key=key,
        shop_id="s",
        email=f"{key}@b.test",
        first_name="Zoë",
        orders_count=1,
        total_spent=Decimal("19.00"),
        last_order_at=NOW,
        stage="new",
        categories=[
            ev.CategoryFacts(category="Mugs", orders=1, spent=Decimal("19.00"), last_order_at=NOW)
        ],
        recent_orders=[ev.RecentOrder(at=NOW, total=Decimal("19.00"))],
    )


def stage_events(
    changes: Iterable[StageChangeLike],
    profiles: Mapping[str, ev.Profile],
    carts: Mapping[str, OpenCart],
    cause_ids: Mapping[str, str],
    now: datetime,
) -> list[tuple[str, ev.CloudEvent]]:
    """The reference: the same activity built as the contract's models and encoded by them."""
    out: list[tuple[str, ev.CloudEvent]] = []
    for change in changes:
        profile = profiles.get(change.customer_key)
        if profile is None:
            continue
        source_id = _stage_source_id(change, cause_ids, now)
        data = ev.Activity.model_construct(
            kind=ev.STAGE_CHANGED_KIND,
            source_event_id=source_id,
            occurred_at=now,
            profile=profile,
            cart=None if (cart := carts.get(change.customer_key)) is None else cart.snapshot(),
            previous_stage=change.previous,
        )
        event = activity_event(data, change.customer_key, change.shop_id, now)
        out.append((change.customer_key, event))
    return out


def test_stage_activity_bytes_equal_the_contracts_encoding() -> None:
    line = ev.Line(sku="MUG", title='Mug "blue"', quantity=2, price=Decimal("9.50"))
    stored_lines = orjson.dumps([dict(sorted(line.model_dump(mode="json").items()))])
    cart = OpenCart("c1", stored_lines.decode().replace(",", ", "), "EUR", None, None, NOW)
    changes = [
        StageChange("s:c:1", "s", None, "new"),
        StageChange("s:c:2", "s", "active", "high_value"),
        StageChange("s:c:3", "s", "new", "active"),  # no profile: no activity
    ]
    profiles = {"s:c:1": _profile("s:c:1"), "s:c:2": _profile("s:c:2")}
    carts, causes = {"s:c:2": cart}, {"s:c:1": "event-1"}

    fast = encoded_stage_events(changes, profiles, carts, causes, NOW)
    slow = [
        (key, ev.encode(event))
        for key, event in stage_events(changes, profiles, carts, causes, NOW)
    ]

    assert [key for key, _ in fast] == ["s:c:1", "s:c:2"] == [key for key, _ in slow]
    assert fast[0][1] == slow[0][1]  # no cart: byte for byte
    # The stored cart lines are embedded as PostgreSQL returns them (other spacing).
    assert orjson.loads(fast[1][1]) == orjson.loads(slow[1][1])
    decoded = ev.payload(ev.decode(fast[1][1]), ev.Activity)
    assert (decoded.previous_stage, decoded.profile.stage) == ("active", "new")
    assert decoded.cart is not None and decoded.cart.lines == [line]
