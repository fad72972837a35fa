"""Discount codes against real PostgreSQL, broker and SMTP server (and a local HTTP server that
answers as Shopify's Admin GraphQL API): unique, issued once, from a pool or Shopify."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from mailcatcher import MailStore
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import text

from services.dispatcher import coupons
from services.dispatcher.adapters.coupons import CouponRepository
from services.dispatcher.coupons import CouponDesk
from services.dispatcher.domain.offers import OfferView
from services.dispatcher.shops import ShopCoupons
from shared.clock import ManualClock
from shared.db import make_engine
from shared.events import COUPON_ISSUED, MESSAGE_FAILED, MessageRequest
from shared.topics import Topics
from tests.conftest import Infra, eventually
from tests.integration.test_dispatcher_service import (
    SHOP,
    Harness,
    message_request,
    results_for,
    settle,
)

OFFER = {"kind": "discount_code", "value": "10%", "valid_for": "7d", "minimum_order": "50"}
TOKEN = "admin-secret"
CODE_IN_MAIL = re.compile(r"made just for you:\s+([A-Z0-9\-_]+)")


@pytest.fixture
async def harness(
    infra: Infra, database_url: str, topics: Topics, clock: ManualClock, mail: tuple[MailStore, int]
) -> AsyncIterator[Harness]:
    store, port = mail
    started = Harness(infra, database_url, topics, clock, store, port)
    try:
        yield started
    finally:
        await started.stop()


def discount_request(key: str, **overrides: Any) -> MessageRequest:
    fields: dict[str, Any] = {
        "step_id": "discount",
        "template": "abandoned_cart_discount",
        "subject": "Here is {{ offer.value }} your cart",
        "context": {"cart": message_request(key).context["cart"], "offer": OFFER},
    }
    return message_request(key, **(fields | overrides))


def code_in(harness: Harness, email: str) -> str:
    [mail] = harness.mails_to(email)
    found = CODE_IN_MAIL.search(mail.part("text/plain"))
    assert found is not None, mail.part("text/plain")
    return found.group(1)


# --- issued once, unique ----------------------------------------------------------------


async def test_ten_thousand_requests_get_ten_thousand_distinct_codes_and_again_the_same(
    database_url: str, clock: ManualClock
) -> None:
    engine = make_engine(database_url, pool_size=2)
    desk = CouponDesk(CouponRepository(engine), {}, {}, None, "unused")
    requests = [discount_request(f"rk-{i}", email=f"c{i}@example.com") for i in range(10_000)]
    try:
        first = await desk.issue(requests, clock.now())
        again = await desk.issue(requests[:500], clock.now() + timedelta(days=1))
    finally:
        await engine.dispose()
    assert all(isinstance(offer, OfferView) for offer in first.values())
    codes = {key: offer.code for key, offer in first.items() if isinstance(offer, OfferView)}
    assert len(codes) == 10_000
    assert len(set(codes.values())) == 10_000
    assert all(len(code) >= 12 for code in codes.values())
    for key, offer in again.items():  # a redelivery or a re-render: same code, same expiry
        assert isinstance(offer, OfferView)
        assert offer.code == codes[key]
        assert offer.expires_at == clock.now() + timedelta(days=7)


async def test_a_shops_code_prefix_leads_every_generated_code(
    database_url: str, clock: ManualClock
) -> None:
    engine = make_engine(database_url, pool_size=2)
    config = ShopCoupons(shop_id=SHOP, code_prefix="TEA-")
    desk = CouponDesk(CouponRepository(engine), {SHOP: config}, {}, None, "unused")
    try:
        issued = await desk.issue([discount_request(f"rk-p{i}") for i in range(3)], clock.now())
    finally:
        await engine.dispose()
    codes = [offer.code for offer in issued.values() if isinstance(offer, OfferView)]
    assert len(set(codes)) == 3
    assert all(re.fullmatch(r"TEA-[A-HJKMNP-Z2-9]{12}", code) for code in codes), codes


async def test_the_mail_shows_the_issued_code_and_a_redelivery_shows_the_same(
    harness: Harness,
) -> None:
    await harness.start()
    request = discount_request("rk-disc", email="ada@example.com")
    await harness.send(request)
    await eventually(lambda: harness.mails_to("ada@example.com"), 30, "the discount mail")
    await eventually(lambda: len(harness.results.of("rk-disc")) >= 2, what="coupon + result")
    code = code_in(harness, "ada@example.com")

    await harness.restart()
    await harness.send(request)  # redelivered after it was sent
    await eventually(lambda: len(harness.results.of("rk-disc")) >= 3, what="republished")
    await settle()

    assert len(harness.mails_to("ada@example.com")) == 1
    events = harness.results.of("rk-disc")
    issued = [e for e in events if e.type == COUPON_ISSUED]
    assert issued and {e.data["code"] for e in issued} == {code}
    assert issued[0].data["minimum_order"] == "50"
    assert issued[0].data["source"] == "generated"
    text_part = harness.mails_to("ada@example.com")[0].part("text/plain")
    assert "10% off" in text_part and "at least $50.00" in text_part
    assert "8 January 2022" in text_part  # issued 1 January, valid for 7 days


async def test_a_request_rendered_again_after_a_crash_before_data_shows_the_same_code(
    harness: Harness,
) -> None:
    await harness.start()
    desk = CouponDesk(CouponRepository(harness.engine), {}, {}, None, "unused")
    request = discount_request("rk-crash", email="bo@example.com")
    [before] = (await desk.issue([request], harness.clock.now())).values()
    await harness.send(request)  # the dispatcher renders it as if after a crash: row unknown
    await eventually(lambda: harness.mails_to("bo@example.com"), 30, "the mail")
    assert isinstance(before, OfferView)
    assert code_in(harness, "bo@example.com") == before.code


# --- an uploaded pool -------------------------------------------------------------------


def pool_settings() -> dict[str, Any]:
    return {
        "coupons": [ShopCoupons(shop_id=SHOP, source="pool", low_pool_warning=2)],
        "admin_token": TOKEN,
    }


async def upload(harness: Harness, body: bytes, token: str = TOKEN) -> httpx.Response:
    assert harness.service is not None
    transport = httpx.ASGITransport(app=harness.service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dispatcher") as client:
        return await client.post(
            f"/shops/{SHOP}/coupons",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
        )


async def test_a_pool_of_three_runs_out_on_the_fourth_request_with_a_clear_failure(
    harness: Harness,
) -> None:
    await harness.start(**pool_settings())
    refused = await upload(harness, b"code\nPOOL-AAA1\n", token="wrong")
    assert refused.status_code == 401
    answer = await upload(harness, b"code\nPOOL-AAA1\nPOOL-BBB2\nPOOL-CCC3\nPOOL-AAA1\n")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"shop_id": SHOP, "added": 3, "already_known": 0, "remaining": 3}

    for i in range(3):
        await harness.send(discount_request(f"rk-pool-{i}", email=f"p{i}@example.com"))
    for i in range(3):
        await eventually(lambda i=i: harness.mails_to(f"p{i}@example.com"), 30, f"mail {i}")
    await harness.send(discount_request("rk-pool-3", email="p3@example.com"))
    await eventually(
        lambda: any(e.type == MESSAGE_FAILED for e in harness.results.of("rk-pool-3")),
        what="the fourth request failing",
    )
    await settle()

    codes = {code_in(harness, f"p{i}@example.com") for i in range(3)}
    assert codes == {"POOL-AAA1", "POOL-BBB2", "POOL-CCC3"}
    assert harness.mails_to("p3@example.com") == []
    [failed] = [e for e in harness.results.of("rk-pool-3") if e.type == MESSAGE_FAILED]
    assert "no discount code left in the pool" in failed.data["reason"]
    pool = {"shop": SHOP}
    assert REGISTRY.get_sample_value("rebound_coupon_pool_remaining", pool) == 0.0


class Warnings:
    """Stands in for the coupon desk's logger: which warnings it gave."""

    def __init__(self) -> None:
        self.given: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.given.append((event, fields))

    def error(self, event: str, **fields: Any) -> None:
        pass


