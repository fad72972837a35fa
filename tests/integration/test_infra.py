"""The test infrastructure itself: PostgreSQL answers, topics exist, the catcher catches."""

from __future__ import annotations

import aiosmtplib
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text

from shared.db import make_engine
from shared.kafka import Publisher, make_producer
from shared.topics import CUSTOMER_ACTIVITY, SHOP_EVENTS, Topics
from tests.conftest import Infra, read_topic


async def test_database_per_test_is_reachable(database_url: str) -> None:
    engine = make_engine(database_url)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    await engine.dispose()


async def test_topics_are_created_with_dlqs(infra: Infra, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap)
    await admin.start()
    names = set(await admin.list_topics())
    await admin.close()
    assert topics.name(SHOP_EVENTS) in names
    assert topics.name(SHOP_EVENTS + ".dlq") in names


async def test_mail_catcher_keeps_what_it_accepts(mail: tuple[object, int]) -> None:
    store, port = mail
    await aiosmtplib.send(
        "Subject: hi\r\n\r\nbody",
        sender="a@x.test",
        recipients=["b@y.test"],
        hostname="127.0.0.1",
        port=port,
    )
    assert [m.recipients for m in store.messages] == [["b@y.test"]]  # type: ignore[attr-defined]


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
