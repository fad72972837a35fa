"""Real PostgreSQL and the real broker, started once per session; a database and topics per test.

Like procrastinate's suite: every service's migrations build one template database, and every
test gets its own copy of it (CREATE DATABASE ... TEMPLATE), so tests never see each other.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "local"))

import devstack  # noqa: E402
from mailcatcher import MailStore, start_catcher  # noqa: E402

from services.scheduler.app import SchedulerService  # noqa: E402
from services.scheduler.settings import SchedulerSettings  # noqa: E402
from shared.clock import ManualClock  # noqa: E402
from shared.db import upgrade  # noqa: E402
from shared.kafka import ensure_topics  # noqa: E402
from shared.topics import Topics  # noqa: E402

SERVICES = ("ingest", "scheduler", "dispatcher")
TEST_PARTITIONS = 3
FIXTURES = ROOT / "tests" / "fixtures" / "shopify-2024-10"
_counter = itertools.count()
# The control plane's token in tests (REBOUND_SCHEDULER_ADMIN_TOKEN) and the header it needs.
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def pytest_sessionstart(session: pytest.Session) -> None:
    """One clear sentence instead of a stack trace per test when PostgreSQL cannot run here."""
    try:
        devstack.preflight()
    except devstack.SetupError as exc:
        pytest.exit(f"cannot start the test infrastructure: {exc}", returncode=3)


@dataclass(frozen=True)
class Infra:
    pg: devstack.Postgres
    bootstrap: str

    def database_url(self, name: str) -> str:
        return self.pg.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """One PostgreSQL cluster and one broker per test session, in a folder of its own."""
    base = devstack.LOCAL / "test" / f"session-{os.getpid()}"
    pg = devstack.Postgres(base / "pg" / "data", devstack.free_port(), durable=False)
    pg.start()
    broker_port = devstack.free_port()
    tansu = devstack.start_tansu(broker_port, base / "tansu.log")
    try:
        yield Infra(pg, f"127.0.0.1:{broker_port}")
    finally:
        devstack.stop_process(tansu)
        pg.remove()
        shutil.rmtree(base, ignore_errors=True)


def migrations_dir(service: str) -> Path:
    return ROOT / "services" / service / "migrations"


@pytest.fixture(scope="session")
def template_db(infra: Infra) -> str:
    infra.pg.psql("DROP DATABASE IF EXISTS rebound_template")
    infra.pg.psql("CREATE DATABASE rebound_template")
    url = infra.database_url("rebound_template")
    for service in SERVICES:
        if migrations_dir(service).exists():
            upgrade(migrations_dir(service), url, service)
    return "rebound_template"


@pytest.fixture
def database_url(infra: Infra, template_db: str) -> Iterator[str]:
    name = f"test_{next(_counter)}"
    infra.pg.psql(f'DROP DATABASE IF EXISTS "{name}"')
    infra.pg.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield infra.database_url(name)


@pytest.fixture
async def topics(infra: Infra) -> Topics:
    """A fresh set of topics (and their DLQs) for this test."""
    prefixed = Topics(prefix=f"t{next(_counter)}-")
    await ensure_topics(infra.bootstrap, prefixed.all_with_dlq(), TEST_PARTITIONS)
    return prefixed


@pytest.fixture
def mail() -> Iterator[tuple[MailStore, int]]:
    """A real SMTP server on loopback; the store holds every message it accepted."""
    store = MailStore()
    port = devstack.free_port()
    controller = start_catcher(store, port)
    try:
        yield store, port
    finally:
        controller.stop()


@pytest.fixture
def clock() -> ManualClock:
    # 2022-01-01T00:00Z is when the checkout in the Shopify fixtures was last updated.
    return ManualClock(datetime(2022, 1, 1, tzinfo=UTC))


async def eventually(predicate: object, timeout_s: float = 15.0, what: str = "condition") -> None:
    """Wait (in real time) for asynchronous processing, not for a domain delay."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = predicate() if callable(predicate) else predicate
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


async def started_scheduler(settings: SchedulerSettings, clock: ManualClock) -> SchedulerService:
    """Started, and owning its partitions (before that its timers fire nothing)."""
    service = SchedulerService(settings, clock)
    await service.start()
    await eventually(
        lambda: bool(service.assignment.partitions), timeout_s=60, what="partitions assigned"
    )
    return service


async def read_topic(bootstrap: str, topic: str, wait_ms: int = 300) -> list[Any]:
    """Every record on `topic` so far (no consumer group, nothing committed)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=wait_ms)
    finally:
        await consumer.stop()
    return [record for records in batch.values() for record in records]
