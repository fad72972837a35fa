"""Fixtures shared by the integration tests of more than one module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import IngestService
from services.scheduler.settings import SchedulerSettings
from shared.db import make_engine
from shared.topics import Topics
from tests.conftest import ADMIN_TOKEN, Infra, eventually


def scheduler_settings(
    infra: Infra, database_url: str, topics: Topics, **options: Any
) -> SchedulerSettings:
    """A scheduler on the test's database, broker and topics, with the test admin token."""
    return SchedulerSettings(
        database_url=database_url,
        topic_prefix=topics.prefix,
        kafka_bootstrap_servers=infra.bootstrap,
        admin_token=ADMIN_TOKEN,
        **options,
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's own database copy, for the test's reads and writes."""
    engine = make_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def client(service: IngestService) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client on the module's `service` (an IngestService), once it is ready."""
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, what="ingest ready")
        yield client
