"""A consumer loop in three overlapping stages: decode, apply, then publish and commit.

While batch N's output waits for the broker's acks and its offsets are committed, batch N+1
is fetched, decoded and applied. What stays strictly in order:
- apply: one batch at a time, in fetch order (each is one database transaction);
- publish: batch N+1's events are handed to the producer only after every event of batch N
  was acknowledged, so a failed and re-sent batch can never land behind a later one;
- commit: batch N's offsets only after its apply committed and all its events were acked.
A crash anywhere redelivers from the last committed offset; the stages must be idempotent.
A batch whose apply fails leaves the fast path: ConsumerLoop's one error policy takes it
(back off, or find the record that cannot be stored and dead-letter it), stage by stage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeAlias, TypeVar

from aiokafka.errors import KafkaError

from shared.kafka import BatchHandler, ConsumerLoop, Publisher, Record, start_with_retry
from shared.logging import get_logger
from shared.retry import retry_forever
from shared.runtime import cancel_and_wait

log = get_logger(__name__)

Outgoing: TypeAlias = tuple[str, str, bytes]  # topic, key, encoded event
D = TypeVar("D")


class Stages(Protocol[D]):
    async def decode(self, batch: Sequence[Record]) -> D:
        """Turn records into work; dead-letter what cannot be read. CPU only."""
        ...

    async def apply(self, decoded: D) -> list[Outgoing]:
        """Do the work (one transaction); return what to publish once it committed."""
        ...


def whole_batches(stages: Stages[D], publisher: Publisher) -> BatchHandler:
    """The three stages one after the other, for ConsumerLoop's error policy."""

    async def handle(records: list[Record]) -> None:
        await publisher.publish_raw(await stages.apply(await stages.decode(records)))

    return handle


@dataclass(kw_only=True)
class PipelinedConsumerLoop(ConsumerLoop, Generic[D]):
    """ConsumerLoop whose handler is `whole_batches(stages, dead_letters)`, run overlapped."""

    stages: Stages[D]

    async def run(self) -> None:
        await start_with_retry(self.consumer, f"{self.service} consumer")
        finishing: asyncio.Task[None] | None = None
        upcoming = asyncio.create_task(self._fetch_and_decode())
        try:
            while True:
                batch, decoded = await upcoming
                upcoming = asyncio.create_task(self._fetch_and_decode())
                if not batch:
                    continue
                outgoing = await self._apply_once(decoded)
                if finishing is not None:
                    await finishing  # batch N acked and committed before N+1 publishes
                    finishing = None
                if outgoing is None:
                    await self._handle(batch)  # the error policy, on the whole handler
                    await self._commit(batch)
                    self._report_lag(batch)
                else:
                    finishing = asyncio.create_task(self._finish(batch, outgoing))
        finally:
            await cancel_and_wait(t for t in (upcoming, finishing) if t is not None)

    async def _fetch_and_decode(self) -> tuple[list[Record], D | None]:
        batch = await self._fetch()
        if not batch:
            return [], None
        decoded = await retry_forever(
            lambda: self.stages.decode(batch),
            what="decode",  # only dead-lettering can fail here: the broker is away
            initial_s=self.retry_initial_s,
            max_s=self.retry_max_s,
            retryable=(KafkaError, OSError),
        )
        return batch, decoded

    async def _apply_once(self, decoded: D | None) -> list[Outgoing] | None:
        """The batch's output, or None when it failed and the error policy must take it."""
        assert decoded is not None
        try:
            return await self.stages.apply(decoded)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("batch_failed_handing_it_to_the_error_policy", error=repr(exc))
            return None

    async def _finish(self, batch: list[Record], outgoing: list[Outgoing]) -> None:
        if outgoing:
            await retry_forever(
                lambda: self.dead_letters.publish_raw(outgoing),  # the one Publisher
                what="publish",
                initial_s=self.retry_initial_s,
                max_s=self.retry_max_s,
                retryable=(KafkaError, OSError, TimeoutError),
            )
        await self._commit(batch)
        self._report_lag(batch)
