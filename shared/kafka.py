"""Kafka plumbing: producer, consumers that commit after the work, dead letters, topics.

The local broker (Tansu) has no idempotent producer and no transactions, and the design uses
neither: producers wait for acks=all, consumers are idempotent and commit offsets only after
their database commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.protocol.group import LeaveGroupRequest

from shared import metrics
from shared.driver_errors import translate
from shared.errors import (
    MAX_UNCLASSIFIED_ATTEMPTS,
    Action,
    InvalidRecord,
    Transient,
    Unavailable,
    classify,
    decide,
)
from shared.events import CONTENT_TYPE, CloudEvent, encode
from shared.logging import Laps, get_logger
from shared.partitioning import partitions_of
from shared.retry import OUTAGE_RETRY_MAX_S, backoff_s, retry_forever
from shared.topics import dlq

log = get_logger(__name__)

Record: TypeAlias = ConsumerRecord  # aiokafka ships no type information
HEADERS = [("content-type", CONTENT_TYPE.encode())]
_DEAD_LETTERED_MEMORY = 10_000
DEFAULT_SESSION_TIMEOUT_MS = 6_000  # Apache Kafka's group.min.session.timeout.ms
DEFAULT_FETCH_MAX_WAIT_MS = 500  # aiokafka's own default


def make_producer(bootstrap: str, client_id: str, linger_ms: int = 2) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=linger_ms,
        request_timeout_ms=10_000,
        max_batch_size=256 * 1024,
    )


class Publisher:
    """Produces CloudEvents and waits for the broker's acknowledgement (acks=all)."""

    def __init__(self, producer: AIOKafkaProducer, service: str) -> None:
        self._producer = producer
        self._service = service
        # (topic, partition, offset) dead-lettered lately: a handler that dead-letters a record
        # itself and then fails its batch would otherwise see the loop dead-letter it again.
        self._dead_lettered: OrderedDict[tuple[str, int, int], None] = OrderedDict()

    async def publish(self, topic: str, key: str, event: CloudEvent) -> None:
        await self._producer.send_and_wait(topic, encode(event), key=key.encode(), headers=HEADERS)
        metrics.EVENTS_OUT.labels(self._service, topic).inc()

    async def publish_one_raw(self, topic: str, key: str, value: bytes) -> None:
        """One already-encoded event, waiting for its ack. Through `send`, so the events of
        concurrent callers (e.g. HTTP requests) share the producer's open batch."""
        await self._producer.send_and_wait(topic, value, key=key.encode(), headers=HEADERS)
        metrics.EVENTS_OUT.labels(self._service, topic).inc()

    async def publish_many(self, items: Sequence[tuple[str, str, CloudEvent]]) -> None:
        """Send all, then wait for every ack; raises if any was not acknowledged."""
        futures = [
            await self._producer.send(topic, encode(event), key=key.encode(), headers=HEADERS)
            for topic, key, event in items
        ]
        await asyncio.gather(*futures)
        for topic, _, _ in items:
            metrics.EVENTS_OUT.labels(self._service, topic).inc()

    async def publish_raw(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        """Already-encoded events (e.g. from an outbox table); waits for every ack.

        Built into one record batch per partition (the default partitioner's choice, hashed
        for all keys at once, so a customer's events keep their partition and order): a third
        of the CPU of a `send` per event.
        """
        known: dict[str, list[int]] = {}
        for topic, _, _ in items:
            if topic not in known:
                known[topic] = sorted(await self._producer.partitions_for(topic))
        keys = [key.encode() for _, key, _ in items]
        batches: dict[tuple[str, int], BatchBuilder] = {}
        acks = []
        for (topic, _, value), key_bytes, partition in zip(
            items, keys, _partitions(items, keys, known), strict=True
        ):
            where = (topic, partition)
            batch = batches.get(where)
            if (
                batch is None
                or batch.append(key=key_bytes, value=value, timestamp=None, headers=HEADERS) is None
            ):
                if batch is not None:  # full: send it, start the next one
                    acks.append(
                        await self._producer.send_batch(batch, where[0], partition=where[1])
                    )
                batch = batches[where] = self._producer.create_batch()
                batch.append(key=key_bytes, value=value, timestamp=None, headers=HEADERS)
        for (topic, partition), batch in batches.items():
            acks.append(await self._producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)
        for topic in known:
            sent = sum(1 for t, _, _ in items if t == topic)
            metrics.EVENTS_OUT.labels(self._service, topic).inc(sent)

    async def dead_letter(self, record: Record, reason: str) -> None:
        """Keep the original bytes and say why, so nothing is lost and it can be replayed.

        A record is dead-lettered once per process, however often it is handed here."""
        where = (record.topic, record.partition, record.offset)
        if where in self._dead_lettered:
            return
        headers = [
            *((k, v) for k, v in (record.headers or ()) if not k.startswith("dlq.")),
            ("dlq.reason", reason[:2000].encode()),
            ("dlq.topic", record.topic.encode()),
            ("dlq.partition", str(record.partition).encode()),
            ("dlq.offset", str(record.offset).encode()),
            ("dlq.service", self._service.encode()),
        ]
        await self._producer.send_and_wait(
            dlq(record.topic), record.value, key=record.key, headers=headers
        )
        self._dead_lettered[where] = None
        if len(self._dead_lettered) > _DEAD_LETTERED_MEMORY:
            self._dead_lettered.popitem(last=False)
        metrics.DEAD_LETTERS.labels(self._service, record.topic).inc()
        log.warning(
            "dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
        )

    async def ready(self) -> bool:
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 2.0)
            return True
        except Exception:
            return False


