"""What "the same lines" means when an order that names no cart is matched to an abandoned one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.ingest.domain.engagement import (
    LeftCart,
    LineId,
    Order,
    recovered_by_lines,
    same_lines,
)

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
MUGS = LineId("p1", "v1", 2)
TEA = LineId("p2", None, 1)
CART = LeftCart("c1", NOW - timedelta(hours=2), (MUGS, TEA))


def _order(cart_id: str | None = None) -> Order:
    return Order("shop", "o1", "shop:c:1", NOW, Decimal("32.50"), "EUR", cart_id)


def test_the_same_items_split_and_ordered_otherwise_are_the_same_lines() -> None:
    split = [TEA, LineId(None, "v1", 1), LineId("p1", "v1", 1), LineId("p9", None, 0)]
    assert same_lines(split, CART.lines)


def test_a_superset_a_subset_or_an_unidentified_line_is_not_the_same() -> None:
    assert not same_lines([MUGS, TEA, LineId("p3", None, 1)], CART.lines)
    assert not same_lines([MUGS], CART.lines)
    assert not same_lines([LineId("p1", "v1", 1), TEA], CART.lines)
    assert not same_lines([MUGS, TEA, LineId(None, None, 1)], [MUGS, TEA, LineId(None, None, 1)])
    assert not same_lines([], [])


def test_only_an_order_without_a_cart_id_and_a_cart_left_before_the_message_match() -> None:
    sent_at = NOW - timedelta(hours=1)
    assert recovered_by_lines(_order(), [TEA, MUGS], sent_at, CART) == "c1"
    assert recovered_by_lines(_order("other"), [TEA, MUGS], sent_at, CART) is None
    assert recovered_by_lines(_order(), [TEA, MUGS], NOW - timedelta(hours=3), CART) is None
    assert recovered_by_lines(_order(), [TEA, MUGS], sent_at, None) is None
