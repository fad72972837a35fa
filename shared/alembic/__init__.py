"""The one Alembic env.py body all services share: async engine, per-service schema."""

from __future__ import annotations

import asyncio

from alembic import context
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
