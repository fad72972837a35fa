"""The edge on message.requests: decode, dead-letter what cannot be processed, dispatch.

A batch is handled as a whole by the Dispatcher (one key once per batch). What can never be a
mail is answered with message.failed and its record dead-lettered with the reason; the batch
goes on. When the relay is unreachable (`Unavailable`) or the database away (`Transient`),
the error is raised after everything decided was recorded and published, so the consumer loop
retries the batch: decided requests are then merely republished. So is an error that stopped
the claiming of a batch part way (the parts before it may have been sent already), and a stop
of the service that left part of a batch unsent (it is not committed: the next instance or
the restarted one takes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.dispatcher.dispatch import Dispatcher
from shared import metrics
from shared.errors import Transient, Unavailable
from shared.events import MESSAGE_REQUESTED, InvalidEvent, MessageRequest, decode, payload
from shared.kafka import Publisher, Record


def decode_request(raw: bytes | None) -> MessageRequest:
    event = decode(raw)
    if event.type != MESSAGE_REQUESTED:
        raise InvalidEvent(f"unexpected event type {event.type!r} on message.requests")
    return payload(event, MessageRequest)


class Redactions(Protocol):
    async def withheld(self, requests: Sequence[MessageRequest]) -> set[str]:
        """Request keys asked before their customer was erased: never sent (docs/privacy.md)."""
        ...


class RequestHandler:
    def __init__(
        self, dispatcher: Dispatcher, publisher: Publisher, redactions: Redactions | None = None
    ) -> None:
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._redactions = redactions

    async def __call__(self, batch: list[Record]) -> None:
        pending: dict[str, tuple[Record, MessageRequest]] = {}
        for record in batch:
            try:
                request = decode_request(record.value)
            except InvalidEvent as exc:
                await self._publisher.dead_letter(record, str(exc))
                continue
            pending.setdefault(request.request_key, (record, request))
        await self._drop_redacted(pending)
        if not pending:
            return
        outcome = await self._dispatcher.handle([request for _, request in pending.values()])
        for key, reason in outcome.unbuildable.items():
            await self._publisher.dead_letter(pending[key][0], reason)
        if outcome.error is not None:
            raise outcome.error
        if outcome.database_down is not None:
            raise Transient(outcome.database_down)
        if outcome.relay_down is not None:
            raise Unavailable(f"SMTP relay unavailable: {outcome.relay_down}")
        if outcome.stopping:  # not committed: the next instance takes the unsent requests
            raise Unavailable("the dispatcher is stopping; its unsent mail is left claimed")

    async def _drop_redacted(self, pending: dict[str, tuple[Record, MessageRequest]]) -> None:
        if self._redactions is None or not pending:
            return
        for key in await self._redactions.withheld([r for _, r in pending.values()]):
            del pending[key]
            metrics.ERRORS.labels("dispatcher", "withheld_redacted").inc()
