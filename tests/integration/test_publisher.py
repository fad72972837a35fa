"""Publishing against the real broker: batched sends land where single sends would."""

from __future__ import annotations

from shared.kafka import Publisher, make_producer
from shared.topics import CUSTOMER_ACTIVITY, SHOP_EVENTS, Topics
from tests.conftest import Infra, read_topic


async def test_batched_publishing_keeps_each_keys_partition_and_order(
    infra: Infra, topics: Topics
) -> None:
    """publish_raw's batches must put a key where `send` would, or a customer's events split."""
    producer = make_producer(infra.bootstrap, "test-batched")
    await producer.start()
    try:
        publisher = Publisher(producer, "test")
        items = [(topics.name(CUSTOMER_ACTIVITY), f"s:c:{n % 7}", b"%d" % n) for n in range(60)]
        await publisher.publish_raw(items)
        for _, key, value in items:
            await producer.send_and_wait(topics.name(SHOP_EVENTS), value, key=key.encode())
    finally:
        await producer.stop()
    batched = await read_topic(infra.bootstrap, topics.name(CUSTOMER_ACTIVITY))
    one_by_one = await read_topic(infra.bootstrap, topics.name(SHOP_EVENTS))
    assert {(r.key, r.partition) for r in batched} == {(r.key, r.partition) for r in one_by_one}
    for key in {r.key for r in batched}:
        in_order = [int(r.value) for r in sorted(batched, key=lambda r: r.offset) if r.key == key]
        assert in_order == sorted(in_order)
    assert len(batched) == 60
