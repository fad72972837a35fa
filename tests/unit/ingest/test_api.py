"""The HTTP edge without a broker: what each request is answered and what would be produced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.ingest.adapters.broker import BrokerUnavailable
from services.ingest.api import (
    IngestApp,
    events_router,
    install_error_handlers,
    shopify_delivery,
    shopify_router,
)
from services.ingest.app import shop_directory
from services.ingest.domain.canonical import ShopEvent, shop_event
from shared import events as ev
from shared.clock import ManualClock
from tests.unit.ingest.deliveries import (
    API_TOKEN,
    CHECKOUT_CUSTOMER_ID,
    SHOP,
    SHOP_ID,
    Delivery,
    delivery,
    fixture_body,
)

NOW = datetime(2024, 10, 1, 12, tzinfo=UTC)
AUTH = {"authorization": f"Bearer {API_TOKEN}"}


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[ShopEvent] = []
        self.down = False

    async def emit(self, event: ShopEvent) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        self.events.append(event)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def client(sink: RecordingSink) -> AsyncIterator[httpx.AsyncClient]:
    shops = shop_directory([SHOP])
    clock = ManualClock(NOW)
    app = FastAPI()
    app.include_router(shopify_router(shops, sink, clock))
    app.include_router(events_router(shops, sink, clock))
    install_error_handlers(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        yield client


async def _post(client: httpx.AsyncClient, d: Delivery) -> httpx.Response:
    return await client.post("/webhooks/shopify", content=d.body, headers=d.headers)


async def test_a_signed_checkout_becomes_one_canonical_event(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await _post(client, delivery("checkouts.create"))
    assert response.status_code == 200, response.text
    [produced] = sink.events
    key = f"{SHOP_ID}:c:{CHECKOUT_CUSTOMER_ID}"
    assert response.json() == {"status": "accepted", "event_id": produced.event.id}
    assert produced.key == produced.event.subject == key
    assert produced.event.type == ev.CART_UPDATED
    assert produced.event.shopid == SHOP_ID
    assert produced.event.time == NOW
    assert produced.event.id == ev.stable_event_id(
        "shopify", "shop.myshopify.com", "64566a18-1d82-46a5-b639-9ccb9c7fd42a"
    )
    assert len(produced.event.data["lines"]) == 2


async def test_a_redelivery_is_the_same_event(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    for _ in range(2):
        assert (await _post(client, delivery("orders.paid"))).status_code == 200
    assert len({e.event.id for e in sink.events}) == 1


@pytest.mark.parametrize(
    "forge",
    [
        lambda d: {**d.headers, "x-shopify-hmac-sha256": "AAAA"},
        lambda d: {k: v for k, v in d.headers.items() if k != "x-shopify-hmac-sha256"},
        lambda d: {**d.headers, "x-shopify-shop-domain": "other.myshopify.com"},
    ],
)
async def test_forged_or_unknown_is_401(
    client: httpx.AsyncClient, sink: RecordingSink, forge: Any
) -> None:
    d = delivery("checkouts.create")
    response = await client.post("/webhooks/shopify", content=d.body, headers=forge(d))
    assert response.status_code == 401
    assert sink.events == []


async def test_wrong_secret_is_401(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    response = await _post(client, delivery("checkouts.create", secret="guess"))
    assert response.status_code == 401
    assert sink.events == []


async def test_truncated_json_is_400_with_a_reason(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    body = delivery("checkouts.create").body[:-20]
    response = await _post(client, delivery("checkouts.create", body=body))
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]
    assert sink.events == []


async def test_a_body_that_is_not_a_checkout_is_400(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await _post(client, delivery("checkouts.create", body={"id": 1}))
    assert response.status_code == 400
    assert response.json()["error"] == "checkouts/create: updated_at: Field required"
    assert sink.events == []


async def test_ignored_topics_are_acknowledged(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await _post(client, delivery("checkouts.delete"))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "topic": "checkouts/delete"}
    assert sink.events == []


async def test_broker_down_is_503(client: httpx.AsyncClient, sink: RecordingSink) -> None:
    sink.down = True
    response = await _post(client, delivery("checkouts.create"))
    assert response.status_code == 503
    response = await client.post("/events", headers=AUTH, json=_cart_submission())
    assert response.status_code == 503, response.text


# --- /events ------------------------------------------------------------------------------


def _cart_submission(**changes: Any) -> dict[str, Any]:
    submission: dict[str, Any] = {
        "type": ev.CART_UPDATED,
        "id": "cart-9-v1",
        "data": {
            "cart_id": "9",
            "customer": {"id": "77", "email": "a@b.test"},
            "lines": [{"title": "Mug", "quantity": 1, "price": "9.50"}],
            "updated_at": "2024-10-01T10:00:00Z",
        },
    }
    submission.update(changes)
    return submission


async def test_events_accepts_a_canonical_event(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await client.post("/events", headers=AUTH, json=_cart_submission())
    assert response.status_code == 202, response.text
    [produced] = sink.events
    assert response.json() == {"status": "accepted", "event_id": produced.event.id}
    assert produced.event.id == ev.stable_event_id("api", SHOP_ID, "cart-9-v1")
    assert produced.key == f"{SHOP_ID}:c:77"
    assert produced.event.data["lines"][0]["price"] == "9.50"


async def test_events_without_id_get_a_fresh_id_each_time(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    for _ in range(2):
        await client.post("/events", headers=AUTH, json=_cart_submission(id=None))
    assert len({e.event.id for e in sink.events}) == 2


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer nope"}, {"authorization": API_TOKEN}]
)
async def test_events_needs_the_shops_token(
    client: httpx.AsyncClient, sink: RecordingSink, headers: dict[str, str]
) -> None:
    response = await client.post("/events", headers=headers, json=_cart_submission())
    assert response.status_code == 401
    assert sink.events == []


@pytest.mark.parametrize(
    ("submission", "reason"),
    [
        (_cart_submission(type="shop.cart.exploded.v1"), "unknown event type"),
        (_cart_submission(data={"cart_id": "9"}), "data invalid: customer: Field required"),
        (
            _cart_submission(data={**_cart_submission()["data"], "customer": {"id": 77}}),
            "customer.id: Input should be a valid string",
        ),
        ({"data": {}}, "type: Field required"),
        ({**_cart_submission(), "extra": 1}, "extra: Extra inputs are not permitted"),
        (
            {
                "type": ev.ORDER_PLACED,
                "data": {
                    "order_id": "1",
                    "customer": {},
                    "lines": [],
                    "total_price": "1",
                    "placed_at": "2024-10-01T10:00:00Z",
                },
            },
            "neither a customer id nor an e-mail",
        ),
    ],
)
async def test_events_refuses_invalid_submissions_with_the_reason(
    client: httpx.AsyncClient, sink: RecordingSink, submission: dict[str, Any], reason: str
) -> None:
    response = await client.post("/events", headers=AUTH, json=submission)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert sink.events == []


async def test_events_refuses_a_body_that_is_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/events", headers={**AUTH, "content-type": "application/json"}, content=b'{"type": '
    )
    assert response.status_code == 400


async def test_the_openapi_page_explains_events(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/events"]["post"]
    assert {"202", "400", "401", "503"} <= set(operation["responses"])
    submission = spec["components"]["schemas"]["EventSubmission"]
    assert submission["examples"][0]["type"] == ev.CART_UPDATED
    assert set(submission["properties"]["type"]["enum"]) == set(ev.SHOP_PAYLOADS)


def _checkout(**changes: Any) -> Delivery:
    body = fixture_body("checkouts.create")
    body["updated_at"] = NOW.isoformat()
    for path, value in changes.items():
        target = body
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return delivery("checkouts.create", body=body)


@pytest.mark.parametrize(
    ("d", "reason"),
    [
        (
            _checkout(updated_at="0001-01-01T00:00:00Z"),
            "updated_at: 0001-01-01T00:00:00+00:00 is before 1970",
        ),
        (_checkout(updated_at="1969-12-31T23:59:59Z"), "is before 1970"),
        (
            _checkout(updated_at="2024-10-02T12:00:01Z"),
            "updated_at: 2024-10-02T12:00:01+00:00 is more than a day in the future",
        ),
        (
            _checkout(customer__first_name="Jo\u0000hn"),
            "customer.first_name: contains a NUL character",
        ),
        (
            _checkout(customer__first_name="J" * 2000),
            "customer.first_name: 2000 characters; at most 1000",
        ),
        (
            _checkout(email="a" * 250 + "@example.com"),
            "customer.email: 262 characters; at most 254",
        ),
        (
            _checkout(line_items=[fixture_body("checkouts.create")["line_items"][0]] * 1001),
            "lines: 1001 items",
        ),
    ],
)
async def test_what_no_shop_can_mean_is_refused_at_the_edge_with_the_reason(
    client: httpx.AsyncClient, sink: RecordingSink, d: Delivery, reason: str
) -> None:
    response = await _post(client, d)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert sink.events == []


async def test_a_day_ahead_of_our_clock_is_still_accepted(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await _post(client, _checkout(updated_at="2024-10-02T11:59:00Z"))
    assert response.status_code == 200, response.text
    assert len(sink.events) == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            {"updated_at": "1900-01-01T00:00:00Z"},
            "updated_at: 1900-01-01T00:00:00+00:00 is before 1970",
        ),
        ({"cart_id": "9\u0000"}, "cart_id: contains a NUL character"),
        (
            {"customer": {"id": "77", "last_name": "x" * 1001}},
            "customer.last_name: 1001 characters",
        ),
    ],
)
async def test_events_refuses_what_no_shop_can_mean(
    client: httpx.AsyncClient, sink: RecordingSink, data: dict[str, Any], reason: str
) -> None:
    submission = _cart_submission()
    submission["data"] = {**submission["data"], **data}
    response = await client.post("/events", headers=AUTH, json=submission)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert sink.events == []


async def test_a_time_without_offset_is_taken_as_utc(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    submission = _cart_submission()
    submission["data"] = {**submission["data"], "updated_at": "2024-10-01T10:00:00"}
    assert (await client.post("/events", headers=AUTH, json=submission)).status_code == 202
    [produced] = sink.events
    assert ev.payload(produced.event, ev.CartUpdated).updated_at == datetime(
        2024, 10, 1, 10, tzinfo=UTC
    )


def test_a_shop_event_is_encoded_as_its_contract_would_encode_it() -> None:
    data = ev.CartUpdated(
        cart_id="c1", customer=ev.Customer(), lines=[], updated_at=NOW, total_price=None
    )
    made = shop_event(
        type=ev.CART_UPDATED, source="s", event_id="e1", shop_id=SHOP_ID, data=data, now=NOW
    )
    contract = ev.make_event(
        type=ev.CART_UPDATED,
        source="s",
        id="e1",
        time=NOW,
        subject=None,
        shop_id=SHOP_ID,
        data=data,
    )
    assert made.value == ev.encode(contract)


async def test_the_lean_webhook_path_answers_as_the_route_and_stays_documented(
    sink: RecordingSink,
) -> None:
    shops = shop_directory([SHOP])
    clock = ManualClock(NOW)
    app = IngestApp()
    app.include_router(shopify_router(shops, sink, clock))
    app.lean_posts["/webhooks/shopify"] = shopify_delivery(shops, sink, clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        d = delivery("checkouts.create")
        response = await client.post("/webhooks/shopify", content=d.body, headers=d.headers)
        unsigned = await client.post("/webhooks/shopify", content=d.body)
        docs = (await client.get("/openapi.json")).json()
    [produced] = sink.events
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "event_id": produced.id}
    assert response.headers["content-type"] == "application/json"
    assert unsigned.status_code == 401
    assert "/webhooks/shopify" in docs["paths"]
