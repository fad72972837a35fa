"""Upgrading a live system: a migration that builds or drops an index on a table the services
write all the time (processed ids, enrolments, orders, carts) does it CONCURRENTLY. A
writer's transaction is open when the upgrade starts, so the index operation waits for it; a
second writer must go on meanwhile, where a plain CREATE or DROP INDEX would queue it behind
(the test fails with the plain operations: the second writer runs out of its lock timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from alembic import command

from shared.db import alembic_config, upgrade
from tests.conftest import Infra, eventually, migrations_dir

DATABASE = "migrations_concurrently"


@dataclass(frozen=True)
class Case:
    service: str
    before: str
    after: str
    write: str  # one row; $1 makes it unique
    index: str
    upgraded: str | None  # part of the index's definition after the upgrade; None: no index
    downgraded: str | None  # the same after the downgrade


PROCESSED_EVENTS = Case(
    "ingest",
    "0001",
    "0002",
    "INSERT INTO ingest.processed_events (event_id) VALUES ($1)",
    "processed_events_processed_at",
    upgraded="(processed_at)",
    downgraded=None,
)
PROCESSED_ACTIVITIES = Case(
    "scheduler",
    "0001",
    "0002",
    "INSERT INTO scheduler.processed_activities (event_id, processed_at) VALUES ($1, now())",
    "processed_activities_processed_at",
    upgraded="(processed_at)",
    downgraded=None,
)
ENROLMENTS = Case(
    "scheduler",
    "0011_winner",
    "0012_enrolperf_active",
    "INSERT INTO scheduler.enrollments (journey_id, journey_version, customer_key, partition,"
    " status, step_index, holdout, entered_at, updated_at)"
    " VALUES ('j', 1, $1, 0, 'active', 0, false, now(), now())",
    "enrollments_one_active",
    upgraded="(customer_key, journey_id) WHERE (status = 'active'::text)",
    downgraded="(journey_id, customer_key) WHERE (status = 'active'::text)",
)
ORDERS = Case(
    "ingest",
    "0007_identity",
    "0008_importer_one_orders_index",
    "INSERT INTO ingest.orders (shop_id, order_id, customer_key, total_price, status,"
    " placed_at, updated_at) VALUES ('s', $1, 's:c:1', 10, 'placed', now(), now())",
    "orders_customer",
    upgraded=None,
    downgraded="(customer_key, placed_at)",
)
CARTS = Case(
    "ingest",
    "0008_importer_one_orders_index",
    "0009_recover_carts_by_customer",
    "INSERT INTO ingest.carts (shop_id, cart_id, customer_key, lines, updated_at, status)"
    " VALUES ('s', $1, 's:c:1', '[]', now(), 'open')",
    "carts_by_customer",
    upgraded="(customer_key, updated_at)",
    downgraded=None,
)


@pytest.fixture
def empty_database(infra: Infra) -> Iterator[str]:
    infra.pg.psql(f'DROP DATABASE IF EXISTS "{DATABASE}"')
    infra.pg.psql(f'CREATE DATABASE "{DATABASE}"')
    yield infra.database_url(DATABASE)
    infra.pg.psql(f'DROP DATABASE IF EXISTS "{DATABASE}"')


async def _waiting_on_a_lock(conn: asyncpg.Connection) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting)


async def _index(dsn: str, name: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow(
            "SELECT i.indisvalid, i.indisunique, pg_get_indexdef(i.indexrelid) AS definition"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1",
            name,
        )
    finally:
        await conn.close()


async def _valid_definition(dsn: str, name: str, expected: str | None) -> bool:
    """The index is valid and has that definition, or (expected None) there is none."""
    found = await _index(dsn, name)
    if expected is None:
        return found is None
    return found is not None and found["indisvalid"] and expected in found["definition"]


async def _upgrade_beside_writers(case: Case, url: str, dsn: str) -> None:
    open_writer = await asyncpg.connect(dsn)
    other_writer = await asyncpg.connect(dsn)
    await open_writer.execute("BEGIN")
    await open_writer.execute(case.write, "open")
    migrations = migrations_dir(case.service)
    upgrading = asyncio.create_task(
        asyncio.to_thread(upgrade, migrations, url, case.service, case.after)
    )
    try:
        await eventually(lambda: _waiting_on_a_lock(other_writer), what="the migration waiting")
        await other_writer.execute("SET lock_timeout = '3s'")
        await other_writer.execute(case.write, "other")  # not queued behind the migration
    finally:
        await open_writer.close()  # its transaction ends: the migration goes on
        await other_writer.close()
        await asyncio.wait_for(upgrading, 60)


CASES = [PROCESSED_EVENTS, PROCESSED_ACTIVITIES, ENROLMENTS, ORDERS, CARTS]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.service}-{c.after}")
async def test_an_index_changes_while_the_table_takes_writes(
    case: Case, empty_database: str
) -> None:
    dsn = empty_database.replace("postgresql+asyncpg://", "postgresql://")
    migrations = migrations_dir(case.service)
    await asyncio.to_thread(upgrade, migrations, empty_database, case.service, case.before)
    conn = await asyncpg.connect(dsn)
    try:
        for n in range(200):
            await conn.execute(case.write, f"r{n}")
    finally:
        await conn.close()

    await _upgrade_beside_writers(case, empty_database, dsn)

    assert await _valid_definition(dsn, case.index, case.upgraded)
    config = alembic_config(migrations, empty_database, case.service)
    await asyncio.to_thread(command.downgrade, config, case.before)  # blocking, like upgrade
    assert await _valid_definition(dsn, case.index, case.downgraded)


async def test_the_active_enrolments_index_is_led_by_the_customer_and_stays_unique(
    empty_database: str,
) -> None:
    dsn = empty_database.replace("postgresql+asyncpg://", "postgresql://")
    await asyncio.to_thread(
        upgrade, migrations_dir("scheduler"), empty_database, "scheduler", ENROLMENTS.after
    )
    found = await _index(dsn, "enrollments_one_active")
    assert found is not None and found["indisunique"]
    assert "(customer_key, journey_id) WHERE (status = 'active'::text)" in found["definition"]
    assert await _index(dsn, "enrollments_one_active_next") is None
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(ENROLMENTS.write, "s:c:1")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(ENROLMENTS.write, "s:c:1")
    finally:
        await conn.close()
