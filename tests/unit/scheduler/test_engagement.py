"""Journeys that react to what customers did with the last message: opens, clicks, unsubscribes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.scheduler.domain import engine
from services.scheduler.domain.facts import (
    EnrollmentView,
    LastMessage,
    build_facts,
    for_enrollment,
)
from services.scheduler.domain.journey import Journey, parse_journey
from shared.events import CONSENT_CHANGED, EMAIL_CLICKED, EMAIL_OPENED, EMAIL_UNSUBSCRIBED, Profile

JOURNEYS = Path(__file__).parents[3] / "services" / "scheduler" / "journeys"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = "shop:c:1"


def win_back() -> Journey:
    return parse_journey((JOURNEYS / "win-back.yaml").read_text())


def scoped(
    enrollment: engine.Enrollment,
    journey: Journey,
    last: LastMessage | None,
    kind: str = "timer",
    about: str | None = None,
    consent: str = "subscribed",
    sent: int = 1,
) -> Mapping[str, Any]:
    profile = Profile(key=KEY, shop_id="shop", email="a@example.com", marketing_consent=consent)
    facts = build_facts(kind, T0, profile, None, T0, about_message=about)
    view = EnrollmentView(
        journey.id,
        journey.steps[min(enrollment.step_index, len(journey.steps) - 1)].id,
        enrollment.entered_at,
        enrollment.holdout,
        sent,
    )
    return for_enrollment(facts, view, last)


def sent_steps(outcome: engine.Outcome) -> list[str]:
    return [d.step_id for d in outcome.decisions if isinstance(d, engine.RequestMessage)]


def not_held_out(journey: Journey) -> Journey:
    return journey.model_copy(
        update={"limits": journey.limits.model_copy(update={"holdout_percent": 0})}
    )


def at_step(journey: Journey, step_id: str) -> engine.Enrollment:
    return engine.Enrollment(journey.id, journey.version, KEY, T0, journey.index_of(step_id))


def test_win_back_resends_with_another_subject_when_not_opened() -> None:
    journey = not_held_out(win_back())
    enrollment = at_step(journey, "wait-reason")
    last = LastMessage("win-back:1:reason", "reason", T0)
    outcome = engine.on_timer(
        journey, enrollment, "wait-reason", scoped(enrollment, journey, last), T0
    )
    assert sent_steps(outcome) == ["reason-again"]


def test_win_back_moves_to_the_offer_when_a_person_opened() -> None:
    journey = not_held_out(win_back())
    enrollment = at_step(journey, "wait-reason")
    last = LastMessage("win-back:1:reason", "reason", T0, human_opened_at=T0)
    outcome = engine.on_timer(
        journey, enrollment, "wait-reason", scoped(enrollment, journey, last), T0
    )
    assert sent_steps(outcome) == ["offer"]


def test_a_machine_open_is_not_an_open() -> None:
    journey = not_held_out(win_back())
    enrollment = at_step(journey, "wait-reason")
    last = LastMessage("win-back:1:reason", "reason", T0, machine_opened_at=T0)
    outcome = engine.on_timer(
        journey, enrollment, "wait-reason", scoped(enrollment, journey, last), T0
    )
    assert sent_steps(outcome) == ["reason-again"]


def test_opened_the_offer_but_no_order_asks_why() -> None:
    journey = not_held_out(win_back())
    enrollment = at_step(journey, "wait-offer")
    last = LastMessage("win-back:1:offer", "offer", T0, human_opened_at=T0, clicked_at=T0)
    outcome = engine.on_timer(
        journey, enrollment, "wait-offer", scoped(enrollment, journey, last, sent=2), T0
    )
    assert sent_steps(outcome) == ["ask-why"]
    assert outcome.enrollment.status == "completed"


def test_an_unopened_offer_gets_a_last_chance() -> None:
    journey = not_held_out(win_back())
    enrollment = at_step(journey, "wait-offer")
    last = LastMessage("win-back:1:offer", "offer", T0, machine_opened_at=T0)
    outcome = engine.on_timer(
        journey, enrollment, "wait-offer", scoped(enrollment, journey, last, sent=2), T0
    )
    assert sent_steps(outcome) == ["last-chance"]
    assert outcome.enrollment.status == "active"


@pytest.mark.parametrize(
    ("opened", "clicked", "sunset"),
    [(False, False, True), (True, False, False), (False, True, False)],
)
def test_only_who_never_reacts_to_the_last_chance_is_said_goodbye_and_sunset(
    opened: bool, clicked: bool, sunset: bool
) -> None:
    journey = not_held_out(win_back())
    enrollment = at_step(journey, "wait-last-chance")
    last = LastMessage(
        "win-back:1:last-chance",
        "last-chance",
        T0,
        human_opened_at=T0 if opened else None,
        clicked_at=T0 if clicked else None,
    )
    outcome = engine.on_timer(
        journey, enrollment, "wait-last-chance", scoped(enrollment, journey, last, sent=3), T0
    )
    assert sent_steps(outcome) == (["goodbye"] if sunset else [])
    published = engine.PublishDecision("sunset", "customer.sunset") in outcome.decisions
    assert published is sunset
    assert outcome.enrollment.status == "completed"


WAIT_FOR_CLICK = """
id: nudge
version: 1
name: Nudge
trigger: {event: x}
steps:
  - id: first
    send: {template: t, subject: s}
  - id: wait
    wait: {for: 48h, until: email.clicked}
  - id: clicked
    branch:
      - if: {field: last_message.clicked, op: eq, value: true}
        goto: thanks
    else: reminder
  - id: reminder
    send: {template: t, subject: again}
    goto: done
  - id: thanks
    send: {template: t, subject: thanks}
  - id: done
    end: true
