"""customer.activity: each applied shop event, with the customer's facts as they now stand.

Encoded straight to the bytes on the topic, once: every part is a value already validated
(the decoded event, the facts this service stored), each profile is serialised once per batch
by its contract, and the stored cart lines (JSON already) are embedded as they are.
The result parses as `ev.CloudEvent` carrying an `ev.Activity` (tests/unit/ingest/ check it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson

from services.ingest.domain.facts import ShopEventIn
from shared import events as ev

SOURCE_ACTIVITY = "rebound/ingest/facts"
# pydantic's JSON form of datetimes (UTC as `Z`).
_JSON_OPTIONS = orjson.OPT_UTC_Z
# Activity's fields after `cart`, in their order; their defaults unless set below.
_FIELDS = list(ev.Activity.model_fields)
_TAIL_FIELDS = _FIELDS[_FIELDS.index("cart") + 1 :]
# Read once: pydantic inspects a default factory's signature on every get_default. Only ever
# serialised, so sharing a default list between activities is safe.
_TAIL_DEFAULTS: dict[str, Any] = {
    name: ev.Activity.model_fields[name].get_default(call_default_factory=True)
    for name in _TAIL_FIELDS
}
# The tail of an event that is not an order: every field its default (`,"order_id":null,...}`).
_DEFAULT_TAIL = b"," + orjson.dumps(_TAIL_DEFAULTS)[1:]


@dataclass(frozen=True)
class OpenCart:
    """A customer's open cart as stored; `lines_json` is the stored JSON array of ev.Line."""

    cart_id: str
    lines_json: str
    currency: str | None
    total_price: Decimal | None
    recovery_url: str | None
    updated_at: datetime

    def snapshot(self) -> ev.CartSnapshot:
        return ev.CartSnapshot(
            cart_id=self.cart_id,
            lines=orjson.loads(self.lines_json),
            currency=self.currency,
            total_price=self.total_price,
            recovery_url=self.recovery_url,
            updated_at=self.updated_at,
        )


def activity_id(source_event_id: str) -> str:
    """The same source event always yields the same activity id, so consumers can dedupe."""
    return ev.stable_event_id("activity", source_event_id)


def activity_event(data: ev.Activity, subject: str, shop_id: str, now: datetime) -> ev.CloudEvent:
    """The customer.activity envelope around `data`, built as the contract's models: for the
    rare activity (a merge, a history import) that is not encoded straight to its bytes."""
    return ev.CloudEvent.model_construct(
        id=activity_id(data.source_event_id),
        source=SOURCE_ACTIVITY,
        type=ev.CUSTOMER_ACTIVITY,
        subject=subject,
        time=now,
        shopid=shop_id,
        data=data.model_dump(mode="json"),
    )


def activity_events(
    events: Iterable[ShopEventIn],
    owners: Mapping[tuple[str, str], str],
    profiles: Mapping[str, ev.Profile],
    open_carts: Mapping[str, OpenCart],
    facts: dict[str, bytes] | None = None,
) -> list[tuple[str, bytes]]:
    """(key, encoded event) per shop event whose customer is known; an unclaimed cart yields none.

    `owners` names the customer of carts that arrived anonymously but were claimed since.
    `facts` caches each customer's encoded profile and cart, to share with encoded_stage_events.
    """
    out: list[tuple[str, bytes]] = []
    facts = {} if facts is None else facts
    for event in events:
        key = event.customer_key or _owner(event, owners)
        profile = profiles.get(key) if key else None
        if key is None or profile is None:
            continue
        if key not in facts:
            facts[key] = _facts_json(profile, open_carts.get(key))
        out.append((key, _activity(event, key, facts[key])))
    return out


def _owner(event: ShopEventIn, owners: Mapping[tuple[str, str], str]) -> str | None:
    if isinstance(event.data, ev.CartUpdated):
        return owners.get((event.shop_id, event.data.cart_id))
    return None


