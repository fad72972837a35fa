"""Dead letters: list what is on `<topic>.dlq` and replay it onto the topic it came from.

A dead letter keeps the original bytes, key and headers, plus `dlq.reason`, `dlq.topic`,
`dlq.partition`, `dlq.offset` and `dlq.service` (shared.kafka.Publisher.dead_letter). Replaying
re-produces the original bytes and key to `dlq.topic`, without the dlq.* headers, and then
notes it on `<topic>.dlq.replayed` (one record per dead letter, keyed `partition:offset`), so
a second replay skips what the first one already sent. Consumers are idempotent, so the one
window where a crash repeats a replay (after the produce, before the note) is harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kafka import Record, ensure_topics, make_producer
from shared.topics import DLQ_SUFFIX

REPLAYED_SUFFIX = ".replayed"
READ_TIMEOUT_S = 30.0


class DlqError(Exception):
    """What the operator asked for cannot be done; the message says why."""


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    dead_lettered_at: datetime
    replayed: bool

    def header(self, name: str) -> str:
        return next((v.decode(errors="replace") for k, v in self.headers if k == name), "")

    @property
    def reason(self) -> str:
        return self.header("dlq.reason")

    @property
    def origin(self) -> str:
        """topic/partition@offset the record had before it was dead-lettered."""
        return (
            f"{self.header('dlq.topic')}/{self.header('dlq.partition')}@{self.header('dlq.offset')}"
        )


def dlq_topic(topic: str, prefix: str) -> str:
    """`shop.events` or `shop.events.dlq` -> the dead-letter topic, with the deployment's prefix."""
    base = topic.removesuffix(DLQ_SUFFIX)
    if prefix and not base.startswith(prefix):
        base = prefix + base
    return base + DLQ_SUFFIX


async def dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    """Every dead letter on `topic` (a .dlq topic), oldest first per partition."""
    replayed = {
        r.key.decode() for r in await read_to_end(bootstrap, topic + REPLAYED_SUFFIX) if r.key
    }
    return [
        _dead_letter(r, _mark(r.partition, r.offset) in replayed)
        for r in await read_to_end(bootstrap, topic)
    ]


def _mark(partition: int, offset: int) -> str:
    return f"{partition}:{offset}"


def _dead_letter(record: Record, replayed: bool) -> DeadLetter:
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers or ()),
        dead_lettered_at=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        replayed=replayed,
    )


async def replay(
    bootstrap: str, topic: str, selectors: Sequence[str] = ()
) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Replays the dead letters not replayed yet (all, or those `selectors` name: `N` or
    `P:N`); returns (replayed now, skipped because an earlier replay sent them)."""
    letters = await dead_letters(bootstrap, topic)
    chosen = select(letters, selectors) if selectors else letters
    todo = [d for d in chosen if not d.replayed]
    if todo:
        await ensure_topics(bootstrap, [topic + REPLAYED_SUFFIX], 1)
        producer = make_producer(bootstrap, "rebound-dlq-replay")
        await producer.start()
        try:
            for letter in todo:
                await _replay_one(producer, topic, letter)
        finally:
            await producer.stop()
    return todo, [d for d in chosen if d.replayed]


def select(letters: Sequence[DeadLetter], selectors: Sequence[str]) -> list[DeadLetter]:
    """The dead letters `N` (offset, on whichever partition holds it) or `P:N` names."""
    chosen: list[DeadLetter] = []
    for selector in selectors:
        matches = [d for d in letters if _matches(d, selector)]
        if not matches:
            raise DlqError(f"no dead letter at offset {selector}")
        if len(matches) > 1:
            where = ", ".join(_mark(d.partition, d.offset) for d in matches)
            raise DlqError(f"offset {selector} is on more than one partition ({where}); use P:N")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _matches(letter: DeadLetter, selector: str) -> bool:
    partition, _, offset = selector.rpartition(":")
    if not offset.isdigit() or (partition and not partition.isdigit()):
        raise DlqError(f"not an offset: {selector!r} (use N or PARTITION:N)")
    if partition and int(partition) != letter.partition:
        return False
    return int(offset) == letter.offset


async def _replay_one(producer: AIOKafkaProducer, topic: str, letter: DeadLetter) -> None:
    origin = letter.header("dlq.topic")
    if not origin:
        raise DlqError(f"{_mark(letter.partition, letter.offset)} has no dlq.topic header")
    headers = [(k, v) for k, v in letter.headers if not k.startswith("dlq.")]
    headers.append(
        ("dlq.replayed-from", f"{topic}/{_mark(letter.partition, letter.offset)}".encode())
    )
    await producer.send_and_wait(origin, letter.value, key=letter.key, headers=headers)
    note = {
        "partition": letter.partition,
        "offset": letter.offset,
        "replayed_at": datetime.now(UTC).isoformat(),
    }
    await producer.send_and_wait(
        topic + REPLAYED_SUFFIX,
        orjson.dumps(note),
        key=_mark(letter.partition, letter.offset).encode(),
    )


async def read_to_end(bootstrap: str, topic: str) -> list[Record]:
    """Every record on `topic` now, without a consumer group; [] when the topic does not exist."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        if topic not in await consumer.topics():  # also brings the metadata up to date
            return []
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        return await asyncio.wait_for(_drain(consumer, partitions, ends), READ_TIMEOUT_S)
    finally:
        await consumer.stop()


async def _drain(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], ends: dict[TopicPartition, int]
) -> list[Record]:
    """Up to the end offsets, and the rest of the record batch each one falls in: the local
    broker (Tansu) reports a partition's end as one past the first offset of its last batch,
    so stopping exactly there lost the rest of that batch (dead letters written together
    share one)."""
    records: list[Record] = []
    while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
        batch = await consumer.getmany(*partitions, timeout_ms=500)
        records += [r for rs in batch.values() for r in rs]
    return sorted(records, key=lambda r: (r.partition, r.offset))