"""


def waiting() -> tuple[Journey, engine.Enrollment]:
    journey = parse_journey(WAIT_FOR_CLICK)
    return journey, at_step(journey, "wait")


def test_a_click_on_the_last_message_ends_the_wait_at_once() -> None:
    journey, enrollment = waiting()
    last = LastMessage("nudge:1:first", "first", T0, clicked_at=T0 + timedelta(hours=1))
    facts = scoped(enrollment, journey, last, EMAIL_CLICKED, about="nudge:1:first")
    outcome = engine.on_activity(journey, enrollment, EMAIL_CLICKED, facts, T0)
    assert outcome.decisions[0] == engine.CancelTimer()
    assert sent_steps(outcome) == ["thanks"]
    assert outcome.enrollment.status == "completed"


@pytest.mark.parametrize(
    ("kind", "about", "why"),
    [
        (EMAIL_CLICKED, "other:9:first", "a click on another journey's message"),
        (EMAIL_OPENED, "nudge:1:first", "an open, where the wait is for a click"),
    ],
)
def test_other_engagement_does_not_end_the_wait(kind: str, about: str, why: str) -> None:
    journey, enrollment = waiting()
    last = LastMessage("nudge:1:first", "first", T0, human_opened_at=T0, clicked_at=T0)
    outcome = engine.on_activity(
        journey, enrollment, kind, scoped(enrollment, journey, last, kind, about), T0
    )
    assert outcome.decisions == [], why


def test_until_refuses_what_cannot_end_a_wait() -> None:
    with pytest.raises(ValidationError, match="until"):
        parse_journey(WAIT_FOR_CLICK.replace("until: email.clicked", "until: shop.order.placed"))


def test_conditions_refuse_a_last_message_fact_nobody_fills() -> None:
    with pytest.raises(ValidationError, match="last_message"):
        parse_journey(WAIT_FOR_CLICK.replace("last_message.clicked", "last_message.liked"))


@pytest.mark.parametrize("kind", [EMAIL_UNSUBSCRIBED, CONSENT_CHANGED])
def test_an_unsubscribe_exits_marketing_journeys_only(kind: str) -> None:
    journey, enrollment = waiting()
    facts = scoped(enrollment, journey, None, kind, consent="unsubscribed")
    outcome = engine.on_activity(journey, enrollment, kind, facts, T0)
    assert (outcome.enrollment.status, outcome.enrollment.exit_reason) == ("exited", "unsubscribed")
    assert outcome.decisions == [engine.CancelTimer()]
    transactional = journey.model_copy(update={"consent": "none"})
    assert engine.on_activity(transactional, enrollment, kind, facts, T0).enrollment == enrollment


def test_conversion_and_revenue_are_facts_of_the_last_message() -> None:
    last = LastMessage("k", "s", T0, converted_at=T0, revenue=Decimal("42.00"))
    assert last.as_facts()["converted"] is True and last.as_facts()["revenue"] == Decimal("42.00")
