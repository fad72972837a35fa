"""Every send step of every shipped journey renders, HTML and text, from the request the
scheduler really builds for it, with the offer and the products the dispatcher adds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.dispatcher.adapters.templates import TemplateRenderer
from services.dispatcher.dispatch import Dispatcher
from services.dispatcher.domain.content import (
    Extras,
    RenderedMessage,
    ShopView,
    render_context,
)
from services.dispatcher.domain.offers import discount_terms, offer_view
from services.scheduler.adapters.repository import CustomerFacts
from services.scheduler.domain import engine
from services.scheduler.domain.journey import Journey, Send, parse_journey
from services.scheduler.runner import JourneyCatalog, Runner, _Tracked
from shared.events import CategoryFacts, InvalidEvent, MessageRequest, Profile
from shared.recommendations import RecommendedProduct
from shared.topics import Topics

JOURNEYS = Path(__file__).parents[3] / "services" / "scheduler" / "journeys"
NOW = datetime(2026, 3, 10, 9, tzinfo=UTC)
SHOP = ShopView("Maple & Moss", "https://maple-moss.example", "EUR")
PRODUCTS = [
    RecommendedProduct(
        product_id="p1",
        title="Rose Hydrating Serum",
        category="cosmetics",
        url="https://maple-moss.example/products/rose-serum",
        image_url="https://cdn.maple-moss.example/rose-serum.jpg",
        price=Decimal("24.90"),
    ),
    RecommendedProduct(
        product_id="p2", title="Oat Milk Cleanser", category="cosmetics", price=Decimal("14.50")
    ),
]
PROFILE = Profile(
    key="maple:c:42",
    shop_id="maple",
    email="ada@example.com",
    first_name="Ada",
    last_name="Lovelace",
    marketing_consent="subscribed",
    registered_at=NOW - timedelta(days=366),
    orders_count=3,
    total_spent=Decimal("430.00"),
    first_order_at=NOW - timedelta(days=300),
    last_order_at=NOW - timedelta(days=95),
    average_days_between_orders=50.0,
    categories=[
        CategoryFacts(
            category="cosmetics",
            orders=3,
            spent=Decimal("430.00"),
            last_order_at=NOW - timedelta(days=95),
        )
    ],
    last_order_categories=["cosmetics"],
)


def shipped() -> list[Journey]:
    return [parse_journey(p.read_text()) for p in sorted(JOURNEYS.glob("*.yaml"))]


def sends(journey: Journey) -> list[tuple[str, Send]]:
    """Each send step, and each A/B variant of it, as the engine would ask for it."""
    found: list[tuple[str, Send]] = []
    for step in journey.steps:
        if step.send is None:
            continue
        found.append((step.id, step.send))
        for variant in step.send.variants:
            overrides = {
                k: v
                for k, v in (
                    ("subject", variant.subject),
                    ("template", variant.template),
                    ("offer", variant.offer),
                )
                if v is not None
            }
            found.append((f"{step.id}/{variant.id}", step.send.model_copy(update=overrides)))
    return found


def scheduler_request(journey: Journey, step_id: str, send: Send) -> MessageRequest:
    """The request the scheduler's runner builds for this step."""
    runner = Runner(JourneyCatalog(), Topics())
    enrollment = engine.Enrollment(journey.id, journey.version, PROFILE.key, NOW, id=7)
    customer = CustomerFacts(PROFILE.key, 0, PROFILE, None)
    tracked = _Tracked(journey, enrollment, customer, False)
    made = runner._message_request(tracked, engine.RequestMessage(step_id, send), customer, NOW)
    assert made is not None
    return made.message()


def dispatched(request: MessageRequest, extras: Extras) -> RenderedMessage:
    """Rendered as the dispatcher does: a discount gets its code, a perk its end date."""
    terms = discount_terms(request.context.get("offer"), None)
    offer: object | None = None
    if terms is not None:
        offer = offer_view(terms, "WELCOME7K2Q9", NOW + timedelta(days=7))
    else:
        offer = Dispatcher._perk(request, extras.shop)
    context = render_context(request, offer, extras)
    return TemplateRenderer().render(request.template, request.subject, context)


