"""The tracking endpoints without a broker: what each request is answered and what is produced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from services.ingest.adapters.broker import BrokerUnavailable
from services.ingest.api import IngestApp
from services.ingest.domain import tracking
from services.ingest.domain.tracking import Fetch
from services.ingest.tracking import PIXEL_GIF, TrackingEdge
from shared import events as ev
from shared.clock import ManualClock
from shared.tracking import Claims, Link, MessageRef, TokenSigner, TrackingKey

SENT_AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MESSAGE = MessageRef("s1", "s1:c:42", "win-back:7:reason", "win-back", "reason", SENT_AT)
SIGNER = TokenSigner([TrackingKey(kid="k1", secret=SecretStr("x" * 40))])
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"
TARGET = "https://shop.example/new?utm_source=rebound&a=1"


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, ev.CloudEvent]] = []
        self.down = False

    async def emit(self, key: str, event: ev.CloudEvent) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        self.events.append((key, event))

    def emit_soon(self, key: str, value: bytes) -> None:
        self.events.append((key, ev.decode(value)))


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SENT_AT)


@pytest.fixture(params=["routes", "lean"])
async def client(
    sink: RecordingSink, clock: ManualClock, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    """The FastAPI routes alone, or as served: IngestApp answers pixel and click itself."""
    edge = TrackingEdge(SIGNER, sink, clock, timedelta(days=400))
    app = IngestApp()
    app.include_router(edge.router())
    if request.param == "lean":
        app.lean_gets.update(edge.lean_gets())
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        yield client


def token(kind: str, link: Link | None = None) -> str:
    return SIGNER.sign(Claims(kind, MESSAGE, link))  # type: ignore[arg-type]


def altered(value: str) -> str:
    i = len(value) // 2
    return value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1 :]


async def test_a_valid_pixel_is_a_gif_and_a_human_open(
    client: httpx.AsyncClient, sink: RecordingSink, clock: ManualClock
) -> None:
    await clock.advance(timedelta(hours=2))
    response = await client.get(f"/t/o/{token('open')}", headers={"user-agent": BROWSER})
    assert response.status_code == 200
    assert response.content == PIXEL_GIF and response.headers["content-type"] == "image/gif"
    assert "no-store" in response.headers["cache-control"]
    [(key, event)] = sink.events
    opened = ev.payload(event, ev.EmailOpened)
    assert key == "s1:c:42" and event.type == ev.EMAIL_OPENED
    assert (opened.request_key, opened.machine) == ("win-back:7:reason", False)


@pytest.mark.parametrize("bad", ["nonsense", "k1.abc.def"])
async def test_a_bad_pixel_is_still_a_gif_and_records_nothing(
    client: httpx.AsyncClient, sink: RecordingSink, bad: str
) -> None:
    for path in (f"/t/o/{bad}", f"/t/o/{altered(token('open'))}"):
        response = await client.get(path)
        assert response.status_code == 200 and response.content == PIXEL_GIF
    assert sink.events == []


@pytest.mark.parametrize(
    ("user_agent", "after", "reason"),
    [
        ("Mozilla/5.0", timedelta(hours=2), "privacy_proxy"),
        ("Mozilla/5.0 (compatible; Barracuda)", timedelta(hours=2), "scanner"),
        (BROWSER, timedelta(seconds=2), "right_after_send"),
    ],
)
async def test_machine_opens_are_flagged(
    client: httpx.AsyncClient,
    sink: RecordingSink,
    clock: ManualClock,
    user_agent: str,
    after: timedelta,
    reason: str,
) -> None:
    await clock.advance(after)
    await client.get(f"/t/o/{token('open')}", headers={"user-agent": user_agent})
    opened = ev.payload(sink.events[0][1], ev.EmailOpened)
    assert (opened.machine, opened.machine_reason) == (True, reason)


async def test_a_click_redirects_to_exactly_the_sent_link(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await client.get(f"/t/c/{token('click', Link(1, 2, TARGET))}")
    assert response.status_code == 302
    assert response.headers["location"] == TARGET
    clicked = ev.payload(sink.events[0][1], ev.EmailClicked)
    assert (clicked.link_index, clicked.url) == (1, TARGET)


async def test_a_link_with_non_ascii_characters_redirects_percent_encoded(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await client.get(f"/t/c/{token('click', Link(0, 1, 'https://shop.example/ä'))}")
    assert response.status_code == 302
    assert response.headers["location"] == "https://shop.example/%C3%A4"


def test_the_encoded_events_are_what_their_contracts_encode() -> None:
    fetch = Fetch(SENT_AT + timedelta(hours=1), BROWSER, "198.51.100.7")
    opened = ev.decode(tracking.opened(Claims("open", MESSAGE), fetch, "id-1"))
    data = ev.payload(opened, ev.EmailOpened)
    assert tracking.opened(Claims("open", MESSAGE), fetch, "id-1") == ev.encode(opened)
    assert (opened.id, opened.subject, opened.shopid) == ("id-1", "s1:c:42", "s1")
    assert (data.request_key, data.opened_at, data.machine) == (
        "win-back:7:reason",
        fetch.at,
        False,
    )


@pytest.mark.parametrize(
    ("ip", "machine"),
    [("17.58.1.2", True), ("::ffff:17.58.1.2", True), ("171.1.1.1", False), ("1.17.0.1", False)],
)
def test_opens_from_the_privacy_proxy_network_are_machine_opens(ip: str, machine: bool) -> None:
    fetch = Fetch(SENT_AT + timedelta(hours=1), BROWSER, ip)
    assert (tracking.machine_reason(Claims("open", MESSAGE), fetch) is not None) is machine


async def test_an_altered_click_is_404_without_redirect(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await client.get(f"/t/c/{altered(token('click', Link(0, 1, TARGET)))}")
    assert response.status_code == 404 and "location" not in response.headers
    assert "text/html" in response.headers["content-type"]
    assert sink.events == []


@pytest.mark.parametrize(
    "link",
    [Link(5, 2, TARGET), Link(-1, 2, TARGET), Link(0, 1, "javascript:alert(1)")],
)
async def test_a_link_the_message_never_had_is_404(
    client: httpx.AsyncClient, sink: RecordingSink, link: Link
) -> None:
    response = await client.get(f"/t/c/{token('click', link)}")
    assert response.status_code == 404 and sink.events == []


async def test_an_open_token_is_no_click_token(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    assert (await client.get(f"/t/c/{token('open')}")).status_code == 404


async def test_a_get_of_the_unsubscribe_link_only_asks(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await client.get(f"/u/{token('unsubscribe')}")
    assert response.status_code == 200 and '<form method="post">' in response.text
    assert sink.events == []


async def test_one_click_unsubscribes_once_the_broker_has_it(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    response = await client.post(
        f"/u/{token('unsubscribe')}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    [(key, event)] = sink.events
    unsub = ev.payload(event, ev.EmailUnsubscribed)
    assert key == "s1:c:42" and unsub.method == "one_click"


async def test_one_click_as_multipart_and_the_confirm_button_unsubscribe(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    url = f"/u/{token('unsubscribe')}"
    assert (await client.post(url, files={"List-Unsubscribe": (None, "One-Click")})).is_success
    assert (await client.post(url, data={"confirm": "yes"})).is_success
    methods = [ev.payload(e, ev.EmailUnsubscribed).method for _, e in sink.events]
    assert methods == ["one_click", "confirm_page"]
    assert sink.events[0][1].id == sink.events[1][1].id  # one unsubscribe per message


async def test_an_unsubscribe_the_broker_did_not_take_asks_to_retry(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    sink.down = True
    response = await client.post(
        f"/u/{token('unsubscribe')}", content=b"List-Unsubscribe=One-Click"
    )
    assert response.status_code == 503 and "try again" in response.text


async def test_a_post_without_the_one_click_body_or_a_bad_token_changes_nothing(
    client: httpx.AsyncClient, sink: RecordingSink
) -> None:
    assert (await client.post(f"/u/{token('unsubscribe')}", content=b"")).status_code == 400
    bad = await client.post(
        f"/u/{altered(token('unsubscribe'))}", content=b"List-Unsubscribe=One-Click"
    )
    assert bad.status_code == 404
    assert sink.events == []
