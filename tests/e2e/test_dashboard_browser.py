"""The dashboard in a real browser: headless Chromium (Debian's package, `make chromium`) driven
by Playwright loads /dashboard from a real uvicorn over the scripted shop, behind HTTP basic
auth, at 1280 px and on a phone; it finds the seeded figures, sees no console error, and saves
screenshots under tests/output/."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page, async_playwright

from services.scheduler.app import SchedulerService
from shared.clock import ManualClock
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
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT / "dashboard-1280.png"), full_page=True)

    phone, phone_problems = await _open(browser, url, PHONE)
    assert await _figure(phone, "entered") == str(done.entered)
    overflow = await phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, "the page scrolls sideways on a phone"
    await phone.screenshot(path=str(OUTPUT / "dashboard-phone.png"), full_page=True)
    assert problems == [] and phone_problems == []


def test_screenshots_land_in_an_ignored_folder() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "tests/output/" in ignored and Path(OUTPUT).relative_to(ROOT) == Path("tests/output")
