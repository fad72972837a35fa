"""The scheduler's SQL for a guest merged into an account: the aliases, and the move of the
guest's enrolments, timers, contact history and report orders to the account's key and
partition. The
caller owns the transaction; statements take whole columns as arrays, like queries.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.scheduler.adapters.queries import ENROLLMENT_COLUMNS
from services.scheduler.adapters.repository import enrollment_of
from services.scheduler.domain.engine import Enrollment
from shared.db import DriverWrites
from shared.events import CartSnapshot, Profile


@dataclass(frozen=True)
class Merge:
    guest_key: str
    account_key: str
    partition: int  # the account key's partition: its timers belong there
    merged_at: datetime


@dataclass(frozen=True)
class Canonical:
    """Where a merged guest key's activity goes, with the account's stored facts (if any)."""

    key: str
    partition: int
    profile: Profile | None
    cart: CartSnapshot | None


class MergeRepository(DriverWrites):
    _what = "merges"

    async def add_aliases(self, merges: Sequence[Merge]) -> None:
        await (await self._driver()).execute(
            _ADD_ALIASES,
            [m.guest_key for m in merges],
            [m.account_key for m in merges],
            [m.partition for m in merges],
            [m.merged_at for m in merges],
        )

    async def enrollments_for_update(self, keys: Sequence[str]) -> list[Enrollment]:
        """Every enrolment of these customers, locked (a timer pass skips them meanwhile)."""
        rows = await (await self._driver()).fetch(_ENROLLMENTS_FOR_UPDATE, list(keys))
        return [enrollment_of(r) for r in rows]

    async def end(self, enrollment_ids: Sequence[int], reason: str, now: datetime) -> None:
        if enrollment_ids:
            driver = await self._driver()
            await driver.execute(_END, list(enrollment_ids), reason, now)
            await driver.execute(_CANCEL_TIMERS, list(enrollment_ids))

    async def move(self, merges: Sequence[Merge], now: datetime) -> None:
        """Enrolments, their timers and the contact history of each guest: the account's now."""
        driver = await self._driver()
        columns = (
            [m.guest_key for m in merges],
            [m.account_key for m in merges],
            [m.partition for m in merges],
        )
        await driver.execute(_MOVE_TIMERS, *columns)
        await driver.execute(_MOVE_ENROLLMENTS, *columns, now)
        for statement in _MOVE_CONTACTS:
            await driver.execute(statement, *columns[:2])
        await driver.execute(_FORGET_GUESTS, columns[0])
        # After the guest's row is gone (its delete waits for a batch still writing the
        # guest), so the guest's orders that batch recorded move too.
        await driver.execute(_MOVE_ORDERS, *columns[:2])
        await driver.execute(_FORGET_PREDICTIONS, columns[0])

    async def canonical(self, guest_keys: Sequence[str]) -> dict[str, Canonical]:
        if not guest_keys:
            return {}
        rows = await (await self._driver()).fetch(_CANONICAL, list(guest_keys))
        return {r["alias_key"]: _canonical(r) for r in rows}


def _canonical(row: Any) -> Canonical:
    profile = None if row["profile"] is None else Profile.model_validate_json(row["profile"])
    cart = None if row["cart"] is None else CartSnapshot.model_validate_json(row["cart"])
    return Canonical(row["canonical_key"], row["partition"], profile, cart)


# name: add_aliases
# A guest key and the account it became; a redelivered merge changes nothing.
_ADD_ALIASES = """
    INSERT INTO scheduler.customer_aliases (alias_key, canonical_key, partition, merged_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[])
    ON CONFLICT (alias_key) DO NOTHING
"""

# name: enrollments_for_update
_ENROLLMENTS_FOR_UPDATE = f"""
    SELECT {ENROLLMENT_COLUMNS}
    FROM scheduler.enrollments e WHERE e.customer_key = ANY($1::text[])
    ORDER BY e.id FOR UPDATE
"""

# name: end_enrollments
_END = """
    UPDATE scheduler.enrollments SET status = 'exited', exit_reason = $2, updated_at = $3
    WHERE id = ANY($1::bigint[])
"""

_CANCEL_TIMERS = "DELETE FROM scheduler.timers WHERE enrollment_id = ANY($1::bigint[])"

_PAIRS = "unnest($1::text[], $2::text[], $3::int[]) AS m(guest, account, p)"

# name: move_timers
# Timers belong to the partition of their customer: the account's owner fires them from now.
_MOVE_TIMERS = f"""
    UPDATE scheduler.timers t SET partition = m.p
    FROM scheduler.enrollments e, {_PAIRS}
    WHERE t.enrollment_id = e.id AND e.customer_key = m.guest
"""

# name: move_enrollments
_MOVE_ENROLLMENTS = f"""
    UPDATE scheduler.enrollments e SET customer_key = m.account, partition = m.p, updated_at = $4
    FROM {_PAIRS} WHERE e.customer_key = m.guest
"""

# name: move_contacts
# What frequency caps count: the person was contacted, under whichever key.
_MOVE_CONTACTS = tuple(
    f"""
    UPDATE scheduler.{table} x SET customer_key = m.account
    FROM unnest($1::text[], $2::text[]) AS m(guest, account) WHERE x.customer_key = m.guest
    """
    for table in ("contact_log", "contact_queue")
)

# name: forget_guests
_FORGET_GUESTS = "DELETE FROM scheduler.customers WHERE customer_key = ANY($1::text[])"

# name: move_orders
# The reports' orders: an enrolment that moved to the account keeps the orders that converted
# it, and the person is one customer in the cohorts.
_MOVE_ORDERS = """
    UPDATE scheduler.customer_orders x SET customer_key = m.account
    FROM unnest($1::text[], $2::text[]) AS m(guest, account) WHERE x.customer_key = m.guest
"""

# name: forget_predictions
# The guest's figures were of half the person; the next fit predicts the account from the
# merged facts (a guest segment timer still pending finds no customer when due and goes).
_FORGET_PREDICTIONS = "DELETE FROM scheduler.predictions WHERE customer_key = ANY($1::text[])"

# name: canonical
# Merged guest keys with their account's key, partition and stored facts.
_CANONICAL = """
    SELECT a.alias_key, a.canonical_key, a.partition, c.profile::text AS profile,
        c.cart::text AS cart
    FROM scheduler.customer_aliases a
    LEFT JOIN scheduler.customers c ON c.customer_key = a.canonical_key
    WHERE a.alias_key = ANY($1::text[])
"""
