"""Event contracts: the CloudEvents 1.0 envelope (structured JSON mode) and its typed payloads.

Every Kafka message in Rebound is one JSON CloudEvent in the record value
(`content-type: application/cloudevents+json`), keyed by the customer key. Ids from shop
platforms are strings: Shopify ids exceed 2^53 and must never pass through a float.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar, cast

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

CONTENT_TYPE = "application/cloudevents+json"
NAMESPACE = uuid.UUID("5b0e4a52-8a4e-4a57-9d3b-7f3f0c1a2b9e")
_NAMESPACE_BYTES = NAMESPACE.bytes

# Canonical shop events (topic shop.events)
CART_UPDATED = "shop.cart.updated.v1"
ORDER_PLACED = "shop.order.placed.v1"
ORDER_PAID = "shop.order.paid.v1"
ORDER_CANCELLED = "shop.order.cancelled.v1"
CUSTOMER_REGISTERED = "shop.customer.registered.v1"
CUSTOMER_UPDATED = "shop.customer.updated.v1"
CONSENT_CHANGED = "shop.consent.changed.v1"
PRODUCT_UPDATED = "shop.product.updated.v1"  # created or changed: the whole product
PRODUCT_DELETED = "shop.product.deleted.v1"
# Derived (customer.activity), requests (message.requests), results (engagement.results)
CUSTOMER_ACTIVITY = "customer.activity.recorded.v1"
# Activity.kind of a lifecycle stage change (by an order, or by time passing)
STAGE_CHANGED_KIND = "customer.stage.changed.v1"
# Activity.kind of a guest merged into an account (docs/adr/0004-one-customer.md)
CUSTOMER_MERGED_KIND = "customer.merged.v1"
# Activity.kind of a profile published after a history import: facts, not something the
# customer just did (it starts no event-triggered journey and is no segment entry)
HISTORY_IMPORTED_KIND = "customer.history.imported.v1"
MESSAGE_REQUESTED = "message.requested.v1"
MESSAGE_SENT = "message.sent.v1"
MESSAGE_FAILED = "message.failed.v1"
MESSAGE_SUPPRESSED = "message.suppressed.v1"
MESSAGE_CONVERTED = "message.converted.v1"
JOURNEY_DECISION = "journey.decision.v1"
# A journey's `publish: customer.sunset` step: typed, so the dispatcher can act on it.
SUNSET_DECISION = "customer.sunset"
CUSTOMER_SUNSET = "customer.sunset.v1"
# What recipients did with a message (email.events)
EMAIL_OPENED = "email.opened.v1"
EMAIL_CLICKED = "email.clicked.v1"
EMAIL_UNSUBSCRIBED = "email.unsubscribed.v1"
EMAIL_BOUNCED = "email.bounced.v1"
MESSAGE_UNCERTAIN = "message.uncertain.v1"
# A discount code handed to one message (engagement.results)
COUPON_ISSUED = "coupon.issued.v1"
# Data subject requests (privacy.requests) and each service's answer (privacy.results)
CUSTOMER_REDACT_REQUESTED = "customer.redact.requested.v1"
SHOP_REDACT_REQUESTED = "shop.redact.requested.v1"
CUSTOMER_EXPORT_REQUESTED = "customer.export.requested.v1"
CUSTOMER_REDACTED = "customer.redacted.v1"  # one per service, for either redact request
CUSTOMER_EXPORT_PART = "customer.export.part.v1"  # one per service
PRIVACY_SERVICES: tuple[str, ...] = ("ingest", "scheduler", "dispatcher")

ConsentState = Literal["subscribed", "not_subscribed", "unsubscribed", "pending", "redacted"]


class InvalidEvent(ValueError):
    """The bytes are not a CloudEvent Rebound understands; the message goes to the DLQ."""


def _aware(moment: datetime) -> datetime:
    """A time without an offset is taken as UTC (what platforms mean by it), so every time in
    Rebound is timezone-aware and comparing two of them can never raise."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# Every point in time on a topic: naive input is normalised to UTC when it is read.
