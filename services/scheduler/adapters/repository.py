"""All of the scheduler's SQL. Callers own the transaction; nothing here commits.

The hot paths (a pass of due timers, a batch of activities) go through `BatchRepository`:
the named statements of queries.py on the asyncpg connection under the caller's SQLAlchemy
transaction, a whole column per array parameter, because SQLAlchemy's per-row statement
building and result handling cost more than the database did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scheduler.adapters import queries as q
from services.scheduler.adapters.stored import as_stored, python_dump
from services.scheduler.adapters.tables import outbox
from services.scheduler.domain.engine import Enrollment
from shared.events import CartSnapshot, Profile


class CustomerFacts:
    """A customer's profile and open cart: the contract's models an activity carried, or the
    JSON a timer reads back from scheduler.customers. A stored one is not validated again
    (stored.py): its facts and its request come from the JSON, and its models are built only
    if something asks for them."""

    __slots__ = ("_about", "_cart", "_profile", "_stored", "key", "partition", "predictions")

    def __init__(
        self,
        key: str,
        partition: int,
        profile: Profile,
        cart: CartSnapshot | None,
        # The purchase predictions (PredictionRepository.facts_for), read only where a
        # condition needs them; None: none read, or none fitted for this customer.
        predictions: Mapping[str, Any] | None = None,
    ) -> None:
        self.key, self.partition, self.predictions = key, partition, predictions
        self._profile: Profile | None = profile
        self._cart = cart
        self._stored: tuple[dict[str, Any], dict[str, Any] | None] | None = None
        self._about: dict[str, Any] | None = None

    @classmethod
    def stored(
        cls, key: str, partition: int, profile: dict[str, Any], cart: dict[str, Any] | None
    ) -> CustomerFacts:
        """From the JSON this service stored (`Profile.model_dump_json` and the cart's)."""
        facts = cls.__new__(cls)
        facts.key, facts.partition, facts.predictions = key, partition, None
        facts._profile, facts._cart = None, None
        facts._stored = (profile, cart)
        facts._about = profile if as_stored(Profile, profile) else None
        return facts

    def with_predictions(self, predictions: Mapping[str, Any] | None) -> CustomerFacts:
        """The same customer with other purchase predictions (what `replace` was for)."""
        copy = object.__new__(CustomerFacts)
        for name in self.__slots__:
            setattr(copy, name, getattr(self, name))
        copy.predictions = predictions
        return copy

    def __repr__(self) -> str:
        return f"CustomerFacts({self.key!r}, partition={self.partition})"

    @property
    def profile(self) -> Profile:
        if self._profile is None:
            assert self._stored is not None
            self._profile = Profile.model_validate(self._stored[0])
        return self._profile

    @property
    def cart(self) -> CartSnapshot | None:
        if self._cart is None and self._stored is not None and self._stored[1] is not None:
            self._cart = CartSnapshot.model_validate(self._stored[1])
        return self._cart

    def profile_facts(self) -> dict[str, Any]:
        """`profile.model_dump()`: a new dict, the caller's to change."""
        if self._stored is None:
            return self.profile.model_dump()
        return python_dump(Profile, self._stored[0])

    def cart_facts(self) -> dict[str, Any] | None:
        """`cart.model_dump()` (None without an open cart): a new dict."""
        if self._stored is None:
            return None if self._cart is None else self._cart.model_dump()
        cart = self._stored[1]
        return None if cart is None else python_dump(CartSnapshot, cart)

    def cart_json(self) -> dict[str, Any] | None:
        """`cart.model_dump(mode="json")`, not to be changed."""
        stored = None if self._stored is None else self._stored[1]
        if stored is not None and as_stored(CartSnapshot, stored):
            return stored
        cart = self.cart
        return None if cart is None else cart.model_dump(mode="json")

    def about(self) -> dict[str, Any]:
        """`profile.model_dump(mode="json")`, not to be changed: for the fields a request
        carries (strings and numbers as they go out)."""
        if self._about is None:
            self._about = self.profile.model_dump(mode="json")
        return self._about


class DueTimer(NamedTuple):
    enrollment_id: int
    step_id: str
    due_at: datetime
    partition: int


class OutboxRow(NamedTuple):
    id: int
    topic: str
    key: str
    value: bytes


class OutboxMessage(NamedTuple):
    topic: str
    key: str
    value: bytes


class TimerRow(NamedTuple):
    enrollment_id: int
    partition: int
    step_id: str
    due_at: datetime


class RequestRow(NamedTuple):
    request_key: str
    enrollment_id: int
    step_id: str
    variant: str | None


class NewEnrollment(NamedTuple):
    enrollment: Enrollment  # with its id taken from `new_enrollment_ids`
    partition: int


@dataclass(frozen=True)
class Writes:
    """What one pass or batch changes, written with one statement per kind."""

    inserted: list[NewEnrollment]
    updated: list[Enrollment]
    timers: list[TimerRow]
    cancelled: list[int]
    requests: list[RequestRow]


class OutboxRepository:
    async def claim(self, conn: AsyncConnection, limit: int) -> list[OutboxRow]:
        rows = await conn.execute(
            sa.select(outbox).order_by(outbox.c.id).limit(limit).with_for_update(skip_locked=True)
        )
        return [OutboxRow(r.id, r.topic, r.key, r.value) for r in rows]

    async def delete(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        await conn.execute(outbox.delete().where(outbox.c.id.in_(list(ids))))


class BatchRepository:
    """The set-based statements of one transaction, bound to the caller's connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._driver_conn: Any = None

    @property
    def connection(self) -> AsyncConnection:
        return self._conn

    async def _driver(self) -> Any:
        """The asyncpg connection of this transaction (same connection, same transaction)."""
        if self._driver_conn is None:
            driver: Any = (await self._conn.get_raw_connection()).driver_connection
            if not driver.is_in_transaction():
                # SQLAlchemy begins the database transaction lazily, at its first statement;
                # without one the raw statements would autocommit, outside the caller's
                # transaction. (Begun already by an earlier statement: no round trip.)
                await self._conn.exec_driver_sql("SELECT 1")
            if not driver.is_in_transaction():
                raise RuntimeError("batch statements must run inside the caller's transaction")
            self._driver_conn = driver
        return self._driver_conn

    async def claim_due(
        self, partitions: Sequence[int], until: datetime, limit: int
    ) -> list[DueTimer]:
        rows = await (await self._driver()).fetch(
            q.CLAIM_DUE_TIMERS, list(partitions), until, limit
        )
        return [DueTimer(r[0], r[1], r[2], r[3]) for r in rows]

    async def next_due_at(self, partitions: Sequence[int], until: datetime) -> datetime | None:
        found: datetime | None = await (await self._driver()).fetchval(
            q.NEXT_DUE_AT, list(partitions), until
        )
        return found

    async def count_due(self, partitions: Sequence[int], now: datetime) -> int:
        return int(await (await self._driver()).fetchval(q.COUNT_DUE_TIMERS, list(partitions), now))

    async def restore_timers(self, rows: Sequence[TimerRow]) -> None:
        if rows:
            await (await self._driver()).execute(q.RESTORE_TIMERS, *_timer_columns(rows))

    async def timer_targets(
        self, enrollment_ids: Sequence[int]
    ) -> list[tuple[Enrollment, CustomerFacts]]:
        """The enrolments of claimed timers with their customers (rows without one are left)."""
        rows = await (await self._driver()).fetch(
            q.ENROLLMENTS_WITH_CUSTOMERS, list(enrollment_ids)
        )
        return [(enrollment_of(r), _customer(r)) for r in rows]

    async def claim_new_activities(self, event_ids: Sequence[str], now: datetime) -> set[str]:
        rows = await (await self._driver()).fetch(q.CLAIM_NEW_ACTIVITIES, list(event_ids), now)
        return {r[0] for r in rows}

    async def save_customers(self, facts: Sequence[CustomerFacts], now: datetime) -> None:
        """The facts as each activity carried them, in order; the last one per customer stays."""
        if not facts:
            return
        await (await self._driver()).execute(
            q.UPSERT_CUSTOMERS,
            [c.key for c in facts],
            [c.profile.shop_id for c in facts],
            [c.partition for c in facts],
            [c.profile.model_dump_json() for c in facts],
            [None if c.cart is None else c.cart.model_dump_json() for c in facts],
            now,
        )

    async def active_for_update(self, customer_keys: Sequence[str]) -> list[Enrollment]:
        rows = await (await self._driver()).fetch(
            q.ACTIVE_ENROLLMENTS_FOR_UPDATE, sorted(set(customer_keys))
        )
        return [enrollment_of(r) for r in rows]

    async def ever_enrolled(
        self, customer_keys: Sequence[str], journey_ids: Sequence[str]
    ) -> set[tuple[str, str]]:
        if not customer_keys or not journey_ids:
            return set()
        rows = await (await self._driver()).fetch(
            q.EVER_ENROLLED, list(customer_keys), list(journey_ids)
        )
        return {(r[0], r[1]) for r in rows}

    async def new_enrollment_ids(self, count: int) -> list[int]:
        if count == 0:
            return []
        return [r[0] for r in await (await self._driver()).fetch(q.NEW_ENROLLMENT_IDS, count)]

    async def write(self, writes: Writes, now: datetime) -> set[str]:
        """Apply the changes; returns the request keys that were not made before."""
        driver = await self._driver()
        if writes.updated:
            await driver.execute(q.UPDATE_ENROLLMENTS, *_update_columns(writes.updated), now)
        if writes.inserted:
            await driver.execute(q.INSERT_ENROLLMENTS, *_insert_columns(writes.inserted), now)
        if writes.cancelled:
            await driver.execute(q.CANCEL_TIMERS, writes.cancelled)
        if writes.timers:
            await driver.execute(q.UPSERT_TIMERS, *_timer_columns(writes.timers))
        if not writes.requests:
            return set()
        rows = await driver.fetch(
            q.RECORD_REQUESTS,
            [r.request_key for r in writes.requests],
            [r.enrollment_id for r in writes.requests],
            [r.step_id for r in writes.requests],
            [r.variant for r in writes.requests],
            now,
        )
        return {r[0] for r in rows}

    async def add_outbox(self, messages: Sequence[OutboxMessage], now: datetime) -> list[int]:
        """The rows' ids, one per message and in the same order."""
        if not messages:
            return []
        rows = await (await self._driver()).fetch(
            q.ADD_OUTBOX,
            [m.topic for m in messages],
            [m.key for m in messages],
            [m.value for m in messages],
            now,
        )
        return sorted(r[0] for r in rows)  # identities are drawn in insertion order

    async def take_outbox(self, ids: Sequence[int]) -> list[int]:
        return [r[0] for r in await (await self._driver()).fetch(q.TAKE_OUTBOX, list(ids))]

    async def reserve_enrolments(
        self, wanted: dict[str, int], caps: dict[str, int]
    ) -> dict[str, int]:
        """How many of the wanted new enrolments each capped journey may still make."""
        driver = await self._driver()
        ids = sorted(wanted)
        columns = [ids, [wanted[i] for i in ids], [caps[i] for i in ids]]
        await driver.execute(q.RESERVE_ENROLMENTS, *columns)
        rows = await driver.fetch(q.TAKE_ENROLMENTS, *columns)
        granted = {i: 0 for i in ids}
        granted.update({r[0]: int(r[1]) for r in rows})
        return granted

    async def fail_enrollment(self, enrollment_id: int, reason: str, now: datetime) -> None:
        await (await self._driver()).execute(q.FAIL_ENROLLMENT, enrollment_id, reason, now)


def _timer_columns(rows: Sequence[TimerRow]) -> list[list[Any]]:
    return [
        [r.enrollment_id for r in rows],
        [r.partition for r in rows],
        [r.step_id for r in rows],
        [r.due_at for r in rows],
    ]


def _update_columns(rows: Sequence[Enrollment]) -> list[list[Any]]:
    return [
        [e.id for e in rows],
        [e.status for e in rows],
        [e.step_index for e in rows],
        [e.exit_reason for e in rows],
    ]


def _insert_columns(rows: Sequence[NewEnrollment]) -> list[list[Any]]:
    es = [n.enrollment for n in rows]
    return [
        [e.id for e in es],
        [e.journey_id for e in es],
        [e.journey_version for e in es],
        [e.customer_key for e in es],
        [n.partition for n in rows],
        [e.status for e in es],
        [e.step_index for e in es],
        [e.holdout for e in es],
        [e.exit_reason for e in es],
        [e.entered_at for e in es],
    ]


def _customer(row: Any) -> CustomerFacts:
    cart = None if row["cart"] is None else orjson.loads(row["cart"])
    return CustomerFacts.stored(
        row["customer_key"], row["partition"], orjson.loads(row["profile"]), cart
    )


def enrollment_of(row: Any) -> Enrollment:
    """`Enrollment(**enrolment columns)` without the frozen dataclass's `__init__` (one
    `object.__setattr__` per field, per timer): the row's first columns in field order."""
    enrollment = object.__new__(Enrollment)
    enrollment.__dict__.update(zip(q.ENROLLMENT_FIELDS, row, strict=False))  # then partition, ...
    return enrollment
