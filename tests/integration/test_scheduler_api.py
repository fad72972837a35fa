"""The control plane: a shop uploads journey versions and sees why a definition is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.scheduler.app import SchedulerService
from services.scheduler.journeys.loader import load_journeys
from services.scheduler.settings import DEFAULT_JOURNEYS_DIR, SchedulerSettings
from shared.clock import ManualClock
from shared.db import make_engine
from tests.conftest import ADMIN, ADMIN_TOKEN, Infra

DEFINITION = (DEFAULT_JOURNEYS_DIR / "abandoned-cart.yaml").read_text()


@pytest.fixture
async def api(
    infra: Infra, database_url: str, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = SchedulerSettings(
        database_url=database_url, kafka_bootstrap_servers=infra.bootstrap, admin_token=ADMIN_TOKEN
    )
    service = SchedulerService(settings, clock)
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://scheduler", headers=ADMIN
    ) as client:
        yield client
    await service.stop()


async def test_the_control_plane_needs_the_admin_token(api: httpx.AsyncClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        answer = await api.get("/journeys", headers=headers)
        assert answer.status_code == 401 and "WWW-Authenticate" in answer.headers
        assert "abandoned" not in answer.text
    refused = await api.put("/journeys/abandoned-cart", content=DEFINITION, headers=headers)
    assert refused.status_code == 401
    basic = httpx.BasicAuth("ops", ADMIN_TOKEN)
    assert (await api.get("/journeys", auth=basic)).status_code == 200
    assert (await api.get("/healthz", headers={"Authorization": ""})).status_code == 200


async def test_without_a_configured_token_the_control_plane_stays_shut(
    infra: Infra, database_url: str, clock: ManualClock
) -> None:
    settings = SchedulerSettings(database_url=database_url, kafka_bootstrap_servers=infra.bootstrap)
    service = SchedulerService(settings, clock)
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
        answer = await client.get("/journeys", headers=ADMIN)
    await service.stop()
    assert answer.status_code == 503 and "ADMIN_TOKEN" in answer.json()["detail"]


async def test_an_uploaded_version_becomes_the_active_one(api: httpx.AsyncClient) -> None:
    assert (await api.put("/journeys/abandoned-cart", content=DEFINITION)).status_code == 201
    faster = DEFINITION.replace("version: 1", "version: 2").replace("for: 3h", "for: 1h")
    assert (await api.put("/journeys/abandoned-cart", content=faster)).status_code == 201

    active = (await api.get("/journeys/abandoned-cart")).json()
    assert active["version"] == 2
    assert active["steps"][0]["wait"]["for"] == "1h"
    listed = {(j["version"], j["active"]) for j in (await api.get("/journeys")).json()}
    assert listed == {(1, False), (2, True)}


async def test_refused_definitions_say_why(api: httpx.AsyncClient) -> None:
    broken = DEFINITION.replace("for: 3h", "for: soon")
    answer = await api.put("/journeys/abandoned-cart", content=broken)
    assert answer.status_code == 422 and "for" in answer.json()["detail"]

    assert (await api.put("/journeys/other-id", content=DEFINITION)).status_code == 422

    assert (await api.put("/journeys/abandoned-cart", content=DEFINITION)).status_code == 201
    changed = DEFINITION.replace("for: 3h", "for: 2h")  # same version, other content
    conflict = await api.put("/journeys/abandoned-cart", content=changed)
    assert conflict.status_code == 409 and "bump" in conflict.json()["detail"]
    assert (await api.get("/journeys/missing")).status_code == 404


async def test_loading_the_shipped_journeys_never_turns_one_on_or_off(
    api: httpx.AsyncClient, database_url: str, clock: ManualClock
) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        await load_journeys(engine, DEFAULT_JOURNEYS_DIR, clock)
        first = await active_versions(api)
        win_back = (DEFAULT_JOURNEYS_DIR / "win-back.yaml").read_text()
        turned_on = win_back.replace("version: 1", "version: 2").replace(
            "active: false", "active: true"
        )
        assert (await api.put("/journeys/win-back", content=turned_on)).status_code == 201
        turned_off = DEFINITION.replace("version: 1", "version: 2\nactive: false")
        assert (await api.put("/journeys/abandoned-cart", content=turned_off)).status_code == 201
        await load_journeys(engine, DEFAULT_JOURNEYS_DIR, clock)  # e.g. the next start
        after = await active_versions(api)
    finally:
        await engine.dispose()

    assert first == {"abandoned-cart": 1}  # every other default is stored, off
    assert after == {"win-back": 2}  # the shop's choices stand


async def active_versions(api: httpx.AsyncClient) -> dict[str, int]:
    stored = (await api.get("/journeys")).json()
    assert {j["id"] for j in stored} >= {"win-back", "anniversary", "loyalty-threshold"}
    return {j["id"]: j["version"] for j in stored if j["active"]}
