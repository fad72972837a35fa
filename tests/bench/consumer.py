"""Consumer throughput: realistic canonical events pre-produced to shop.events, then one
`--role consumer` process applies them; the clock stops when the group has committed them all.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared import events as ev

SHOP_ID = "bench"
_BASE_TIME = datetime(2024, 10, 1, tzinfo=UTC)
_PRODUCTS = [(f"{7000 + n}", f"{71000 + n}", f"SKU-{n}", f"Product {n}") for n in range(50)]


@dataclass(frozen=True)
class EventMix:
    """Share of each kind; the rest are cart updates. Customers: events / EVENTS_PER_CUSTOMER."""

    orders: float = 0.10
    customer_updates: float = 0.10
    events_per_customer: int = 4


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _customer(n: int) -> dict[str, Any]:
    return {
        "id": str(900_000_000_000 + n),
        "email": f"customer{n}@example.com",
        "first_name": f"First{n}",
        "last_name": f"Last{n}",
        "locale": "en",
        "marketing_consent": "subscribed",
    }


def _lines(rng: random.Random) -> tuple[list[dict[str, Any]], str]:
    lines, total = [], 0
    for product_id, variant_id, sku, title in rng.sample(_PRODUCTS, rng.randint(1, 3)):
        quantity, cents = rng.randint(1, 3), rng.randint(500, 9000)
        total += quantity * cents
        lines.append(
            {
                "product_id": product_id,
                "variant_id": variant_id,
                "sku": sku,
                "title": title,
                "quantity": quantity,
                "price": f"{cents / 100:.2f}",
            }
        )
    return lines, f"{total / 100:.2f}"


def make_events(count: int, mix: EventMix = EventMix(), seed: int = 7) -> list[tuple[bytes, bytes]]:
    """(key, CloudEvent JSON) pairs, each event distinct, times increasing per customer."""
    rng = random.Random(seed)
    customers = max(1, count // mix.events_per_customer)
    out: list[tuple[bytes, bytes]] = []
    for i in range(count):
        n = rng.randrange(customers)
        key = f"{SHOP_ID}:c:{900_000_000_000 + n}"
        at = _BASE_TIME + timedelta(milliseconds=i)
        roll = rng.random()
        if roll < mix.orders:
            lines, total = _lines(rng)
            event_type, data = (
                ev.ORDER_PLACED,
                {
                    "order_id": f"o-{i}",
                    "customer": _customer(n),
                    "lines": lines,
                    "currency": "EUR",
                    "total_price": total,
                    "cart_id": f"cart-{n}",
                    "placed_at": _iso(at),
                },
            )
        elif roll < mix.orders + mix.customer_updates:
            event_type, data = ev.CUSTOMER_UPDATED, {"customer": _customer(n)}
        else:
            lines, total = _lines(rng)
            event_type, data = (
                ev.CART_UPDATED,
                {
                    "cart_id": f"cart-{n}",
                    "customer": _customer(n),
                    "lines": lines,
                    "currency": "EUR",
                    "total_price": total,
                    "recovery_url": f"https://bench.example/cart/{n}",
                    "updated_at": _iso(at),
                },
            )
        event = {
            "specversion": "1.0",
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "source": "rebound/bench",
            "type": event_type,
            "subject": key,
            "time": _iso(at),
            "datacontenttype": "application/json",
            "shopid": SHOP_ID,
            "data": data,
        }
        out.append((key.encode(), orjson.dumps(event)))
    return out


async def produce(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    """Writes the events (acks=all); returns the seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=1024 * 1024,
        enable_idempotence=False,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        for start in range(0, len(events), 20_000):
            futures = [
                await producer.send(topic, value, key=key)
                for key, value in events[start : start + 20_000]
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


class CommittedOffsets:
    """Reads what a group has committed (OffsetFetch through a member that never joins)."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        self._topic = topic

    async def __aenter__(self) -> CommittedOffsets:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def total(self) -> int:
        partitions = self._consumer.partitions_for_topic(self._topic) or set()
        total = 0
        for p in partitions:
            offset = await self._consumer.committed(TopicPartition(self._topic, p))
            total += offset or 0
        return total


async def end_offsets(bootstrap: str, topic: str) -> int:
    """Messages on `topic` (all partitions), i.e. the sum of high-water marks."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return sum(ends.values())


@dataclass
class Progress:
    """Committed offsets sampled over time, to tell start-up from steady throughput."""

    target: int
    started_at: float
    first_at: float | None = None
    first_count: int = 0
    done_at: float | None = None
    count: int = 0  # committed so far
    last_at: float | None = None  # when `count` was first seen
    # CPU seconds (of whatever `cpu` measures) at the first commit seen and at the end.
    cpu: Callable[[], tuple[float, ...]] | None = None
    first_cpu: tuple[float, ...] = ()
    last_cpu: tuple[float, ...] = ()

    def observe(self, count: int, now: float) -> None:
        if self.first_at is None and count > 0:
            self.first_at, self.first_count = now, count
            self.first_cpu = self.cpu() if self.cpu else ()
        if count > self.count:
            self.count, self.last_at = count, now
            self.last_cpu = self.cpu() if self.cpu else ()
        if self.done_at is None and count >= self.target:
            self.done_at = now

    def steady_cpu_ms_per_event(self) -> list[float]:
        """CPU ms per event of each measured thing, between the first and the last commit."""
        events = self.count - self.first_count
        if not events or not self.first_cpu or not self.last_cpu:
            return []
        return [
            1000 * (last - first) / events
            for first, last in zip(self.first_cpu, self.last_cpu, strict=True)
        ]

    def steady_events_per_s(self) -> float:
        """From the first commit seen to the last progress seen (all done, or time up)."""
        end = self.done_at or self.last_at
        if self.first_at is None or end is None or end <= self.first_at:
            return float("nan")
        return (self.count - self.first_count) / (end - self.first_at)


async def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    target: int,
    started_at: float,
    timeout_s: float,
    alive: Callable[[], bool],
    cpu: Callable[[], tuple[float, ...]] | None = None,
) -> Progress:
    progress = Progress(target, started_at, cpu=cpu)
    async with CommittedOffsets(bootstrap, group, topic) as offsets:
        while progress.done_at is None:
            await _poll(offsets, progress, timeout_s, alive)
    return progress


