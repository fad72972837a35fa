"""The reports count what happened: a scripted shop (carts left, the scheduler's own requests,
the dispatcher's results, opens, clicks, an unsubscribe, orders inside and outside the window)
driven through the broker, and every figure of the report equals the script's own count."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.scheduler.app import SchedulerService
from services.scheduler.settings import SchedulerSettings
from shared import events as ev
from shared.clock import ManualClock
from shared.topics import Topics
from tests.conftest import ADMIN, ADMIN_TOKEN, Infra, eventually, started_scheduler
from tests.integration import reports_scenario as scenario
from tests.integration.conftest import scheduler_settings
from tests.integration.test_scheduler_sets import producer, sql  # noqa: F401  (fixture)


@pytest.fixture
async def service(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock
) -> AsyncIterator[SchedulerService]:
    await scenario.load_journey(database_url, clock)
    service = await started_scheduler(scheduler_settings(infra, database_url, topics), clock)
    yield service
    await service.stop()


@pytest.fixture
async def api(service: SchedulerService) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s", headers=ADMIN) as c:
        yield c


async def _report(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    answer = await api.get("/reports/journeys/cart-ab", params=params)
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


async def test_the_report_counts_what_the_script_did(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    producer: AIOKafkaProducer,  # noqa: F811
    api: httpx.AsyncClient,
) -> None:
    done = await scenario.run(infra, database_url, topics, clock, producer)
    assert done.holdout and done.clicks and done.suppressed and done.failed  # the script bites
    assert done.machine_opens and done.unsubscribes

    report = await _report(api, **{"from": "2021-12-31", "to": "2022-01-01", "window_days": 7})
    funnel = report["funnel"]
    assert (report["entered"], report["holdout"]) == (done.entered, done.holdout)
    assert funnel["requested"] == done.requested == done.entered - done.holdout
    assert (funnel["sent"], funnel["failed"]) == (done.sent, done.failed)
    assert funnel["suppressed"] == dict(done.suppressed)
    assert (funnel["human_opens"], funnel["machine_opens"]) == (
        done.human_opens,
        done.machine_opens,
    )
    assert (funnel["clicks"], funnel["unsubscribes"]) == (done.clicks, done.unsubscribes)
    assert funnel["conversions"] == done.conversions
    assert Decimal(funnel["revenue"]) == done.revenue
    assert [s["step_id"] for s in report["steps"]] == ["reminder"]

    lift = report["holdout_lift"]
    treated, held = lift["treatment"], lift["holdout"]
    assert (treated["customers"], treated["converted"]) == (done.requested, done.treated_converted)
    assert (held["customers"], held["converted"]) == (done.holdout, done.held_converted)
    assert Decimal(treated["revenue"]) == done.treated_revenue
    assert Decimal(held["revenue"]) == done.held_revenue
    expected_lift = done.treated_converted / done.requested - done.held_converted / done.holdout
    assert lift["absolute_lift"]["estimate"] == pytest.approx(expected_lift)
    assert "Newcombe" in lift["absolute_lift_method"]
    assert "Welch" in lift["revenue_method"]
    assert lift["verdict"].startswith("not enough customers yet to tell")  # 40 carts

    recovery = report["cart_recovery"]
    assert recovery["carts_abandoned"] == done.entered
    assert recovery["recovered"] == done.treated_converted + done.held_converted
    assert recovery["recovered_after_a_message"] == done.conversions
    assert Decimal(recovery["recovered_revenue"]) == done.treated_revenue + done.held_revenue

    (ab,) = report["ab_tests"]
    assert ab["winner_by"] == "click" and ab["winner"] is None  # fewer than 100 per variant
    variants = {v["variant"]: v["funnel"] for v in ab["variants"]}
    assert {k: v["sent"] for k, v in variants.items()} == dict(done.variant_sent)
    assert {k: v["clicks"] for k, v in variants.items() if v["clicks"]} == dict(done.variant_clicks)
    assert "mSPRT" in ab["method"]

    wider = await _report(api, **{"from": "2021-12-31", "to": "2022-01-01", "window_days": 30})
    late = sum(1 for j in range(done.holdout) if j % 3 == 1)
    assert wider["holdout_lift"]["holdout"]["converted"] == done.held_converted + late
    elsewhere = await _report(api, **{"from": "2022-02-01", "to": "2022-02-28"})
    assert elsewhere["entered"] == 0 and elsewhere["funnel"]["requested"] == 0


async def test_retention_cohorts_share_of_each_first_order_month_that_came_back(
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    producer: AIOKafkaProducer,  # noqa: F811
    api: httpx.AsyncClient,
) -> None:
    script = scenario.Script(producer, topics, clock)
    october, november, december = (datetime(2021, m, 10, tzinfo=UTC) for m in (10, 11, 12))
    orders = {  # customer -> the months they ordered in
        1: [october, november, december],
        2: [october, november],
        3: [october],
        4: [october],
        5: [november, december],
    }
    for n, months in orders.items():
        for k, at in enumerate(months):
            await script.activity(
                n, ev.ORDER_PLACED, at, order_id=f"o-{n}-{k}", order_total=Decimal(10)
            )

    async def stored() -> bool:
        rows = await sql(database_url, "SELECT count(*) FROM scheduler.customer_orders")
        return bool(rows[0][0] == sum(len(m) for m in orders.values()))

    await eventually(stored, what="orders stored")
    await clock.advance(timedelta(days=20))  # into January
    matrix = (await api.get("/reports/cohorts", params={"months": 3})).json()
    rows = {r["cohort"]: (r["customers"], r["returned"]) for r in matrix["rows"]}
    assert rows == {
        "2021-10-01": (4, [0.5, 0.25, 0.0]),
        "2021-11-01": (1, [1.0, 0.0]),
    }


async def test_the_reports_need_the_admin_token_and_refuse_a_backwards_range(
    api: httpx.AsyncClient,
) -> None:
    for path in ("/reports/journeys", "/reports/cohorts", "/dashboard"):
        refused = await api.get(path, headers={"Authorization": ""})
        assert refused.status_code == 401 and "Basic" in refused.headers["WWW-Authenticate"]
    backwards = await api.get(
        "/reports/journeys", params={"from": "2022-02-01", "to": "2022-01-01"}
    )
    assert backwards.status_code == 422 and "after" in backwards.json()["detail"]
    schema = (await api.get("/openapi.json")).json()
    assert "/reports/journeys" in schema["paths"] and "/reports/cohorts" in schema["paths"]


async def test_the_api_role_serves_reports_without_running_the_engine(
    infra: Infra, database_url: str, clock: ManualClock
) -> None:
    settings = SchedulerSettings(
        database_url=database_url,
        kafka_bootstrap_servers=infra.bootstrap,
        admin_token=ADMIN_TOKEN,
        role="api",
    )
    alone = SchedulerService(settings, clock)
    await alone.start()
    transport = httpx.ASGITransport(app=alone.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://s", headers=ADMIN) as c:
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get("/reports/journeys")).status_code == 200
        assert "Journeys" in (await c.get("/dashboard")).text
    assert not alone.assignment.partitions  # no consumer joined, no timer fires here
    await alone.stop()
