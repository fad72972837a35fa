"""Per-shop mail settings: sender, footer address, public tracking URL, tracking, DKIM key.

From REBOUND_DISPATCHER_SHOPS (a JSON list). A shop without an entry gets mail as before this
existed: the deployment's `mail_from`, no tracking, no unsubscribe link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from services.dispatcher.adapters.dkim import DkimKey
from services.dispatcher.domain.content import ShopView
from services.dispatcher.domain.tracking import ShopMail


class ShopMailConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    shop_id: str = Field(min_length=1)
    sender_name: str = Field(min_length=1, description="Display name in From, e.g. Demo Shop.")
    sender_address: str = Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$", description="From address.")
    footer_address: str = Field(
        min_length=1, description="The shop's postal address, printed in every mail's footer."
    )
    public_base_url: str = Field(
        pattern=r"^https?://[^\s/]+",
        description="Public URL of the ingest tracking endpoints, e.g. https://t.shop.example.",
    )
    tracking: bool = Field(default=True, description="Open pixel and click redirects.")
    storefront_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+",
        description="The shop's home page, for 'visit the shop' links in lifecycle mail.",
    )
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="Currency of the shop's prices, e.g. EUR."
    )
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key: SecretStr | None = Field(default=None, description="PEM (PKCS#1 or #8).")
    dkim_private_key_file: Path | None = None

    @model_validator(mode="after")
    def _dkim_complete(self) -> ShopMailConfig:
        parts = (self.dkim_selector, self.dkim_domain)
        has_key = self.dkim_private_key is not None or self.dkim_private_key_file is not None
        if (any(parts) or has_key) and (not all(parts) or not has_key):
            raise ValueError(
                f"shop {self.shop_id}: DKIM needs dkim_selector, dkim_domain and a key"
            )
        if self.dkim_private_key is not None and self.dkim_private_key_file is not None:
            raise ValueError(f"shop {self.shop_id}: give dkim_private_key or its file, not both")
        return self

    def mail(self) -> ShopMail:
        return ShopMail(
            shop_id=self.shop_id,
            sender_name=self.sender_name,
            sender_address=self.sender_address,
            footer_address=self.footer_address,
            public_base_url=self.public_base_url,
            tracking=self.tracking,
        )

    def view(self) -> ShopView:
        return ShopView(self.sender_name, self.storefront_url, self.currency)

    def dkim_key(self) -> DkimKey | None:
        if self.dkim_selector is None or self.dkim_domain is None:
            return None
        if self.dkim_private_key_file is not None:
            pem = self.dkim_private_key_file.read_bytes()
        else:
            assert self.dkim_private_key is not None
            pem = self.dkim_private_key.get_secret_value().encode()
        return DkimKey(self.dkim_selector, self.dkim_domain, pem)


DEFAULT_LOW_POOL = 100


class ShopCoupons(BaseModel):
    """Where a shop's discount codes come from. A shop without an entry gets generated codes
    and no platform connector (coupon.issued tells whoever creates them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shop_id: str = Field(min_length=1)
    source: Literal["generated", "pool"] = Field(
        default="generated",
        description="generated: Rebound makes each code; pool: codes the shop uploaded "
        "(POST /shops/{shop_id}/coupons), each handed out once.",
    )
    code_prefix: str = Field(default="", pattern=r"^[A-Z0-9\-]{0,12}$")
    low_pool_warning: int | None = Field(
        default=None,
        ge=0,
        description="Pool only: warn when fewer free codes remain (default 100).",
    )
    shopify_admin_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+/?$",
        description="e.g. https://demo.myshopify.com: generated codes are created there.",
    )
    shopify_access_token: SecretStr | None = Field(
        default=None, description="Admin API token with the write_discounts scope."
    )

    @model_validator(mode="after")
    def _connector_complete(self) -> ShopCoupons:
        if (self.shopify_admin_url is None) != (self.shopify_access_token is None):
            raise ValueError(
                f"shop {self.shop_id}: shopify_admin_url and shopify_access_token go together"
            )
        if self.source == "pool" and self.shopify_access_token is not None:
            raise ValueError(
                f"shop {self.shop_id}: pool codes are created by the shop itself; the Shopify "
                "connector only creates generated codes"
            )
        if self.source == "generated" and self.low_pool_warning is not None:
            raise ValueError(f"shop {self.shop_id}: low_pool_warning applies to a pool only")
        return self

    @property
    def warn_below(self) -> int:
        return DEFAULT_LOW_POOL if self.low_pool_warning is None else self.low_pool_warning