async def committed_for(
    bootstrap: str,
    group: str,
    topic: str,
    target: int,
    started_at: float,
    limit_s: float,
    alive: Callable[[], bool],
    cpu: Callable[[], tuple[float, ...]] | None = None,
) -> Progress:
    """Like wait_committed, but stops after `limit_s` with whatever was committed by then."""
    progress = Progress(target, started_at, cpu=cpu)
    async with CommittedOffsets(bootstrap, group, topic) as offsets:
        while progress.done_at is None and time.perf_counter() - started_at < limit_s:
            await _poll(offsets, progress, limit_s + 60, alive)
    return progress


async def _poll(
    offsets: CommittedOffsets, progress: Progress, timeout_s: float, alive: Callable[[], bool]
) -> None:
    if time.perf_counter() - progress.started_at > timeout_s:
        raise TimeoutError(f"consumer did not commit {progress.target} events in {timeout_s:.0f}s")
    if not alive():
        raise RuntimeError("the consumer process exited")
    progress.observe(await offsets.total(), time.perf_counter())
    await asyncio.sleep(0.2)


async def distinct_sources(bootstrap: str, topic: str) -> tuple[int, int]:
    """(records, distinct source events) on `topic`, read from the beginning to the end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        records, sources = 0, set[str]()
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                records += len(batch)
                sources.update(orjson.loads(r.value)["data"]["source_event_id"] for r in batch)
    finally:
        await consumer.stop()
    return records, len(sources)
