"""HTTP edge of e-mail tracking: the open pixel, the click redirect, the unsubscribe page.

Every URL carries a signed token (shared/tracking.py), so nothing is looked up on these paths.
A bad token records nothing: the pixel is still a GIF (a broken image helps nobody), a click
gets a plain 404 and never a redirect, an unsubscribe link a 404 page. A GET never
unsubscribes (mail scanners follow links); the POST does, and answers 200 only once the
event is acknowledged by the broker.
"""

from __future__ import annotations

import html
import uuid
from datetime import timedelta

from fastapi import APIRouter, Request, Response

from services.ingest.adapters.broker import BrokerUnavailable
from services.ingest.adapters.email_events import EmailEventSink
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


def tracking_router(
    signer: TokenSigner, sink: EmailEventSink, clock: Clock, max_age: timedelta
) -> APIRouter:
    router = APIRouter(tags=["tracking"], include_in_schema=True)

    @router.get("/t/o/{token}", summary="Open pixel: always a 1x1 GIF")
    async def open_pixel(token: str, request: Request) -> Response:
        now = clock.now()
        try:
            claims = signer.verify(token, "open", now, max_age)
        except InvalidToken:
            metrics.ERRORS.labels(SERVICE, "tracking_bad_token").inc()
        else:
            fetch = Fetch(now, request.headers.get("user-agent", ""), _client_ip(request))
            sink.emit_soon(claims.message.customer_key, tracking.opened(claims, fetch, _new_id()))
            _OPENS.inc()
        return Response(PIXEL_GIF, media_type="image/gif", headers=NO_CACHE)

    @router.get("/t/c/{token}", summary="Click redirect: 302 to the link that was in the mail")
    async def click(token: str) -> Response:
        now = clock.now()
        try:
            claims = signer.verify(token, "click", now, max_age)
        except InvalidToken:
            return _page(404, "Link not found", "This link is not valid.")
        link = claims.link
        if link is None or not 0 <= link.index < link.count or not _web_url(link.url):
            return _page(404, "Link not found", "This link is not valid.")
        sink.emit_soon(claims.message.customer_key, tracking.clicked(claims, now, _new_id()))
        _CLICKS.inc()
        return Response(status_code=302, headers={**PAGE_HEADERS, "location": link.url})

    @router.get("/u/{token}", summary="Unsubscribe page: asks to confirm, changes nothing")
    async def unsubscribe_page(token: str) -> Response:
        if _unsubscribe_claims(signer, token) is None:
            return _page(404, "Link not found", "This unsubscribe link is not valid.")
        return _page(200, "Unsubscribe", _CONFIRM_FORM)

    @router.post("/u/{token}", summary="Unsubscribe: RFC 8058 one-click, or the confirm button")
    async def unsubscribe(token: str, request: Request) -> Response:
        claims = _unsubscribe_claims(signer, token)
        if claims is None:
            return _page(404, "Link not found", "This unsubscribe link is not valid.")
        body = await request.body()
        one_click = tracking.is_one_click(body)
        if not one_click and b"confirm=yes" not in body:
            return _page(400, "Nothing changed", "Use the button on the unsubscribe page.")
        try:
            await sink.emit(
                claims.message.customer_key, tracking.unsubscribed(claims, clock.now(), one_click)
            )
        except BrokerUnavailable:
            metrics.ERRORS.labels(SERVICE, "unsubscribe_not_stored").inc()
            return _page(503, "Please try again", _RETRY, {"retry-after": "30"})
        return _page(200, "Unsubscribed", "You will get no more marketing e-mail from us.")

    return router


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
    return url.lower().startswith(("https://", "http://"))


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _new_id() -> str:
    return str(uuid.uuid4())
