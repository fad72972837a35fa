"""The `publish: customer.sunset` step goes out as the typed customer.sunset.v1, keyed by the
customer on engagement.results; any other decision stays a journey.decision.v1."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.scheduler.adapters.repository import CustomerFacts
from services.scheduler.domain import engine
from services.scheduler.domain.journey import parse_journey
from services.scheduler.runner import JourneyCatalog, Runner
from shared import events as ev
from shared.events import Profile
from shared.topics import Topics

JOURNEYS = Path(__file__).parents[3] / "services" / "scheduler" / "journeys"
NOW = datetime(2026, 5, 1, tzinfo=UTC)
PROFILE = Profile(key="shop:c:9", shop_id="shop", email="ada@example.com")


def published(decision: str) -> tuple[str, str, ev.CloudEvent]:
    journey = parse_journey((JOURNEYS / "win-back.yaml").read_text())
    runner = Runner(JourneyCatalog(), Topics("t-"))
    customer = CustomerFacts(PROFILE.key, 3, PROFILE, None)
    out = runner._decision(journey, 12, engine.PublishDecision("sunset", decision), customer, NOW)
    return out.topic, out.key, ev.decode(out.value)


def test_the_sunset_step_publishes_a_typed_customer_sunset() -> None:
    topic, key, event = published(ev.SUNSET_DECISION)

    assert (topic, key, event.type) == ("t-engagement.results", PROFILE.key, ev.CUSTOMER_SUNSET)
    assert ev.payload(event, ev.CustomerSunset) == ev.CustomerSunset(
        shop_id="shop",
        customer_key=PROFILE.key,
        journey_id="win-back",
        journey_version=1,
        step_id="sunset",
        sunset_at=NOW,
    )
    assert published(ev.SUNSET_DECISION)[2].id == event.id  # a replay is the same event


def test_other_decisions_stay_journey_decisions() -> None:
    _, _, event = published("audience.retarget")

    assert event.type == ev.JOURNEY_DECISION
    assert ev.payload(event, ev.JourneyDecision).decision == "audience.retarget"
