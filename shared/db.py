"""Database plumbing: the async engine, a readiness probe and Alembic migrations per service.

Each service owns one PostgreSQL schema and its own Alembic history (version table inside
that schema), so the services migrate and deploy independently.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


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
