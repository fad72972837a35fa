"""A shop's order history from CSV rows -> orders, or the line number and reason a row is
refused. Two layouts: Shopify's admin orders export and Rebound's generic one
(docs/import.md). One row per order line; the rows of one order are consecutive and
order-level fields may be left empty after its first row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal

from services.ingest.domain.facts import OrderRow, OrderStatus
from shared import events as ev

Layout = Literal["shopify", "generic"]
GENERIC_COLUMNS = (
    "customer_id",
    "email",
    "order_id",
    "date",
    "total",
    "currency",
    "product_id",
    "product",
    "category",
    "quantity",
    "price",
)
SHOPIFY_REQUIRED = ("Name", "Email", "Created at", "Total")
SHOPIFY_COLUMNS = (
    *SHOPIFY_REQUIRED,
    "Id",
    "Paid at",
    "Currency",
    "Cancelled at",
    "Lineitem name",
    "Lineitem sku",
    "Lineitem quantity",
    "Lineitem price",
)


class RowError(ValueError):
    """Why one row cannot be imported."""


@dataclass(frozen=True)
class Rejected:
    line: int
    reason: str


@dataclass
class _Open:
    """The order being read: its first row's fields and the lines gathered so far."""

    first_line: int
    order: OrderRow
    lines: list[ev.Line] = field(default_factory=list)


def layout_of(header: Sequence[str]) -> Layout:
    names = {h.strip() for h in header}
    if all(c in names for c in SHOPIFY_REQUIRED) and "Lineitem name" in names:
        return "shopify"
    has_customer = "customer_id" in names or "email" in names
    if has_customer and {"order_id", "date", "total"} <= names:
        return "generic"
    raise RowError(
        "unknown CSV layout: expected Shopify's orders export (Name, Email, Created at, Total, "
        "Lineitem name, ...) or the generic columns " + ", ".join(GENERIC_COLUMNS)
    )


class OrderReader:
    """Feed (line number, row) in file order; get each order once its rows are complete."""

    def __init__(self, shop_id: str, header: Sequence[str]) -> None:
        self._shop_id = shop_id
        columns = {name.strip(): n for n, name in enumerate(header)}
        layout = layout_of(header)
        self._fields = _shopify_fields if layout == "shopify" else _generic_fields
        self._at = {name: columns.get(name, -1) for name in (*GENERIC_COLUMNS, *SHOPIFY_COLUMNS)}
        self._open: _Open | None = None
        self._seen: dict[str, int] = {}
        self.rejected: list[Rejected] = []

    def feed(self, rows: Iterable[tuple[int, Sequence[str]]]) -> Iterator[OrderRow]:
        for line_no, row in rows:
            try:
                done = self._row(line_no, row)
            except RowError as exc:
                self.rejected.append(Rejected(line_no, str(exc)))
                continue
            if done is not None:
                yield done

    def close(self) -> OrderRow | None:
        """The last order of the file."""
        done, self._open = self._open, None
        return _finished(done) if done else None

    def _row(self, line_no: int, row: Sequence[str]) -> OrderRow | None:
        at = self._at

        def get(name: str) -> str:
            n = at[name]
            return row[n].strip() if 0 <= n < len(row) else ""

        fields = self._fields(get)
        order_id = fields.order_id
        if not order_id:
            raise RowError("no order id")
        current = self._open
        if current is not None and current.order.order_id == order_id:
            current.lines.extend(_line(fields))
            return None
        if order_id in self._seen:
            raise RowError(
                f"order {order_id} already ended (its rows began at line "
                f"{self._seen[order_id]}); the rows of one order must be consecutive"
            )
        order = _order(self._shop_id, fields)
        self._seen[order_id] = line_no
        self._open = _Open(line_no, order, list(_line(fields)))
        return _finished(current) if current else None


def _finished(open_order: _Open) -> OrderRow:
    order = open_order.order
    order.lines.extend(open_order.lines)
    return order


@dataclass(frozen=True)
class _Fields:
    order_id: str
    customer_id: str
    email: str
    date: str
    total: str
    currency: str
    cancelled: bool
    product_id: str
    title: str
    sku: str
    category: str
    quantity: str
    price: str


def _generic_fields(get: Callable[[str], str]) -> _Fields:
    return _Fields(
        get("order_id"),
        get("customer_id"),
        get("email"),
        get("date"),
        get("total"),
        get("currency"),
        False,
        get("product_id"),
        get("product"),
        "",
        get("category"),
        get("quantity"),
        get("price"),
    )


def _shopify_fields(get: Callable[[str], str]) -> _Fields:
    return _Fields(
        order_id=get("Id") or get("Name"),
        customer_id="",
        email=get("Email"),
        date=get("Created at") or get("Paid at"),
        total=get("Total"),
        currency=get("Currency"),
        cancelled=bool(get("Cancelled at")),
        product_id="",
        title=get("Lineitem name"),
        sku=get("Lineitem sku"),
        category="",
        quantity=get("Lineitem quantity"),
        price=get("Lineitem price"),
    )


def _order(shop_id: str, f: _Fields) -> OrderRow:
    if not (f.customer_id or f.email):
        raise RowError("neither a customer id nor an e-mail address")
    if f.email and "@" not in f.email:
        raise RowError(f"e-mail {f.email!r} has no @")
    placed_at = parse_time(f.date)
    status: OrderStatus = "cancelled" if f.cancelled else "paid"
    return OrderRow(
        shop_id=shop_id,
        order_id=f.order_id,
        customer_key=ev.customer_key(shop_id, f.customer_id or None, f.email or None),
        cart_id=None,
        currency=f.currency or None,
        total_price=_money(f.total, "total"),
        status=status,
        placed_at=placed_at,
        paid_at=placed_at if status == "paid" else None,
        cancelled_at=placed_at if f.cancelled else None,
        lines=[],
        updated_at=placed_at,
    )


def _line(f: _Fields) -> list[ev.Line]:
    if not (f.title or f.product_id or f.price or f.quantity):
        return []  # an order without lines
    quantity = _int(f.quantity or "1", "quantity")
    return [
        ev.Line.model_construct(
            product_id=f.product_id or None,
            variant_id=None,
            sku=f.sku or None,
            title=f.title or f.product_id or "item",
            variant_title=None,
            quantity=quantity,
            price=_money(f.price or "0", "price"),
            image_url=None,
            category=f.category or None,
        )
    ]


def parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time (no offset: UTC), YYYYMMDD, or Shopify's
    `2024-01-15 10:23:45 -0500`."""
    if not text:
        raise RowError("no date")
    value = text.strip()
    if len(value) == 8 and value.isdigit():
        value = f"{value[:4]}-{value[4:6]}-{value[6:]}"
    try:
        moment = datetime.fromisoformat(value.replace(" -", "-").replace(" +", "+"))
    except ValueError:
        raise RowError(
            f"date {text!r} is not ISO 8601 (e.g. 2024-01-15 or 2024-01-15T10:00Z)"
        ) from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment.year < 1970:
        raise RowError(f"date {text!r} is before 1970")
    return moment


def _money(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        raise RowError(f"{what} {text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise RowError(f"{what} {text!r} must be a number of at least 0")
    return value


def _int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RowError(f"{what} {text!r} is not a whole number") from None
    if value < 1:
        raise RowError(f"{what} {text!r} must be at least 1")
    return value
