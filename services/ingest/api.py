"""HTTP edge: Shopify and WooCommerce webhooks and the platform-neutral /events API -> canonical
events on Kafka.

Both answer 2xx only after the broker acknowledged the event, so a sender that gets an error
retries; a retried delivery becomes the same event id and changes nothing downstream.

POST /webhooks/shopify is the hot path: `IngestApp` answers it with a plain ASGI handler
before FastAPI's middleware and routing, which cost about as much CPU as the work itself. Its
FastAPI route stays, runs the same function, and documents it in /docs and /openapi.json.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from starlette.types import Receive, Scope, Send

from services.ingest.adapters.broker import BrokerUnavailable, EventSink
from services.ingest.adapters.privacy_sink import PrivacySink
from services.ingest.domain import shopify, shopify_privacy, woocommerce
from services.ingest.domain.canonical import (
    SOURCE_API,
    SOURCE_SHOPIFY,
    SOURCE_WOOCOMMERCE,
    ShopEvent,
    describe,
    shop_event,
)
from services.ingest.domain.shops import (
    Shop,
    ShopDirectory,
    shopify_signature_valid,
    woocommerce_signature_valid,
)
from shared import events as ev
from shared import metrics
from shared.clock import Clock
from shared.events import InvalidEvent, stable_event_id
from shared.logging import get_logger

SERVICE = "ingest"
log = get_logger(__name__)
_WEBHOOK_LATENCY = metrics.REQUEST_LATENCY.labels(SERVICE, "/webhooks/shopify")
_WEBHOOKS_IN = metrics.EVENTS_IN.labels(SERVICE, "shopify")
_API_IN = metrics.EVENTS_IN.labels(SERVICE, "api")
_WOO_IN = metrics.EVENTS_IN.labels(SERVICE, "woocommerce")
_SHOPIFY_STALE = metrics.WEBHOOKS_DROPPED.labels(SERVICE, "shopify", "stale")


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    event_id: str = Field(description="The canonical event's id; the same for a redelivery.")


class Ignored(BaseModel):
    status: Literal["ignored"] = "ignored"
    topic: str | None = None
    reason: str | None = Field(
        default=None,
        description="Why nothing was produced: a topic or status Rebound does "
        "not act on (absent), `stale` (older than the configured age) or `ping`.",
    )


class Problem(BaseModel):
    error: str = Field(description="Why the request was refused, for the person who sent it.")


Answer = tuple[int, bytes]  # status code, JSON body
_JSON_HEADERS = [(b"content-type", b"application/json")]


def _json(content: dict[str, Any], status_code: int) -> Answer:
    return status_code, orjson.dumps(content)


def _problem(status_code: int, reason: str) -> Answer:
    return _json({"error": reason}, status_code)


def _response(answer: Answer) -> Response:
    return Response(answer[1], status_code=answer[0], media_type="application/json")


async def _emit(sink: EventSink, event: ShopEvent, status_code: int) -> Answer:
    try:
        await sink.emit(event)
    except BrokerUnavailable as exc:
        metrics.ERRORS.labels(SERVICE, "broker_unavailable").inc()
        log.warning("produce_failed", event_id=event.id, error=str(exc))
        return _problem(503, "the event could not be stored now; retry later")
    return _json({"status": "accepted", "event_id": event.id}, status_code)


# --- Shopify webhooks ----------------------------------------------------------------------


def shopify_router(
    shops: ShopDirectory,
    sink: EventSink,
    clock: Clock,
    max_age: timedelta | None = None,
    privacy: PrivacySink | None = None,
) -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    @router.post(
        "/webhooks/shopify",
        summary="Receive a Shopify webhook delivery",
        description="Verifies X-Shopify-Hmac-Sha256 against the secret of the shop named in "
        "X-Shopify-Shop-Domain and produces one canonical event per delivery, the same one for "
        "every delivery of the same X-Shopify-Event-Id (else X-Shopify-Webhook-Id). "
        "Topics Rebound does not use, and deliveries whose X-Shopify-Triggered-At is older "
        "than the configured age, are acknowledged and ignored. The privacy topics "
        "(customers/data_request, customers/redact, shop/redact) become data subject "
        "requests (docs/privacy.md).",
        responses={
            200: {"model": Accepted | Ignored},
            400: {"model": Problem},
            401: {"model": Problem},
            503: {"model": Problem},
        },
    )
    async def receive_shopify_webhook(request: Request) -> Response:
        deliver = shopify_delivery(shops, sink, clock, max_age, privacy)
        return _response(await deliver(request.headers, await request.body()))

    return router


Delivery = Callable[[Mapping[str, str], bytes], Awaitable[Answer]]


def shopify_delivery(
    shops: ShopDirectory,
    sink: EventSink,
    clock: Clock,
    max_age: timedelta | None = None,
    privacy: PrivacySink | None = None,
) -> Delivery:
    """The whole handling of one delivery, from its headers and body to the answer.
    `max_age`: a delivery triggered longer ago is stale (None: no such check)."""

    async def deliver(headers: Mapping[str, str], body: bytes) -> Answer:
        started = time.perf_counter()
        try:
            if privacy is not None and shopify_privacy.handles(headers.get("x-shopify-topic")):
                return await _privacy_delivery(headers, body, shops, privacy, clock)
            return await _shopify_delivery(headers, body, shops, sink, clock, max_age)
        finally:
            _WEBHOOK_LATENCY.observe(time.perf_counter() - started)

    return deliver


async def _shopify_delivery(
    headers: Mapping[str, str],
    body: bytes,
    shops: ShopDirectory,
    sink: EventSink,
    clock: Clock,
    max_age: timedelta | None,
) -> Answer:
    shop = shops.by_shopify_domain(headers.get("x-shopify-shop-domain"))
    if shop is None or not shopify_signature_valid(
        body, shop.shopify_secret, headers.get("x-shopify-hmac-sha256")
    ):
        metrics.ERRORS.labels(SERVICE, "webhook_unauthenticated").inc()
        return _problem(401, "unknown shop or invalid X-Shopify-Hmac-Sha256 signature")
    topic = headers.get("x-shopify-topic")
    _WEBHOOKS_IN.inc()
    if not shopify.handles(topic):
        return _json({"status": "ignored", "topic": topic}, 200)
    assert topic is not None
    if topic not in _NEVER_STALE and _stale(
        headers.get("x-shopify-triggered-at"), clock.now(), max_age
    ):
        _SHOPIFY_STALE.inc()
        return _json({"status": "ignored", "topic": topic, "reason": "stale"}, 200)
    delivery_key = _shopify_delivery_key(headers, topic)
    if delivery_key is None:
        return _problem(400, "X-Shopify-Webhook-Id is missing")
    try:
        event = _shopify_event(shop, topic, delivery_key, body, clock)
    except (shopify.MappingError, InvalidEvent) as exc:
        metrics.ERRORS.labels(SERVICE, "webhook_invalid").inc()
        return _problem(400, str(exc))
    return await _emit(sink, event, 200)


# Privacy requests bind whenever they arrive; their age never makes them ignorable.
_NEVER_STALE = frozenset({"customers/data_request", "customers/redact", "shop/redact"})


def _stale(triggered_at: str | None, now: datetime, max_age: timedelta | None) -> bool:
    """Shopify retries a delivery for hours with its original body: one triggered longer ago
    than `max_age` may undo what newer deliveries said. Without a readable time: not stale."""
    if max_age is None or not triggered_at:
        return False
    try:
        moment = datetime.fromisoformat(triggered_at.strip())
    except ValueError:
        return False
    return moment.tzinfo is not None and moment < now - max_age


def _shopify_delivery_key(headers: Mapping[str, str], topic: str) -> tuple[str, ...] | None:
    """What makes two deliveries the same event. Shopify's guidance: X-Shopify-Event-Id names
    the event and is shared by all its deliveries, also by those of a second subscription
    to the topic, which carry another X-Shopify-Webhook-Id. Older deliveries lack it."""
    event_id = headers.get("x-shopify-event-id", "").strip()
    if event_id:
        return ("event", topic, event_id)
    webhook_id = headers.get("x-shopify-webhook-id")
    return (webhook_id,) if webhook_id else None


def _shopify_event(
    shop: Shop, topic: str, delivery_key: tuple[str, ...], body: bytes, clock: Clock
) -> ShopEvent:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise shopify.MappingError(f"{topic}: body is not JSON ({exc})") from exc
    event_type, data = shopify.to_canonical(topic, parsed)
    assert shop.shopify_domain is not None
    event_id = stable_event_id("shopify", shop.shopify_domain, *delivery_key)
    return shop_event(
        type=event_type,
        source=SOURCE_SHOPIFY,
        event_id=event_id,
        shop_id=shop.shop_id,
        data=data,
        now=clock.now(),
    )


async def _privacy_delivery(
    headers: Mapping[str, str], body: bytes, shops: ShopDirectory, sink: PrivacySink, clock: Clock
) -> Answer:
    """customers/data_request, customers/redact, shop/redact -> privacy.requests; verified and
    answered like every other Shopify webhook (401, 400, 503 so Shopify retries), never stale."""
    shop = shops.by_shopify_domain(headers.get("x-shopify-shop-domain"))
    if shop is None or not shopify_signature_valid(
        body, shop.shopify_secret, headers.get("x-shopify-hmac-sha256")
    ):
        metrics.ERRORS.labels(SERVICE, "webhook_unauthenticated").inc()
        return _problem(401, "unknown shop or invalid X-Shopify-Hmac-Sha256 signature")
    _WEBHOOKS_IN.inc()
    topic = headers.get("x-shopify-topic", "")
    delivery_key = _shopify_delivery_key(headers, topic)
    if delivery_key is None:
        return _problem(400, "X-Shopify-Webhook-Id is missing")
    assert shop.shopify_domain is not None
    request_id = stable_event_id("shopify", shop.shopify_domain, *delivery_key)
    try:
        event_type, request = shopify_privacy.to_request(
            topic,
            _json_body(topic, body),
            shop_id=shop.shop_id,
            shop_domain=shop.shopify_domain,
            request_id=request_id,
            now=clock.now(),
        )
    except shopify.MappingError as exc:
        metrics.ERRORS.labels(SERVICE, "webhook_invalid").inc()
        return _problem(400, str(exc))
    return await _emit_privacy(sink, event_type, request)


def _json_body(topic: str, body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise shopify.MappingError(f"{topic}: body is not JSON ({exc})") from exc


async def _emit_privacy(sink: PrivacySink, event_type: str, request: ev.PrivacyRequest) -> Answer:
    event = ev.make_event(
        type=event_type,
        source=SOURCE_SHOPIFY,
        id=request.request_id,
        time=request.requested_at,
        subject=None,
        shop_id=request.shop_id,
        data=request,
    )
    try:
        await sink.emit_request(event)
    except BrokerUnavailable as exc:
        metrics.ERRORS.labels(SERVICE, "broker_unavailable").inc()
        log.warning("produce_failed", event_id=request.request_id, error=str(exc))
        return _problem(503, "the request could not be stored now; retry later")
    log.info("privacy_request_accepted", request_id=request.request_id, type=event_type)
    return _json({"status": "accepted", "event_id": request.request_id}, 200)


# --- WooCommerce webhooks -------------------------------------------------------------------

_WOO_LATENCY = metrics.REQUEST_LATENCY.labels(SERVICE, "/webhooks/woocommerce")
_WOO_PINGS = metrics.WEBHOOKS_DROPPED.labels(SERVICE, "woocommerce", "ping")
_WOO_IGNORED = metrics.WEBHOOKS_DROPPED.labels(SERVICE, "woocommerce", "ignored")
_WOO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Accepted | Ignored},
    400: {"model": Problem},
    401: {"model": Problem},
    404: {"model": Problem},
    503: {"model": Problem},
}
_WOO_DESCRIPTION = (
    "Verifies X-WC-Webhook-Signature (base64 HMAC-SHA256 of the body with the webhook's "
    "secret) and produces one canonical event per delivery: order.created, order.updated "
    "(paid, cancelled, refunded, failed), customer.created/updated, product.created/updated. "
    "WooCommerce does not retry and disables a webhook after repeated failures, so other "
    "topics and statuses are answered 200 and ignored, the saving ping (`webhook_id=<id>`) "
    "gets 200, and 5xx means only that the event could not be stored."
)


def woocommerce_router(shops: ShopDirectory, sink: EventSink, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["webhooks"])
    deliver = woocommerce_delivery(shops, sink, clock)

    @router.post(
        "/webhooks/woocommerce",
        summary="Receive a WooCommerce webhook delivery (shop named by X-WC-Webhook-Source)",
        description=_WOO_DESCRIPTION,
        responses=_WOO_RESPONSES,
    )
    async def receive_woocommerce_webhook(request: Request) -> Response:
        return _response(await deliver(request.headers, await request.body(), None))

    @router.post(
        "/webhooks/woocommerce/{shop_id}",
        summary="Receive a WooCommerce webhook delivery for the shop in the path",
        description=_WOO_DESCRIPTION + " The shop is the one in the path, whatever the "
        "X-WC-Webhook-Source (a site behind a proxy, or one whose address changed).",
        responses=_WOO_RESPONSES,
    )
    async def receive_woocommerce_webhook_for_shop(shop_id: str, request: Request) -> Response:
        return _response(await deliver(request.headers, await request.body(), shop_id))

    return router


WooDelivery = Callable[[Mapping[str, str], bytes, str | None], Awaitable[Answer]]


def woocommerce_delivery(shops: ShopDirectory, sink: EventSink, clock: Clock) -> WooDelivery:
    """One delivery, from its headers, body and the shop id in the path (if any) to the answer."""

    async def deliver(headers: Mapping[str, str], body: bytes, shop_id: str | None) -> Answer:
        started = time.perf_counter()
        try:
            return await _woocommerce_delivery(headers, body, shop_id, shops, sink, clock)
        finally:
            _WOO_LATENCY.observe(time.perf_counter() - started)

    return deliver


async def _woocommerce_delivery(
    headers: Mapping[str, str],
    body: bytes,
    shop_id: str | None,
    shops: ShopDirectory,
    sink: EventSink,
    clock: Clock,
) -> Answer:
    topic = headers.get("x-wc-webhook-topic")
    shop = shops.by_id(shop_id) if shop_id else None
    if shop_id is not None and shop is None:
        # Tells the shop owner at once, when saving the webhook, that the address is wrong.
        return _problem(404, f"no shop {shop_id!r} is configured")
    if woocommerce.is_ping(topic, body):
        _WOO_PINGS.inc()  # unsigned and carries nothing: produces nothing
        return _json({"status": "ignored", "reason": "ping"}, 200)
    if shop is None:
        shop = shops.by_woocommerce_site(headers.get("x-wc-webhook-source"))
    if shop is None or not woocommerce_signature_valid(
        body, shop.woocommerce_secret, headers.get("x-wc-webhook-signature")
    ):
        metrics.ERRORS.labels(SERVICE, "webhook_unauthenticated").inc()
        return _problem(401, "unknown shop or invalid X-WC-Webhook-Signature signature")
    _WOO_IN.inc()
    if not woocommerce.handles(topic):
        _WOO_IGNORED.inc()
        return _json({"status": "ignored", "topic": topic}, 200)
    assert topic is not None
    delivery_id = headers.get("x-wc-webhook-delivery-id", "").strip()
    if not delivery_id:
        return _problem(400, "X-WC-Webhook-Delivery-ID is missing")
    try:
        event = _woocommerce_event(shop, topic, delivery_id, body, clock)
    except (woocommerce.MappingError, InvalidEvent) as exc:
        metrics.ERRORS.labels(SERVICE, "webhook_invalid").inc()
        return _problem(400, str(exc))
    if event is None:
        _WOO_IGNORED.inc()
        return _json({"status": "ignored", "topic": topic}, 200)
    return await _emit(sink, event, 200)


def _woocommerce_event(
    shop: Shop, topic: str, delivery_id: str, body: bytes, clock: Clock
) -> ShopEvent | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise woocommerce.MappingError(f"{topic}: body is not JSON ({exc})") from exc
    mapped = woocommerce.to_canonical(topic, parsed)
    if mapped is None:
        return None
    event_type, data = mapped
    # WooCommerce's delivery id is a hash of the webhook id and the current second, so two
    # different deliveries of one webhook within a second share it (a bulk status change):
    # the body's digest keeps them apart, and a true redelivery is still the same event.
    digest = hashlib.sha256(body).hexdigest()
    return shop_event(
        type=event_type,
        source=SOURCE_WOOCOMMERCE,
        event_id=stable_event_id("woocommerce", shop.shop_id, delivery_id, digest),
        shop_id=shop.shop_id,
        data=data,
        now=clock.now(),
    )


# --- /events ---------------------------------------------------------------------------------


_EXAMPLE: dict[str, JsonValue] = {
    "type": ev.CART_UPDATED,
    "id": "cart-42-rev-7",
    "data": {
        "cart_id": "42",
        "customer": {
            "id": "1001",
            "email": "ada@example.com",
            "first_name": "Ada",
            "marketing_consent": "subscribed",
        },
        "lines": [
            {
                "product_id": "7",
                "variant_id": "71",
                "sku": "MUG-BLUE",
                "title": "Mug",
                "variant_title": "Blue",
                "quantity": 2,
                "price": "12.50",
            }
        ],
        "currency": "EUR",
        "total_price": "25.00",
        "recovery_url": "https://shop.example/cart/42",
        "updated_at": "2024-10-01T12:00:00Z",
    },
}


class EventSubmission(BaseModel):
    """One canonical shop event, for shops that are not on Shopify."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    type: str = Field(
        description="The canonical event type; `data` must match its payload schema: "
        + "; ".join(f"`{t}` -> {m.__name__}" for t, m in ev.SHOP_PAYLOADS.items()),
        json_schema_extra={"enum": list(ev.SHOP_PAYLOADS)},
    )
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Your idempotency id: a retry with the same id is the same event. "
        "Without it every request is a new event.",
    )
    data: dict[str, Any] = Field(
        description="The payload. Ids are strings (never numbers); money is a decimal string; "
        "times are ISO 8601 with an offset."
    )


