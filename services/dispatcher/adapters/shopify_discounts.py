"""Creates a generated code in a Shopify shop: Admin GraphQL `discountCodeBasicCreate`.

One POST per code to `<admin_url>/admin/api/<version>/graphql.json` with the shop's
`X-Shopify-Access-Token`, a JSON body of `query` and `variables`. The code is limited to this
customer when Shopify knows them (`context.customers`), usable once, from the moment it is
issued until it expires. Any refusal comes back as a reason, so the message fails instead of
mailing a code the checkout would not take.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.dispatcher.domain.offers import Coupon, OfferTerms

API_VERSION = "2025-10"  # `context` replaced `customerSelection` for code discounts here
TIMEOUT_S = 10.0

MUTATION = """
mutation discountCodeBasicCreate($basicCodeDiscount: DiscountCodeBasicInput!) {
  discountCodeBasicCreate(basicCodeDiscount: $basicCodeDiscount) {
    codeDiscountNode { id }
    userErrors { field code message }
  }
}
""".strip()


def shopify_customer_gid(customer_key: str) -> str | None:
    """`<shop>:c:<id>` -> gid://shopify/Customer/<id>; a guest (by e-mail) has none."""
    _, sep, customer_id = customer_key.partition(":c:")
    return f"gid://shopify/Customer/{customer_id}" if sep and customer_id.isdigit() else None


def shopify_collection_gid(collection: str) -> str:
    """A collection as the journey names it (Shopify's numeric id, or its gid) -> its gid."""
    return f"gid://shopify/Collection/{collection}" if collection.isdigit() else collection


def discount_input(
    coupon: Coupon, terms: OfferTerms, customer_key: str, title: str
) -> dict[str, Any]:
    """DiscountCodeBasicInput for one code, as Shopify documents it."""
    percentage = terms.percentage
    value: dict[str, Any] = (
        {"percentage": float(percentage)}
        if percentage is not None
        else {"discountAmount": {"amount": str(terms.amount), "appliesOnEachItem": False}}
    )
    applies = terms.applies_to
    items: dict[str, Any] = (
        {"all": True}
        if applies == "order"
        else {"collections": {"add": [shopify_collection_gid(c) for c in applies.collections]}}
    )
    gid = shopify_customer_gid(customer_key)
    basic: dict[str, Any] = {
        "title": title,
        "code": coupon.code,
        "startsAt": coupon.issued_at.isoformat(),
        "endsAt": coupon.expires_at.isoformat(),
        "context": {"customers": {"add": [gid]}} if gid else {"all": "ALL"},
        "customerGets": {"value": value, "items": items},
        "usageLimit": 1,
        "appliesOncePerCustomer": True,
    }
    if terms.minimum_order is not None:
        basic["minimumRequirement"] = {
            "subtotal": {"greaterThanOrEqualToSubtotal": str(terms.minimum_order)}
        }
    return basic


class ShopifyDiscounts:
    def __init__(self, admin_url: str, access_token: str, client: httpx.AsyncClient) -> None:
        self._url = f"{admin_url.rstrip('/')}/admin/api/{API_VERSION}/graphql.json"
        self._token = access_token
        self._client = client

    async def create(self, basic: dict[str, Any]) -> str | None:
        """None when Shopify created the code, else why not (for the message's reason)."""
        body = {"query": MUTATION, "variables": {"basicCodeDiscount": basic}}
        headers = {"X-Shopify-Access-Token": self._token, "Content-Type": "application/json"}
        try:
            response = await self._client.post(
                self._url, json=body, headers=headers, timeout=TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            return f"Shopify could not be reached to create the discount code: {exc!r}"
        if response.status_code != 200:
            return (
                f"Shopify refused to create the discount code: HTTP {response.status_code} "
                f"{response.text[:200]}"
            )
        return _refusal(response)


def _refusal(response: httpx.Response) -> str | None:
    try:
        answer = response.json()
    except ValueError:
        return "Shopify answered the discount code request with something that is not JSON"
    if answer.get("errors"):
        return f"Shopify refused to create the discount code: {str(answer['errors'])[:300]}"
    created = (answer.get("data") or {}).get("discountCodeBasicCreate") or {}
    problems = created.get("userErrors") or []
    if problems:
        said = "; ".join(f"{p.get('field')}: {p.get('message')}" for p in problems)
        return f"Shopify refused to create the discount code: {said[:300]}"
    if not (created.get("codeDiscountNode") or {}).get("id"):
        return "Shopify did not confirm the discount code (no codeDiscountNode in its answer)"
    return None
