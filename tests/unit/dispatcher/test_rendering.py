"""The shipped templates, rendered the way the dispatcher renders them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.dispatcher.adapters.templates import TemplateRenderer
from services.dispatcher.domain.content import RenderedMessage, render_context
from services.dispatcher.domain.offers import discount_terms, offer_view
from shared.events import InvalidEvent, MessageRequest

CART = {
    "cart_id": "c1",
    "lines": [
        {"title": "Linen Shirt", "variant_title": "M / Sand", "quantity": 2, "price": "39.00"},
        {"title": "Canvas Tote", "variant_title": None, "quantity": 1, "price": "18.50"},
    ],
    "currency": "USD",
    "total_price": "96.50",
    "recovery_url": "https://demo.myshopify.com/cart/recover?token=abc&x=1",
    "updated_at": "2022-01-01T00:00:00Z",
}


def request(**overrides: Any) -> MessageRequest:
    fields: dict[str, Any] = {
        "request_key": "rk-1",
        "shop_id": "demo.myshopify.com",
        "customer_key": "demo:c:1",
        "journey_id": "abandoned_cart",
        "journey_version": 1,
        "step_id": "reminder",
        "template": "abandoned_cart_reminder",
        "subject": "{{ recipient.first_name }}, your cart",
        "recipient": {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"},
        "marketing_consent": "subscribed",
        "context": {"cart": CART},
        "requested_at": datetime(2022, 1, 1, 3, tzinfo=UTC),
    }
    fields.update(overrides)
    return MessageRequest.model_validate(fields)


def render(req: MessageRequest) -> RenderedMessage:
    """With the offer issued for it, as the dispatcher does (a fixed code here)."""
    terms = discount_terms(req.context.get("offer"), "USD")
    offer = None if terms is None else offer_view(terms, terms.code or "", ISSUED + timedelta(7))
    return TemplateRenderer().render(req.template, req.subject, render_context(req, offer))


ISSUED = datetime(2022, 1, 3, 3, tzinfo=UTC)
OFFER = {"kind": "discount_code", "code": "COMEBACK10", "value": "10%", "valid_for": "7d"}


@pytest.mark.parametrize("template", ["abandoned_cart_reminder", "abandoned_cart_discount"])
def test_both_parts_list_every_cart_line_with_its_price(template: str) -> None:
    context = {"cart": CART, "offer": OFFER}
    rendered = render(request(template=template, context=context))
    for part in (rendered.html, rendered.text):
        assert "Linen Shirt" in part
        assert "M / Sand" in part
        assert "Canvas Tote" in part
        assert "$78.00" in part  # 2 x 39.00
        assert "$18.50" in part
        assert "$96.50" in part


def test_the_reminder_greets_by_first_name_and_links_back_to_the_cart() -> None:
    rendered = render(request())
    assert rendered.subject == "Ada, your cart"
    assert rendered.text.startswith("Hi Ada,")
    assert "Hi Ada," in rendered.html
    assert "https://demo.myshopify.com/cart/recover?token=abc&x=1" in rendered.text
    assert 'href="https://demo.myshopify.com/cart/recover?token=abc&amp;x=1"' in rendered.html


def test_a_customer_without_a_first_name_gets_a_plain_greeting() -> None:
    rendered = render(
        request(subject="Your cart is waiting", recipient={"email": "guest@example.com"})
    )
    assert rendered.text.startswith("Hello,")
    assert "Hello," in rendered.html
    assert "None" not in rendered.text + rendered.html


def test_customer_data_is_escaped_in_html_but_kept_in_text() -> None:
    hostile = {
        **CART,
        "lines": [{"title": "<script>alert(1)</script>", "quantity": 1, "price": "1"}],
    }
    rendered = render(
        request(
            recipient={"email": "a@example.com", "first_name": "<b>Bo</b>"},
            context={"cart": hostile},
        )
    )
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "&lt;b&gt;Bo&lt;/b&gt;" in rendered.html
    assert "<script>alert(1)</script>" in rendered.text


def test_a_non_web_recovery_link_is_not_rendered_as_a_button() -> None:
    rendered = render(request(context={"cart": {**CART, "recovery_url": "javascript:evil()"}}))
    assert "javascript:" not in rendered.html
    assert "javascript:" not in rendered.text


def test_the_discount_mail_carries_the_code_its_value_conditions_and_expiry() -> None:
    offer = OFFER | {"value": "15", "minimum_order": "50", "applies_to": "order"}
    rendered = render(
        request(template="abandoned_cart_discount", context={"cart": CART, "offer": offer})
    )
    for part in (rendered.html, rendered.text):
        assert "COMEBACK10" in part
        assert "$15.00 off" in part
        assert "your whole order" in part
        assert "at least $50.00" in part
        assert "10 January 2022, 03:00 UTC" in part


def test_a_discount_limited_to_collections_names_them() -> None:
    limited = {"collections": ["gid://shopify/Collection/1"], "label": "summer shoes"}
    offer = OFFER | {"applies_to": limited}
    rendered = render(
        request(template="abandoned_cart_discount", context={"cart": CART, "offer": offer})
    )
    assert "10% off on summer shoes" in rendered.text


def test_the_subject_is_one_line_and_not_html_escaped() -> None:
    rendered = render(request(subject="Tom & Jerry's\n cart {{ recipient.first_name }}"))
    assert rendered.subject == "Tom & Jerry's cart Ada"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"template": "no_such_template"}, "unknown template"),
        ({"template": "../etc/passwd"}, "invalid template name"),
        ({"template": "abandoned_cart_discount"}, "cannot be rendered"),  # no offer given
        ({"context": {}}, "cannot be rendered"),  # no cart
        ({"subject": "{{ recipient.nickname }}"}, "cannot be rendered"),
        ({"subject": "{{ ''.__class__.__mro__ }}"}, "cannot be rendered"),  # sandboxed
    ],
)
def test_what_cannot_be_rendered_is_an_invalid_request(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        render(request(**overrides))


def test_an_invalid_cart_is_an_invalid_request() -> None:
    with pytest.raises(InvalidEvent, match=r"context\.cart"):
        render_context(request(context={"cart": {"lines": [{"title": "x"}]}}))
