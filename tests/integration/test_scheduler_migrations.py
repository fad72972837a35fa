"""Upgrading a scheduler that already holds enrolments: migration 0012 rebuilds the unique
index of active enrolments CONCURRENTLY, so new writes go on while it waits and builds.
Afterwards the index is valid, led by the customer and still unique; a downgrade puts the old
one back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from alembic import command

from shared.db import alembic_config, upgrade
from tests.conftest import Infra, eventually, migrations_dir

BEFORE = "0011_winner"
AFTER = "0012_enrolperf_active"
INDEXES = """
    SELECT c.relname, i.indisvalid, i.indisunique, pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = 'scheduler.enrollments'::regclass AND c.relname LIKE '%one_active%'
"""
ENROL = """
    INSERT INTO scheduler.enrollments (journey_id, journey_version, customer_key, partition,
        status, step_index, holdout, entered_at, updated_at)
    VALUES ($1, 1, $2, 0, $3, 0, false, now(), now())
"""


@pytest.fixture
def empty_database(infra: Infra) -> Iterator[str]:
    infra.pg.psql('DROP DATABASE IF EXISTS "migrations_0012"')
    infra.pg.psql('CREATE DATABASE "migrations_0012"')
    yield infra.database_url("migrations_0012")
    infra.pg.psql('DROP DATABASE IF EXISTS "migrations_0012"')


async def _building(conn: asyncpg.Connection) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting)


async def _indexes(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(INDEXES))
    finally:
        await conn.close()


async def test_the_active_index_is_rebuilt_led_by_the_customer_and_stays_unique(
    empty_database: str,
) -> None:
    scheduler = migrations_dir("scheduler")
    dsn = empty_database.replace("postgresql+asyncpg://", "postgresql://")
    await asyncio.to_thread(upgrade, scheduler, empty_database, "scheduler", BEFORE)
    conn = await asyncpg.connect(dsn)
    try:
        for n in range(200):
            await conn.execute(ENROL, f"j{n % 3}", f"s:c:{n}", "active")
            await conn.execute(ENROL, f"j{n % 3}", f"s:c:{n}", "completed")
    finally:
        await conn.close()

    # A writer's transaction is open when the upgrade starts: the build waits for it. Another
    # writer meanwhile must not queue behind the build (as it would behind CREATE INDEX).
    open_writer = await asyncpg.connect(dsn)
    other_writer = await asyncpg.connect(dsn)
    await open_writer.execute("BEGIN")
    await open_writer.execute(ENROL, "j0", "s:c:open", "active")
    upgrading = asyncio.create_task(
        asyncio.to_thread(upgrade, scheduler, empty_database, "scheduler", AFTER)
    )
    try:
        await eventually(lambda: _building(other_writer), what="the migration waiting")
        await other_writer.execute("SET lock_timeout = '3s'")
        await other_writer.execute(ENROL, "j0", "s:c:other", "active")  # not queued
    finally:
        await open_writer.close()  # its transaction ends: the upgrade goes on
        await other_writer.close()
        await asyncio.wait_for(upgrading, 60)

    [(name, valid, unique, definition)] = await _indexes(dsn)
    assert (name, valid, unique) == ("enrollments_one_active", True, True)
    assert "(customer_key, journey_id) WHERE (status = 'active'::text)" in definition
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(ENROL, "j1", "s:c:1", "active")
        await conn.execute(ENROL, "j1", "s:c:1", "exited")  # ended ones may repeat
    finally:
        await conn.close()

    config = alembic_config(scheduler, empty_database, "scheduler")
    await asyncio.to_thread(command.downgrade, config, BEFORE)  # blocking, like upgrade
    [(name, valid, unique, definition)] = await _indexes(dsn)
    assert (name, valid, unique) == ("enrollments_one_active", True, True)
    assert "(journey_id, customer_key) WHERE" in definition
