"""E-mail events folded into the engagement facts, and orders attributed to the message that
earned them (last touch). Pure: the SQL in adapters/engagement_repository.py merges the rows
by the same rules (earliest first, latest last, counts added).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from shared import events as ev

DEFAULT_CLICK_WINDOW = timedelta(days=5)
DEFAULT_OPEN_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class EmailEventIn:
    event_id: str
    type: str
    data: ev.EmailEvent

    @property
    def at(self) -> datetime:
        d = self.data
        if isinstance(d, ev.EmailOpened):
            return d.opened_at
        if isinstance(d, ev.EmailClicked):
            return d.clicked_at
        if isinstance(d, ev.EmailUnsubscribed):
            return d.unsubscribed_at
        assert isinstance(d, ev.EmailBounced)
        return d.bounced_at


@dataclass(frozen=True)
class MessageRow:
    """What a batch says about one message; None: nothing new, keep what is stored."""

    request_key: str
    shop_id: str
    customer_key: str
    journey_id: str
    step_id: str
    sent_at: datetime
    first_human_open_at: datetime | None = None
    last_human_open_at: datetime | None = None
    first_machine_open_at: datetime | None = None
    human_opens: int = 0
    machine_opens: int = 0
    first_click_at: datetime | None = None
    last_click_at: datetime | None = None
    clicked_links: tuple[str, ...] = ()
    unsubscribed_at: datetime | None = None
    bounced_at: datetime | None = None


@dataclass(frozen=True)
class CustomerEngagement:
    customer_key: str
    last_human_open_at: datetime | None = None
    last_click_at: datetime | None = None
    unsubscribed_at: datetime | None = None


@dataclass
class EngagementChanges:
    messages: dict[str, MessageRow] = field(default_factory=dict)
    customers: dict[str, CustomerEngagement] = field(default_factory=dict)


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def merge_message(old: MessageRow, new: MessageRow) -> MessageRow:
    return replace(
        old,
        first_human_open_at=_min(old.first_human_open_at, new.first_human_open_at),
        last_human_open_at=_max(old.last_human_open_at, new.last_human_open_at),
        first_machine_open_at=_min(old.first_machine_open_at, new.first_machine_open_at),
        human_opens=old.human_opens + new.human_opens,
        machine_opens=old.machine_opens + new.machine_opens,
        first_click_at=_min(old.first_click_at, new.first_click_at),
        last_click_at=_max(old.last_click_at, new.last_click_at),
        clicked_links=tuple(dict.fromkeys(old.clicked_links + new.clicked_links)),
        unsubscribed_at=_min(old.unsubscribed_at, new.unsubscribed_at),
        bounced_at=_min(old.bounced_at, new.bounced_at),
    )


def merge_customer(old: CustomerEngagement, new: CustomerEngagement) -> CustomerEngagement:
    return CustomerEngagement(
        old.customer_key,
        _max(old.last_human_open_at, new.last_human_open_at),
        _max(old.last_click_at, new.last_click_at),
        _min(old.unsubscribed_at, new.unsubscribed_at),
    )


def message_row(event: EmailEventIn) -> MessageRow:
    d = event.data
    row = MessageRow(d.request_key, d.shop_id, d.customer_key, d.journey_id, d.step_id, d.sent_at)
    at = event.at
    if isinstance(d, ev.EmailOpened) and d.machine:
        return replace(row, first_machine_open_at=at, machine_opens=1)
    if isinstance(d, ev.EmailOpened):
        return replace(row, first_human_open_at=at, last_human_open_at=at, human_opens=1)
    if isinstance(d, ev.EmailClicked):
        return replace(row, first_click_at=at, last_click_at=at, clicked_links=(d.url,))
    if isinstance(d, ev.EmailUnsubscribed):
        return replace(row, unsubscribed_at=at)
    return replace(row, bounced_at=at if isinstance(d, ev.EmailBounced) and d.permanent else None)


def customer_row(event: EmailEventIn) -> CustomerEngagement:
    message = message_row(event)
    return CustomerEngagement(
        event.data.customer_key,
        message.last_human_open_at,
        message.last_click_at,
        message.unsubscribed_at,
    )


def fold(events: Iterable[EmailEventIn]) -> EngagementChanges:
    changes = EngagementChanges()
    for event in events:
        row = message_row(event)
        old = changes.messages.get(row.request_key)
        changes.messages[row.request_key] = row if old is None else merge_message(old, row)
        person = customer_row(event)
        known = changes.customers.get(person.customer_key)
        changes.customers[person.customer_key] = (
            person if known is None else merge_customer(known, person)
        )
    return changes


def engagement_view(row: MessageRow) -> ev.MessageEngagement:
    return ev.MessageEngagement(
        request_key=row.request_key,
        journey_id=row.journey_id,
        step_id=row.step_id,
        sent_at=row.sent_at,
        first_human_open_at=row.first_human_open_at,
        first_machine_open_at=row.first_machine_open_at,
        human_opens=row.human_opens,
        machine_opens=row.machine_opens,
        first_click_at=row.first_click_at,
        clicked_links=list(row.clicked_links),
        unsubscribed_at=row.unsubscribed_at,
        bounced_at=row.bounced_at,
    )


# --- attribution -------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    click: timedelta = DEFAULT_CLICK_WINDOW
    open: timedelta = DEFAULT_OPEN_WINDOW


@dataclass(frozen=True)
class Touch:
    request_key: str
    kind: Literal["click", "open", "code"]
    at: datetime
    code: str | None = None  # kind "code": the message's discount code the order used
    late: bool = False  # the code was used after it expired


@dataclass(frozen=True)
class IssuedCoupon:
    """A discount code one message carried (from coupon.issued)."""

    shop_id: str
    code: str
    request_key: str
    issued_at: datetime
    expires_at: datetime


def redemption(
    order_codes: Sequence[str], coupons: Sequence[IssuedCoupon], placed_at: datetime
) -> Touch | None:
    """The message whose own code the order used: that message earned it, whatever the
    attribution window (the code can only have come from it). After expiry: a late one."""
    used = {c.strip().lower() for c in order_codes}
    for coupon in coupons:
        if coupon.code.lower() in used:
            late = placed_at > coupon.expires_at
            return Touch(coupon.request_key, "code", coupon.issued_at, coupon.code, late)
    return None


@dataclass(frozen=True)
class Order:
    shop_id: str
    order_id: str
    customer_key: str
    placed_at: datetime
    revenue: Decimal
    currency: str | None
    cart_id: str | None


def last_touch(
    messages: Sequence[MessageRow], placed_at: datetime, windows: Windows
) -> Touch | None:
    """The most recent click or human open before the order that is still inside its window."""
    touches: list[Touch] = []
    for m in messages:
        if m.last_click_at is not None and _inside(m.last_click_at, placed_at, windows.click):
            touches.append(Touch(m.request_key, "click", m.last_click_at))
        if m.last_human_open_at is not None and _inside(
            m.last_human_open_at, placed_at, windows.open
        ):
            touches.append(Touch(m.request_key, "open", m.last_human_open_at))
    # A click outranks an open at the same moment: it is the stronger signal.
    return max(touches, key=lambda t: (t.at, t.kind == "click"), default=None)


def _inside(touched_at: datetime, placed_at: datetime, window: timedelta) -> bool:
    return timedelta(0) <= placed_at - touched_at <= window


def conversion(
    order: Order, touch: Touch, message: MessageRow, recovered_cart_id: str | None
) -> ev.MessageConverted:
    return ev.MessageConverted(
        request_key=message.request_key,
        shop_id=order.shop_id,
        customer_key=order.customer_key,
        journey_id=message.journey_id,
        step_id=message.step_id,
        order_id=order.order_id,
        revenue=order.revenue,
        currency=order.currency,
        touch=touch.kind,
        touched_at=touch.at,
        ordered_at=order.placed_at,
        recovered_cart_id=recovered_cart_id,
    )


def recovered_cart(order: Order, sent_at: datetime, cart_left_at: datetime | None) -> str | None:
    """The order is the abandoned cart itself: same cart id, left before the message went out."""
    if order.cart_id is None or cart_left_at is None or cart_left_at > sent_at:
        return None
    return order.cart_id


@dataclass(frozen=True)
class LineId:
    """What identifies a line when orders and carts are compared: the item and how many."""

    product_id: str | None
    variant_id: str | None
    quantity: int


@dataclass(frozen=True)
class LeftCart:
    """The customer's most recent cart left before the reminder went out (any status but
    emptied: the order itself has already closed it), for an order that names no cart."""

    cart_id: str
    left_at: datetime
    lines: tuple[LineId, ...]


def recovered_by_lines(
    order: Order, order_lines: Sequence[LineId], sent_at: datetime, cart: LeftCart | None
) -> str | None:
    """An order without a cart/checkout id (a POS, a platform that does not pass it, the
    events API without cart_id) recovered the cart it has the same lines as. An order that
    names a cart is judged by that id alone (recovered_cart), never by its lines."""
    if order.cart_id is not None or cart is None or cart.left_at > sent_at:
        return None
    return cart.cart_id if same_lines(order_lines, cart.lines) else None


def same_lines(a: Sequence[LineId], b: Sequence[LineId]) -> bool:
    """The same items in the same quantities, as a multiset: line order and how the platform
    split them into lines do not matter. Exact, not a superset or a subset: with no id, equal
    lines are the only evidence that this order is that cart, and an order that merely shares
    items with it (the cart plus a bigger purchase, or part of it) is another purchase;
    counting it would credit the reminder with a cart it did not recover. A side with a line
    that names neither product nor variant (a title alone) cannot be matched, nor can none."""
    first, second = _multiset(a), _multiset(b)
    return first is not None and first == second


def _multiset(lines: Sequence[LineId]) -> dict[tuple[str, str], int] | None:
    counted: dict[tuple[str, str], int] = {}
    for line in lines:
        # The variant id names the item on its own; one side may omit the product id.
        if line.variant_id is not None:
            key = ("variant", line.variant_id)
        elif line.product_id is not None:
            key = ("product", line.product_id)
        else:
            return None
        counted[key] = counted.get(key, 0) + line.quantity
    kept = {key: n for key, n in counted.items() if n > 0}
    return kept or None


# --- what the scheduler hears --------------------------------------------------------------

SOURCE_ENGAGEMENT = "rebound/ingest/engagement"


def activity(
    *,
    kind: str,
    source_event_id: str,
    occurred_at: datetime,
    profile: ev.Profile,
    cart: ev.CartSnapshot | None,
    message: ev.MessageEngagement | None,
) -> ev.CloudEvent:
    """customer.activity for an e-mail event or a conversion, like the shop events' activity."""
    data = ev.Activity(
        kind=kind,
        source_event_id=source_event_id,
        occurred_at=occurred_at,
        profile=profile,
        cart=cart,
        message=message,
    )
    return ev.make_event(
        type=ev.CUSTOMER_ACTIVITY,
        source=SOURCE_ENGAGEMENT,
        id=ev.stable_event_id("activity", source_event_id),
        time=occurred_at,
        subject=profile.key,
        shop_id=profile.shop_id,
        data=data,
    )
