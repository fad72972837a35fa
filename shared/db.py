"""Database plumbing: the async engine, a readiness probe and Alembic migrations per service.

Each service owns one PostgreSQL schema and its own Alembic history (version table inside
that schema), so the services migrate and deploy independently.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def make_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800
    )


async def ping(engine: AsyncEngine, timeout_s: float = 2.0) -> bool:
    async def _select_one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(_select_one(), timeout_s)
        return True
    except Exception:
        return False


def alembic_config(migrations_dir: Path, url: str, schema: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(migrations_dir: Path, url: str, schema: str, revision: str = "head") -> None:
    """Run the service's migrations (blocking; call from start-up or a CLI)."""
    command.upgrade(alembic_config(migrations_dir, url, schema), revision)


class DriverWrites:
    """Base of repositories that write with asyncpg itself (unnest arrays, COPY) inside the
    caller's SQLAlchemy transaction: one round trip per set instead of SQLAlchemy's per-row
    statement building. `_what` names the rows in the error when no transaction is open."""

    _what = "rows"

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._driver_conn: Any = None

    async def _driver(self) -> Any:
        if self._driver_conn is None:
            await self._conn.exec_driver_sql("SELECT 1")  # begins the caller's transaction
            driver: Any = (await self._conn.get_raw_connection()).driver_connection
            if not driver.is_in_transaction():
                raise RuntimeError(f"{self._what} must be written inside the caller's transaction")
            self._driver_conn = driver
        return self._driver_conn
