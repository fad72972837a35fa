"""HTTP edge of e-mail tracking: the open pixel, the click redirect, the unsubscribe page.

Every URL carries a signed token (shared/tracking.py), so nothing is looked up on these paths.
A bad token records nothing: the pixel is still a GIF (a broken image helps nobody), a click
gets a plain 404 and never a redirect, an unsubscribe link a 404 page. A GET never
unsubscribes (mail scanners follow links); the POST does, and answers 200 only once the
event is acknowledged by the broker.

The pixel and the click are as hot as a webhook: `TrackingEdge.lean_gets` serves them on
`IngestApp`'s plain ASGI path (api.py), and their FastAPI routes, which document them in
/docs, answer with the same functions.
"""

from __future__ import annotations

import html
import os
from datetime import datetime, timedelta
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from starlette.types import Scope

from services.ingest.adapters.broker import BrokerUnavailable
from services.ingest.adapters.email_events import EmailEventSink
from services.ingest.api import LeanGet, Reply
from services.ingest.domain import tracking
from services.ingest.domain.tracking import Fetch
from shared import metrics
from shared.clock import Clock
from shared.tracking import Claims, InvalidToken, TokenSigner

SERVICE = "ingest"
# The smallest transparent 1x1 GIF.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_CACHE = {
    "cache-control": "no-store, no-cache, must-revalidate, max-age=0, private",
    "pragma": "no-cache",
    "expires": "0",
}
PAGE_HEADERS = {**NO_CACHE, "x-robots-tag": "noindex", "referrer-policy": "no-referrer"}
_OPENS = metrics.EVENTS_IN.labels(SERVICE, "open")
_CLICKS = metrics.EVENTS_IN.labels(SERVICE, "click")
_BAD_TOKENS = metrics.ERRORS.labels(SERVICE, "tracking_bad_token")


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


_GIF: Reply = (
    200,
    _raw({"content-type": "image/gif", "content-length": str(len(PIXEL_GIF)), **NO_CACHE}),
    PIXEL_GIF,
)
_REDIRECT_HEADERS = _raw({**PAGE_HEADERS, "content-length": "0"})


class TrackingEdge:
    """The answers of the tracking paths, for the lean ASGI path and the FastAPI routes."""

    def __init__(
        self, signer: TokenSigner, sink: EmailEventSink, clock: Clock, max_age: timedelta
    ) -> None:
        self._signer = signer
        self._sink = sink
        self._clock = clock
        self._max_age = max_age

    def lean_gets(self) -> dict[str, LeanGet]:
        return {"/t/o/": self.pixel, "/t/c/": self.click}

    def pixel(self, token: str, scope: Scope) -> Reply:
        now = self._clock.now()
        try:
            claims = self._signer.verify(token, "open", now, self._max_age)
        except InvalidToken:
            _BAD_TOKENS.inc()
            return _GIF
        fetch = Fetch(now, _user_agent(scope), _client_ip(scope))
        self._sink.emit_soon(claims.message.customer_key, tracking.opened(claims, fetch, _new_id()))
        _OPENS.inc()
        return _GIF

    def click(self, token: str, scope: Scope) -> Reply:
        now = self._clock.now()
        try:
            claims = self._signer.verify(token, "click", now, self._max_age)
        except InvalidToken:
            return _NOT_FOUND
        link = claims.link
        if link is None or not 0 <= link.index < link.count or not _web_url(link.url):
            return _NOT_FOUND
        self._sink.emit_soon(claims.message.customer_key, tracking.clicked(claims, now, _new_id()))
        _CLICKS.inc()
        return 302, [*_REDIRECT_HEADERS, (b"location", _location(link.url))], b""

    def router(self) -> APIRouter:
        router = APIRouter(tags=["tracking"], include_in_schema=True)

        @router.get("/t/o/{token}", summary="Open pixel: always a 1x1 GIF")
        async def open_pixel(token: str, request: Request) -> Response:
            return _response(self.pixel(token, request.scope))

        @router.get("/t/c/{token}", summary="Click redirect: 302 to the link that was in the mail")
        async def click(token: str, request: Request) -> Response:
            return _response(self.click(token, request.scope))

        @router.get("/u/{token}", summary="Unsubscribe page: asks to confirm, changes nothing")
        async def unsubscribe_page(token: str) -> Response:
            if _unsubscribe_claims(self._signer, token) is None:
                return _page(404, "Link not found", "This unsubscribe link is not valid.")
            return _page(200, "Unsubscribe", _CONFIRM_FORM)

        @router.post("/u/{token}", summary="Unsubscribe: RFC 8058 one-click, or the confirm button")
        async def unsubscribe(token: str, request: Request) -> Response:
            return await self._unsubscribe(token, await request.body(), self._clock.now())

        return router

    async def _unsubscribe(self, token: str, body: bytes, now: datetime) -> Response:
        claims = _unsubscribe_claims(self._signer, token)
        if claims is None:
            return _page(404, "Link not found", "This unsubscribe link is not valid.")
        one_click = tracking.is_one_click(body)
        if not one_click and b"confirm=yes" not in body:
            return _page(400, "Nothing changed", "Use the button on the unsubscribe page.")
        event = tracking.unsubscribed(claims, now, one_click)
        try:
            await self._sink.emit(claims.message.customer_key, event)
        except BrokerUnavailable:
            metrics.ERRORS.labels(SERVICE, "unsubscribe_not_stored").inc()
            return _page(503, "Please try again", _RETRY, {"retry-after": "30"})
        return _page(200, "Unsubscribed", "You will get no more marketing e-mail from us.")


def tracking_router(
    signer: TokenSigner, sink: EmailEventSink, clock: Clock, max_age: timedelta
) -> APIRouter:
    return TrackingEdge(signer, sink, clock, max_age).router()


def _unsubscribe_claims(signer: TokenSigner, token: str) -> Claims | None:
    # No expiry: an unsubscribe link must work for as long as the mail exists.
    try:
        return signer.verify(token, "unsubscribe")
    except InvalidToken:
        return None


_CONFIRM_FORM = (
    "<p>Stop receiving marketing e-mail from us?</p>"
    '<form method="post"><input type="hidden" name="confirm" value="yes">'
    '<button type="submit">Unsubscribe</button></form>'
)
_RETRY = "We could not record your request just now. Please try again in a minute."


def _page(status: int, title: str, body_html: str, extra: dict[str, str] | None = None) -> Response:
    content = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{_paragraph(body_html)}</body></html>"
    )
    return Response(
        content,
        status_code=status,
        media_type="text/html",
        headers={**PAGE_HEADERS, **(extra or {})},
    )


def _paragraph(body_html: str) -> str:
    return body_html if body_html.startswith("<") else f"<p>{html.escape(body_html)}</p>"


def _web_url(url: str) -> bool:
    # isprintable: no CR or LF can end up in the Location header
    return url.lower().startswith(("https://", "http://")) and url.isprintable()


def _location(url: str) -> bytes:
    """The link as sent; characters a header cannot carry percent-encoded (RFC 3986)."""
    if url.isascii():
        return url.encode()
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~").encode()


def _user_agent(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"user-agent":
            return str(value.decode("latin-1"))
    return ""


def _client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def _new_id() -> str:
    return os.urandom(16).hex()  # 128 random bits: unique without the cost of a UUID object


def _response(reply: Reply) -> Response:
    status, headers, body = reply
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


def _reply(response: Response) -> Reply:
    return response.status_code, response.raw_headers, bytes(response.body)


_NOT_FOUND = _reply(_page(404, "Link not found", "This link is not valid."))
