"""Hot-path helpers of the contracts: ev.construct (model_construct with the defaults a
validated model gets) and ev.stable_event_id (uuid5)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from shared import events as ev


def test_constructed_equals_validated_and_defaults_are_not_shared() -> None:
    built = ev.construct(ev.Profile, key="s:c:1", shop_id="s", email=None)
    assert built == ev.Profile(key="s:c:1", shop_id="s", email=None)
    other = ev.construct(ev.Profile, key="s:c:2", shop_id="s", email=None)
    assert built.categories is not other.categories  # a fresh list each, as validation gives


def test_constructed_with_every_field_encodes_as_validated() -> None:
    at = datetime(2024, 10, 1, 12, tzinfo=UTC)
    values = {
        "key": "s:c:1",
        "shop_id": "s",
        "email": "a@b.test",
        "total_spent": Decimal("12.50"),
        "last_order_at": at,
        "recent_orders": [ev.RecentOrder(at=at, total=Decimal("12.50"))],
        "categories": [
            ev.CategoryFacts(category="Mugs", orders=1, spent=Decimal("12.50"), last_order_at=at)
        ],
        "stage": "new",
    }
    built = ev.construct(ev.Profile, **values)
    validated = ev.Profile(**values)
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_fields_set == validated.model_fields_set


def test_a_missing_required_field_or_an_unknown_name_is_left_out_as_model_construct_does() -> None:
    values: dict[str, Any] = {"key": "s:c:1", "nickname": "x"}
    built = ev.construct(ev.Profile, **values)
    expected = ev.Profile.model_construct(**values)
    assert built.__dict__ == expected.__dict__
    assert "shop_id" not in built.__dict__ and "nickname" not in built.__dict__


def test_stable_event_ids_are_uuid5_of_the_joined_parts() -> None:
    for parts in [("a",), ("activity", "0f8c-evt"), ("stage", "s:c:1", "new", "Zoë ✓"), ("",)]:
        expected = str(uuid.uuid5(ev.NAMESPACE, "\x1f".join(parts)))
        assert ev.stable_event_id(*parts) == expected