def _bearer_shop(shops: ShopDirectory) -> Callable[..., Awaitable[Shop]]:
    async def shop_for_token(
        authorization: Annotated[str | None, Header(description="Bearer <api token>")] = None,
    ) -> Shop:
        scheme, _, token = (authorization or "").partition(" ")
        shop = shops.by_api_token(token.strip()) if scheme.lower() == "bearer" else None
        if shop is None:
            raise _UnauthorizedError
        return shop

    return shop_for_token


class _UnauthorizedError(Exception):
    """No shop has the presented API token (mapped to 401)."""


def events_router(shops: ShopDirectory, sink: EventSink, clock: Clock) -> APIRouter:
    router = APIRouter(tags=["events"])
    payload_models: list[type[BaseModel]] = list(dict.fromkeys(ev.SHOP_PAYLOADS.values()))
    authenticate = _bearer_shop(shops)

    @router.post(
        "/events",
        status_code=202,
        summary="Submit a canonical shop event",
        description="Authenticated with `Authorization: Bearer <api token>` of the shop. The "
        "event is acknowledged (202) only after the broker stored it. Payload "
        "schemas: " + ", ".join(m.__name__ for m in payload_models) + ".",
        responses={
            202: {"model": Accepted},
            400: {"model": Problem},
            401: {"model": Problem},
            503: {"model": Problem},
        },
        response_model=Accepted,
    )
    async def submit_event(
        submission: EventSubmission,
        shop: Shop = Depends(authenticate),  # a default: annotations cannot see locals
    ) -> Response:
        _API_IN.inc()
        try:
            event = _api_event(shop, submission, clock)
        except InvalidEvent as exc:
            return _response(_problem(400, str(exc)))
        return _response(await _emit(sink, event, 202))

    return router