Instant = Annotated[datetime, AfterValidator(_aware)]


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


def stable_event_id(*parts: str) -> str:
    """A deterministic id, so a redelivered webhook becomes the same event.

    `str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))` (RFC 4122 version 5), computed without
    building a UUID object: it runs once or twice per event on the consumer's hot path."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()
    h = (
        digest[:6] + bytes((digest[6] & 0x0F | 0x50,)) + digest[7:8]
        + bytes((digest[8] & 0x3F | 0x80,)) + digest[9:16]
    ).hex()  # fmt: skip
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def customer_key(shop_id: str, customer_id: str | None, email: str | None) -> str:
    """shop + the shop's customer id, or the normalised e-mail for guests."""
    if customer_id:
        return f"{shop_id}:c:{customer_id}"
    if email:
        return f"{shop_id}:e:{email.strip().lower()}"
    raise InvalidEvent("event names neither a customer id nor an e-mail address")


# --- payloads --------------------------------------------------------------------------


class Customer(Contract):
    id: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    marketing_consent: ConsentState | None = None
    registered_at: Instant | None = None
    country: str | None = Field(
        default=None, description="ISO 3166-1 alpha-2 of the default address, e.g. DE."
    )
    time_zone: str | None = Field(default=None, description="IANA zone, when the shop knows it.")


class Line(Contract):
    product_id: str | None = None
    variant_id: str | None = None
    sku: str | None = None
    title: str
    variant_title: str | None = None
    quantity: int
    price: Decimal
    image_url: str | None = None
    category: str | None = Field(
        default=None, description="Product type or collection; else the catalog's is used."
    )


class CartUpdated(Contract):
    cart_id: str
    customer: Customer
    lines: list[Line]
    currency: str | None = None
    total_price: Decimal | None = None
    recovery_url: str | None = None
    updated_at: Instant


class OrderEvent(Contract):
    """orders placed, paid and cancelled share one shape; the event type says which."""

    order_id: str
    customer: Customer
    lines: list[Line]
    currency: str | None = None
    total_price: Decimal
    cart_id: str | None = None
    placed_at: Instant
    cancelled_at: Instant | None = None
    discount_codes: list[str] = Field(
        default_factory=list, description="Codes the customer entered at checkout."
    )


class CustomerChanged(Contract):
    customer: Customer


class ConsentChanged(Contract):
    customer: Customer
    state: ConsentState | None
    changed_at: Instant | None = None


class ProductUpdated(Contract):
    """A product created or changed in the shop's catalog: the whole product as it now is."""

    product_id: str
    title: str
    category: str | None = Field(default=None, description="Product type or main collection.")
    tags: list[str] = Field(default_factory=list)
    url: str | None = None
    image_url: str | None = None
    price: Decimal | None = None
    available: bool = True
    updated_at: Instant


class ProductDeleted(Contract):
    product_id: str
    deleted_at: Instant | None = None


SHOP_PAYLOADS: dict[str, type[Contract]] = {
    CART_UPDATED: CartUpdated,
    ORDER_PLACED: OrderEvent,
    ORDER_PAID: OrderEvent,
    ORDER_CANCELLED: OrderEvent,
    CUSTOMER_REGISTERED: CustomerChanged,
    CUSTOMER_UPDATED: CustomerChanged,
    CONSENT_CHANGED: ConsentChanged,
    PRODUCT_UPDATED: ProductUpdated,
    PRODUCT_DELETED: ProductDeleted,
}


class CategoryFacts(Contract):
    """A customer's orders in one product category."""

    category: str
    orders: int
    spent: Decimal
    last_order_at: Instant
    average_days_between_orders: float | None = None


class RecentOrder(Contract):
    """One order of the last two periods: what the period figures are summed from."""

    at: Instant
    total: Decimal


