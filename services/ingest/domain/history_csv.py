"""A shop's order history from CSV rows -> orders, or the line number and reason a row is
refused. Two layouts: Shopify's admin orders export and Rebound's generic one
(docs/import.md). One row per order line; the rows of one order are consecutive and
order-level fields may be left empty after its first row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Literal, NamedTuple

from services.ingest.domain.facts import OrderStatus
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


class HistoryLine(NamedTuple):
    product_id: str | None
    sku: str | None
    title: str
    quantity: int
    price: Decimal
    category: str | None


@dataclass(slots=True)
class HistoryOrder:
    """One order of the file; cancelled orders are stored but count for nothing."""

    order_id: str
    customer_key: str
    currency: str | None
    total: Decimal
    status: OrderStatus
    placed_at: datetime
    lines: list[HistoryLine]
    first_line: int  # the file's line of its first row


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
    """Feed (line number, row) in file order; get each order once its rows are complete.

    Millions of rows go through here, so a row costs a few lookups by column position and
    the values are plain tuples (no validation models)."""

    def __init__(self, shop_id: str, header: Sequence[str]) -> None:
        self._shop_id = shop_id
        columns = {name.strip(): n for n, name in enumerate(header)}
        fields = _SHOPIFY_FIELDS if layout_of(header) == "shopify" else _GENERIC_FIELDS
        # Rows are padded to `_width` with an empty last cell, which a missing column reads.
        self._width = len(header) + 1
        at = [[columns.get(c, len(header)) for c in names] or [len(header)] for names in fields]
        self._get = itemgetter(*(cols[0] for cols in at))
        # Fields with a second column (Shopify's Id or Name): read it when the first is empty.
        self._fallbacks = [(n, cols[1]) for n, cols in enumerate(at) if len(cols) > 1]
        self._open: HistoryOrder | None = None
        self._seen: dict[str, int] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self.rejected: list[Rejected] = []

    def feed(self, rows: Iterable[tuple[int, list[str]]]) -> Iterator[HistoryOrder]:
        for line_no, row in rows:
            try:
                done = self._row(line_no, row)
            except RowError as exc:
                self.rejected.append(Rejected(line_no, str(exc)))
                continue
            if done is not None:
                yield done

    def close(self) -> HistoryOrder | None:
        """The last order of the file."""
        done, self._open = self._open, None
        return done

    def _row(self, line_no: int, row: list[str]) -> HistoryOrder | None:
        columns = self._width - 1
        if len(row) == columns:
            row.append("")  # csv.reader's list, ours to change
        else:  # short or long rows read as if they had the header's columns
            row = [*row[:columns], *([""] * (columns - len(row))), ""]
        f = [value.strip() for value in self._get(row)]
        for n, column in self._fallbacks:
            if not f[n]:
                f[n] = row[column].strip()
        order_id = f[_ORDER_ID]
        if not order_id:
            raise RowError("no order id")
        current = self._open
        if current is not None and current.order_id == order_id:
            current.lines.extend(_line(f))
            return None
        if order_id in self._seen:
            raise RowError(
                f"order {order_id} already ended (its rows began at line "
                f"{self._seen[order_id]}); the rows of one order must be consecutive"
            )
        order = self._order(f, line_no)
        self._seen[order_id] = line_no
        self._open = order
        return current

    def _order(self, f: list[str], line_no: int) -> HistoryOrder:
        customer_id, email = f[_CUSTOMER_ID], f[_EMAIL]
        if not (customer_id or email):
            raise RowError("neither a customer id nor an e-mail address")
        if email and "@" not in email:
            raise RowError(f"e-mail {email!r} has no @")
        key = self._keys.get((customer_id, email))
        if key is None:
            key = ev.customer_key(self._shop_id, customer_id or None, email or None)
            self._keys[(customer_id, email)] = key
        placed_at = parse_time(f[_DATE])
        return HistoryOrder(
            order_id=f[_ORDER_ID],
            customer_key=key,
            currency=f[_CURRENCY] or None,
            total=_money(f[_TOTAL], "total"),
            status="cancelled" if f[_CANCELLED] else "paid",
            placed_at=placed_at,
            lines=_line(f),
            first_line=line_no,
        )


# The fields of a row, by position in the lists below.
(
    _ORDER_ID, _CUSTOMER_ID, _EMAIL, _DATE, _TOTAL, _CURRENCY, _CANCELLED, _PRODUCT_ID, _TITLE,
    _SKU, _CATEGORY, _QUANTITY, _PRICE,
) = range(13)  # fmt: skip
_GENERIC_FIELDS: tuple[tuple[str, ...], ...] = (
    ("order_id",), ("customer_id",), ("email",), ("date",), ("total",), ("currency",), (),
    ("product_id",), ("product",), (), ("category",), ("quantity",), ("price",),
)  # fmt: skip
_SHOPIFY_FIELDS: tuple[tuple[str, ...], ...] = (
    ("Id", "Name"), (), ("Email",), ("Created at", "Paid at"), ("Total",), ("Currency",),
    ("Cancelled at",), (), ("Lineitem name",), ("Lineitem sku",), (), ("Lineitem quantity",),
    ("Lineitem price",),
)  # fmt: skip


def _line(f: list[str]) -> list[HistoryLine]:
    product_id, title, price, quantity = f[_PRODUCT_ID], f[_TITLE], f[_PRICE], f[_QUANTITY]
    if not (title or product_id or price or quantity):
        return []  # an order without lines
    return [
        HistoryLine(
            product_id=product_id or None,
            sku=f[_SKU] or None,
            title=title or product_id or "item",
            quantity=_int(quantity, "quantity") if quantity else 1,
            price=_money(price, "price") if price else _ZERO,
            category=f[_CATEGORY] or None,
        )
    ]


_ZERO = Decimal(0)


def parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time (no offset: UTC), YYYYMMDD, or Shopify's
    `2024-01-15 10:23:45 -0500`."""
    # Histories repeat their dates (a day per row, often): parse each text once.
    moment = _parsed.get(text)
    if moment is None:
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        moment = _parsed[text] = _parse_time(text)
    return moment


_parsed: dict[str, datetime] = {}
_PARSED_MAX = 100_000


def _parse_time(text: str) -> datetime:
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
