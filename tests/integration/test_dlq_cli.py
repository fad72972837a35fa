"""`python -m rebound dlq list|replay` on the real broker: see why, send again, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from rebound.__main__ import cli
from rebound.dlq import DlqError, dead_letters, dlq_topic, read_to_end, replay
from shared.kafka import Publisher, make_producer
from shared.topics import SHOP_EVENTS, Topics, dlq
from tests.conftest import Infra

pytestmark = pytest.mark.integration


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(infra.bootstrap, "dlq-tests")
    await producer.start()
    yield producer
    await producer.stop()


async def dead_letter_two(infra: Infra, producer: AIOKafkaProducer, topic: str) -> None:
    """Two records on `topic`, both dead-lettered the way a service does it."""
    for key, value in ((b"s:c:1", b"year one"), (b"s:c:1", b"NUL")):
        await producer.send_and_wait(topic, value, key=key, headers=[("content-type", b"x")])
    [*records] = await read_to_end(infra.bootstrap, topic)
    publisher = Publisher(producer, "ingest")
    for record, reason in zip(records, ("updated_at is before 1970", "NUL"), strict=True):
        await publisher.dead_letter(record, reason)


async def test_dead_letters_are_listed_with_reason_and_replayed_once(
    infra: Infra, topics: Topics, producer: AIOKafkaProducer
) -> None:
    origin = topics.name(SHOP_EVENTS)
    await dead_letter_two(infra, producer, origin)
    dead = dlq_topic("shop.events", topics.prefix)
    assert dead == dlq(origin)

    listed = await dead_letters(infra.bootstrap, dead)
    assert [(d.value, d.reason, d.replayed) for d in listed] == [
        (b"year one", "updated_at is before 1970", False),
        (b"NUL", "NUL", False),
    ]
    assert listed[0].origin == f"{origin}/{listed[0].header('dlq.partition')}@0"

    done, skipped = await replay(infra.bootstrap, dead, [str(listed[1].offset)])
    assert ([d.value for d in done], skipped) == ([b"NUL"], [])
    done, skipped = await replay(infra.bootstrap, dead)  # the rest, not NUL again
    assert ([d.value for d in done], [d.value for d in skipped]) == ([b"year one"], [b"NUL"])
    done, _ = await replay(infra.bootstrap, dead)
    assert done == []

    on_origin = await read_to_end(infra.bootstrap, origin)
    assert [r.value for r in on_origin].count(b"NUL") == 2  # the original and one replay
    replayed = [r for r in on_origin if any(k == "dlq.replayed-from" for k, _ in r.headers)]
    assert sorted(r.value for r in replayed) == [b"NUL", b"year one"]
    assert all(r.key == b"s:c:1" for r in replayed)
    assert all(dict(r.headers)["content-type"] == b"x" for r in replayed)
    assert not any(k in ("dlq.reason", "dlq.topic") for r in replayed for k, _ in r.headers)
    assert all(d.replayed for d in await dead_letters(infra.bootstrap, dead))


async def test_an_offset_that_is_not_there_is_refused(
    infra: Infra, topics: Topics, producer: AIOKafkaProducer
) -> None:
    await dead_letter_two(infra, producer, topics.name(SHOP_EVENTS))
    with pytest.raises(DlqError, match="no dead letter at offset 7"):
        await replay(infra.bootstrap, dlq(topics.name(SHOP_EVENTS)), ["7"])
    with pytest.raises(DlqError, match="not an offset"):
        await replay(infra.bootstrap, dlq(topics.name(SHOP_EVENTS)), ["x"])


async def test_the_command_line(
    infra: Infra, topics: Topics, producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await dead_letter_two(infra, producer, topics.name(SHOP_EVENTS))
    monkeypatch.setenv("REBOUND_KAFKA_BOOTSTRAP_SERVERS", infra.bootstrap)
    monkeypatch.setenv("REBOUND_TOPIC_PREFIX", topics.prefix)
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    listed = await asyncio.to_thread(run, "dlq", "list", "shop.events")
    assert "2 dead letter(s)" in listed
    assert "updated_at is before 1970" in listed and "s:c:1" in listed
    replayed = await asyncio.to_thread(run, "dlq", "replay", "shop.events")
    assert "2 replayed, 0 already replayed" in replayed
    again = await asyncio.to_thread(run, "dlq", "replay", "shop.events")
    assert "0 replayed, 2 already replayed" in again
    after = await asyncio.to_thread(run, "dlq", "list", "shop.events.dlq")
    assert after.count(" yes ") == 2


async def test_records_sent_in_one_batch_are_all_read(
    infra: Infra, topics: Topics, producer: AIOKafkaProducer
) -> None:
    """Dead letters written together share a record batch. The local broker reports the end
    offset of a partition as one past the first offset of its last batch, so a read that
    stopped there missed the rest of that batch."""
    topic = dlq(topics.name(SHOP_EVENTS))
    sent = [await producer.send(topic, f"letter {n}".encode(), key=b"s:c:1") for n in range(50)]
    await asyncio.gather(*sent)
    read = await read_to_end(infra.bootstrap, topic)
    assert [r.value for r in read] == [f"letter {n}".encode() for n in range(50)]