class Profile(Contract):
    """What the scheduler and dispatcher need to know about a customer, as of one event."""

    key: str
    shop_id: str
    email: str | None
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    marketing_consent: ConsentState | None = None
    registered_at: Instant | None = None
    orders_count: int = 0
    total_spent: Decimal = Decimal(0)
    last_order_at: Instant | None = None
    last_human_open_at: Instant | None = None
    last_click_at: Instant | None = None
    # Order facts (docs/adr/0002-customer-facts.md): figures that depend on "now" are as of
    # the moment the activity was published (`as_of`).
    as_of: Instant | None = None
    first_order_at: Instant | None = None
    average_order_value: Decimal | None = None
    average_days_between_orders: float | None = None
    expected_next_order_at: Instant | None = None
    days_since_last_order: int | None = None
    period_days: int = 90
    orders_last_period: int = 0
    spent_last_period: Decimal = Decimal(0)
    orders_previous_period: int = 0
    spent_previous_period: Decimal = Decimal(0)
    recent_orders: list[RecentOrder] | None = Field(
        default=None,
        description="The orders the last and the previous period are summed from (at least "
        "those of the two periods before as_of), oldest first: with them the four period "
        "figures can be recomputed at any moment. None: a publisher that does not send them",
    )
    categories: list[CategoryFacts] = Field(default_factory=list)
    last_order_categories: list[str] = Field(default_factory=list)
    country: str | None = None
    time_zone: str | None = None
    opens_90d: int = 0
    clicks_90d: int = 0
    usual_open_hour: int | None = Field(default=None, description="0-23, customer's local time")
    stage: str | None = Field(
        default=None,
        description="new, active, repeat_buyer, one_time_buyer, falling_asleep, inactive, "
        "high_value (the shop's thresholds)",
    )
    high_value: bool = False
    purchase_days: int = Field(
        default=0,
        description="Distinct UTC days with a counted order: the first purchase and the repeat "
        "purchases of the purchase predictions (several orders on one day count once)",
    )
    first_day_spent: Decimal = Field(
        default=Decimal(0), description="Spend of the first purchase day (repeat spend: the rest)"
    )


class CartSnapshot(Contract):
    cart_id: str
    lines: list[Line]
    currency: str | None = None
    total_price: Decimal | None = None
    recovery_url: str | None = None
    updated_at: Instant


class MessageEngagement(Contract):
    """One sent message as the facts know it after an e-mail event (the opened branch etc.)."""

    request_key: str
    journey_id: str
    step_id: str
    sent_at: Instant
    first_human_open_at: Instant | None = None
    first_machine_open_at: Instant | None = None
    human_opens: int = 0
    machine_opens: int = 0
    first_click_at: Instant | None = None
    clicked_links: list[str] = Field(default_factory=list)
    converted_at: Instant | None = None
    order_id: str | None = None
    revenue: Decimal | None = None
    unsubscribed_at: Instant | None = None
    bounced_at: Instant | None = None


class CustomerMerged(Contract):
    """A guest (keyed by e-mail) merged into the account with the same e-mail in the same shop.

    From then on everything about the person travels under `surviving_key`; `merged_key` is an
    alias of it. Carried by the activity of kind customer.merged.v1, keyed by `surviving_key`.
    """

    shop_id: str
    email: str
    surviving_key: str
    merged_key: str
    merged_at: Instant


class Activity(Contract):
    """customer.activity: one canonical event applied to the customer facts."""

    kind: str  # the canonical event type it came from, e.g. shop.cart.updated.v1
    source_event_id: str
    occurred_at: Instant
    profile: Profile
    cart: CartSnapshot | None = None  # the open cart after this event, if any
    order_id: str | None = None
    order_total: Decimal | None = None
    discount_codes: list[str] = Field(default_factory=list)  # entered in the order
    message: MessageEngagement | None = None  # for e-mail events and attributed orders
    previous_stage: str | None = None  # for customer.stage.changed.v1: the stage it left
    merged: CustomerMerged | None = None  # for customer.merged.v1: which keys became one


