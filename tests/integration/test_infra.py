"""The test infrastructure itself: PostgreSQL answers, topics exist, the catcher catches."""

from __future__ import annotations

import aiosmtplib
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text

from shared.db import make_engine
from shared.topics import SHOP_EVENTS, Topics
from tests.conftest import Infra


async def test_database_per_test_is_reachable(database_url: str) -> None:
    engine = make_engine(database_url)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    await engine.dispose()


async def test_topics_are_created_with_dlqs(infra: Infra, topics: Topics) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap)
    await admin.start()
    names = set(await admin.list_topics())
    await admin.close()
    assert topics.name(SHOP_EVENTS) in names
    assert topics.name(SHOP_EVENTS + ".dlq") in names


async def test_mail_catcher_keeps_what_it_accepts(mail: tuple[object, int]) -> None:
    store, port = mail
    await aiosmtplib.send(
        "Subject: hi\r\n\r\nbody",
        sender="a@x.test",
        recipients=["b@y.test"],
        hostname="127.0.0.1",
        port=port,
    )
    assert [m.recipients for m in store.messages] == [["b@y.test"]]  # type: ignore[attr-defined]