def _facts_json(profile: ev.Profile, cart: OpenCart | None) -> bytes:
    """`"profile":...,"cart":...`, the part of the activity shared by a customer's events."""
    cart_json = (
        orjson.dumps(
            {
                "cart_id": cart.cart_id,
                "lines": orjson.Fragment(cart.lines_json),
                "currency": cart.currency,
                "total_price": _decimal(cart.total_price),
                "recovery_url": cart.recovery_url,
                "updated_at": cart.updated_at,
            },
            option=_JSON_OPTIONS,
        )
        if cart is not None
        else b"null"
    )
    return b'"profile":' + profile.model_dump_json().encode() + b',"cart":' + cart_json


def encoded_stage_events(
    changes: Iterable[StageChangeLike],
    profiles: Mapping[str, ev.Profile],
    carts: Mapping[str, OpenCart],
    cause_ids: Mapping[str, str],
    now: datetime,
    facts: dict[str, bytes] | None = None,
) -> list[tuple[str, bytes]]:
    """customer.stage.changed.v1 activity for each stage an order or time moved, encoded
    straight to its bytes as activity_events does (a unit test compares them with the
    contract's own encoding). The id is derived from what caused it, so a republished change
    is recognisably the same. Like every activity it carries all the customer's facts, the
    open cart included: a consumer keeps the latest activity's facts, so a stage change must
    not read as "the cart is gone"."""
    out: list[tuple[str, bytes]] = []
    facts = {} if facts is None else facts
    for change in changes:
        key = change.customer_key
        profile = profiles.get(key)
        if profile is None:
            continue
        if key not in facts:
            facts[key] = _facts_json(profile, carts.get(key))
        source_id = _stage_source_id(change, cause_ids, now)
        head = orjson.dumps(
            {"kind": ev.STAGE_CHANGED_KIND, "source_event_id": source_id, "occurred_at": now},
            option=_JSON_OPTIONS,
        )
        tail = dict(_TAIL_DEFAULTS)
        tail["previous_stage"] = change.previous
        data = head[:-1] + b"," + facts[key] + b"," + orjson.dumps(tail)[1:]
        value = ev.encode_parts(
            id=activity_id(source_id),
            source=SOURCE_ACTIVITY,
            type=ev.CUSTOMER_ACTIVITY,
            subject=key,
            time=now,
            shop_id=change.shop_id,
            data_json=data,
        )
        out.append((key, value))
    return out


def _stage_source_id(change: StageChangeLike, cause_ids: Mapping[str, str], now: datetime) -> str:
    cause = cause_ids.get(change.customer_key) or now.isoformat()
    return ev.stable_event_id("stage", change.customer_key, change.stage, cause)


def _activity(event: ShopEventIn, key: str, facts: bytes) -> bytes:
    order = event.data if isinstance(event.data, ev.OrderEvent) else None
    head = orjson.dumps(
        {
            "kind": event.type,
            "source_event_id": event.event_id,
            "occurred_at": event.occurred_at,
        },
        option=_JSON_OPTIONS,
    )
    tail = _DEFAULT_TAIL  # e.g. message, previous_stage: not for shop events
    if order is not None:
        fields = dict(_TAIL_DEFAULTS)
        fields["order_id"], fields["order_total"] = order.order_id, _decimal(order.total_price)
        fields["discount_codes"] = order.discount_codes
        tail = b"," + orjson.dumps(fields)[1:]
    data = head[:-1] + b"," + facts + tail  # the three parts as one object
    return ev.encode_parts(
        id=activity_id(event.event_id),
        source=SOURCE_ACTIVITY,
        type=ev.CUSTOMER_ACTIVITY,
        subject=key,
        time=event.time,
        shop_id=event.shop_id,
        data_json=data,
    )


def _decimal(value: Decimal | None) -> str | None:
    """pydantic's JSON form of a Decimal: its string."""
    if value is None or isinstance(value, Decimal):
        return None if value is None else str(value)
    raise TypeError(f"{type(value).__name__} is not part of the activity contract")


class StageChangeLike(Protocol):
    @property
    def customer_key(self) -> str: ...
    @property
    def shop_id(self) -> str: ...
    @property
    def previous(self) -> str | None: ...
    @property
    def stage(self) -> str: ...