class Recipient(Contract):
    email: str
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None


class MessageRequest(Contract):
    """message.requests: the scheduler asks the dispatcher for one message."""

    request_key: str
    shop_id: str
    customer_key: str
    journey_id: str
    journey_version: int
    step_id: str
    channel: Literal["email"] = "email"
    template: str
    subject: str
    recipient: Recipient
    consent_required: bool = True
    marketing_consent: ConsentState | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    requested_at: Instant
    test: bool = Field(
        default=False,
        description="A test-mode journey's message: sent to its test recipients, not the customer",
    )


class MessageResult(Contract):
    """engagement.results: what happened to a request (sent, failed, suppressed, uncertain).

    `uncertain`: the dispatcher stopped between the SMTP DATA command and the relay's answer,
    so the relay may have accepted the message; it is never sent again.
    """

    request_key: str
    shop_id: str
    customer_key: str
    journey_id: str
    step_id: str
    channel: Literal["email"] = "email"
    status: Literal["sent", "failed", "suppressed", "uncertain"]
    reason: str | None = None
    email: str | None = None
    smtp_message_id: str | None = None
    occurred_at: Instant


class JourneyDecision(Contract):
    """journey.decision.v1 on engagement.results: a `publish` step other channels act on."""

    decision: str  # e.g. customer.sunset
    journey_id: str
    journey_version: int | None = None
    step_id: str
    customer_key: str


class CustomerSunset(Contract):
    """customer.sunset.v1 on engagement.results: a journey ended a customer who never reacted
    (the win-back's goodbye). The dispatcher refuses their marketing mail from `sunset_at`
    until they order or opt in again; ads or SMS services may drop them too."""

    shop_id: str
    customer_key: str
    journey_id: str
    journey_version: int
    step_id: str
    sunset_at: Instant


class MessageConverted(Contract):
    """message.converted.v1 on engagement.results: an order attributed to a message, last touch."""

    request_key: str
    shop_id: str
    customer_key: str
    journey_id: str
    step_id: str
    order_id: str
    revenue: Decimal
    currency: str | None = None
    # What tied the order to the message: a click or a human open inside its window, or the
    # message's own discount code (whatever the window; touched_at is when it was issued).
    touch: Literal["click", "open", "code"]
    touched_at: Instant
    ordered_at: Instant
    recovered_cart_id: str | None = None  # set when the order is the abandoned cart itself
    code: str | None = None  # the message's discount code, when the order used it
    late_redemption: bool = Field(
        default=False, description="The code was used after it expired (the shop honoured it)."
    )


class CouponIssued(Contract):
    """coupon.issued.v1 on engagement.results: a discount code handed to one message.

    With `source: generated` Rebound made the code; a shop platform's connector creates it
    from this event (Shopify shops with an access token get it created by the dispatcher
    before the mail goes out). `source: pool` codes were uploaded by the shop itself.
    """

    request_key: str
    shop_id: str
    customer_key: str
    journey_id: str
    step_id: str
    code: str
    source: Literal["generated", "pool"]
    value: str = Field(description="'10%' off, or an amount off in `currency`, e.g. '15.00'.")
    currency: str | None = None
    applies_to: str | list[str] = Field(
        description="'order' (the whole order) or the shop collection ids it is limited to."
    )
    minimum_order: Decimal | None = None
    issued_at: Instant
    expires_at: Instant


# --- e-mail events (email.events) ------------------------------------------------------


class EmailEvent(Contract):
    """The message an e-mail event is about; every type below adds what happened."""

    request_key: str
    shop_id: str
    customer_key: str
    journey_id: str
    step_id: str
    sent_at: Instant


class EmailOpened(EmailEvent):
    opened_at: Instant
    machine: bool = Field(
        description="Fetched by a mail-privacy proxy or a scanner, or seconds after the send; "
        "journeys branch on human opens."
    )
    machine_reason: str | None = None  # privacy_proxy, scanner, right_after_send


