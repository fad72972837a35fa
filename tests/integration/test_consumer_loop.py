"""ConsumerLoop's one error policy on the real broker: nothing stalls, nothing good is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from shared.errors import InvalidRecord, Poison, Transient
from shared.kafka import ConsumerLoop, Publisher, Record, make_consumer, make_producer
from shared.topics import SHOP_EVENTS, Topics, dlq
from tests.conftest import Infra, eventually
from tests.integration.test_ingest_webhooks import read_topic

pytestmark = pytest.mark.integration
KEY = b"one-partition"


class Harness:
    def __init__(self, infra: Infra, topics: Topics) -> None:
        self.infra = infra
        self.topic = topics.name(SHOP_EVENTS)
        self.processed: list[bytes] = []
        self.calls: dict[bytes, int] = {}
        self.producer = make_producer(infra.bootstrap, "test")
        self.consumer = make_consumer(infra.bootstrap, topics.prefix + "loop", "test", self.topic)

    async def produce(self, *values: bytes) -> None:
        for value in values:
            await self.producer.send_and_wait(self.topic, value, key=KEY)

    def run(self, fails: Callable[[Record], Awaitable[None]]) -> asyncio.Task[None]:
        async def handler(batch: list[Record]) -> None:
            for record in batch:
                self.calls[record.value] = self.calls.get(record.value, 0) + 1
                await fails(record)
            self.processed.extend(r.value for r in batch)

        loop = ConsumerLoop(
            self.consumer,
            handler,
            "test",
            Publisher(self.producer, "test"),
            retry_initial_s=0.01,
            retry_max_s=0.05,
        )
        return asyncio.create_task(loop.run())

    async def dead_letters(self) -> list[tuple[bytes | None, dict[str, bytes]]]:
        return [(v, h) for _, v, h in await read_topic(self.infra.bootstrap, dlq(self.topic))]


@pytest.fixture
async def harness(infra: Infra, topics: Topics) -> AsyncIterator[Harness]:
    h = Harness(infra, topics)
    await h.producer.start()
    yield h
    await h.consumer.stop()
    await h.producer.stop()


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_unclassified_failure_is_tried_three_times_then_dead_lettered_and_the_rest_go_on(
    harness: Harness,
) -> None:
    async def fails(record: Record) -> None:
        if record.value == b"bug":
            raise TypeError("can't compare offset-naive and offset-aware datetimes")

    await harness.produce(b"a", b"bug", b"b", b"c")
    task = harness.run(fails)
    await eventually(lambda: {b"a", b"b", b"c"} <= set(harness.processed), what="the good ones")
    await stop(task)
    [(value, headers)] = await harness.dead_letters()
    assert value == b"bug"
    assert headers["dlq.reason"].decode() == (
        "failed 3 times: TypeError: can't compare offset-naive and offset-aware datetimes"
    )
    assert headers["dlq.topic"].decode() == harness.topic
    assert headers["dlq.offset"] == b"1"
    assert headers["dlq.partition"].isdigit()
    assert harness.calls[b"bug"] == 1 + 3  # the batch once, then three times alone
    assert b"bug" not in harness.processed


async def test_poison_is_dead_lettered_at_once(harness: Harness) -> None:
    async def fails(record: Record) -> None:
        if record.value == b"poison":
            raise Poison("year 1 is not a date this shop had")

    await harness.produce(b"poison", b"a", b"b")
    task = harness.run(fails)
    await eventually(lambda: {b"a", b"b"} <= set(harness.processed), what="the good ones")
    await stop(task)
    [(value, headers)] = await harness.dead_letters()
    assert (value, headers["dlq.reason"]) == (b"poison", b"year 1 is not a date this shop had")
    assert harness.calls[b"poison"] == 2  # the batch, then alone once


async def test_a_named_bad_record_is_dead_lettered_without_trying_the_others_alone(
    harness: Harness,
) -> None:
    async def fails(record: Record) -> None:
        if record.value == b"poison":
            raise InvalidRecord(record.topic, record.partition, record.offset, "named")

    await harness.produce(b"a", b"poison", b"b")
    task = harness.run(fails)
    await eventually(lambda: {b"a", b"b"} <= set(harness.processed), what="the good ones")
    await stop(task)
    assert [(v, h["dlq.reason"]) for v, h in await harness.dead_letters()] == [
        (b"poison", b"named")
    ]
    assert harness.calls[b"poison"] == 1


async def test_a_transient_failure_is_retried_until_it_passes_and_nothing_is_dead_lettered(
    harness: Harness,
) -> None:
    outage = {"left": 6}  # more than the bounded attempts an unclassified error gets

    async def fails(record: Record) -> None:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise Transient("database away")

    await harness.produce(b"a", b"b")
    task = harness.run(fails)
    await eventually(lambda: {b"a", b"b"} <= set(harness.processed), what="both after the outage")
    await stop(task)
    assert await harness.dead_letters() == []


async def test_a_refused_connection_is_transient_too(harness: Harness) -> None:
    outage = {"left": 5}

    async def fails(record: Record) -> None:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise ConnectionRefusedError(111, "Connection refused")

    await harness.produce(b"a")
    task = harness.run(fails)
    await eventually(lambda: b"a" in harness.processed, what="processed after the outage")
    await stop(task)
    assert await harness.dead_letters() == []


async def test_a_record_the_handler_dead_lettered_itself_is_not_dead_lettered_twice(
    harness: Harness,
) -> None:
    publisher = Publisher(harness.producer, "test")

    async def handler(batch: list[Record]) -> None:
        for record in batch:
            if record.value == b"unreadable":
                await publisher.dead_letter(record, "not a CloudEvent")
            elif record.value == b"bug":
                raise KeyError("bug")
        harness.processed.extend(r.value for r in batch)

    await harness.produce(b"unreadable", b"bug", b"a")
    loop = ConsumerLoop(
        harness.consumer, handler, "test", publisher, retry_initial_s=0.01, retry_max_s=0.05
    )
    task = asyncio.create_task(loop.run())
    await eventually(lambda: b"a" in harness.processed, what="the good one")

    async def both_dead() -> bool:
        return len(await harness.dead_letters()) >= 2

    await eventually(both_dead, what="two dead letters")
    await stop(task)
    assert sorted(v or b"" for v, _ in await harness.dead_letters()) == [b"bug", b"unreadable"]