async def test_a_pool_running_low_is_a_warning_and_the_gauge_counts_down(
    database_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    warnings = Warnings()
    monkeypatch.setattr(coupons, "log", warnings)
    engine = make_engine(database_url, pool_size=2)
    config = ShopCoupons(shop_id=SHOP, source="pool", low_pool_warning=2)
    repository = CouponRepository(engine)
    desk = CouponDesk(repository, {SHOP: config}, {}, None, "unused")
    pool = {"shop": SHOP}
    try:
        await repository.add_to_pool(SHOP, ["LOW-AAA1", "LOW-BBB2", "LOW-CCC3"], clock.now())
        assert await desk.report_pools([SHOP]) == {SHOP: 3}
        assert warnings.given == []
        await desk.issue([discount_request("rk-low-1")], clock.now())
        assert REGISTRY.get_sample_value("rebound_coupon_pool_remaining", pool) == 2.0
        assert warnings.given == []  # 2 left is not below 2
        await desk.issue([discount_request("rk-low-2")], clock.now())
    finally:
        await engine.dispose()
    assert REGISTRY.get_sample_value("rebound_coupon_pool_remaining", pool) == 1.0
    assert warnings.given == [("coupon_pool_low", {"shop_id": SHOP, "remaining": 1})]


async def test_an_upload_with_a_broken_code_stores_nothing(harness: Harness) -> None:
    await harness.start(**pool_settings())
    answer = await upload(harness, b"GOOD-CODE1\nhas space\n")
    assert answer.status_code == 422
    assert "has space" in answer.json()["detail"]
    async with harness.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT count(*) FROM dispatcher.coupons"))).scalar()
    assert stored == 0


# --- Shopify ----------------------------------------------------------------------------


class FakeShopify:
    """A local HTTP server answering like the Admin GraphQL API; keeps what it was sent."""

    def __init__(self, refuse: bool = False) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.refuse = refuse
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers.items()), body))
                answer = outer.answer()
                raw = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self) -> dict[str, Any]:
        if self.refuse:
            problem = {"field": ["basicCodeDiscount", "code"], "message": "Code must be unique."}
            created: dict[str, Any] = {"codeDiscountNode": None, "userErrors": [problem]}
        else:
            node = {"id": "gid://shopify/DiscountCodeNode/1"}
            created = {"codeDiscountNode": node, "userErrors": []}
        return {"data": {"discountCodeBasicCreate": created}}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def shopify() -> Iterator[FakeShopify]:
    server = FakeShopify()
    yield server
    server.close()


