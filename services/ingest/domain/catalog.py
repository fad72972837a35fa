"""Catalog events folded into product rows: the newest state of each product in a batch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from services.ingest.domain.facts import ShopEventIn, as_utc
from shared import events as ev


@dataclass(frozen=True)
class ProductRow:
    shop_id: str
    product_id: str
    title: str
    category: str | None
    tags: tuple[str, ...]
    url: str | None
    image_url: str | None
    price: Decimal | None
    available: bool
    updated_at: datetime


@dataclass
class CatalogChanges:
    upserts: dict[tuple[str, str], ProductRow] = field(default_factory=dict)
    deletes: set[tuple[str, str]] = field(default_factory=set)


def fold_products(events: Iterable[ShopEventIn]) -> CatalogChanges:
    """Within a batch the later event wins (one product's events are on one partition)."""
    changes = CatalogChanges()
    for event in events:
        data = event.data
        if isinstance(data, ev.ProductUpdated):
            key = (event.shop_id, data.product_id)
            changes.deletes.discard(key)
            row = product_row(event.shop_id, data)
            old = changes.upserts.get(key)
            if old is None or row.updated_at >= old.updated_at:
                changes.upserts[key] = row
        elif isinstance(data, ev.ProductDeleted):
            key = (event.shop_id, data.product_id)
            changes.upserts.pop(key, None)
            changes.deletes.add(key)
    return changes


def product_row(shop_id: str, p: ev.ProductUpdated) -> ProductRow:
    return ProductRow(
        shop_id,
        p.product_id,
        p.title,
        p.category,
        tuple(p.tags),
        p.url,
        p.image_url,
        p.price,
        p.available,
        as_utc(p.updated_at),
    )
