"""The consumer loop on the real broker: a rebalance mid-batch and a restarted loop go on consuming.

Both once left an instance in its group with a consumer loop that crashed on every restart, so
its partitions were assigned to a member that never read them again.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.kafka import (
    BatchHandler,
    ConsumerLoop,
    Publisher,
    Record,
    make_consumer,
    make_producer,
    stop_consumer,
)
from shared.topics import SHOP_EVENTS, Topics
from tests.conftest import TEST_PARTITIONS, Infra, eventually

SESSION_TIMEOUT_MS = 2_000


def loop_of(consumer: AIOKafkaConsumer, handler: BatchHandler, infra: Infra) -> ConsumerLoop:
    """A loop with a publisher for dead letters, which these handlers never need."""
    publisher = Publisher(make_producer(infra.bootstrap, "test"), "test")
    return ConsumerLoop(consumer, handler, "test", publisher)


async def produce(infra: Infra, topic: str, values: list[bytes]) -> None:
    await produce_to(infra, topic, list(range(TEST_PARTITIONS)), values)


async def produce_to(infra: Infra, topic: str, partitions: list[int], values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await producer.start()
    try:
        for n, value in enumerate(values):
            await producer.send_and_wait(topic, value, partition=partitions[n % len(partitions)])
    finally:
        await producer.stop()


async def test_a_rebalance_during_a_batch_does_not_stop_the_loop(
    infra: Infra, topics: Topics
) -> None:
    topic, group = topics.name(SHOP_EVENTS), topics.prefix + "loop"
    consumer = make_consumer(
        infra.bootstrap, group, "first", topic, session_timeout_ms=SESSION_TIMEOUT_MS
    )
    newcomer = make_consumer(
        infra.bootstrap, group, "newcomer", topic, session_timeout_ms=SESSION_TIMEOUT_MS
    )
    seen: list[bytes] = []

    async def handler(batch: list[Record]) -> None:
        seen.extend(record.value for record in batch)
        if len(seen) == TEST_PARTITIONS:  # the first batch: another member joins meanwhile
            partitions = {r.partition for r in batch}
            await newcomer.start()
            await eventually(
                lambda: not partitions <= {tp.partition for tp in consumer.assignment()},
                timeout_s=30,
                what="a partition of the batch moved to the newcomer",
            )

    await produce(infra, topic, [b"a", b"b", b"c"])
    loop = asyncio.create_task(loop_of(consumer, handler, infra).run())
    try:
        await eventually(lambda: len(seen) == TEST_PARTITIONS, timeout_s=30, what="first batch")
        await eventually(
            lambda: 0 < len(consumer.assignment()) < TEST_PARTITIONS,
            timeout_s=30,
            what="the loop's share after the rebalance",
        )
        # More records on the partitions the loop kept. Not on the newcomer's: whether they
        # come back when it leaves is the broker's group handling (Tansu does not always
        # rebalance on a leave), not the loop's.
        kept = sorted(tp.partition for tp in consumer.assignment())
        await produce_to(infra, topic, kept, [b"d", b"e", b"f"])
        await eventually(lambda: {b"d", b"e", b"f"} <= set(seen), timeout_s=30, what="more")
        assert not loop.done()
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await stop_consumer(newcomer)
        await stop_consumer(consumer)


async def test_a_restarted_loop_goes_on_with_the_consumer_it_started(
    infra: Infra, topics: Topics
) -> None:
    topic = topics.name(SHOP_EVENTS)
    consumer = make_consumer(infra.bootstrap, topics.prefix + "loop", "only", topic)
    seen: list[bytes] = []

    async def handler(batch: list[Record]) -> None:
        seen.extend(record.value for record in batch)

    def spawn() -> asyncio.Task[None]:
        return asyncio.create_task(loop_of(consumer, handler, infra).run())

    await produce(infra, topic, [b"a"])
    first = spawn()
    try:
        await eventually(lambda: seen == [b"a"], timeout_s=30, what="first record")
        first.cancel()  # as a supervisor sees a crashed loop, and starts it again
        with contextlib.suppress(asyncio.CancelledError):
            await first
        second = spawn()
        await produce(infra, topic, [b"b"])
        await eventually(lambda: b"b" in seen, timeout_s=30, what="a record after the restart")
        assert not second.done()
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second
    finally:
        await stop_consumer(consumer)