def shopify_settings(url: str) -> dict[str, Any]:
    config = ShopCoupons(
        shop_id=SHOP,
        shopify_admin_url=url,
        shopify_access_token=SecretStr("shpat_test"),
    )
    return {"coupons": [config]}


async def test_shopify_gets_the_documented_request_before_the_mail_shows_the_code(
    harness: Harness, shopify: FakeShopify
) -> None:
    await harness.start(**shopify_settings(shopify.url))
    request = discount_request("rk-shop", email="cy@example.com", customer_key=f"{SHOP}:c:42")
    await harness.send(request)
    await eventually(lambda: harness.mails_to("cy@example.com"), 30, "the mail")
    code = code_in(harness, "cy@example.com")

    [(path, headers, body)] = shopify.requests
    assert path == "/admin/api/2025-10/graphql.json"
    assert headers["X-Shopify-Access-Token"] == "shpat_test"
    assert headers["Content-Type"] == "application/json"
    assert "discountCodeBasicCreate(basicCodeDiscount: $basicCodeDiscount)" in body["query"]
    basic = body["variables"]["basicCodeDiscount"]
    assert basic["code"] == code
    assert basic["context"] == {"customers": {"add": ["gid://shopify/Customer/42"]}}
    assert basic["customerGets"] == {"value": {"percentage": 0.1}, "items": {"all": True}}
    assert basic["minimumRequirement"] == {"subtotal": {"greaterThanOrEqualToSubtotal": "50"}}
    assert basic["startsAt"] == "2022-01-01T00:00:00+00:00"
    assert basic["endsAt"] == "2022-01-08T00:00:00+00:00"
    assert basic["usageLimit"] == 1 and basic["title"]


async def test_a_code_shopify_refuses_fails_the_message_and_no_mail_goes(
    harness: Harness,
) -> None:
    refusing = FakeShopify(refuse=True)
    try:
        await harness.start(**shopify_settings(refusing.url))
        await harness.send(discount_request("rk-refused", email="di@example.com"))
        await eventually(results_for(harness, "rk-refused"), what="the result")
        await settle()
    finally:
        refusing.close()
    assert harness.mails_to("di@example.com") == []
    [result] = harness.results.of("rk-refused")
    assert result.type == MESSAGE_FAILED
    assert "Shopify refused to create the discount code" in result.data["reason"]
    assert "Code must be unique" in result.data["reason"]