def _api_event(shop: Shop, submission: EventSubmission, clock: Clock) -> ShopEvent:
    model = ev.SHOP_PAYLOADS.get(submission.type)
    if model is None:
        raise InvalidEvent(
            f"unknown event type {submission.type!r}; expected one of "
            + ", ".join(ev.SHOP_PAYLOADS)
        )
    try:
        data = model.model_validate(submission.data)
    except ValidationError as exc:
        raise InvalidEvent(f"data invalid: {describe(exc)}") from exc
    event_id = (
        stable_event_id("api", shop.shop_id, submission.id) if submission.id else str(uuid.uuid4())
    )
    return shop_event(
        type=submission.type,
        source=SOURCE_API,
        event_id=event_id,
        shop_id=shop.shop_id,
        data=data,
        now=clock.now(),
    )


# --- errors ------------------------------------------------------------------------------------


def install_error_handlers(app: FastAPI) -> None:
    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        return _response(_problem(400, f"{where}: {err.get('msg', 'invalid')}"))

    async def unauthorized(request: Request, exc: Exception) -> Response:
        return _response(
            _problem(401, "missing or unknown API token (Authorization: Bearer <token>)")
        )

    app.add_exception_handler(RequestValidationError, bad_request)
    app.add_exception_handler(_UnauthorizedError, unauthorized)


