"""What a tracking request means: a human or a machine open, and the e-mail event it becomes.

Machine opens. Apple Mail Privacy Protection fetches every remote image of every message when
it arrives, from Apple's own network (17.0.0.0/8, which Apple owns outright) with the bare
user agent `Mozilla/5.0`; security gateways and link scanners fetch on delivery with their
own user agents. Both happen whether or not a person ever reads the mail, so such an open is
recorded as a machine open, and so is any open within a few seconds of the send (no person
reads that fast, a delivery-time scanner does). Gmail's and Yahoo's image proxies fetch when
the person opens the mail, so they count as human.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs

from shared import events as ev
from shared.tracking import Claims

SOURCE_TRACKING = "rebound/ingest/tracking"
MACHINE_OPEN_WINDOW = timedelta(seconds=5)
PRIVACY_PROXY_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("17.0.0.0/8",))
PRIVACY_PROXY_USER_AGENTS = frozenset({"mozilla/5.0"})  # Apple MPP sends exactly this
SCANNER_USER_AGENT_MARKERS = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "forcepoint",
    "trendmicro",
    "bingpreview",
    "headlesschrome",
    "python-requests",
    "go-http-client",
    "curl/",
    "wget/",
    "bot",
    "spider",
    "crawler",
)
ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"


@dataclass(frozen=True)
class Fetch:
    """What the endpoint knows about who is asking."""

    at: datetime
    user_agent: str
    client_ip: str | None


def machine_reason(claims: Claims, fetch: Fetch) -> str | None:
    """Why this open is a machine's, or None for a human open."""
    agent = fetch.user_agent.strip().lower()
    if agent in PRIVACY_PROXY_USER_AGENTS or _in_proxy_network(fetch.client_ip):
        return "privacy_proxy"
    if any(marker in agent for marker in SCANNER_USER_AGENT_MARKERS):
        return "scanner"
    if fetch.at - claims.message.sent_at < MACHINE_OPEN_WINDOW:
        return "right_after_send"
    return None


def _in_proxy_network(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in PRIVACY_PROXY_NETWORKS)


def is_one_click(body: bytes) -> bool:
    """RFC 8058: the POST body carries List-Unsubscribe=One-Click (form-encoded or multipart)."""
    text = body.decode("utf-8", "replace")
    if ONE_CLICK_VALUE in parse_qs(text).get(ONE_CLICK_FIELD, []):
        return True
    # multipart/form-data: a part named List-Unsubscribe whose value is One-Click
    marker = f'name="{ONE_CLICK_FIELD}"'
    if marker not in text:
        return False
    after = text.split(marker, 1)[1].split("\r\n\r\n", 1)
    return len(after) == 2 and after[1].split("\r\n", 1)[0].strip() == ONE_CLICK_VALUE


def _ref(claims: Claims) -> dict[str, object]:
    m = claims.message
    return {
        "request_key": m.request_key,
        "shop_id": m.shop_id,
        "customer_key": m.customer_key,
        "journey_id": m.journey_id,
        "step_id": m.step_id,
        "sent_at": m.sent_at,
    }


def opened(claims: Claims, fetch: Fetch, event_id: str) -> ev.CloudEvent:
    reason = machine_reason(claims, fetch)
    data = ev.EmailOpened.model_validate(
        {**_ref(claims), "opened_at": fetch.at, "machine": reason is not None}
        | {"machine_reason": reason}
    )
    return _event(ev.EMAIL_OPENED, claims, fetch.at, event_id, data)


def clicked(claims: Claims, at: datetime, event_id: str) -> ev.CloudEvent:
    assert claims.link is not None
    data = ev.EmailClicked.model_validate(
        {**_ref(claims), "clicked_at": at, "link_index": claims.link.index, "url": claims.link.url}
    )
    return _event(ev.EMAIL_CLICKED, claims, at, event_id, data)


def unsubscribed(claims: Claims, at: datetime, one_click: bool) -> ev.CloudEvent:
    """One id per message: pressing the button twice is one unsubscribe."""
    method = "one_click" if one_click else "confirm_page"
    data = ev.EmailUnsubscribed.model_validate(
        {**_ref(claims), "unsubscribed_at": at, "method": method}
    )
    event_id = ev.stable_event_id("unsubscribe", claims.message.request_key)
    return _event(ev.EMAIL_UNSUBSCRIBED, claims, at, event_id, data)


def _event(
    type_: str, claims: Claims, at: datetime, event_id: str, data: ev.Contract
) -> ev.CloudEvent:
    return ev.make_event(
        type=type_,
        source=SOURCE_TRACKING,
        id=event_id,
        time=at,
        subject=claims.message.customer_key,
        shop_id=claims.message.shop_id,
        data=data,
    )
