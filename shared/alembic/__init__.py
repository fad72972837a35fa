"""The one Alembic env.py body all services share: async engine, per-service schema; and the
index operations a migration runs on a table that may already be large."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from alembic import context, op
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def run_env() -> None:
    cfg = context.config
    schema: str = cfg.attributes["schema"]
    url = cfg.get_main_option("sqlalchemy.url")
    assert url is not None
    asyncio.run(_run_async(url, schema))


async def _run_async(url: str, schema: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.commit()
        await conn.run_sync(_migrate, schema)
    await engine.dispose()


def _migrate(conn: Connection, schema: str) -> None:
    context.configure(connection=conn, version_table_schema=schema, include_schemas=True)
    with context.begin_transaction():
        context.run_migrations()


def create_index_concurrently(
    name: str, table: str, columns: Sequence[str], schema: str, **options: Any
) -> None:
    """CREATE INDEX CONCURRENTLY, outside the migration's transaction: the table keeps taking
    writes while the index is built (a plain CREATE INDEX queues them for the whole build).
    An index that an interrupted build left invalid under this name is dropped first."""
    with op.get_context().autocommit_block():
        op.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{schema}"."{name}"')
        op.create_index(
            name, table, list(columns), schema=schema, postgresql_concurrently=True, **options
        )


def drop_index_concurrently(name: str, table: str, schema: str) -> None:
    """DROP INDEX CONCURRENTLY: waits for the table's open transactions without queueing the
    new ones behind it."""
    with op.get_context().autocommit_block():
        op.drop_index(name, table, schema=schema, postgresql_concurrently=True)
