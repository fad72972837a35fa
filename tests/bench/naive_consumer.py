"""The naive peer of the ingest consumer: a per-event "read, update, commit" loop on the ORM.

What a Python shop would write first: aiokafka fetches, and for each event the SQLAlchemy
ORM reads the rows it touches (`session.get`), updates their fields, inserts the order and its
lines, and commits one transaction; offsets are committed after every 100 events. Same
tables (the ingest migrations), same PostgreSQL, same events as the ingest consumer; it keeps
the same idempotency (processed_events) but publishes no customer.activity.

    python -m tests.bench.naive_consumer --bootstrap ... --database-url ... --topic ... --group ...
"""

from __future__ import annotations

import argparse
from datetime import datetime
from decimal import Decimal
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped

from services.ingest.adapters import tables
from services.ingest.domain.canonical import subject_and_key
from shared import events as ev

NAIVE_BATCH = 100  # events between offset commits


class Base(DeclarativeBase):
    pass


class ProcessedEvent(Base):
    __table__ = tables.processed_events
    event_id: Mapped[str]


class Customer(Base):
    __table__ = tables.customers
    # Only what the loop reads and writes; the other columns keep their database defaults.
    __mapper_args__ = {  # noqa: RUF012  # SQLAlchemy's declarative attribute
        "include_properties": [
            "customer_key",
            "shop_id",
            "customer_id",
            "email",
            "first_name",
            "last_name",
            "locale",
            "marketing_consent",
            "orders_count",
            "total_spent",
            "first_order_at",
            "last_order_at",
            "updated_at",
        ]
    }
    customer_key: Mapped[str]
    shop_id: Mapped[str]
    customer_id: Mapped[str | None]
    email: Mapped[str | None]
    first_name: Mapped[str | None]
    last_name: Mapped[str | None]
    locale: Mapped[str | None]
    marketing_consent: Mapped[str | None]
    orders_count: Mapped[int]
    total_spent: Mapped[Decimal]
    first_order_at: Mapped[datetime | None]
    last_order_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class Cart(Base):
    __table__ = tables.carts
    shop_id: Mapped[str]
    cart_id: Mapped[str]
    customer_key: Mapped[str | None]
    lines: Mapped[list[dict[str, Any]]]
    currency: Mapped[str | None]
    total_price: Mapped[Decimal | None]
    recovery_url: Mapped[str | None]
    updated_at: Mapped[datetime]
    status: Mapped[str]


class Order(Base):
    __table__ = tables.orders


class OrderLine(Base):
    __table__ = tables.order_lines


async def apply(session: AsyncSession, event: ev.CloudEvent) -> None:
    """One event, one transaction: read what it touches, change it, commit."""
    if await session.get(ProcessedEvent, event.id) is not None:
        return
    session.add(ProcessedEvent(event_id=event.id))
    data = ev.payload(event, ev.SHOP_PAYLOADS[event.type])
    shop_id = event.shopid or ""
    key, _ = subject_and_key(shop_id, data)
    customer = await _customer(session, key, shop_id, getattr(data, "customer", None), event.time)
    if isinstance(data, ev.CartUpdated):
        await _cart(session, shop_id, key, data)
    elif isinstance(data, ev.OrderEvent) and customer is not None:
        await _order(session, shop_id, customer, data)
    await session.commit()


async def _customer(
    session: AsyncSession, key: str | None, shop_id: str, seen: Any, at: datetime
) -> Customer | None:
    if key is None or not isinstance(seen, ev.Customer):
        return None
    customer = await session.get(Customer, key)
    if customer is None:
        customer = Customer(customer_key=key, shop_id=shop_id, orders_count=0, total_spent=0)
        session.add(customer)
    customer.customer_id = seen.id or customer.customer_id
    customer.email = seen.email or customer.email
    customer.first_name = seen.first_name or customer.first_name
    customer.last_name = seen.last_name or customer.last_name
    customer.locale = seen.locale or customer.locale
    customer.marketing_consent = seen.marketing_consent or customer.marketing_consent
    customer.updated_at = max(at, customer.updated_at) if customer.updated_at else at
    return customer


async def _cart(session: AsyncSession, shop_id: str, key: str | None, data: ev.CartUpdated) -> None:
    cart = await session.get(Cart, (shop_id, data.cart_id))
    if cart is None:
        cart = Cart(shop_id=shop_id, cart_id=data.cart_id, status="open")
        session.add(cart)
    elif cart.updated_at > data.updated_at:
        return
    cart.customer_key = key or cart.customer_key
    cart.lines = [line.model_dump(mode="json") for line in data.lines]
    cart.currency, cart.total_price = data.currency, data.total_price
    cart.recovery_url, cart.updated_at = data.recovery_url, data.updated_at
    if cart.status != "ordered":
        cart.status = "open" if data.lines else "emptied"


async def _order(
    session: AsyncSession, shop_id: str, customer: Customer, data: ev.OrderEvent
) -> None:
    if await session.get(Order, (shop_id, data.order_id)) is not None:
        return
    session.add(
        Order(
            shop_id=shop_id,
            order_id=data.order_id,
            customer_key=customer.customer_key,
            cart_id=data.cart_id,
            currency=data.currency,
            total_price=data.total_price,
            status="placed",
            placed_at=data.placed_at,
            updated_at=data.placed_at,
        )
    )
    for n, line in enumerate(data.lines, start=1):
        session.add(
            OrderLine(
                shop_id=shop_id,
                order_id=data.order_id,
                line_no=n,
                **line.model_dump(exclude={"image_url"}),
            )
        )
    customer.orders_count += 1
    customer.total_spent += data.total_price
    customer.last_order_at = max(filter(None, (customer.last_order_at, data.placed_at)))
    if data.cart_id and (cart := await session.get(Cart, (shop_id, data.cart_id))) is not None:
        cart.status = "ordered"


async def run(args: argparse.Namespace) -> None:
    engine = create_async_engine(args.database_url, pool_size=2)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=500, max_records=NAIVE_BATCH)
            for records in fetched.values():
                for record in records:
                    async with sessions() as session:
                        await apply(session, ev.decode(record.value))
            await consumer.commit()
    finally:
        await consumer.stop()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("--bootstrap", "--database-url", "--topic", "--group"):
        parser.add_argument(name, required=True)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
