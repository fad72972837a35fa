"""Plumbing every service uses to answer data subject requests on privacy.requests.

A service hands its `PrivacyStore` (its own SQL) to `PrivacyRequestHandler`, which decodes the
requests, lets the store erase or export in one transaction per request, and publishes the
service's answer (customer.redacted.v1 or customer.export.part.v1) to privacy.results after
the commit. Erasure is idempotent (a second run finds nothing left to erase), so a redelivered
request only repeats the answer, under the same event id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from shared import events as ev
from shared.clock import Clock
from shared.events import InvalidEvent, PrivacyRequest, PrivacyService
from shared.kafka import Publisher, Record

SOURCE = "rebound/{service}/privacy"
REDACT_TYPES = frozenset({ev.CUSTOMER_REDACT_REQUESTED, ev.SHOP_REDACT_REQUESTED})
REQUEST_TYPES = REDACT_TYPES | {ev.CUSTOMER_EXPORT_REQUESTED}

ExportData = dict[str, list[dict[str, Any]]]


class PrivacyStore(Protocol):
    async def redact(self, request: PrivacyRequest) -> dict[str, int]:
        """Erase the subject's personal data in one transaction; rows touched per table."""
        ...

    async def export(self, request: PrivacyRequest) -> ExportData:
        """The subject's data, table -> rows as JSON-able dicts."""
        ...


def decode_request(raw: bytes | None) -> tuple[str, PrivacyRequest]:
    """(event type, request); InvalidEvent for anything else on privacy.requests."""
    event = ev.decode(raw)
    if event.type not in REQUEST_TYPES:
        raise InvalidEvent(f"unexpected event type {event.type!r} on privacy.requests")
    request = ev.payload(event, PrivacyRequest)
    if (event.type == ev.SHOP_REDACT_REQUESTED) != (request.scope == "shop"):
        raise InvalidEvent(f"{event.type} with scope {request.scope!r}")
    if request.scope == "customer" and not (
        request.customer_keys or request.emails or request.order_ids
    ):
        raise InvalidEvent("a customer request names no key, address or order")
    return event.type, request


def answer_event(
    service: PrivacyService, event_type: str, request: PrivacyRequest, result: Any, clock: Clock
) -> ev.CloudEvent:
    """The service's confirmation of an erasure, or its part of an export."""
    now = clock.now()
    data: ev.Contract
    if event_type in REDACT_TYPES:
        answer_type = ev.CUSTOMER_REDACTED
        data = ev.PrivacyConfirmed(
            request_id=request.request_id,
            shop_id=request.shop_id,
            service=service,
            erased=result,
            completed_at=now,
        )
    else:
        answer_type = ev.CUSTOMER_EXPORT_PART
        data = ev.ExportPart(
            request_id=request.request_id,
            shop_id=request.shop_id,
            service=service,
            data=result,
            exported_at=now,
        )
    return ev.make_event(
        type=answer_type,
        source=SOURCE.format(service=service),
        id=ev.stable_event_id(answer_type, request.request_id, service),
        time=now,
        subject=None,
        shop_id=request.shop_id,
        data=data,
    )


class PrivacyRequestHandler:
    """A ConsumerLoop handler for privacy.requests: act, then answer on privacy.results."""

    def __init__(
        self,
        service: PrivacyService,
        store: PrivacyStore,
        publisher: Publisher,
        results_topic: str,
        clock: Clock,
    ) -> None:
        self._service = service
        self._store = store
        self._publisher = publisher
        self._results_topic = results_topic
        self._clock = clock

    async def __call__(self, batch: Sequence[Record]) -> None:
        # One request at a time, in order: a shop's export asked before its erasure sees the
        # data, and erasures are rare and each is its own transaction.
        for record in batch:
            try:
                event_type, request = decode_request(record.value)
            except InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
                continue
            await self.handle(event_type, request)

    async def handle(self, event_type: str, request: PrivacyRequest) -> None:
        if event_type in REDACT_TYPES:
            result: Any = await self._store.redact(request)
        else:
            result = await self._store.export(request)
        answer = answer_event(self._service, event_type, request, result, self._clock)
        await self._publisher.publish(self._results_topic, request.shop_id, answer)