def _partitions(
    items: Sequence[tuple[str, str, bytes]], keys: list[bytes], known: dict[str, list[int]]
) -> list[int]:
    """Each item's partition; the keys of one topic are hashed together."""
    by_topic: dict[str, list[int]] = {}
    for i, (topic, _, _) in enumerate(items):
        by_topic.setdefault(topic, []).append(i)
    chosen = [0] * len(items)
    for topic, where in by_topic.items():
        chosen_here = partitions_of([keys[i] for i in where], known[topic])
        for i, partition in zip(where, chosen_here, strict=True):
            chosen[i] = partition
    return chosen


async def start_with_retry(client: AIOKafkaProducer | AIOKafkaConsumer, what: str) -> None:
    await retry_forever(client.start, what=what, retryable=(KafkaError, OSError))


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await retry_forever(admin.start, what="kafka admin", retryable=(KafkaError, OSError))
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


BatchHandler = Callable[[list[Record]], Awaitable[None]]


class Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tracks which partitions this instance owns; the scheduler fires only their timers.

    Work on owned partitions runs inside `owned()`. A revocation waits for that work to end
    (the broker holds the rebalance meanwhile), so once another instance receives a partition
    this one no longer acts on it.
    """

    def __init__(self) -> None:
        self.partitions: set[int] = set()
        self.on_change: list[Callable[[], Awaitable[None]]] = []
        self._in_use = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def owned(self) -> AsyncIterator[list[int]]:
        """The partitions owned now; none of them is revoked before the block ends."""
        async with self._in_use:
            yield sorted(self.partitions)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._in_use:
            self.partitions -= {tp.partition for tp in revoked}
        log.info("partitions_revoked", partitions=sorted({tp.partition for tp in revoked}))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.partitions |= {tp.partition for tp in assigned}
        log.info("partitions_assigned", partitions=sorted(self.partitions))
        for callback in self.on_change:
            await callback()


@dataclass
class ConsumerLoop:
    """Fetch a batch, hand it to the handler, commit after the handler returns.

    The handler must be idempotent. When it raises, the one error policy decides
    (`shared.errors.decide`, after `shared.driver_errors.translate`):
    - transient (database or broker away) or unavailable (a downstream refused and the handler
      released its claims): back off and hand the same batch again, without limit;
    - an `InvalidRecord`: that record is dead-lettered, the rest of the batch handed again;
    - poison or unclassified: the records are handed one at a time, so the good ones are
      processed and the one that keeps failing is dead-lettered (at once when poison, after
      `max_attempts` tries when unclassified). Then the batch is committed: a partition
      never stalls on one record.
    """

    consumer: AIOKafkaConsumer
    handler: BatchHandler
    service: str
    dead_letters: Publisher
    max_records: int = 500
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0
    max_attempts: int = MAX_UNCLASSIFIED_ATTEMPTS

    async def run(self) -> None:
        if not _started(self.consumer):  # a loop restarted after a crash keeps its consumer
            await start_with_retry(self.consumer, f"{self.service} consumer")
        while True:
            laps = Laps()
            batch = await self._fetch()
            if not batch:
                continue
            laps.lap("fetch_s")
            await self._handle(batch)
            laps.lap("handle_s")
            await self._commit(batch)
            laps.lap("commit_s")
            self._report_lag(batch)
            log.debug("batch_done", size=len(batch), **laps.laps)

    async def _fetch(self) -> list[Record]:
        try:
            fetched = await self.consumer.getmany(timeout_ms=500, max_records=self.max_records)
        except KafkaError as exc:
            metrics.ERRORS.labels(self.service, "fetch").inc()
            log.warning("fetch_failed", error=repr(exc))
            await asyncio.sleep(self.retry_initial_s)
            return []
        batch = [record for records in fetched.values() for record in records]
        for tp, records in fetched.items():  # one count per partition, not per record
            metrics.EVENTS_IN.labels(self.service, tp.topic).inc(len(records))
        return batch

    async def _handle(self, batch: list[Record]) -> None:
        attempt = 0
        while batch:
            error = await self._try(batch)
            if error is None:
                return
            named = _named_record(error, batch)
            if named is not None:
                await self._dead_letter(named, str(error))
                batch = [record for record in batch if record is not named]
            elif classify(error) in (Transient, Unavailable):
                await self._back_off(error, attempt, len(batch))
                attempt += 1
            else:
                log.warning("batch_failed_trying_one_by_one", size=len(batch), error=repr(error))
                for record in batch:
                    await self._handle_one(record)
                return

    async def _handle_one(self, record: Record) -> None:
        attempts = 0
        while True:
            error = await self._try([record])
            if error is None:
                return
            attempts += 1
            decision = decide(error, attempts, self.max_attempts)
            if decision.action is Action.DEAD_LETTER:
                await self._dead_letter(record, decision.reason)
                return
            await self._back_off(error, attempts - 1, 1)

    async def _try(self, records: list[Record]) -> BaseException | None:
        """None when the handler took the records, else its error in the policy's terms."""
        try:
            await self.handler(records)
            return None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = translate(exc)
            metrics.ERRORS.labels(self.service, type(error).__name__).inc()
            return error

    async def _back_off(self, error: BaseException, attempt: int, size: int) -> None:
        max_s = self.retry_max_s
        if classify(error) is Transient:  # the database or broker away: resume soon after
            max_s = min(max_s, OUTAGE_RETRY_MAX_S)
        delay_s = backoff_s(attempt, self.retry_initial_s, max_s)
        log.warning(
            "batch_failed_will_retry",
            size=size,
            attempt=attempt,
            delay_s=round(delay_s, 2),
            error=repr(error),
        )
        await asyncio.sleep(delay_s)

    async def _dead_letter(self, record: Record, reason: str) -> None:
        await retry_forever(
            lambda: self.dead_letters.dead_letter(record, reason),
            what="dead letter",
            retryable=(KafkaError, OSError),
            initial_s=self.retry_initial_s,
            max_s=self.retry_max_s,
        )

    async def _commit(self, batch: list[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in batch:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        owned = self.consumer.assignment()
        offsets = {tp: off for tp, off in offsets.items() if tp in owned}
        if not offsets:
            return

        async def commit() -> None:
            try:
                await self.consumer.commit(offsets)
            except CommitFailedError:
                # Partitions moved during the batch: the next owner redelivers, handlers dedupe.
                log.info("commit_skipped_after_rebalance")

        await retry_forever(commit, what="commit", retryable=(KafkaError,), max_s=self.retry_max_s)

    def _report_lag(self, batch: list[Record]) -> None:
        seen = {(r.topic, r.partition): r.offset for r in batch}
        owned = self.consumer.assignment()  # a rebalance during the batch may have taken some
        for (topic, partition), offset in seen.items():
            if TopicPartition(topic, partition) not in owned:
                continue
            end = self.consumer.highwater(TopicPartition(topic, partition))
            if end is not None:
                metrics.CONSUMER_LAG.labels(self.service, topic, str(partition)).set(
                    max(0, end - offset - 1)
                )


def _started(consumer: AIOKafkaConsumer) -> bool:
    """aiokafka refuses a second start() ("Did you call `start` twice?") and says no other way."""
    return getattr(consumer, "_fetcher", None) is not None


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Leave the group, then stop, so the partitions move to another instance at once.

    aiokafka only sends LeaveGroup for generation > 0, but Tansu numbers the first generation
    0; without this a restarted instance waits for the old member's session to expire.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and coordinator.generation == 0 and coordinator.member_id:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                coordinator._send_req(
                    LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
                ),
                2.0,
            )
    await consumer.stop()


def _named_record(error: BaseException, batch: list[Record]) -> Record | None:
    if not isinstance(error, InvalidRecord):
        return None
    for record in batch:
        if (record.topic, record.partition, record.offset) == (
            error.topic,
            error.partition,
            error.offset,
        ):
            return record
    return None


def make_consumer(
    bootstrap: str,
    group_id: str,
    client_id: str,
    *topics: str,
    listener: ConsumerRebalanceListener | None = None,
    session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
) -> AIOKafkaConsumer:
    """A group member whose partitions move `session_timeout_ms` after it falls silent."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=fetch_max_wait_ms,
        session_timeout_ms=session_timeout_ms,
        # Three heartbeats per session, as Kafka advises, so one lost beat is not an eviction.
        heartbeat_interval_ms=max(100, session_timeout_ms // 3),
    )
    consumer.subscribe(list(topics), listener=listener or Assignment())
    return consumer
