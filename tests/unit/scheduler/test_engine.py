"""The journey engine as a pure function: days of a journey pass in microseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from services.scheduler.domain import engine
from services.scheduler.domain.facts import build_facts
from services.scheduler.domain.journey import Journey, Step, parse_journey
from shared.events import CART_UPDATED, ORDER_PLACED, CartSnapshot, Line, Profile

JOURNEYS = Path(__file__).parents[3] / "services" / "scheduler" / "journeys"
T0 = datetime(2022, 1, 1, tzinfo=UTC)


def abandoned_cart() -> Journey:
    return parse_journey((JOURNEYS / "abandoned-cart.yaml").read_text())


def facts(
    kind: str = CART_UPDATED,
    lines: int = 2,
    updated_at: datetime = T0,
    email: str | None = "john@example.com",
    now: datetime = T0,
) -> dict[str, object]:
    profile = Profile(key="shop:c:1", shop_id="shop", email=email, first_name="John")
    cart = CartSnapshot(
        cart_id="c1",
        updated_at=updated_at,
        lines=[Line(title=f"Item {i}", quantity=1, price=Decimal("199.00")) for i in range(lines)],
    )
    return build_facts(kind, updated_at, profile, cart, now)


def test_a_cart_with_items_and_an_email_enters_and_waits_three_hours() -> None:
    journey = abandoned_cart()
    assert engine.should_enter(journey, CART_UPDATED, facts(), T0)
    outcome = engine.enter(journey, "shop:c:1", facts(), T0)
    assert outcome.decisions == [engine.ScheduleTimer("wait-for-reminder", T0 + timedelta(hours=3))]


@pytest.mark.parametrize(
    ("why", "kwargs"),
    [
        ("empty cart", {"lines": 0}),
        ("no e-mail", {"email": None}),
        ("cart older than a week", {"updated_at": T0 - timedelta(days=8)}),
    ],
)
def test_carts_that_cannot_be_reminded_do_not_enter(why: str, kwargs: dict[str, object]) -> None:
    assert not engine.should_enter(abandoned_cart(), CART_UPDATED, facts(**kwargs), T0), why  # type: ignore[arg-type]


def test_the_timer_sends_the_reminder_then_waits_48_hours_for_the_discount() -> None:
    journey = abandoned_cart()
    entered = engine.enter(journey, "shop:c:1", facts(), T0).enrollment
    due = T0 + timedelta(hours=3)
    first = engine.on_timer(journey, entered, "wait-for-reminder", facts(now=due), due)
    assert [type(d) for d in first.decisions] == [engine.RequestMessage, engine.ScheduleTimer]
    assert first.decisions[0].send.template == "abandoned_cart_reminder"  # type: ignore[union-attr]
    assert first.decisions[1] == engine.ScheduleTimer(
        "wait-for-discount", due + timedelta(hours=48)
    )
    later = due + timedelta(hours=48)
    second = engine.on_timer(
        journey, first.enrollment, "wait-for-discount", facts(now=later), later
    )
    request = second.decisions[0]
    assert isinstance(request, engine.RequestMessage)
    assert request.send.offer is not None and request.send.offer.kind == "discount_code"
    assert second.enrollment.status == "completed"


def test_an_order_exits_and_cancels_the_timer() -> None:
    journey = abandoned_cart()
    entered = engine.enter(journey, "shop:c:1", facts(), T0).enrollment
    outcome = engine.on_activity(journey, entered, ORDER_PLACED, facts(ORDER_PLACED), T0)
    assert outcome.enrollment.status == "exited"
    assert outcome.enrollment.exit_reason == "ordered"
    assert outcome.decisions == [engine.CancelTimer()]


def test_a_cart_change_restarts_the_wait_from_the_new_update() -> None:
    journey = abandoned_cart()
    entered = engine.enter(journey, "shop:c:1", facts(), T0).enrollment
    later = T0 + timedelta(hours=1)
    outcome = engine.on_activity(journey, entered, CART_UPDATED, facts(updated_at=later), later)
    assert outcome.decisions == [
        engine.ScheduleTimer("wait-for-reminder", later + timedelta(hours=3))
    ]


def test_emptying_the_cart_exits() -> None:
    journey = abandoned_cart()
    entered = engine.enter(journey, "shop:c:1", facts(), T0).enrollment
    outcome = engine.on_activity(journey, entered, CART_UPDATED, facts(lines=0), T0)
    assert outcome.enrollment.exit_reason == "cart_emptied"


def test_a_stale_timer_for_a_step_already_left_does_nothing() -> None:
    journey = abandoned_cart()
    entered = engine.enter(journey, "shop:c:1", facts(), T0).enrollment
    outcome = engine.on_timer(journey, entered, "wait-for-discount", facts(), T0)
    assert outcome.decisions == [] and outcome.enrollment == entered


BRANCHING = """
id: win-back
version: 1
name: Win-back
trigger:
  segment: {field: profile.days_since_last_order, op: gte, value: 90}