# --- the hot path, without FastAPI's machinery --------------------------------------------------


Reply = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, raw headers, body
# Answers GET <prefix><last path segment> from that segment and the request's scope.
LeanGet = Callable[[str, Scope], Reply]


class IngestApp(FastAPI):
    """FastAPI, except that the POST paths in `lean_posts` go straight to a `Delivery`, and a
    GET of a path in `lean_gets` (keyed by all of it up to the last slash) to a `LeanGet`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lean_posts: dict[str, Delivery] = {}
        self.lean_gets: dict[str, LeanGet] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST":
                deliver = self.lean_posts.get(scope["path"])
                if deliver is not None:
                    await _lean(deliver, scope, receive, send)
                    return
            elif scope["method"] == "GET":
                path: str = scope["path"]
                cut = path.rfind("/") + 1
                answer = self.lean_gets.get(path[:cut])
                if answer is not None and cut < len(path):
                    await _send(send, *answer(path[cut:], scope))
                    return
        await super().__call__(scope, receive, send)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lean(deliver: Delivery, scope: Scope, receive: Receive, send: Send) -> None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the sender is gone; it will retry, and nothing was produced
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    # The first of repeated headers counts, as with Starlette's `Headers.get`.
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
    status, body = await deliver(headers, b"".join(chunks))
    content_length = (b"content-length", str(len(body)).encode())
    await _send(send, status, [*_JSON_HEADERS, content_length], body)