class EmailClicked(EmailEvent):
    clicked_at: Instant
    link_index: int
    url: str


class EmailUnsubscribed(EmailEvent):
    unsubscribed_at: Instant
    method: Literal["one_click", "confirm_page"]


class EmailBounced(EmailEvent):
    """The relay refused the address; `permanent` (5xx) suppresses it for marketing."""

    email: str
    bounced_at: Instant
    permanent: bool
    stage: Literal["recipient", "data"]  # refused at RCPT TO, or after DATA
    smtp_code: int | None = None
    detail: str = ""


EMAIL_PAYLOADS: dict[str, type[EmailEvent]] = {
    EMAIL_OPENED: EmailOpened,
    EMAIL_CLICKED: EmailClicked,
    EMAIL_UNSUBSCRIBED: EmailUnsubscribed,
    EMAIL_BOUNCED: EmailBounced,
}


# --- data subject requests (privacy.requests, privacy.results) ---------------------------

PrivacyService = Literal["ingest", "scheduler", "dispatcher"]


class PrivacyRequest(Contract):
    """Erase (customer.redact / shop.redact) or export (customer.export) a data subject.

    The customer is named by any of its keys, e-mail addresses and order ids; every service
    widens that with what its own data links to them (docs/privacy.md). A shop request names
    only the shop: everything of that shop goes.
    """

    request_id: str
    shop_id: str
    scope: Literal["customer", "shop"]
    customer_keys: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list, description="Lower-cased.")
    order_ids: list[str] = Field(default_factory=list)
    origin: Literal["shopify", "control_plane"]
    platform_request_id: str | None = Field(
        default=None, description="Shopify's data_request.id, for the shop to match an export."
    )
    requested_at: Instant

    def subject_keys(self) -> set[str]:
        """The named keys and the guest key of every named address."""
        guests = {customer_key(self.shop_id, None, email) for email in self.emails}
        return set(self.customer_keys) | guests


class PrivacyConfirmed(Contract):
    """customer.redacted.v1: one service erased its part of a redact request."""

    request_id: str
    shop_id: str
    service: PrivacyService
    erased: dict[str, int] = Field(description="Rows deleted or pseudonymised, per table.")
    completed_at: Instant


class ExportPart(Contract):
    """customer.export.part.v1: one service's data about the subject of an export request."""

    request_id: str
    shop_id: str
    service: PrivacyService
    data: dict[str, list[dict[str, Any]]] = Field(description="Table -> its rows as JSON.")
    exported_at: Instant


def subject_hash(shop_id: str, value: str) -> str:
    """A customer key or lower-cased address as a SHA-256, for the few records that must
    outlive an erasure without naming the person (docs/privacy.md)."""
    return hashlib.sha256(f"{shop_id}\x1f{value}".encode()).hexdigest()


# --- the envelope ----------------------------------------------------------------------


class CloudEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str | None = None  # the customer key
    time: Instant
    datacontenttype: Literal["application/json"] = "application/json"
    shopid: str | None = None  # extension attribute
    data: dict[str, Any]


P = TypeVar("P", bound=Contract)


def construct(model: type[P], **values: Any) -> P:
    """`model.model_construct(**values)` (values already valid), for hot paths: the same
    instance without its per-call work (alias lookups, and pydantic's `get_default`, which
    inspects each default factory's signature and deep-copies each default: about 0.2 ms per
    Profile). Defaults come from a per-model plan read once: immutable ones shared, factories
    called, anything else deep-copied, as pydantic does."""
    plan = _construct_plan(model)
    if plan is None:  # aliases, extra="allow" or a post-init: pydantic's own path
        for name, make in _default_factories(model):
            if name not in values:
                values[name] = make()
        return cast(P, model.model_construct(**values))
    fields = plan.template.copy()  # every field, in the model's order
    fields.update(values)
    for name, factory in plan.factories:
        if name not in values:
            fields[name] = factory()
    if len(fields) != len(plan.template) or not plan.required <= values.keys():
        # a name that is no field (ignored, as extra="ignore" does), or a required field not
        # given (left out, as model_construct does)
        fields = {n: v for n, v in fields.items() if n in plan.template and v is not _MISSING}
    built = model.__new__(model)
    object.__setattr__(built, "__dict__", fields)
    object.__setattr__(built, "__pydantic_fields_set__", values.keys() & plan.template.keys())
    object.__setattr__(built, "__pydantic_extra__", None)
    object.__setattr__(built, "__pydantic_private__", None)
    return built


