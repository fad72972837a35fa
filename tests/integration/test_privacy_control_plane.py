"""The control plane's privacy endpoints against the real scheduler, PostgreSQL and broker: only
the admin token opens them, and a request is complete only once all three services answered
(the scheduler answers its own part; ingest's and the dispatcher's answers are produced here to
privacy.results, one at a time, as those services would)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.scheduler.app import SchedulerService
from shared import events as ev
from shared.clock import ManualClock
from shared.privacy import answer_event
from shared.topics import PRIVACY_RESULTS, Topics
from tests.conftest import ADMIN, Infra, eventually
from tests.integration.test_scheduler_sets import running_scheduler  # noqa: F401

pytestmark = pytest.mark.integration
SHOP = "cp-shop"
KEY = f"{SHOP}:c:5"
EMAIL = "wenna.holt@privacy.example"


@pytest.fixture
async def api(service: SchedulerService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client:
        yield client


async def _answer(
    infra: Infra,
    topics: Topics,
    clock: ManualClock,
    service: ev.PrivacyService,
    event_type: str,
    request_id: str,
    result: Any,
) -> None:
    """What ingest or the dispatcher publishes once it acted on the request."""
    request = ev.PrivacyRequest(
        request_id=request_id,
        shop_id=SHOP,
        scope="customer",
        customer_keys=[KEY],
        origin="control_plane",
        requested_at=clock.now(),
    )
    answer = answer_event(service, event_type, request, result, clock)
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.name(PRIVACY_RESULTS), ev.encode(answer), key=SHOP.encode()
        )
    finally:
        await producer.stop()


async def _status_once(api: httpx.AsyncClient, request_id: str, answered: int) -> dict[str, Any]:
    """The request's status once `answered` services have answered."""
    status: dict[str, Any] = {}

    async def answered_enough() -> bool:
        response = await api.get(f"/privacy/requests/{request_id}", headers=ADMIN)
        status.update(response.json() if response.status_code == 200 else {})
        return len(status.get("answered", {})) >= answered

    await eventually(answered_enough, what=f"{answered} answers to {request_id}")
    return status


async def test_the_privacy_endpoints_need_the_admin_token(api: httpx.AsyncClient) -> None:
    for method, path in (
        ("POST", f"/privacy/customers/{KEY}/redact"),
        ("POST", f"/privacy/customers/{KEY}/export"),
        ("POST", f"/privacy/shops/{SHOP}/redact"),
        ("GET", "/privacy/requests"),
        ("GET", "/privacy/requests/some-id"),
        ("GET", "/privacy/exports/some-id"),
    ):
        response = await api.request(method, path)
        assert response.status_code == 401, (method, path)
        wrong = await api.request(method, path, headers={"authorization": "Bearer not-it"})
        assert wrong.status_code == 401, (method, path)
    assert (await api.get("/privacy/requests", headers=ADMIN)).status_code == 200


async def test_a_request_is_complete_only_when_all_three_services_answered(
    api: httpx.AsyncClient, infra: Infra, topics: Topics, clock: ManualClock
) -> None:
    asked = await api.post(f"/privacy/customers/{KEY}/export", headers=ADMIN)
    assert asked.status_code == 202, asked.text
    export_id = asked.json()["request_id"]
    status = await _status_once(api, export_id, 1)
    assert (list(status["answered"]), status["complete"]) == (["scheduler"], False)
    assert (await api.get(f"/privacy/exports/{export_id}", headers=ADMIN)).status_code == 202

    part = {"customers": [{"customer_key": KEY, "email": EMAIL}]}
    await _answer(infra, topics, clock, "ingest", ev.CUSTOMER_EXPORT_REQUESTED, export_id, part)
    status = await _status_once(api, export_id, 2)
    assert (status["waiting_for"], status["complete"]) == (["dispatcher"], False)
    assert (await api.get(f"/privacy/exports/{export_id}", headers=ADMIN)).status_code == 202

    messages = {"messages": [{"email": EMAIL, "status": "sent"}]}
    await _answer(
        infra, topics, clock, "dispatcher", ev.CUSTOMER_EXPORT_REQUESTED, export_id, messages
    )
    status = await _status_once(api, export_id, 3)
    assert (status["waiting_for"], status["complete"]) == ([], True)
    document = (await api.get(f"/privacy/exports/{export_id}", headers=ADMIN)).json()
    assert sorted(document["services"]) == ["dispatcher", "ingest", "scheduler"]
    assert document["services"]["ingest"] == part
    assert document["services"]["dispatcher"] == messages

    asked = await api.post(f"/privacy/customers/{KEY}/redact", headers=ADMIN)
    redact_id = asked.json()["request_id"]
    await _status_once(api, redact_id, 1)
    await _answer(infra, topics, clock, "dispatcher", ev.CUSTOMER_REDACT_REQUESTED, redact_id, {})
    status = await _status_once(api, redact_id, 2)
    assert (status["waiting_for"], status["complete"]) == (["ingest"], False)
    await _answer(infra, topics, clock, "ingest", ev.CUSTOMER_REDACT_REQUESTED, redact_id, {})
    status = await _status_once(api, redact_id, 3)
    assert status["complete"] is True
    # The export made for the customer went with the erasure.
    assert (await api.get(f"/privacy/exports/{export_id}", headers=ADMIN)).status_code == 410
