"""One shopper as a guest and as an account (same e-mail, same shop), as Shopify sends them:
the captured fixtures with the customer taken out (guest) or replaced by the account."""

from __future__ import annotations

from typing import Any

from tests.unit.ingest.deliveries import SHOP_ID, Delivery, delivery, fixture_body

EMAIL = "ada@example.com"
ACCOUNT_ID = "7001"
GUEST_KEY = f"{SHOP_ID}:e:{EMAIL}"
ACCOUNT_KEY = f"{SHOP_ID}:c:{ACCOUNT_ID}"
GUEST_CART = "guest-cart"
ACCOUNT_CART = "account-cart"
# The fixtures' moment (2022-01-01T00:00Z), the tests' clock start.
AT = "2022-01-01T00:00:00+00:00"


def _account(email: str = EMAIL) -> dict[str, Any]:
    return {"id": int(ACCOUNT_ID), "email": email, "first_name": "Ada", "last_name": "Lovelace"}


def guest_checkout(cart: str = GUEST_CART, updated_at: str = AT, hook: str = "") -> Delivery:
    body = fixture_body("checkouts.create")
    body.update(customer=None, email=EMAIL, cart_token=cart, token=cart, updated_at=updated_at)
    return delivery("checkouts.create", body=body, webhook_id=hook or f"guest-checkout-{cart}")


def account_checkout(cart: str = ACCOUNT_CART, updated_at: str = AT) -> Delivery:
    body = fixture_body("checkouts.create")
    body.update(customer=_account(), email=EMAIL, cart_token=cart, token=cart)
    body["updated_at"] = updated_at
    return delivery("checkouts.create", body=body, webhook_id=f"account-checkout-{cart}")


def registration(email: str = " Ada@Example.com ") -> Delivery:
    """customers/create; the e-mail as typed (case and spaces) still names the same guest."""
    body = fixture_body("customers.create")
    body.update(id=int(ACCOUNT_ID), email=email, first_name="Ada", last_name="Lovelace")
    return delivery("customers.create", body=body, webhook_id="registration")


def order(order_id: str, total: str, placed_at: str, *, guest: bool) -> Delivery:
    body = fixture_body("orders.create")
    body.update(
        id=int(order_id),
        email=EMAIL,
        contact_email=EMAIL,
        customer=None if guest else _account(),
        total_price=total,
        created_at=placed_at,
        cart_token=None,
        checkout_token=None,
    )
    return delivery("orders.create", body=body, webhook_id=f"order-{order_id}")