steps:
  - id: reason
    send: {template: reason, subject: "We miss you"}
  - id: wait
    wait: {for: 48h}
  - id: opened
    branch:
      - if: {field: last_message.opened, op: eq, value: true}
        goto: ask-why
    else: resend
  - id: resend
    send: {template: reason, subject: "Did you see this?"}
    goto: done
  - id: ask-why
    send: {template: survey, subject: "Tell us why"}
  - id: done
    end: true
"""


def test_branches_follow_what_the_customer_did_with_the_last_message() -> None:
    journey = parse_journey(BRANCHING)
    entered = engine.enter(journey, "shop:c:1", {}, T0).enrollment
    opened = engine.on_timer(journey, entered, "wait", {"last_message": {"opened": True}}, T0)
    ignored = engine.on_timer(journey, entered, "wait", {"last_message": {"opened": False}}, T0)
    assert [d.step_id for d in opened.decisions] == ["ask-why"]  # type: ignore[union-attr]
    assert [d.step_id for d in ignored.decisions] == ["resend"]  # type: ignore[union-attr]
    assert opened.enrollment.status == ignored.enrollment.status == "completed"


def test_holdout_customers_wait_like_everyone_but_get_no_message() -> None:
    journey = abandoned_cart().model_copy(
        update={"limits": abandoned_cart().limits.model_copy(update={"holdout_percent": 100})}
    )
    entered = engine.enter(journey, "shop:c:1", facts(), T0).enrollment
    due = T0 + timedelta(hours=3)
    outcome = engine.on_timer(journey, entered, "wait-for-reminder", facts(now=due), due)
    assert entered.holdout
    assert [type(d) for d in outcome.decisions] == [engine.ScheduleTimer]


LOOP = """
id: loop
version: 1
name: Loop
trigger: {event: x}
steps:
  - {id: a, publish: ping, goto: b}
  - {id: b, publish: pong, goto: a}
"""


def test_a_goto_loop_without_a_wait_is_refused_when_loaded() -> None:
    with pytest.raises(ValueError, match="a -> b -> a loop without a wait"):
        parse_journey(LOOP)


def test_a_loop_stored_before_it_was_refused_ends_its_enrolment_with_the_reason() -> None:
    data = yaml.safe_load(LOOP)
    valid = Journey.model_validate({**data, "steps": [{"id": "a", "end": True}]})
    looping = valid.model_copy(update={"steps": [Step.model_validate(s) for s in data["steps"]]})

    entered = engine.enter(looping, "k", {}, T0).enrollment

    assert entered.status == "failed"
    assert entered.exit_reason is not None and "loops without a wait" in entered.exit_reason


def test_a_ref_to_a_fact_that_is_no_number_ends_the_enrolment_not_the_batch() -> None:
    journey = parse_journey("""
id: odd
version: 1
name: Odd
trigger: {event: x}
steps:
  - id: check
    branch: [{if: {field: profile.total_spent, op: gt, ref: profile.first_name}, goto: done}]
  - {id: done, end: true}
""")
    facts = {"profile": {"total_spent": 10, "first_name": "Ada"}}

    entered = engine.enter(journey, "k", facts, T0).enrollment

    assert entered.status == "failed"
    assert entered.exit_reason is not None and entered.exit_reason.startswith("definition error")
