"""The contract of ingest's recommendation read API (`POST /customers/recommendations`).

Ingest owns the catalog and the orders, so it answers "products from the customer's last
purchased categories they have not bought, available, best sellers first"; the dispatcher
asks at render time for the customers of a batch, in one call (docs/adr/0002-customer-facts.md).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from shared.events import Contract

MAX_CUSTOMERS_PER_CALL = 1000
MAX_PRODUCTS = 12


class RecommendationsAsked(Contract):
    customer_keys: list[str] = Field(min_length=1, max_length=MAX_CUSTOMERS_PER_CALL)
    limit: int = Field(default=4, ge=1, le=MAX_PRODUCTS)


class RecommendedProduct(Contract):
    product_id: str
    title: str
    category: str | None = None
    url: str | None = None
    image_url: str | None = None
    price: Decimal | None = None


class Recommendations(Contract):
    """Per customer key asked, its products (best first); a key ingest does not know maps
    to an empty list."""

    products: dict[str, list[RecommendedProduct]]
