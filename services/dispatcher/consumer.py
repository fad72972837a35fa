"""The edge on message.requests: decode, dead-letter what cannot be processed, dispatch.

Requests of one batch run concurrently (bounded); one key is handled once per batch. Any
transient failure is raised after the others finished, so ConsumerLoop retries the batch and
the requests already done are merely republished. Once the relay proved unreachable, the rest
of the batch does not queue up behind SMTP timeouts: it is handed back at once.
"""

from __future__ import annotations

import asyncio

from services.dispatcher.dispatch import Dispatcher, SmtpUnavailable
from shared.events import MESSAGE_REQUESTED, InvalidEvent, MessageRequest, decode, payload
from shared.kafka import Publisher, Record


def decode_request(raw: bytes | None) -> MessageRequest:
    event = decode(raw)
    if event.type != MESSAGE_REQUESTED:
        raise InvalidEvent(f"unexpected event type {event.type!r} on message.requests")
    return payload(event, MessageRequest)


class RequestHandler:
    def __init__(self, dispatcher: Dispatcher, publisher: Publisher, concurrency: int) -> None:
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._slots = asyncio.Semaphore(concurrency)

    async def __call__(self, batch: list[Record]) -> None:
        pending: dict[str, tuple[Record, MessageRequest]] = {}
        for record in batch:
            try:
                request = decode_request(record.value)
            except InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
                continue
            pending.setdefault(request.request_key, (record, request))
        relay_down = asyncio.Event()
        outcomes = await asyncio.gather(
            *(self._one(record, request, relay_down) for record, request in pending.values()),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _one(
        self, record: Record, request: MessageRequest, relay_down: asyncio.Event
    ) -> None:
        async with self._slots:
            if relay_down.is_set():
                raise SmtpUnavailable("skipped: the relay was unreachable earlier in this batch")
            try:
                await self._dispatcher.handle(request)
            except InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
            except SmtpUnavailable:
                relay_down.set()
                raise