CASES = [
    pytest.param(journey, step_id, send, id=f"{journey.id}:{step_id}")
    for journey in shipped()
    for step_id, send in sends(journey)
    if not journey.id.startswith("abandoned-cart")
]


@pytest.mark.parametrize(("journey", "step_id", "send"), CASES)
def test_every_send_step_renders_a_complete_mail(
    journey: Journey, step_id: str, send: Send
) -> None:
    mail = dispatched(scheduler_request(journey, step_id, send), Extras(SHOP, PRODUCTS))

    assert mail.subject and "{{" not in mail.subject
    for body in (mail.html, mail.text):
        assert "Ada" in body  # the customer's name
        assert "Maple & Moss" in body or "Maple &amp; Moss" in body
        assert not re.search(r"\{\{|\{%|None|Undefined", body)
    if send.offer is not None:
        assert "2026" in mail.html and "2026" in mail.text  # the offer's end date
    if TemplateRenderer().uses(send.template, "products"):
        assert "Rose Hydrating Serum" in mail.html and "Rose Hydrating Serum" in mail.text
        assert "€24.90" in mail.text


@pytest.mark.parametrize(("journey", "step_id", "send"), CASES)
def test_every_send_step_renders_without_products_or_shop_settings(
    journey: Journey, step_id: str, send: Send
) -> None:
    mail = dispatched(scheduler_request(journey, step_id, send), Extras())

    assert "Rose Hydrating Serum" not in mail.html
    assert "maple" in mail.text  # the shop id stands in for its name


def test_a_journey_naming_a_missing_template_is_caught() -> None:
    [journey] = [j for j in shipped() if j.id == "win-back"]
    step_id, send = sends(journey)[0]
    broken = send.model_copy(update={"template": "winback_reasons"})

    with pytest.raises(InvalidEvent, match="unknown template 'winback_reasons'"):
        dispatched(scheduler_request(journey, step_id, broken), Extras(SHOP, PRODUCTS))


def test_perks_show_what_they_give_their_conditions_and_their_end() -> None:
    [journey] = [j for j in shipped() if j.id == "win-back"]
    offer_step = {s: send for s, send in sends(journey)}["offer"]
    request = scheduler_request(journey, "offer", offer_step)

    mail = dispatched(request, Extras(SHOP, PRODUCTS))

    assert "Free shipping on your next order." in mail.text
    assert "For one order placed by 17 March 2026, 09:00 UTC." in mail.text
    assert "No code needed" in mail.html


def test_a_gift_with_a_minimum_order_names_the_minimum_in_the_shops_currency() -> None:
    journey = parse_journey(
        "id: j\nversion: 1\nname: J\ntrigger: {event: x}\nsteps:\n"
        "  - id: g\n    send: {template: anniversary, subject: s, offer: {kind: gift, "
        "gift: a travel-size hand cream, minimum_order: 40, valid_for: 10d, code: GIFT}}\n"
    )
    step_id, send = sends(journey)[0]

    mail = dispatched(scheduler_request(journey, step_id, send), Extras(SHOP, PRODUCTS))

    assert "A travel-size hand cream with your next order of €40.00 or more." in mail.text
    assert "Enter the code GIFT at checkout." in mail.text
    assert "20 March 2026, 09:00 UTC" in mail.text


def test_the_loyalty_mail_says_how_close_the_customer_is() -> None:
    [journey] = [j for j in shipped() if j.id == "loyalty-threshold"]
    step_id, send = sends(journey)[0]

    mail = dispatched(scheduler_request(journey, step_id, send), Extras(SHOP, PRODUCTS))

    assert "You have spent €430.00 with us so far: only €70.00" in mail.text
    assert "a 25 voucher (at €500.00)" in mail.text
