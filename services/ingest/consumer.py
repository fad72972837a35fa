"""Edge of the facts consumer: bytes off shop.events -> typed events, or the dead-letter topic.

Each record is validated once, envelope and payload together, by a model made for its event
type (the CloudEvent fields with `data` typed as that type's payload).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from services.ingest.domain.canonical import subject_and_key
from services.ingest.domain.facts import ShopEventIn, as_utc
from services.ingest.handler import FactsHandler
from shared import events as ev
from shared.kafka import Publisher, Record
from shared.logging import get_logger
from shared.pipeline import Outgoing

log = get_logger(__name__)

# PostgreSQL cannot store U+0000 in text or jsonb; such an event would fail its batch forever.
_JSON_NUL = b"\\u0000"
_TYPE_FIELD = b'"type":"'
# Decoding yields to the event loop this often, so the database and broker replies of the
# batch being applied are read while the next batch is decoded.
_DECODE_SLICE = 250


class _Envelope(BaseModel):
    """ev.CloudEvent's fields; each subclass types `data` as one event type's payload."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    shopid: str | None = None
    data: ev.Contract


_ENVELOPES: dict[str, type[_Envelope]] = {
    event_type: create_model(f"{model.__name__}Event", __base__=_Envelope, data=(model, ...))
    for event_type, model in ev.SHOP_PAYLOADS.items()
}


def decode_shop_event(raw: bytes | None) -> ShopEventIn:
    """A canonical shop event, or InvalidEvent with the reason it goes to the DLQ."""
    if raw is not None and _JSON_NUL in raw:
        raise ev.InvalidEvent("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    envelope = _fast_envelope(raw) or _checked_envelope(raw)
    if not envelope.shopid:
        raise ev.InvalidEvent("shopid (the shop extension attribute) is missing")
    subject, _ = subject_and_key(envelope.shopid, envelope.data)
    return ShopEventIn(
        event_id=envelope.id,
        type=envelope.type,
        shop_id=envelope.shopid,
        time=as_utc(envelope.time),
        customer_key=subject,
        data=envelope.data,
    )


def _fast_envelope(raw: bytes | None) -> _Envelope | None:
    """Validate straight from the bytes with the model of the type the bytes seem to name.

    The guess reads the first `"type":"` in the bytes; it is kept only when the validated
    envelope names that same type. Otherwise (None) the checked path decides, with its reasons.
    """
    if raw is None:
        return None
    start = raw.find(_TYPE_FIELD) + len(_TYPE_FIELD)
    end = raw.find(b'"', start)
    model = _ENVELOPES.get(raw[start:end].decode("utf-8", "replace")) if start > 7 else None
    if model is None:
        return None
    try:
        envelope = model.model_validate_json(raw)
    except ValidationError:
        return None
    return envelope if _ENVELOPES.get(envelope.type) is model else None


def _checked_envelope(raw: bytes | None) -> _Envelope:
    """The slow path, for what the fast one did not accept: says why a record is refused."""
    event = ev.decode(raw)
    model = _ENVELOPES.get(event.type)
    if model is None:
        raise ev.InvalidEvent(f"unknown shop event type {event.type!r}")
    try:
        return model.model_validate(orjson.loads(raw or b""))
    except ValidationError as exc:
        raise _invalid(event.type, exc) from exc


def _invalid(event_type: str, exc: ValidationError) -> ev.InvalidEvent:
    err = exc.errors(include_url=False)[0]
    loc = err["loc"]
    if loc and loc[0] == "data":
        where = ".".join(str(p) for p in loc[1:]) or "data"
        return ev.InvalidEvent(f"{event_type} data invalid: {where}: {err['msg']}")
    where = ".".join(str(p) for p in loc) or "body"
    return ev.InvalidEvent(f"not a CloudEvent: {where}: {err['msg']}")


Decoded = list[tuple[Record, ShopEventIn]]


class ShopEventsConsumer:
    """The pipeline's stages: decode (dead-lettering what it cannot read), then apply the rest.

    What the database refuses, the loop's one error policy finds and dead-letters.
    """

    def __init__(self, facts: FactsHandler, publisher: Publisher) -> None:
        self._facts = facts
        self._publisher = publisher

    async def decode(self, batch: Sequence[Record]) -> Decoded:
        decoded: Decoded = []
        for n, record in enumerate(batch, start=1):
            try:
                decoded.append((record, decode_shop_event(record.value)))
            except ev.InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
            if n % _DECODE_SLICE == 0:
                await asyncio.sleep(0)
        return decoded

    async def apply(self, decoded: Decoded) -> list[Outgoing]:
        """Store the batch's facts; returns its customer.activity, to publish after the commit."""
        return await self._facts.apply([event for _, event in decoded])
