"""Recommended products from ingest's read API: one call per batch of mail that shows them.

Ingest owns the catalog and the orders; the dispatcher never reads its tables
(docs/adr/0002-customer-facts.md). A failed call is Transient: the caller sends without.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from pydantic import SecretStr, ValidationError

from shared.errors import Transient
from shared.recommendations import (
    MAX_CUSTOMERS_PER_CALL,
    Recommendations,
    RecommendationsAsked,
    RecommendedProduct,
)

PATH = "/customers/recommendations"


class IngestRecommendations:
    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        token: SecretStr | None,
        per_mail: int = 4,
        timeout_s: float = 3.0,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + PATH
        secret = None if token is None else token.get_secret_value()
        self._headers = {} if secret is None else {"authorization": f"Bearer {secret}"}
        self._per_mail = per_mail
        self._timeout_s = timeout_s

    async def for_customers(
        self, customer_keys: list[str]
    ) -> Mapping[str, list[RecommendedProduct]]:
        found: dict[str, list[RecommendedProduct]] = {}
        for start in range(0, len(customer_keys), MAX_CUSTOMERS_PER_CALL):
            found.update(await self._ask(customer_keys[start : start + MAX_CUSTOMERS_PER_CALL]))
        return found

    async def _ask(self, customer_keys: list[str]) -> Mapping[str, list[RecommendedProduct]]:
        asked = RecommendationsAsked(customer_keys=customer_keys, limit=self._per_mail)
        try:
            response = await self._client.post(
                self._url,
                json=asked.model_dump(mode="json"),
                headers=self._headers,
                timeout=self._timeout_s,
            )
            response.raise_for_status()
            return Recommendations.model_validate_json(response.content).products
        except (httpx.HTTPError, ValidationError) as exc:
            raise Transient(f"recommendations from {self._url}: {exc}") from exc
