"""The dashboard in a real browser: headless Chromium (Debian's package, `make chromium`) driven
by Playwright loads /dashboard from a real uvicorn over the scripted shop, behind HTTP basic
auth, at 1280 px and on a phone; it finds the seeded figures (the journey's funnel and lift, the
default segments' daily sizes, a shop's predictions), sees no console error, and saves
screenshots under tests/output/."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy import delete, insert

from services.scheduler.adapters.tables import prediction_fits, predictions, segment_sizes
from services.scheduler.app import SchedulerService
from shared.clock import ManualClock
from shared.db import make_engine
from shared.topics import Topics
from tests.conftest import ADMIN_TOKEN, ROOT, Infra, eventually
from tests.integration import reports_scenario as scenario
from tests.integration.test_reports import service  # noqa: F401  (fixture)
from tests.integration.test_scheduler_sets import producer  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e
OUTPUT = ROOT / "tests" / "output"
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Chromium is not installed: `make chromium` installs Debian's package")
    return found


@pytest.fixture
async def base_url(service: SchedulerService) -> AsyncIterator[str]:  # noqa: F811
    server = uvicorn.Server(
        uvicorn.Config(service.app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, what="scheduler HTTP server")
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    await serving


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path())
        yield launched
        await launched.close()


async def _open(browser: Browser, url: str, viewport: dict[str, int]) -> tuple[Page, list[str]]:
    context = await browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        http_credentials={"username": "shop-owner", "password": ADMIN_TOKEN},
    )
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    answer = await page.goto(url)
    assert answer is not None and answer.status == 200
    return page, problems


async def _figure(page: Page, name: str) -> str:
    return await page.locator(f'[data-journey="cart-ab"] [data-figure="{name}"]').inner_text()


# Three daily counts of two default segments over two shops, and one shop's fit.
SIZES = {"inactive_90d": [(40, 2), (45, 3), (51, 4)], "new_customers": [(9, 1), (7, 0), (12, 2)]}
P_ALIVE = [0.05, 0.15, 0.18, 0.42, 0.77, 0.95, 0.96, 1.0]  # buckets 0, 1, 1, 4, 7, 9, 9, 9
ORDERS_30D, ORDERS_90D, ORDER_VALUE = 0.25, 0.5, 40.0


async def seed_segments_and_predictions(database_url: str, clock: ManualClock) -> None:
    today = clock.now().date()
    sizes = [
        {"day": today - timedelta(days=2 - i), "shop_id": shop, "segment": name, "size": n,
         "counted_at": clock.now()}
        for name, days in SIZES.items()
        for i, pair in enumerate(days)
        for shop, n in zip(("shop", "other"), pair, strict=True)
    ]  # fmt: skip
    fit = {
        "shop_id": "tea-shop", "as_of": clock.now(), "fitted_at": clock.now(), "fit_seconds": 0.4,
        "customers": len(P_ALIVE), "repeat_buyers": 5, "repeat_purchases": 9, "status": "rough",
        "note": "Fitted on 5 repeat buyers: a rough guide.", "r": 0.2, "alpha": 4.0, "a": 0.8,
        "b": 2.4, "p": 6.0, "q": 3.7, "gamma": 15.0,
    }  # fmt: skip
    rows = [
        {"customer_key": f"tea-shop:c:{n}", "shop_id": "tea-shop", "as_of": clock.now(),
         "p_alive": p, "orders_30d": ORDERS_30D, "orders_90d": ORDERS_90D,
         "next_order_at": None, "order_value": ORDER_VALUE, "changed_at": clock.now()}
        for n, p in enumerate(P_ALIVE)
    ]  # fmt: skip
    engine = make_engine(database_url, pool_size=1)
    async with engine.begin() as conn:
        # in place of today's count the running scheduler took (once a day) of the scenario
        await conn.execute(delete(segment_sizes))
        await conn.execute(insert(segment_sizes), sizes)
        await conn.execute(insert(prediction_fits), [fit])
        await conn.execute(insert(predictions), rows)
    await engine.dispose()


async def _check_segments_and_predictions(page: Page) -> None:
    for name, days in SIZES.items():
        segment = page.locator(f'#segments [data-segment="{name}"]')
        assert await segment.locator(f'[data-figure="segment-{name}"]').inner_text() == str(
            sum(days[-1])
        )
        assert await segment.locator("svg polyline").count() == 1  # the size over time
    shop = page.locator('#predictions [data-shop="tea-shop"]')
    assert await shop.locator('[data-figure="fit-status"]').inner_text() == "rough"
    assert "a rough guide" in await shop.locator('[data-figure="fit-note"]').inner_text()
    n = len(P_ALIVE)
    figures = {
        "orders_30d": f"{n * ORDERS_30D:.1f}",
        "orders_90d": f"{n * ORDERS_90D:.1f}",
        "revenue_30d": f"{n * ORDERS_30D * ORDER_VALUE:,.2f}",
        "revenue_90d": f"{n * ORDERS_90D * ORDER_VALUE:,.2f}",
        "customers": str(n),
    }
    for name, value in figures.items():
        assert await shop.locator(f'[data-figure="{name}"]').inner_text() == value, name
    titles = await shop.locator("svg rect title").all_text_contents()
    assert titles[0] == "0.0-0.1: 1" and titles[1] == "0.1-0.2: 2" and titles[9] == "0.9-1.0: 3"


async def test_the_dashboard_shows_the_seeded_shop_in_a_real_browser(
    infra: Infra,
    database_url: str,
    topics: Topics,
    clock: ManualClock,
    producer: AIOKafkaProducer,  # noqa: F811
    base_url: str,
    browser: Browser,
) -> None:
    done = await scenario.run(infra, database_url, topics, clock, producer)
    await seed_segments_and_predictions(database_url, clock)
    url = f"{base_url}/dashboard?from=2021-12-31&to=2022-01-01"

    stranger = await browser.new_context()  # no credentials: the browser's own request
    refused = await stranger.request.get(url)
    assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert "cart-ab" not in await refused.text()
    await stranger.close()

    page, problems = await _open(browser, url, {"width": 1280, "height": 900})
    assert await _figure(page, "entered") == str(done.entered)
    assert await _figure(page, "holdout") == str(done.holdout)
    assert await _figure(page, "sent") == str(done.sent)
    assert await _figure(page, "clicks") == str(done.clicks)
    assert await _figure(page, "conversions") == str(done.conversions)
    assert await _figure(page, "revenue") == f"{done.revenue:,.2f}"
    assert (await _figure(page, "verdict")).startswith("not enough customers yet to tell")
    assert await page.locator('[data-journey="cart-ab"] .error-bar').count() == 1
    assert await page.locator('#cohorts tr[data-cohort="2022-01"]').count() == 1
    await _check_segments_and_predictions(page)
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT / "dashboard-1280.png"), full_page=True)

    phone, phone_problems = await _open(browser, url, PHONE)
    assert await _figure(phone, "entered") == str(done.entered)
    await _check_segments_and_predictions(phone)
    overflow = await phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, "the page scrolls sideways on a phone"
    await phone.screenshot(path=str(OUTPUT / "dashboard-phone.png"), full_page=True)
    assert problems == [] and phone_problems == []


def test_screenshots_land_in_an_ignored_folder() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "tests/output/" in ignored and Path(OUTPUT).relative_to(ROOT) == Path("tests/output")
