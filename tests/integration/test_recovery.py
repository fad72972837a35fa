"""A service whose broker is away answers 503 meanwhile and recovers by itself when it returns."""

from __future__ import annotations

import devstack
import httpx

from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from shared.clock import ManualClock
from shared.kafka import ensure_topics
from shared.topics import SHOP_EVENTS, Topics
from tests.conftest import TEST_PARTITIONS, Infra, eventually, read_topic
from tests.unit.ingest.deliveries import SHOP, delivery


async def test_ingest_answers_503_until_the_broker_comes_up_then_accepts(
    infra: Infra, database_url: str, clock: ManualClock
) -> None:
    port = devstack.free_port()
    bootstrap = f"127.0.0.1:{port}"
    settings = IngestSettings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        shops=[SHOP],
        role="api",
        retry_max_s=0.5,
    )
    service = IngestService(settings, clock)
    await service.start()
    checkout = delivery("checkouts.create")
    transport = httpx.ASGITransport(app=service.app)
    broker = None
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            down = await client.post(
                "/webhooks/shopify", content=checkout.body, headers=checkout.headers
            )
            assert down.status_code == 503
            assert (await client.get("/readyz")).status_code == 503

            broker = devstack.start_tansu(port, devstack.LOCAL / "test" / f"late-{port}.log")
            await ensure_topics(bootstrap, Topics().all_with_dlq(), TEST_PARTITIONS)

            async def accepted() -> bool:
                answer = await client.post(
                    "/webhooks/shopify", content=checkout.body, headers=checkout.headers
                )
                return answer.status_code == 200

            await eventually(accepted, timeout_s=30, what="ingest to reconnect")
            assert (await client.get("/readyz")).status_code == 200
        assert len(await read_topic(bootstrap, SHOP_EVENTS)) == 1
    finally:
        await service.stop()
        if broker is not None:
            devstack.stop_process(broker)
