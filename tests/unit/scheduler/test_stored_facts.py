"""A timer's customer, read back from the store without a validation, has the same facts as
the activity that stored it: the same conditions hold for it."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.scheduler.adapters.queries import ENROLLMENT_FIELDS
from services.scheduler.adapters.repository import CustomerFacts, enrollment_of
from services.scheduler.adapters.stored import python_dump
from services.scheduler.domain.engine import Enrollment
from services.scheduler.domain.facts import build_facts
from services.scheduler.runner import _facts
from shared.events import CartSnapshot, CategoryFacts, Line, Profile, RecentOrder

AT = datetime(2026, 1, 1, 12, 30, 15, 123_456, tzinfo=UTC)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
PROFILE = Profile(
    key="s:c:1",
    shop_id="s",
    email="a@example.com",
    first_name="Jö",
    marketing_consent="subscribed",
    registered_at=AT,
    orders_count=3,
    total_spent=Decimal("120.50"),
    last_order_at=AT,
    first_order_at=AT,
    average_order_value=Decimal("40.1666"),
    average_days_between_orders=12,
    expected_next_order_at=AT,
    categories=[
        CategoryFacts(category="mugs", orders=2, spent=Decimal("30"), last_order_at=AT),
        CategoryFacts(category="tea", orders=1, spent=Decimal("9.5"), last_order_at=AT),
    ],
    last_order_categories=["mugs"],
    usual_open_hour=9,
    time_zone="Europe/Berlin",
    recent_orders=[RecentOrder(at=AT, total=Decimal("10.00"))],
)
CART = CartSnapshot(
    cart_id="c",
    updated_at=AT,
    total_price=Decimal("19.90"),
    lines=[Line(title="P", quantity=2, price=Decimal("9.95"), category="mugs")],
)


def jsonb(model: Profile | CartSnapshot) -> dict[str, Any]:
    """As PostgreSQL gives a jsonb column back: its own key order and spacing."""
    loaded: dict[str, Any] = orjson.loads(
        json.dumps(json.loads(model.model_dump_json()), sort_keys=True)
    )
    return loaded


def test_stored_facts_are_the_activitys_facts() -> None:
    stored = CustomerFacts.stored("s:c:1", 0, jsonb(PROFILE), jsonb(CART))
    facts = _facts("timer", NOW, stored, NOW, predictions={"p_alive": 0.5})
    assert facts == build_facts("timer", NOW, PROFILE, CART, NOW, predictions={"p_alive": 0.5})
    assert facts["profile"]["total_spent"] == Decimal("120.50")
    assert facts["profile"]["categories"]["mugs"]["last_order_at"] == AT
    assert facts["cart"]["item_count"] == 2
    assert stored.profile == PROFILE and stored.cart == CART  # the models, when asked for


def test_a_customer_without_a_cart() -> None:
    stored = CustomerFacts.stored("s:c:1", 0, jsonb(PROFILE), None)
    assert _facts("timer", NOW, stored, NOW) == build_facts("timer", NOW, PROFILE, None, NOW)
    assert stored.cart is None and stored.cart_json() is None


@pytest.mark.parametrize("model", [PROFILE, CART])
def test_a_row_stored_before_a_field_was_added_gets_its_default(
    model: Profile | CartSnapshot,
) -> None:
    older = jsonb(model)
    del older["recovery_url" if isinstance(model, CartSnapshot) else "purchase_days"]
    older["dropped_since"] = 1
    assert python_dump(type(model), older) == type(model).model_validate(older).model_dump()


def test_a_value_the_fast_path_cannot_read_is_read_by_the_contract() -> None:
    odd = jsonb(PROFILE) | {"total_spent": 120.5, "registered_at": "1 January"}
    with pytest.raises(ValueError, match="registered_at"):  # as reading it with the model says
        python_dump(Profile, odd)
    odd["registered_at"] = "2026-01-01"
    assert python_dump(Profile, odd) == Profile.model_validate(odd).model_dump()


def test_an_enrolment_read_back_is_the_one_built_from_its_columns() -> None:
    """enrollment_of fills the fields from the row's first columns, in ENROLLMENT_FIELDS'
    order: a field added to Enrollment but not to the columns would be missing here."""
    assert sorted(ENROLLMENT_FIELDS) == sorted(f.name for f in fields(Enrollment))
    expected = Enrollment(
        id=7, journey_id="j", journey_version=2, customer_key="s:c:1", entered_at=AT,
        step_index=1, status="exited", holdout=True, exit_reason="ordered",
    )  # fmt: skip
    row = (*(getattr(expected, name) for name in ENROLLMENT_FIELDS), 3, "{}", None)
    read = enrollment_of(row)  # the columns after them (partition, profile, cart) are left
    assert read == expected
    assert read.status == "exited" and read.exit_reason == "ordered"