_MISSING = object()  # a required field's place in a construct plan's template
_IMMUTABLE = (type(None), bool, int, float, str, bytes, Decimal, datetime)


@dataclass(frozen=True)
class _ConstructPlan:
    template: dict[str, Any]  # per field: its shareable default, a factory's field None
    factories: tuple[tuple[str, Callable[[], Any]], ...]  # fresh defaults: called per instance
    required: frozenset[str]


@functools.cache
def _construct_plan(model: type[Contract]) -> _ConstructPlan | None:
    if model.model_config.get("extra") == "allow" or model.__pydantic_post_init__:
        return None
    template: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, field in model.model_fields.items():
        if field.alias is not None or field.validation_alias is not None:
            return None
        factory = cast(Callable[[], Any] | None, field.default_factory)
        if field.is_required():
            template[name] = _MISSING
        elif factory is not None:
            template[name] = None
            factories.append((name, factory))
        elif isinstance(field.default, _IMMUTABLE):
            template[name] = field.default
        else:
            template[name] = None
            factories.append((name, functools.partial(copy.deepcopy, field.default)))
    required = frozenset(n for n, v in template.items() if v is _MISSING)
    return _ConstructPlan(template, tuple(factories), required)


@functools.cache
def _default_factories(model: type[Contract]) -> tuple[tuple[str, Callable[[], Any]], ...]:
    return tuple(
        (name, cast(Callable[[], Any], field.default_factory))
        for name, field in model.model_fields.items()
        if field.default_factory is not None
    )


def make_event(
    *,
    type: str,
    source: str,
    id: str,
    time: datetime,
    subject: str | None,
    shop_id: str | None,
    data: Contract,
) -> CloudEvent:
    return CloudEvent(
        id=id,
        source=source,
        type=type,
        subject=subject,
        time=time,
        shopid=shop_id,
        data=data.model_dump(mode="json"),
    )


def encode(event: CloudEvent) -> bytes:
    return orjson.dumps(event.model_dump(mode="json", exclude_none=True))


def encode_parts(
    *,
    id: str,
    source: str,
    type: str,
    subject: str | None,
    time: datetime,
    shop_id: str | None,
    data_json: bytes,
) -> bytes:
    """The bytes `encode` gives for this envelope, for a payload already serialised as JSON.

    For hot paths: the payload is serialised once, by its contract or from stored JSON, and
    no CloudEvent model is built and dumped around it.
    """
    envelope: dict[str, Any] = {"specversion": "1.0", "id": id, "source": source, "type": type}
    if subject is not None:
        envelope["subject"] = subject
    envelope["time"] = time
    envelope["datacontenttype"] = "application/json"
    if shop_id is not None:
        envelope["shopid"] = shop_id
    envelope["data"] = orjson.Fragment(data_json)
    return orjson.dumps(envelope, option=orjson.OPT_UTC_Z)  # pydantic writes UTC as `Z`


def decode(raw: bytes | None) -> CloudEvent:
    if raw is None:
        raise InvalidEvent("empty message (tombstone)")
    try:
        return CloudEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"not a CloudEvent: {_first_error(exc)}") from exc


def payload(event: CloudEvent, model: type[P]) -> P:
    try:
        return model.model_validate(event.data)
    except ValidationError as exc:
        raise InvalidEvent(f"{event.type} data invalid: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"
